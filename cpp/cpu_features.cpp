#include "cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace fastconv {

namespace {

CpuFeatures detect() {
    CpuFeatures f;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    // libgcc's checks include the OS's XSAVE support (XGETBV), not only CPUID.
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
#endif
    return f;
}

int rank(const char* isa) {
    if (std::strcmp(isa, "avx512") == 0) return 2;
    if (std::strcmp(isa, "avx2") == 0) return 1;
    if (std::strcmp(isa, "generic") == 0) return 0;
    return -1;
}

const char* const kIsaNames[] = {"generic", "avx2", "avx512"};

std::string choose_isa() {
    const CpuFeatures& f = cpu_features();
    int best = 0;
    if (f.avx2 && f.fma) best = 1;
    if (best == 1 && f.avx512f) best = 2;
    // An unknown FASTCONV_ISA value is rejected in Python before it matters;
    // here it simply does not cap.
    if (const char* cap = std::getenv("FASTCONV_ISA")) {
        int r = rank(cap);
        if (r >= 0 && r < best) best = r;
    }
    return kIsaNames[best];
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

const std::string& isa_path() {
    static const std::string isa = choose_isa();
    return isa;
}

}  // namespace fastconv
