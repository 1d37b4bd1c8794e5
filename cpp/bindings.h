// Helpers shared by the binding files, and their register_* functions.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <string>

namespace fastconv {

namespace py = pybind11;

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

// Kernels trust their arguments; these checks only keep a wrong call from
// touching memory it does not own. Validation proper lives in Python.
inline void require(bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("fastconv._cpp: ") + what);
}

void register_conv(py::module_& m);
void register_pool(py::module_& m);

}  // namespace fastconv
