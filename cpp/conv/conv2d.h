// 2-D convolution as an implicit-im2col packed GEMM.
#pragma once

#include <cstdint>

namespace fastconv {

// Sizes of one convolution; the input is already padded by (pad_top, pad_left)
// only implicitly: taps outside [0, h) x [0, w) read zero.
struct ConvShape {
    std::int64_t n, c, h, w;    // input
    std::int64_t k, kh, kw;     // filters
    std::int64_t sh, sw;        // stride
    std::int64_t pad_top, pad_left;
    std::int64_t dh, dw;        // dilation
    std::int64_t groups;
    std::int64_t oh, ow;        // output
};

// How the GEMM reads the input (see conv2d.cpp): runs of input rows, read in
// place where they fit a micro-panel and packed elsewhere; or phase planes of
// a padded copy, all read in place, with a few extra columns computed and
// dropped. `choose` picks by the shape.
enum class GemmLayout { choose, runs, phased };

// out (N, K, OH, OW) <- relu?(weight (K, C/groups, KH, KW) * x (N, C, H, W) + bias (K) or 0).
// All arrays C-contiguous; bias may be null. Uses `threads` threads; the result
// does not depend on their number.
// What conv2d_gemm does for shape s on `threads` threads: its layout, the
// elements of the copy of (chunks of) the input that the calling thread keeps
// (0 when it reads x itself), and for the GEMM of the first chunk: its
// columns, the elements of the packed weights, the threads it runs on, the
// columns of its widest block, and each thread's packed B block and edge
// tiles (elements).
struct GemmInput {
    GemmLayout layout;
    std::int64_t copy_elements, columns;
    std::int64_t packed_weights = 0;
    int threads = 1;
    std::int64_t block_cols = 0, b_block = 0, tiles = 0;
};
template <typename T>
GemmInput conv2d_gemm_input(const ConvShape& s, GemmLayout layout, int threads);

template <typename T>
void conv2d_gemm(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                 bool relu, int threads, GemmLayout layout = GemmLayout::choose);

}  // namespace fastconv

namespace fastconv {

// Gradients of conv2d (without activation) for grad_out (N, K, OH, OW):
// grad_input (N, C, H, W) through the adjoint of im2col, grad_weight through
// GEMMs over the im2col matrix (or a direct kernel at stride 1), both over
// pieces of the batch that stay in L2 (images, or rows of one image); at
// stride 1 with about "same" padding, grad_input as a convolution and
// grad_weight over chunks of images of at most 8 MB of im2col matrix.
// grad_bias (K). Partial sums are added in an order fixed by the shape.
template <typename T>
void conv2d_backward(const ConvShape& s, const T* grad_out, const T* x, const T* weight,
                     T* grad_input, T* grad_weight, T* grad_bias, int threads);

// How conv2d_backward runs s on `threads` threads (explain()'s workspace):
// in pieces of `piece_images` images or, when 1, of `piece_rows` output rows
// (0 images: the whole-batch path, grad input as a convolution); grad weight
// by the direct kernel (in steps of `weight_step` images) or by GEMMs; its
// `weight_units` partial sums; the threads of the pieces' team or of the direct
// kernel; on the whole-batch GEMM path, `chunk` images per im2col matrix and
// its `slices` partial sums over the pixels (1: none).
struct BackwardPlan {
    std::int64_t piece_images = 0, piece_rows = 0;
    bool direct_weight = false;
    std::int64_t weight_step = 1, weight_units = 0;
    int threads = 1;
    std::int64_t chunk = 0, slices = 1;
};
template <typename T>
BackwardPlan conv2d_backward_plan(const ConvShape& s, int threads);

// conv2d for a 1x1 kernel, stride 1, no padding: per image and group, a GEMM
// whose B matrix is the input itself.
template <typename T>
void conv2d_1x1(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out, bool relu,
                int threads);

}  // namespace fastconv
