// Gradients of pooling: scatter-adds into each input plane, planes in parallel.
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "direct.h"

namespace fastconv {

using i64 = std::int64_t;

template <typename T>
bool max_pool_backward(const PoolShape& s, const T* grad_out, const std::int64_t* indices,
                       T* grad_input, int threads) {
    const i64 outs = s.oh * s.ow, plane = s.h * s.w;
    const int nt = threads_for(s.planes * (outs + plane), s.planes, threads);
    std::atomic<bool> stray{false};
    parallel_for(s.planes, nt, [&](i64 p) {
        T* dst = grad_input + p * plane;
        std::fill(dst, dst + plane, T(0));
        const T* g = grad_out + p * outs;
        const std::int64_t* at = indices + p * outs;
        bool inside = true;
        for (i64 o = 0; o < outs; ++o) {  // in output order
            const auto i = std::uint64_t(at[o]);  // a negative one is huge
            if (i < std::uint64_t(plane))
                dst[i] += g[o];
            else
                inside = false;
        }
        if (!inside) stray.store(true, std::memory_order_relaxed);
    });
    return !stray.load();
}

template <typename T>
void avg_pool_backward(const PoolShape& s, const AvgDivisor& d, const T* grad_out, T* grad_input,
                       int threads) {
    const i64 outs = s.oh * s.ow, plane = s.h * s.w;
    const int nt = threads_for(s.planes * outs * s.kh * s.kw, s.planes, threads);
    auto count = [](i64 o, i64 size, i64 k, i64 stride, i64 pad, bool include_pad) {
        const i64 start = o * stride - pad, end = std::min(start + k, size + pad);
        return include_pad ? end - start : std::min(end, size) - std::max<i64>(start, 0);
    };
    parallel_for(s.planes, nt, [&](i64 p) {
        T* dst = grad_input + p * plane;
        std::fill(dst, dst + plane, T(0));
        const T* g = grad_out + p * outs;
        for (i64 oh = 0; oh < s.oh; ++oh) {
            const i64 rows = count(oh, s.h, s.kh, s.sh, s.ph, d.count_include_pad);
            const i64 h0 = std::max<i64>(oh * s.sh - s.ph, 0);
            const i64 h1 = std::min(oh * s.sh - s.ph + s.kh, s.h);
            for (i64 ow = 0; ow < s.ow; ++ow) {
                const i64 divisor =
                    d.override_value > 0
                        ? d.override_value
                        : rows * count(ow, s.w, s.kw, s.sw, s.pw, d.count_include_pad);
                const T share = g[oh * s.ow + ow] / T(divisor);
                const i64 w0 = std::max<i64>(ow * s.sw - s.pw, 0);
                const i64 w1 = std::min(ow * s.sw - s.pw + s.kw, s.w);
                for (i64 ih = h0; ih < h1; ++ih)
                    for (i64 iw = w0; iw < w1; ++iw) dst[ih * s.w + iw] += share;
            }
        }
    });
}

template bool max_pool_backward<float>(const PoolShape&, const float*, const std::int64_t*, float*,
                                       int);
template bool max_pool_backward<double>(const PoolShape&, const double*, const std::int64_t*,
                                        double*, int);
template void avg_pool_backward<float>(const PoolShape&, const AvgDivisor&, const float*, float*,
                                       int);
template void avg_pool_backward<double>(const PoolShape&, const AvgDivisor&, const double*,
                                        double*, int);

}  // namespace fastconv
