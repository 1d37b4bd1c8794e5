// Gradients of pooling: scatter-adds into each input plane, runs of planes in
// parallel (planes_per_unit, as the forward kernels).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "direct.h"

namespace fastconv {

using i64 = std::int64_t;

namespace {

// body(plane) for every plane, in runs of planes on up to `threads` threads;
// make(), called once per thread, gives the scratch state passed along.
template <typename Make, typename Body>
void for_plane_runs(i64 planes, int threads, Make make, Body body) {
    const i64 per = planes_per_unit(planes, threads);
    team((planes + per - 1) / per, threads, [&](UnitQueue& q) {
        auto state = make();
        for (i64 unit; claim(q, unit);)
            for (i64 p = unit * per; p < std::min(planes, unit * per + per); ++p) body(p, state);
    });
}

}  // namespace

template <typename T>
bool max_pool_backward(const PoolShape& s, const T* grad_out, const std::int64_t* indices,
                       T* grad_input, int threads) {
    const i64 outs = s.oh * s.ow, plane = s.h * s.w;
    const int nt = threads_for(s.planes * (outs + plane), s.planes, threads);
    std::atomic<bool> stray{false};
    for_plane_runs(s.planes, nt, [] { return 0; }, [&](i64 p, int) {
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

// Per output row, its shares (grad / divisor) are spread along a row of a
// buffer, tap column by tap column (long strided loops); then each input row is
// written once, as the sum of the spread rows of the windows that cover it:
// KW scalar adds per output and vector adds per input row, instead of KH*KW
// scalar adds per output into a zeroed plane (pool_112_k3s2 ran 2x slower
// than Numba so).
template <typename T>
void avg_pool_backward(const PoolShape& s, const AvgDivisor& d, const T* grad_out, T* grad_input,
                       int threads) {
    const i64 outs = s.oh * s.ow, plane = s.h * s.w;
    const int nt = threads_for(s.planes * outs * s.kh * s.kw, s.planes, threads);
    auto count = [](i64 o, i64 size, i64 k, i64 stride, i64 pad, bool include_pad) {
        const i64 start = o * stride - pad, end = std::min(start + k, size + pad);
        return include_pad ? end - start : std::min(end, size) - std::max<i64>(start, 0);
    };
    std::vector<i64> cols(s.ow), lo(s.kw), hi(s.kw), rows(s.oh);
    for (i64 ow = 0; ow < s.ow; ++ow)
        cols[ow] = count(ow, s.w, s.kw, s.sw, s.pw, d.count_include_pad);
    for (i64 oh = 0; oh < s.oh; ++oh)
        rows[oh] = count(oh, s.h, s.kh, s.sh, s.ph, d.count_include_pad);
    for (i64 kw = 0; kw < s.kw; ++kw) {  // the outputs whose tap kw is inside the row
        const i64 off = kw - s.pw;
        lo[kw] = std::min(s.ow, off >= 0 ? 0 : (-off + s.sw - 1) / s.sw);
        hi[kw] = std::max(lo[kw], std::min(s.ow, s.w - off > 0 ? (s.w - off - 1) / s.sw + 1 : 0));
    }
    struct Rows {
        std::vector<T> spread, share;
    };
    const auto make = [&] { return Rows{std::vector<T>(s.oh * s.w), std::vector<T>(s.ow)}; };
    for_plane_runs(s.planes, nt, make, [&](i64 p, Rows& r) {
        const T* g = grad_out + p * outs;
        for (i64 oh = 0; oh < s.oh; ++oh) {
            for (i64 ow = 0; ow < s.ow; ++ow)
                r.share[ow] = g[oh * s.ow + ow] /
                              T(d.override_value > 0 ? d.override_value : rows[oh] * cols[ow]);
            T* spread = r.spread.data() + oh * s.w;
            std::fill(spread, spread + s.w, T(0));
            for (i64 kw = 0; kw < s.kw; ++kw) {
                T* at = spread + kw - s.pw;
                for (i64 ow = lo[kw]; ow < hi[kw]; ++ow) at[ow * s.sw] += r.share[ow];
            }
        }
        T* dst = grad_input + p * plane;
        for (i64 ih = 0; ih < s.h; ++ih) {
            // the windows oh*sh - ph <= ih < oh*sh - ph + kh, in order
            const i64 first = std::max<i64>(0, (ih + s.ph - s.kh + s.sh) / s.sh);
            const i64 last = std::min(s.oh - 1, (ih + s.ph) / s.sh);
            T* row = dst + ih * s.w;
            if (first > last) {
                std::fill(row, row + s.w, T(0));
                continue;
            }
            const T* a = r.spread.data() + first * s.w;
            for (i64 iw = 0; iw < s.w; ++iw) row[iw] = T(0) + a[iw];
            for (i64 oh = first + 1; oh <= last; ++oh) {
                const T* b = r.spread.data() + oh * s.w;
                for (i64 iw = 0; iw < s.w; ++iw) row[iw] += b[iw];
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
