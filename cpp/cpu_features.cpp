#include "cpu_features.h"

#include <atomic>
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

int best_rank() {
    const CpuFeatures& f = cpu_features();
    if (f.avx2 && f.fma) return f.avx512f ? 2 : 1;
    return 0;
}

int initial_rank() {
    int best = best_rank();
    // An unknown FASTCONV_ISA value is reported by Python; here it does not cap.
    if (const char* cap = std::getenv("FASTCONV_ISA")) {
        int r = rank(cap);
        if (r >= 0 && r < best) best = r;
    }
    return best;
}

std::atomic<int>& current_rank() {
    static std::atomic<int> r{initial_rank()};
    return r;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

const char* isa_path() { return kIsaNames[current_rank().load(std::memory_order_relaxed)]; }

const char* best_isa_path() { return kIsaNames[best_rank()]; }

bool set_isa_path(const std::string& isa) {
    int r = rank(isa.c_str());
    if (r < 0 || r > best_rank()) return false;
    current_rank().store(r, std::memory_order_relaxed);
    return true;
}

}  // namespace fastconv
