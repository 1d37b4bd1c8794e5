// The fastconv._cpp extension: one register_* call per concern.
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>

#include "bindings.h"
#include "cpu_features.h"
#include "direct/direct.h"
#include "parallel.h"

namespace py = pybind11;

#ifndef FASTCONV_VERSION
#define FASTCONV_VERSION "unknown"
#endif
#ifndef FASTCONV_CXX_FLAGS
#define FASTCONV_CXX_FLAGS ""
#endif
#ifndef FASTCONV_BUILD_TYPE
#define FASTCONV_BUILD_TYPE ""
#endif

namespace {

// Each job's units add to a counter on the caller's stack and spin a little,
// so a worker still inside a job its caller has left would show.
std::int64_t check_thread_pool(std::int64_t calls, int threads, std::int64_t units) {
    std::int64_t early = 0;
    for (std::int64_t c = 0; c < calls; ++c) {
        std::atomic<std::int64_t> done{0};
        fastconv::parallel_for(units, threads, [&](std::int64_t) {
            for (volatile int spin = 0; spin < 200; spin = spin + 1) {
            }
            done.fetch_add(1, std::memory_order_relaxed);
        });
        early += done.load() != units;
    }
    return early;
}

std::string compiler_name() {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
    return "msvc " + std::to_string(_MSC_VER);
#else
    return "unknown";
#endif
}

void register_info(py::module_& m) {
    m.def("build_info", [] {
        py::dict info;
        info["version"] = FASTCONV_VERSION;
        info["compiler"] = compiler_name();
        info["flags"] = FASTCONV_CXX_FLAGS;
        info["build_type"] = FASTCONV_BUILD_TYPE;
        info["cplusplus"] = static_cast<long>(__cplusplus);
        return info;
    }, "How this extension was built: version, compiler, flags.");

    m.def("cpu_features", [] {
        const auto& f = fastconv::cpu_features();
        py::dict d;
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["avx512f"] = f.avx512f;
        return d;
    }, "CPU features detected at run time (CPUID and OS support).");

    m.def("isa_path", [] { return std::string(fastconv::isa_path()); },
          "The SIMD path the kernels use: avx512, avx2 or generic "
          "(at start the best the CPU supports, capped by FASTCONV_ISA).");
    m.def("best_isa_path", [] { return std::string(fastconv::best_isa_path()); },
          "The best SIMD path this CPU supports.");
    m.def("compiled_isa_paths", [] {
        py::list paths;
        paths.append("generic");
#if defined(FASTCONV_X86)
        paths.append("avx2");
        paths.append("avx512");  // runs the AVX2 kernels until AVX-512 ones exist
#endif
        return paths;
    }, "The SIMD paths this build holds kernels for.");
    m.def("set_isa_path", &fastconv::set_isa_path, py::arg("isa"),
          "Switch the SIMD path; False if this CPU lacks it. For tests.");
    m.def("check_thread_pool", &check_thread_pool, py::arg("calls"), py::arg("threads"),
          py::arg("units"), py::call_guard<py::gil_scoped_release>(),
          "Run `calls` short jobs of `units` units on the thread pool and count those "
          "that returned before all their units were done (0 when it is sound). For tests.");
}

}  // namespace

PYBIND11_MODULE(_cpp, m) {
    m.doc() = "fastconv's compiled kernels";
    m.attr("DIRECT_BELOW_GROUP_FILTERS") = fastconv::kDirectBelowGroupFilters;
    register_info(m);
    fastconv::register_conv(m);
    fastconv::register_pool(m);
}
