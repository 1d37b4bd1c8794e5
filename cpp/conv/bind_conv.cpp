// Python bindings of the convolution kernels.
#include <optional>

#include <pybind11/stl.h>

#include "../bindings.h"
#include "conv2d.h"

namespace fastconv {

namespace {

template <typename T>
void conv2d(const carray<T>& x, const carray<T>& weight, const std::optional<carray<T>>& bias,
            carray<T>& out, std::array<std::int64_t, 2> stride,
            std::array<std::int64_t, 2> pad_top_left, std::array<std::int64_t, 2> dilation,
            std::int64_t groups, bool relu, int threads) {
    require(x.ndim() == 4 && weight.ndim() == 4 && out.ndim() == 4, "x, weight, out must be 4-D");
    ConvShape s{x.shape(0), x.shape(1), x.shape(2), x.shape(3),
                weight.shape(0), weight.shape(2), weight.shape(3),
                stride[0], stride[1], pad_top_left[0], pad_top_left[1],
                dilation[0], dilation[1], groups, out.shape(2), out.shape(3)};
    require(groups >= 1 && s.c % groups == 0 && s.k % groups == 0 &&
                weight.shape(1) * groups == s.c, "channels and groups disagree");
    require(out.shape(0) == s.n && out.shape(1) == s.k, "out has the wrong shape");
    require(s.sh >= 1 && s.sw >= 1 && s.dh >= 1 && s.dw >= 1 && threads >= 1,
            "stride, dilation and threads must be >= 1");
    require(s.oh >= 1 && s.ow >= 1, "out must have OH, OW >= 1");  // taps are bounds-checked
    require(!bias || (bias->ndim() == 1 && bias->shape(0) == s.k), "bias must be (K,)");
    const T* b = bias ? bias->data() : nullptr;
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    conv2d_gemm<T>(s, x.data(), weight.data(), b, o, relu, threads);
}

template <typename T>
void def_conv2d(py::module_& m) {
    m.def("conv2d", &conv2d<T>, py::arg("x").noconvert(), py::arg("weight").noconvert(),
          py::arg("bias").noconvert(), py::arg("out").noconvert(), py::arg("stride"),
          py::arg("pad_top_left"), py::arg("dilation"), py::arg("groups"), py::arg("relu"),
          py::arg("threads"),
          "out (N, K, OH, OW) <- relu?(conv(x, weight) + bias): implicit-im2col GEMM, "
          "zero padding (top, left) implied by the output size.");
}

}  // namespace

void register_conv(py::module_& m) {
    def_conv2d<float>(m);
    def_conv2d<double>(m);
}

}  // namespace fastconv
