// Portable micro-kernels: plain loops the compiler vectorises for the baseline ISA.
#include "ukernel.h"

namespace fastconv {

namespace {

template <typename T, int MR, int NR>
void ukernel_generic(std::ptrdiff_t kc, const T* a, const T* b, T* c, std::ptrdiff_t ldc,
                     bool accumulate, const T* bias, bool relu) {
    T acc[MR][NR] = {};
    for (std::ptrdiff_t p = 0; p < kc; ++p) {
        for (int i = 0; i < MR; ++i) {
            const T ai = a[p * MR + i];
            for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[p * NR + j];
        }
    }
    for (int i = 0; i < MR; ++i) {
        T* ci = c + i * ldc;
        for (int j = 0; j < NR; ++j) {
            T v = accumulate ? ci[j] + acc[i][j] : acc[i][j];
            if (bias) v += bias[i];
            if (relu && v < T(0)) v = T(0);  // NaN stays NaN
            ci[j] = v;
        }
    }
}

}  // namespace

UKernel<float> sgemm_ukernel_generic() {
    return {4, 8, ukernel_generic<float, 4, 8>, "f32-gemm-4x8-generic"};
}

UKernel<double> dgemm_ukernel_generic() {
    return {4, 4, ukernel_generic<double, 4, 4>, "f64-gemm-4x4-generic"};
}

}  // namespace fastconv
