// Python bindings of the pooling kernels.
#include "../bindings.h"
#include "direct.h"

namespace fastconv {

namespace {

using Pair = std::array<std::int64_t, 2>;

template <typename T>
PoolShape pool_shape(const carray<T>& x, const carray<T>& out, Pair kernel, Pair stride,
                     Pair padding, Pair dilation) {
    require(x.ndim() == 4 && out.ndim() == 4, "x and out must be 4-D");
    require(out.shape(0) == x.shape(0) && out.shape(1) == x.shape(1),
            "out must have the planes of x");
    PoolShape s{x.shape(0) * x.shape(1), x.shape(2), x.shape(3), kernel[0], kernel[1],
                stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                out.shape(2), out.shape(3)};
    require(s.kh >= 1 && s.kw >= 1 && s.sh >= 1 && s.sw >= 1 && s.dh >= 1 && s.dw >= 1,
            "kernel, stride and dilation must be >= 1");
    require(s.ph >= 0 && s.pw >= 0 && s.oh >= 1 && s.ow >= 1, "bad padding or output size");
    // Every window must start inside the input or its left/top padding.
    require((s.oh - 1) * s.sh - s.ph < s.h && (s.ow - 1) * s.sw - s.pw < s.w,
            "a window starts past the input");
    return s;
}

template <typename T>
void max_pool2d(const carray<T>& x, carray<T>& out, std::optional<carray<std::int64_t>> indices,
                Pair kernel, Pair stride, Pair padding, Pair dilation, int threads) {
    const PoolShape s = pool_shape(x, out, kernel, stride, padding, dilation);
    require(!indices || (indices->ndim() == 4 && indices->size() == out.size()),
            "indices must have the shape of out");
    require(std::is_same_v<T, double> || s.h * s.w < (std::int64_t(1) << 31),
            "float32 planes must hold fewer than 2**31 elements");
    require(threads >= 1, "threads must be >= 1");
    std::int64_t* idx = indices ? indices->mutable_data() : nullptr;
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    direct_kernels<T>().max_pool(s, x.data(), o, idx, threads);
}

template <typename T>
void avg_pool2d(const carray<T>& x, carray<T>& out, Pair kernel, Pair stride, Pair padding,
                bool count_include_pad, std::int64_t divisor_override, int threads) {
    const PoolShape s = pool_shape(x, out, kernel, stride, padding, Pair{1, 1});
    require(threads >= 1, "threads must be >= 1");
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    direct_kernels<T>().avg_pool(s, AvgDivisor{divisor_override, count_include_pad}, x.data(),
                                 o, threads);
}

template <typename T>
void max_pool2d_backward(const carray<T>& grad_out, const carray<std::int64_t>& indices,
                         carray<T>& grad_input, int threads) {
    require(grad_out.ndim() == 4 && grad_input.ndim() == 4 && indices.ndim() == 4,
            "grad_out, indices and grad_input must be 4-D");
    require(indices.size() == grad_out.size() && grad_out.shape(0) == grad_input.shape(0) &&
                grad_out.shape(1) == grad_input.shape(1),
            "grad_out, indices and grad_input disagree");
    const PoolShape s{grad_input.shape(0) * grad_input.shape(1), grad_input.shape(2),
                      grad_input.shape(3), 1, 1, 1, 1, 0, 0, 1, 1, grad_out.shape(2),
                      grad_out.shape(3)};
    require(threads >= 1, "threads must be >= 1");
    // The indices come from max_pool2d, but a stray one must not write outside
    // its plane: the scatter skips it and says so (a check of its own, before,
    // took as long as the scatter).
    T* gi = grad_input.mutable_data();
    bool inside;
    {
        py::gil_scoped_release release;
        inside = max_pool_backward<T>(s, grad_out.data(), indices.data(), gi, threads);
    }
    require(inside, "an index lies outside its input plane");
}

template <typename T>
void avg_pool2d_backward(const carray<T>& grad_out, carray<T>& grad_input, Pair kernel,
                         Pair stride, Pair padding, bool count_include_pad,
                         std::int64_t divisor_override, int threads) {
    const PoolShape s = pool_shape(grad_input, grad_out, kernel, stride, padding, Pair{1, 1});
    require(threads >= 1, "threads must be >= 1");
    T* gi = grad_input.mutable_data();
    py::gil_scoped_release release;
    avg_pool_backward<T>(s, AvgDivisor{divisor_override, count_include_pad}, grad_out.data(), gi,
                         threads);
}

template <typename T>
void def_pool(py::module_& m) {
    m.def("max_pool2d_backward", &max_pool2d_backward<T>, py::arg("grad_out").noconvert(),
          py::arg("indices").noconvert(), py::arg("grad_input").noconvert(), py::arg("threads"),
          "grad_input <- grad_out added at the positions max_pool2d's indices name.");
    m.def("avg_pool2d_backward", &avg_pool2d_backward<T>, py::arg("grad_out").noconvert(),
          py::arg("grad_input").noconvert(), py::arg("kernel"), py::arg("stride"),
          py::arg("padding"), py::arg("count_include_pad"), py::arg("divisor_override"),
          py::arg("threads"), "grad_input <- the gradient of avg_pool2d.");
    m.def("max_pool2d", &max_pool2d<T>, py::arg("x").noconvert(), py::arg("out").noconvert(),
          py::arg("indices").noconvert(), py::arg("kernel"), py::arg("stride"),
          py::arg("padding"), py::arg("dilation"), py::arg("threads"),
          "out <- max pooling of x (padding never wins); indices (or None) <- h*W + w.");
    m.def("avg_pool2d", &avg_pool2d<T>, py::arg("x").noconvert(), py::arg("out").noconvert(),
          py::arg("kernel"), py::arg("stride"), py::arg("padding"),
          py::arg("count_include_pad"), py::arg("divisor_override"), py::arg("threads"),
          "out <- average pooling of x; divisor_override <= 0 means none.");
}

}  // namespace

void register_pool(py::module_& m) {
    def_pool<float>(m);
    def_pool<double>(m);
}

}  // namespace fastconv
