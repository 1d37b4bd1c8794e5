// Picks the direct kernels of the ISA path in force.
#include <cstring>

#include "../cpu_features.h"
#include "direct.h"

namespace fastconv {

// AVX-512 kernels are not written yet: the avx512 path runs the AVX2 ones.
template <typename T>
DirectKernels<T> direct_kernels() {
    return std::strcmp(isa_path(), "generic") == 0 ? generic::direct_kernels<T>()
                                                   : avx2::direct_kernels<T>();
}

template DirectKernels<float> direct_kernels<float>();
template DirectKernels<double> direct_kernels<double>();

int threads_for(std::int64_t work, std::int64_t units, int threads) {
    constexpr std::int64_t kWorkPerThread = 1 << 16;  // below this, one thread is faster
    std::int64_t useful = work / kWorkPerThread;
    if (useful > units) useful = units;
    if (useful > threads) useful = threads;
    return useful < 1 ? 1 : int(useful);
}

}  // namespace fastconv
