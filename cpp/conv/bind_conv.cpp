// Python bindings of the convolution and unfolding kernels.
#include <string>

#include "../bindings.h"
#include "../direct/direct.h"
#include "conv2d.h"
#include "unfold.h"

namespace fastconv {

namespace {

using Pair = std::array<std::int64_t, 2>;

// The shape of a convolution of x (N, C, H, W) by a (K, C/groups, KH, KW) kernel
// with output (OH, OW); checks only what keeps the kernels inside their arrays.
ConvShape conv_shape(const py::array& x, std::int64_t k, Pair kernel, Pair stride, Pair pad,
                     Pair dilation, std::int64_t groups, Pair out_size) {
    require(x.ndim() == 4, "x must be 4-D");
    ConvShape s{x.shape(0), x.shape(1), x.shape(2), x.shape(3), k, kernel[0], kernel[1],
                stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1], groups,
                out_size[0], out_size[1]};
    require(s.kh >= 1 && s.kw >= 1 && s.sh >= 1 && s.sw >= 1 && s.dh >= 1 && s.dw >= 1,
            "kernel, stride and dilation must be >= 1");
    require(groups >= 1 && s.c % groups == 0 && s.k % groups == 0, "groups must divide C and K");
    require(s.oh >= 1 && s.ow >= 1 && s.pad_top >= 0 && s.pad_left >= 0,
            "bad output size or padding");  // taps themselves are bounds-checked
    return s;
}

void require_shape(const py::array& a, std::initializer_list<std::int64_t> shape,
                   const char* what) {
    bool ok = a.ndim() == py::ssize_t(shape.size());
    int i = 0;
    for (auto d : shape) ok = ok && a.shape(i++) == d;
    require(ok, what);
}

template <typename T>
void conv2d(const carray<T>& x, const carray<T>& weight, const std::optional<carray<T>>& bias,
            carray<T>& out, Pair stride, Pair pad_top_left, Pair dilation, std::int64_t groups,
            bool relu, int threads, const std::string& kernel) {
    require(weight.ndim() == 4 && out.ndim() == 4, "weight and out must be 4-D");
    const ConvShape s = conv_shape(x, weight.shape(0), {weight.shape(2), weight.shape(3)},
                                   stride, pad_top_left, dilation, groups,
                                   {out.shape(2), out.shape(3)});
    require(weight.shape(1) * groups == s.c, "weight's channels and groups disagree with x");
    require_shape(out, {s.n, s.k, s.oh, s.ow}, "out has the wrong shape");
    require(!bias || (bias->ndim() == 1 && bias->shape(0) == s.k), "bias must be (K,)");
    require(threads >= 1, "threads must be >= 1");
    const bool pointwise = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pad_top == 0 &&
                           s.pad_left == 0 && s.oh == s.h && s.ow == s.w;
    const bool gemm = kernel == "gemm" || kernel == "gemm-runs" || kernel == "gemm-phased";
    require(gemm || kernel == "direct" || (kernel == "1x1" && pointwise),
            "kernel must be gemm (gemm-runs, gemm-phased: its layouts), direct, or 1x1 (for a "
            "1x1 kernel, stride 1, no padding)");
    const GemmLayout layout = kernel == "gemm-runs"     ? GemmLayout::runs
                              : kernel == "gemm-phased" ? GemmLayout::phased
                                                        : GemmLayout::choose;
    const T* b = bias ? bias->data() : nullptr;
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    if (kernel == "direct")
        direct_kernels<T>().conv(s, x.data(), weight.data(), b, o, relu, threads);
    else if (kernel == "1x1")
        conv2d_1x1<T>(s, x.data(), weight.data(), b, o, relu, threads);
    else
        conv2d_gemm<T>(s, x.data(), weight.data(), b, o, relu, threads, layout);
}

// The ConvShape of a plan query (conv2d_gemm_input, conv2d_backward_plan), checked:
// batches of at least min_batch images.
ConvShape plan_shape(Pair hw, std::int64_t n, std::int64_t c, std::int64_t k, Pair kernel,
                     Pair stride, Pair pad, Pair dilation, std::int64_t groups, Pair out_size,
                     const std::string& dtype, int threads, std::int64_t min_batch) {
    const ConvShape s{n, c, hw[0], hw[1], k, kernel[0], kernel[1], stride[0], stride[1],
                      pad[0], pad[1], dilation[0], dilation[1], groups, out_size[0],
                      out_size[1]};
    require(s.n >= min_batch && s.c >= 1 && s.k >= 1 && s.h >= 1 && s.w >= 1 && s.kh >= 1 &&
                s.kw >= 1 && s.sh >= 1 && s.sw >= 1 && s.dh >= 1 && s.dw >= 1 && s.oh >= 1 &&
                s.ow >= 1 && s.pad_top >= 0 && s.pad_left >= 0,
            "sizes, stride and dilation must be >= 1, padding >= 0");
    require(groups >= 1 && s.c % groups == 0 && s.k % groups == 0, "groups must divide C and K");
    require(dtype == "float32" || dtype == "float64", "dtype must be float32 or float64");
    require(threads >= 1, "threads must be >= 1");
    return s;
}

// conv2d_gemm_input for a shape and dtype (`layout` "" for the kernel's choice).
py::dict gemm_input(Pair hw, std::int64_t n, std::int64_t c, std::int64_t k, Pair kernel,
                    Pair stride, Pair pad, Pair dilation, std::int64_t groups, Pair out_size,
                    const std::string& dtype, int threads, const std::string& layout) {
    const ConvShape s = plan_shape(hw, n, c, k, kernel, stride, pad, dilation, groups, out_size,
                                   dtype, threads, 1);
    require(layout.empty() || layout == "runs" || layout == "phased",
            "layout must be runs, phased, or empty (the kernel's choice)");
    const GemmLayout pin = layout == "runs"     ? GemmLayout::runs
                           : layout == "phased" ? GemmLayout::phased
                                                : GemmLayout::choose;
    const GemmInput in = dtype == "float32" ? conv2d_gemm_input<float>(s, pin, threads)
                                            : conv2d_gemm_input<double>(s, pin, threads);
    py::dict d;
    d["layout"] = in.layout == GemmLayout::phased ? "phased" : "runs";
    d["copy_elements"] = in.copy_elements;
    d["columns"] = in.columns;
    d["packed_weights"] = in.packed_weights;
    d["threads"] = in.threads;
    d["block_cols"] = in.block_cols;
    d["b_block"] = in.b_block;
    d["tiles"] = in.tiles;
    return d;
}

// conv2d_backward_plan for a shape and dtype.
py::dict backward_plan(Pair hw, std::int64_t n, std::int64_t c, std::int64_t k, Pair kernel,
                       Pair stride, Pair pad, Pair dilation, std::int64_t groups, Pair out_size,
                       const std::string& dtype, int threads) {
    const ConvShape s = plan_shape(hw, n, c, k, kernel, stride, pad, dilation, groups, out_size,
                                   dtype, threads, 0);
    const BackwardPlan p = dtype == "float32" ? conv2d_backward_plan<float>(s, threads)
                                              : conv2d_backward_plan<double>(s, threads);
    py::dict d;
    d["piece_images"] = p.piece_images;
    d["piece_rows"] = p.piece_rows;
    d["direct_weight"] = p.direct_weight;
    d["weight_step"] = p.weight_step;
    d["weight_units"] = p.weight_units;
    d["threads"] = p.threads;
    d["chunk"] = p.chunk;
    d["slices"] = p.slices;
    return d;
}

template <typename T>
void conv2d_backward(const carray<T>& grad_out, const carray<T>& x, const carray<T>& weight,
                     carray<T>& grad_input, carray<T>& grad_weight, carray<T>& grad_bias,
                     Pair stride, Pair pad_top_left, Pair dilation, std::int64_t groups,
                     int threads) {
    require(weight.ndim() == 4 && grad_out.ndim() == 4, "weight and grad_out must be 4-D");
    const ConvShape s = conv_shape(x, weight.shape(0), {weight.shape(2), weight.shape(3)},
                                   stride, pad_top_left, dilation, groups,
                                   {grad_out.shape(2), grad_out.shape(3)});
    require(weight.shape(1) * groups == s.c, "weight's channels and groups disagree with x");
    require_shape(grad_out, {s.n, s.k, s.oh, s.ow}, "grad_out has the wrong shape");
    require_shape(grad_input, {s.n, s.c, s.h, s.w}, "grad_input has the wrong shape");
    require_shape(grad_weight, {s.k, s.c / groups, s.kh, s.kw}, "grad_weight has the wrong shape");
    require_shape(grad_bias, {s.k}, "grad_bias has the wrong shape");
    require(threads >= 1, "threads must be >= 1");
    T* gi = grad_input.mutable_data();
    T* gw = grad_weight.mutable_data();
    T* gb = grad_bias.mutable_data();
    py::gil_scoped_release release;
    fastconv::conv2d_backward<T>(s, grad_out.data(), x.data(), weight.data(), gi, gw, gb, threads);
}

template <typename T>
void im2col(const carray<T>& x, carray<T>& out, Pair kernel, Pair stride, Pair pad_top_left,
            Pair dilation, Pair out_size, int threads) {
    const ConvShape s = conv_shape(x, 1, kernel, stride, pad_top_left, dilation, 1, out_size);
    require_shape(out, {s.n * s.oh * s.ow, s.c * s.kh * s.kw}, "out has the wrong shape");
    require(threads >= 1, "threads must be >= 1");
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    im2col_rows<T>(s, x.data(), o, threads);
}

template <typename T>
void col2im(const carray<T>& cols, carray<T>& out, Pair kernel, Pair stride, Pair pad_top_left,
            Pair dilation, Pair out_size, int threads) {
    const ConvShape s = conv_shape(out, 1, kernel, stride, pad_top_left, dilation, 1, out_size);
    require_shape(cols, {s.n * s.oh * s.ow, s.c * s.kh * s.kw}, "cols has the wrong shape");
    require(threads >= 1, "threads must be >= 1");
    T* o = out.mutable_data();
    py::gil_scoped_release release;
    col2im_rows<T>(s, cols.data(), o, threads);
}

template <typename T>
void def_conv(py::module_& m) {
    m.def("conv2d", &conv2d<T>, py::arg("x").noconvert(), py::arg("weight").noconvert(),
          py::arg("bias").noconvert(), py::arg("out").noconvert(), py::arg("stride"),
          py::arg("pad_top_left"), py::arg("dilation"), py::arg("groups"), py::arg("relu"),
          py::arg("threads"), py::arg("kernel") = "gemm",
          "out (N, K, OH, OW) <- relu?(conv(x, weight) + bias), zero padding (top, left) "
          "implied by the output size. kernel: gemm (implicit im2col; gemm-runs and gemm-phased "
          "pin its layout), direct, or 1x1.");
    m.def("conv2d_backward", &conv2d_backward<T>, py::arg("grad_out").noconvert(),
          py::arg("x").noconvert(), py::arg("weight").noconvert(),
          py::arg("grad_input").noconvert(), py::arg("grad_weight").noconvert(),
          py::arg("grad_bias").noconvert(), py::arg("stride"), py::arg("pad_top_left"),
          py::arg("dilation"), py::arg("groups"), py::arg("threads"),
          "grad_input, grad_weight, grad_bias <- the gradients of conv2d (zero padding).");
    m.def("im2col", &im2col<T>, py::arg("x").noconvert(), py::arg("out").noconvert(),
          py::arg("kernel"), py::arg("stride"), py::arg("pad_top_left"), py::arg("dilation"),
          py::arg("out_size"), py::arg("threads"),
          "out (N*OH*OW, C*KH*KW) <- the textbook's patch matrix of x (zero padding).");
    m.def("col2im", &col2im<T>, py::arg("cols").noconvert(), py::arg("out").noconvert(),
          py::arg("kernel"), py::arg("stride"), py::arg("pad_top_left"), py::arg("dilation"),
          py::arg("out_size"), py::arg("threads"),
          "out (N, C, H, W) <- the adjoint of im2col: patches summed back in place.");
}

}  // namespace

