// Run-time CPU feature detection, done once per process.
#pragma once

#include <string>

namespace fastconv {

struct CpuFeatures {
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;
};

// What the CPU and the OS support (the OS must save the vector registers).
const CpuFeatures& cpu_features();

// The SIMD path the kernels use: the best the CPU supports, capped by
// FASTCONV_ISA=avx512|avx2|generic. Returns "avx512", "avx2" or "generic".
const std::string& isa_path();

}  // namespace fastconv
