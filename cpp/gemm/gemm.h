// A general packed GEMM on strided operands, for the products that are not
// a forward convolution's implicit im2col (1x1 convolutions, gradients).
#pragma once

#include <cstdint>

namespace fastconv {

// Element (i, j) of a matrix is p[i * rs + j * cs]: a transpose is a swap of strides.
template <typename T>
struct MatView {
    const T* p;
    std::int64_t rs, cs;
};

// c (m x n, row stride ldc) <- relu?(a (m x k) * b (k x n) [+ c when accumulate] + bias),
// bias (nullable) one value per row. Work is split over tiles of c only, and
// every tile sums its depth in the same blocks, so the result does not depend
// on `threads`.
template <typename T>
void gemm(std::int64_t m, std::int64_t n, std::int64_t k, MatView<T> a, MatView<T> b, T* c,
          std::int64_t ldc, bool accumulate, const T* bias, bool relu, int threads);

}  // namespace fastconv
