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

// The SIMD path the kernels use: "avx512", "avx2" or "generic". At start the
// best the CPU supports, capped by FASTCONV_ISA=avx512|avx2|generic.
const char* isa_path();

// The best path this CPU supports, whatever the cap.
const char* best_isa_path();

// Switch paths (tests run every path the CPU supports); false if the CPU
// lacks `isa` or the name is unknown.
bool set_isa_path(const std::string& isa);

}  // namespace fastconv