void register_conv(py::module_& m) {
    m.def("conv2d_gemm_input", &gemm_input, py::arg("hw"), py::arg("n"), py::arg("c"),
          py::arg("k"), py::arg("kernel"), py::arg("stride"), py::arg("pad_top_left"),
          py::arg("dilation"), py::arg("groups"), py::arg("out_size"), py::arg("dtype"),
          py::arg("threads") = 1, py::arg("layout") = "",
          "How conv2d's gemm kernel runs: {layout: runs or phased, copy_elements: of the "
          "input copy it keeps (0: none); for the GEMM of the first chunk: columns, "
          "packed_weights (elements), threads, block_cols (widest unit), b_block and tiles "
          "(elements per thread)}.");
    m.def("conv2d_backward_plan", &backward_plan, py::arg("hw"), py::arg("n"), py::arg("c"),
          py::arg("k"), py::arg("kernel"), py::arg("stride"), py::arg("pad_top_left"),
          py::arg("dilation"), py::arg("groups"), py::arg("out_size"), py::arg("dtype"),
          py::arg("threads") = 1,
          "How conv2d_backward runs: {piece_images, piece_rows (piece_images 0: the whole "
          "batch, grad input as a convolution), direct_weight, weight_step, weight_units, "
          "threads, chunk, slices}.");
    def_conv<float>(m);
    def_conv<double>(m);
}

}  // namespace fastconv
