// Picks the micro-kernels of the ISA path in force.
#include <cstring>

#include "../cpu_features.h"
#include "ukernel.h"

namespace fastconv {

namespace {
bool generic() { return std::strcmp(isa_path(), "generic") == 0; }
}  // namespace

// AVX-512 kernels are not written yet: the avx512 path runs the AVX2 ones.
template <>
UKernel<float> gemm_ukernel<float>() {
    return generic() ? sgemm_ukernel_generic() : sgemm_ukernel_avx2();
}

template <>
UKernel<double> gemm_ukernel<double>() {
    return generic() ? dgemm_ukernel_generic() : dgemm_ukernel_avx2();
}

}  // namespace fastconv
