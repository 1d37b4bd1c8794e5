// Direct (non-GEMM) kernels: pooling and small-group convolution, vectorised
// along the output row. Compiled once per ISA path (direct_<isa>.cpp), picked
// at run time by direct_kernels<T>().
#pragma once

#include <cstdint>

#include "../conv/conv2d.h"
#include "../conv/panel_runs.h"
#include "../parallel.h"

namespace fastconv {

// One pooling call over `planes` = N*C input planes of H x W. Padding is
// implied: taps outside [0, h) x [0, w) are skipped. Every window holds at
// least one input element (checked in Python).
struct PoolShape {
    std::int64_t planes, h, w;
    std::int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    std::int64_t oh, ow;
};

// How avg pooling divides: by divisor_override when > 0, else by the window
// clipped to the padded input (count_include_pad) or to the input itself.
struct AvgDivisor {
    std::int64_t override_value;
    bool count_include_pad;
};

template <typename T>
struct DirectKernels {
    // out (planes, OH, OW) <- window maxima; indices (nullable) <- h*W + w of
    // each: the first NaN wins, then the first maximum (row-major window order).
    void (*max_pool)(const PoolShape& s, const T* x, T* out, std::int64_t* indices, int threads);
    // out <- window sums (row-major tap order, from zero) / divisor.
    void (*avg_pool)(const PoolShape& s, const AvgDivisor& d, const T* x, T* out, int threads);
    // conv2d by direct loops, for few channels per group: sums in (c, kh, kw) order.
    void (*conv)(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                 bool relu, int threads);
    // grad weight of conv2d (K, C/groups, KH, KW), filters [f0, f1) <- (itself,
    // if accumulate, +) the sum over images [n0, n1) of grad_out times the
    // input, for stride 1 along rows (s.sw == 1); the order of the sums
    // depends on n0, n1 only.
    void (*conv_weight_grad)(const ConvShape& s, const T* grad_out, const T* x, std::int64_t n0,
                             std::int64_t n1, std::int64_t f0, std::int64_t f1, T* grad_weight,
                             bool accumulate);
    // conv2d's implicit im2col: bp[panel][p][j] <- the input at tap p (of
    // [p0, p0 + kc)) for pixel j of each packed micro-panel (nr pixels), zero
    // where the tap falls in the padding or past the last pixel.
    void (*pack_input)(const ConvShape& s, const T* x, std::int64_t p0, std::int64_t kc, int nr,
                       const PanelRunsView& runs, T* bp);
    const char* isa;
};

namespace generic {
template <typename T>
DirectKernels<T> direct_kernels();
}
namespace avx2 {
template <typename T>
DirectKernels<T> direct_kernels();
}

// The kernels of the ISA path in force (see cpu_features.h).
template <typename T>
DirectKernels<T> direct_kernels();

// Below this many filters per group most of the GEMM micro-kernel's rows would
// be padding, and conv2d runs the direct kernel instead (measured: depthwise
// 3x3 12x faster direct; LeNet's 6 filters faster as a GEMM). The Python
// adapter's DIRECT_BELOW_GROUP_FILTERS is this value (a test checks).
constexpr std::int64_t kDirectBelowGroupFilters = 4;

// Threads worth starting for `work` multiply-adds (or compares) split into
// `units` independent pieces: one for small calls, where waking a team costs
// more than it saves.
int threads_for(std::int64_t work, std::int64_t units, int threads);

// Planes per work unit of the per-plane kernels (pooling, direct conv) when
// there are many: 16 units a thread, as Numba's chunks. A claim moves a cache
// line between the cores; one per 28x28 plane made pool_56_k2s2 1.3x slower.
inline std::int64_t planes_per_unit(std::int64_t planes, int threads) {
    const std::int64_t per = planes / (16 * std::int64_t(threads));
    return per > 1 ? per : 1;
}

}  // namespace fastconv

namespace fastconv {

// grad_input (planes, H, W) <- grad_out scattered to the max pooling indices.
// An index outside its plane writes nothing; false when there was one.
template <typename T>
bool max_pool_backward(const PoolShape& s, const T* grad_out, const std::int64_t* indices,
                       T* grad_input, int threads);

// grad_input <- each grad_out / divisor spread over its window (no dilation).
template <typename T>
void avg_pool_backward(const PoolShape& s, const AvgDivisor& d, const T* grad_out, T* grad_input,
                       int threads);

}  // namespace fastconv
