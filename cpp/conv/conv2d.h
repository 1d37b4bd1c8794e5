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

// out (N, K, OH, OW) <- relu?(weight (K, C/groups, KH, KW) * x (N, C, H, W) + bias (K) or 0).
// All arrays C-contiguous; bias may be null. Uses `threads` threads; the result
// does not depend on their number.
template <typename T>
void conv2d_gemm(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                 bool relu, int threads);

}  // namespace fastconv

namespace fastconv {

// Gradients of conv2d (without activation) for grad_out (N, K, OH, OW):
// grad_input (N, C, H, W) through the adjoint of im2col, grad_weight through
// GEMMs over the im2col matrix of chunks of images (summed in order), grad_bias
// (K). The workspace is two im2col matrices of a chunk of at most 8 MB (or one image).
template <typename T>
void conv2d_backward(const ConvShape& s, const T* grad_out, const T* x, const T* weight,
                     T* grad_input, T* grad_weight, T* grad_bias, int threads);

// conv2d for a 1x1 kernel, stride 1, no padding: per image and group, a GEMM
// whose B matrix is the input itself.
template <typename T>
void conv2d_1x1(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out, bool relu,
                int threads);

}  // namespace fastconv
