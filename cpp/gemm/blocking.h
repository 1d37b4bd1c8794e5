// Cache blocking of the GEMM loops (BLIS's KC, MC, NC), per element type.
#pragma once

#include <cstdint>

namespace fastconv {

// A packed A block (MC x KC, ~72 KB) and B block (KC x NC, ~256 KB) must share
// a 512 KB L2; the B micro-panel (KC x NR, 8-16 KB) stays in L1. Measured
// here: with an A block of 120 rows and 512 columns of B, the same
// micro-kernel ran at about half the speed.
template <typename T>
struct Blocking {
    static constexpr std::int64_t kc = 256;              // depth per packed block
    static constexpr std::int64_t mc = 288 / sizeof(T);  // rows of A per block (a multiple of MR)
    static constexpr std::int64_t nc = 1024 / sizeof(T); // columns of B per block
};

}  // namespace fastconv
