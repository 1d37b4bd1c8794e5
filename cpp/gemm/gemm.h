// A general packed GEMM on strided operands, for the products that are not
// a forward convolution's implicit im2col (1x1 convolutions, gradients).
#pragma once

#include <cstdint>
#include <vector>

#include "ukernel.h"

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

// gemm (without epilogue, c contiguous: ldc = n) for products with few tiles of
// c and a long depth: the depth is cut into slices of `slice` (chosen by the
// caller from the shape, so that the sums do not depend on `threads`), run in
// parallel into buffers and added to c in slice order.
template <typename T>
void gemm_depth_sliced(std::int64_t m, std::int64_t n, std::int64_t k, MatView<T> a,
                       MatView<T> b, T* c, bool accumulate, std::int64_t slice, int threads);

// out[i] <- (out[i] if accumulate +) the sum over u of parts[u*size + i], in
// order of u: partial results of fixed pieces of work, added the same way for
// any thread count.
template <typename T>
void sum_in_order(const T* parts, std::int64_t count, std::int64_t size, T* out, bool accumulate,
                  int threads);

// The pieces of gemm, for callers that run many products in one team of
// threads: a thread's packing buffers, and one unit of work — columns
// [j0, j0 + cols) and rows [i_begin, i_end) of c, every depth block.
// a_packed: a packed whole by pack_a_rows (callers whose units share one a
// pack it once), or nullptr to pack a block by block; i_begin is then a
// multiple of MR.
template <typename T>
struct GemmWorkspace {
    GemmWorkspace();
    UKernel<T> uk;
    std::vector<T> ap, bp, tile;
};

template <typename T>
void gemm_block(std::int64_t m, std::int64_t n, std::int64_t k, MatView<T> a, MatView<T> b, T* c,
                std::int64_t ldc, bool accumulate, const T* bias, bool relu, std::int64_t j0,
                std::int64_t cols, std::int64_t i_begin, std::int64_t i_end,
                GemmWorkspace<T>& ws, const T* a_packed = nullptr);

// ap[panel][p][r] <- a[i0 + panel*MR + r][p] for the rows [i0, i0 + rows) of a
// and its whole depth k, zero past them: ceil(rows / MR) * MR * k elements,
// the layout gemm_block reads as a_packed (and conv2d's GEMM its weights).
template <typename T>
void pack_a_rows(MatView<T> a, std::int64_t i0, std::int64_t rows, std::int64_t k, T* ap);

// How gemm splits c: col_blocks blocks of cols_per_block columns (the last
// one shorter; nearly equal blocks of at most Blocking<T>::nc), times
// row_groups groups of rows_per_group rows (more than one only when the
// columns cannot feed the threads).
struct GemmSplit {
    std::int64_t col_blocks, row_groups, rows_per_group, cols_per_block;
};

template <typename T>
GemmSplit gemm_split(std::int64_t m, std::int64_t n, int threads);

}  // namespace fastconv
