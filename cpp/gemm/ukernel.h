// GEMM micro-kernels: one MR x NR tile of C from packed panels of A and B.
#pragma once

#include <cstddef>

namespace fastconv {

// c[i][j] (+)= sum_p a[p][i] * b[p][j] for i < MR, j < NR, c with row stride ldc.
//   a: kc x MR (packed A micro-panel), b: kc x NR (packed B micro-panel).
//   The sum starts from zero; with `accumulate` the tile is then added to C
//   (C + sum), otherwise it replaces C: C is not read when !accumulate.
//   Epilogue, applied last: + bias[i] when bias != nullptr, then max(., 0) when relu.
template <typename T>
using UKernelFn = void (*)(std::ptrdiff_t kc, const T* a, const T* b, T* c, std::ptrdiff_t ldc,
                           bool accumulate, const T* bias, bool relu);

// The same tile with B read in place: row p of the B micro-panel is the NR/2
// elements at b0 + off[p] followed by the NR/2 at b1 + off[p] (a convolution's
// input, where each half of the panel is a run of one input row).
template <typename T>
using UKernelInPlaceFn = void (*)(std::ptrdiff_t kc, const T* a, const T* b0, const T* b1,
                                  const std::ptrdiff_t* off, T* c, std::ptrdiff_t ldc,
                                  bool accumulate, const T* bias, bool relu);

// The two above with A read from MR rows of a row-major matrix, row stride
// lda, instead of a packed micro-panel: a convolution's weights as they are.
template <typename T>
using UKernelRowsFn = void (*)(std::ptrdiff_t kc, const T* a, std::ptrdiff_t lda, const T* b,
                               T* c, std::ptrdiff_t ldc, bool accumulate, const T* bias,
                               bool relu);
template <typename T>
using UKernelRowsInPlaceFn = void (*)(std::ptrdiff_t kc, const T* a, std::ptrdiff_t lda,
                                      const T* b0, const T* b1, const std::ptrdiff_t* off, T* c,
                                      std::ptrdiff_t ldc, bool accumulate, const T* bias,
                                      bool relu);

template <typename T>
struct UKernel {
    int mr;
    int nr;
    UKernelFn<T> fn;
    const char* name;
    UKernelInPlaceFn<T> in_place = nullptr;  // nullptr: B must be packed
    UKernelRowsFn<T> rows = nullptr;         // nullptr: A must be packed
    UKernelRowsInPlaceFn<T> rows_in_place = nullptr;
};

// Per ISA path. Each is defined in its own source file, compiled for that ISA.
UKernel<float> sgemm_ukernel_generic();
UKernel<double> dgemm_ukernel_generic();
UKernel<float> sgemm_ukernel_avx2();
UKernel<double> dgemm_ukernel_avx2();

// The micro-kernel of the ISA path in force (see cpu_features.h).
template <typename T>
UKernel<T> gemm_ukernel();

}  // namespace fastconv
