// The direct kernels' code, included once per ISA path by direct_<isa>.cpp
// with FASTCONV_ISA_NS naming the path. Everything here lives in that
// namespace and calls no inline library code, so no function compiled for
// one path can stand in for another's at link time.

#include <cstdint>
#include <new>

#include "../scratch.h"
#include "direct.h"

// 32-byte vector values never cross a call boundary here (all internal and
// inlined), so the generic path's note about their ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastconv {
namespace FASTCONV_ISA_NS {

namespace {

using i64 = std::int64_t;

inline i64 min_(i64 a, i64 b) { return a < b ? a : b; }
inline i64 max_(i64 a, i64 b) { return a < b ? b : a; }
inline i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }  // a >= 0, b > 0

// Outputs [first, last) of a row whose taps 0..k-1 all fall inside [0, size).
struct Span {
    i64 first, last;
};

inline Span inside_span(i64 out, i64 size, i64 k, i64 stride, i64 pad, i64 dilation) {
    const i64 lim = size - 1 + pad - (k - 1) * dilation;  // o*stride <= lim
    i64 last = lim < 0 ? 0 : min_(lim / stride + 1, out);
    i64 first = min_(ceil_div(pad, stride), last);
    return {first, last};
}

// Work units: runs of whole planes when there are many (planes_per_unit), else
// planes x row blocks, enough row blocks that batch 1 is parallel too.
struct Units {
    i64 planes_per_unit, row_blocks, rows_per_block, count;
};

inline Units split_rows(i64 planes, i64 rows, int threads) {
    if (planes >= 4 * threads) {
        const i64 per = planes_per_unit(planes, threads);
        return {per, 1, rows, ceil_div(planes, per)};
    }
    i64 blocks = min_(ceil_div(4 * threads, planes), rows);
    const i64 per = ceil_div(rows, blocks);
    blocks = ceil_div(rows, per);
    return {1, blocks, per, planes * blocks};
}

// The planes [p0, p1) and output rows [r0, r1) of one unit.
struct UnitSpan {
    i64 p0, p1, r0, r1;
};

inline UnitSpan unit_span(const Units& u, i64 unit, i64 planes, i64 rows) {
    const i64 p0 = unit / u.row_blocks * u.planes_per_unit;
    const i64 r0 = unit % u.row_blocks * u.rows_per_block;
    return {p0, min_(p0 + u.planes_per_unit, planes), r0, min_(r0 + u.rows_per_block, rows)};
}

// Tap records for max pooling: the offset of the tap in the plane relative to
// the window's first position, in an integer as wide as T (so that the
// comparison and the selection vectorise together).
template <typename T> struct TapInt;
template <> struct TapInt<float> { using type = std::int32_t; };
template <> struct TapInt<double> { using type = std::int64_t; };

// SW: the stride along the row when known at compile time (strided loads then
// vectorise as loads and shuffles instead of gathers), 0 when not.
// 32-byte vectors through GCC/Clang vector extensions: AVX registers on the
// avx2 path, pairs of SSE registers on the generic one.
template <typename T>
struct Lanes {
    static constexpr int n = 32 / sizeof(T);
    typedef T V __attribute__((vector_size(32)));
    typedef typename TapInt<T>::type I __attribute__((vector_size(32)));
};

template <typename V, typename T>
inline V load(const T* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

template <typename V, typename T>
inline void store(T* p, V v) {
    __builtin_memcpy(p, &v, sizeof v);
}

// Lanes o, o+1, ... of a row read with stride SW (1, 2, 4, or 0: s.sw at run time).
template <typename T, int SW>
inline typename Lanes<T>::V load_strided(const T* src, i64 sw) {
    using V = typename Lanes<T>::V;
    if constexpr (SW == 1) {
        return load<V>(src);
    } else if constexpr (SW == 2) {
        // elements 0, 2, ..., 2n-2: the second load ends on the last one, so
        // nothing past it is read
        const V lo = load<V>(src), hi = load<V>(src + Lanes<T>::n - 1);
        if constexpr (Lanes<T>::n == 8) {
            return __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 9, 11, 13, 15);
        } else {
            return __builtin_shufflevector(lo, hi, 0, 2, 5, 7);
        }
    } else if constexpr (SW == 4 && Lanes<T>::n == 8) {
        // elements 0, 4, ..., 28: the fourth load ends on the last one
        const V a = load<V>(src), b = load<V>(src + 8), c = load<V>(src + 16),
                d = load<V>(src + 21);
        const V lo = __builtin_shufflevector(a, b, 0, 4, 8, 12, 0, 4, 8, 12);
        const V hi = __builtin_shufflevector(c, d, 0, 4, 11, 15, 0, 4, 11, 15);
        return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 8, 9, 10, 11);
    } else {
        V v;
        for (int l = 0; l < Lanes<T>::n; ++l) v[l] = src[l * sw];
        return v;
    }
}

// SW: the stride along the row when known at compile time, 0 when not.
// Inside the row's interior, Lanes<T>::n outputs at a time keep their maximum
// and its tap in registers across the whole window; the rest go tap by tap.
// Without indices: the maxima of the window's rows first (contiguous vectors,
// no shuffles), then of KW neighbours along that row of maxima. Any NaN wins.
template <typename T, int SW>
void max_pool_row_separable(const PoolShape& s, const T* __restrict plane, i64 ih0, i64 kh0,
                            i64 kh1, T* __restrict rowmax, T* __restrict out) {
    using V = typename Lanes<T>::V;
    constexpr int L = Lanes<T>::n;
    const i64 sw = SW ? SW : s.sw;
    const T* first = plane + (ih0 + kh0 * s.dh) * s.w;
    if (s.w >= L) {
        for (i64 next = 0; next < s.w; next += L) {
            const i64 i = next + L <= s.w ? next : s.w - L;  // the last may overlap
            V b = load<V>(first + i);
            for (i64 kh = kh0 + 1; kh < kh1; ++kh) {
                const V v = load<V>(plane + (ih0 + kh * s.dh) * s.w + i);
                b = ((v > b) | (v != v)) ? v : b;
            }
            store(rowmax + i, b);
        }
    } else {
        for (i64 i = 0; i < s.w; ++i) {
            T b = first[i];
            for (i64 kh = kh0 + 1; kh < kh1; ++kh) {
                const T v = plane[(ih0 + kh * s.dh) * s.w + i];
                if (v > b || v != v) b = v;
            }
            rowmax[i] = b;
        }
    }
    const Span in = inside_span(s.ow, s.w, s.kw, s.sw, s.pw, 1);
    const i64 vec_end = in.last - in.first >= L ? in.last : in.first;
    for (i64 next = in.first; next < vec_end; next += L) {
        const i64 o = next + L <= vec_end ? next : vec_end - L;
        const T* at = rowmax + o * sw - s.pw;
        V b = load_strided<T, SW>(at, sw);
        for (i64 kw = 1; kw < s.kw; ++kw) {
            const V v = load_strided<T, SW>(at + kw, sw);
            b = ((v > b) | (v != v)) ? v : b;
        }
        store(out + o, b);
    }
    for (i64 o = 0; o < s.ow; ++o) {  // the other columns, tap by tap
        if (o == in.first && vec_end > in.first) o = vec_end;
        if (o >= s.ow) break;
        bool seen = false;
        T b = T(0);
        for (i64 kw = 0; kw < s.kw; ++kw) {
            const i64 iw = o * sw - s.pw + kw;
            if (iw < 0 || iw >= s.w) continue;
            const T v = rowmax[iw];
            if (!seen || v > b || v != v) b = v;
            seen = true;
        }
        out[o] = b;
    }
}

template <typename T, int SW>
void max_pool_row(const PoolShape& s, const T* __restrict plane, i64 oh, T* __restrict best,
                  typename TapInt<T>::type* __restrict tap, T* __restrict rowmax,
                  T* __restrict out, std::int64_t* __restrict indices) {
    using I = typename TapInt<T>::type;
    using V = typename Lanes<T>::V;
    using IV = typename Lanes<T>::I;
    constexpr int L = Lanes<T>::n;
    const i64 ih0 = oh * s.sh - s.ph;
    const Span in = inside_span(s.ow, s.w, s.kw, s.sw, s.pw, s.dw);
    const i64 sw = SW ? SW : s.sw;
    // Rows of the window inside the input: the same for every column.
    i64 kh0 = 0, kh1 = s.kh;
    while (kh0 < s.kh && ih0 + kh0 * s.dh < 0) ++kh0;
    while (kh1 > kh0 && ih0 + (kh1 - 1) * s.dh >= s.h) --kh1;
    if (!indices && s.dw == 1) {
        max_pool_row_separable<T, SW>(s, plane, ih0, kh0, kh1, rowmax, out);
        return;
    }
    // Whole vectors over the interior; the last one may overlap its neighbour
    // (those outputs are simply computed twice, to the same values).
    const i64 vec_end = in.last - in.first >= L ? in.last : in.first;
    for (i64 next = in.first; next < vec_end; next += L) {
        const i64 o = next + L <= vec_end ? next : vec_end - L;
        const T* corner = plane + (ih0 + kh0 * s.dh) * s.w + o * sw - s.pw;
        V b = load_strided<T, SW>(corner, sw);
        IV t = IV{} + I(kh0 * s.dh * s.w);
        for (i64 kh = kh0; kh < kh1; ++kh) {
            const T* row = plane + (ih0 + kh * s.dh) * s.w + o * sw - s.pw;
            for (i64 kw = (kh == kh0 ? 1 : 0); kw < s.kw; ++kw) {
                const V v = load_strided<T, SW>(row + kw * s.dw, sw);
                const IV take = (v > b) | ((v != v) & (b == b));
                b = take ? v : b;
                t = take ? (IV{} + I(kh * s.dh * s.w + kw * s.dw)) : t;
            }
        }
        store(best + o, b);
        store(tap + o, t);
    }
    // The other columns: the same rule, tap by tap.
    for (i64 o = 0; o < s.ow; ++o) {
        if (o == in.first && vec_end > in.first) o = vec_end;
        if (o >= s.ow) break;
        bool seen = false;
        for (i64 kh = kh0; kh < kh1; ++kh) {
            const i64 ih = ih0 + kh * s.dh;
            for (i64 kw = 0; kw < s.kw; ++kw) {
                const i64 iw = o * sw - s.pw + kw * s.dw;
                if (iw < 0 || iw >= s.w) continue;
                const T v = plane[ih * s.w + iw];
                if (!seen || v > best[o] || (v != v && best[o] == best[o])) {
                    best[o] = v;
                    tap[o] = I(kh * s.dh * s.w + kw * s.dw);
                }
                seen = true;
            }
        }
    }
    for (i64 o = 0; o < s.ow; ++o) out[o] = best[o];
    if (indices) {
        const i64 origin = ih0 * s.w - s.pw;
        for (i64 o = 0; o < s.ow; ++o) indices[o] = origin + o * sw + i64(tap[o]);
    }
}

// max(a, b) as the pooling kernels take it: b when it is larger or NaN.
template <typename V>
inline V max_or_nan(V a, V b) {
    return ((b > a) | (b != b)) ? b : a;
}

// 2x2 windows at stride 2, every one inside the plane.
inline bool plain_2x2(const PoolShape& s) {
    return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0 &&
           s.dh == 1 && s.dw == 1 && 2 * s.oh <= s.h && 2 * s.ow <= s.w;
}

// Even and odd lanes of two vectors a, b, regrouped within each 128-bit half
// (a shuffle each): for float even = a0 a2 b0 b2 | a4 a6 b4 b6, odd = a1 a3 b1
// b3 | a5 a7 b5 b7. Lanewise results of such vectors go back to the order
// a0 a2 a4 a6 b0 b2 b4 b6 by in_order() (a permutation across the halves, which
// a whole deinterleave would have needed for each vector).
template <typename V>
inline void deinterleave_in_halves(V a, V b, V& even, V& odd) {
    if constexpr (sizeof(a) / sizeof(a[0]) == 8) {
        even = __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14);
        odd = __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
    } else {
        even = __builtin_shufflevector(a, b, 0, 4, 2, 6);
        odd = __builtin_shufflevector(a, b, 1, 5, 3, 7);
    }
}

template <typename V>
inline V in_order(V v) {
    if constexpr (sizeof(v) / sizeof(v[0]) == 8)
        return __builtin_shufflevector(v, v, 0, 1, 4, 5, 2, 3, 6, 7);
    else
        return __builtin_shufflevector(v, v, 0, 2, 1, 3);
}

// The vector starts over `count` outputs: 0, L, 2L, ... and, for a last part
// vector, one ending at `count` (it recomputes a few outputs); fewer than a
// vector go one by one. Returns the outputs done.
template <typename Body>
inline i64 vector_starts(i64 count, int lanes, Body body) {
    if (count < lanes) return 0;
    for (i64 o = 0; o < count; o += lanes) body(min_(o, count - lanes));
    return count;
}

// Output rows [r0, r1) of one plane, 2x2 windows at stride 2 inside it,
// without indices: per vector of outputs, the maxima of the two input rows,
// then of their even and odd lanes. (Row-pair maxima of many rows buffered
// first, then their lanes in one loop, as Numba does, ran pool_56_k2s2
// 1.4x slower: a store and load more per input and a permutation per vector.)
template <typename T>
void max_pool_rows_2x2(const PoolShape& s, const T* __restrict plane, i64 r0, i64 r1,
                       T* __restrict out) {
    using V = typename Lanes<T>::V;
    constexpr int L = Lanes<T>::n;
    const auto max2 = [](T a, T b) { return b > a || b != b ? b : a; };
    for (i64 oh = r0; oh < r1; ++oh) {
        const T* a = plane + 2 * oh * s.w;
        const T* b = a + s.w;
        T* dst = out + oh * s.ow;
        const i64 done = vector_starts(s.ow, L, [&](i64 o) {
            V even, odd;
            deinterleave_in_halves(max_or_nan(load<V>(a + 2 * o), load<V>(b + 2 * o)),
                                   max_or_nan(load<V>(a + 2 * o + L), load<V>(b + 2 * o + L)),
                                   even, odd);
            store(dst + o, in_order(max_or_nan(even, odd)));
        });
        for (i64 o = done; o < s.ow; ++o)
            dst[o] = max2(max2(a[2 * o], b[2 * o]), max2(a[2 * o + 1], b[2 * o + 1]));
    }
}

template <typename T>
void max_pool(const PoolShape& s, const T* x, T* out, std::int64_t* indices, int threads) {
    using I = typename TapInt<T>::type;
    const Units u = split_rows(s.planes, s.oh, threads);
    const int nt = threads_for(s.planes * s.oh * s.ow * s.kh * s.kw, u.count, threads);
    team(u.count, nt, [&](UnitQueue& q) {
        T* best = new T[s.ow];
        I* tap = new I[s.ow];
        T* rowmax = new T[s.w];
        const bool pairs = !indices && plain_2x2(s);
        for (i64 unit; claim(q, unit);) {
            const UnitSpan span = unit_span(u, unit, s.planes, s.oh);
            for (i64 p = span.p0; p < span.p1; ++p) {
                const T* plane = x + p * s.h * s.w;
                if (pairs) {
                    max_pool_rows_2x2<T>(s, plane, span.r0, span.r1, out + p * s.oh * s.ow);
                    continue;
                }
                for (i64 oh = span.r0; oh < span.r1; ++oh) {
                    const i64 at = (p * s.oh + oh) * s.ow;
                    std::int64_t* idx = indices ? indices + at : nullptr;
                    if (s.sw == 1)
                        max_pool_row<T, 1>(s, plane, oh, best, tap, rowmax, out + at, idx);
                    else if (s.sw == 2)
                        max_pool_row<T, 2>(s, plane, oh, best, tap, rowmax, out + at, idx);
                    else
                        max_pool_row<T, 0>(s, plane, oh, best, tap, rowmax, out + at, idx);
                }
            }
        }
        delete[] best;
        delete[] tap;
        delete[] rowmax;
    });
}

// Window size along one axis for output o, as PyTorch counts it.
inline i64 avg_count(i64 o, i64 size, i64 k, i64 stride, i64 pad, bool include_pad) {
    const i64 start = o * stride - pad;
    const i64 end = min_(start + k, size + pad);
    if (include_pad) return end - start;
    return min_(end, size) - (start > 0 ? start : 0);
}

template <typename T, int SW>
void avg_pool_row(const PoolShape& s, const T* __restrict plane, i64 oh, T* __restrict sum) {
    const Span in = inside_span(s.ow, s.w, s.kw, s.sw, s.pw, s.dw);
    const i64 sw = SW ? SW : s.sw;
    const i64 ih0 = oh * s.sh - s.ph;
    for (i64 o = 0; o < s.ow; ++o) sum[o] = T(0);
    for (i64 kh = 0; kh < s.kh; ++kh) {
        const i64 ih = ih0 + kh * s.dh;
        if (ih < 0 || ih >= s.h) continue;
        for (i64 kw = 0; kw < s.kw; ++kw) {
            const T* __restrict src = plane + ih * s.w - s.pw + kw * s.dw;
            for (i64 o = in.first; o < in.last; ++o) sum[o] += src[o * sw];
            for (i64 o = 0; o < s.ow; ++o) {  // windows in the padding
                if (o == in.first && in.last > in.first) o = in.last;
                if (o >= s.ow) break;
                const i64 iw = o * sw - s.pw + kw * s.dw;
                if (iw >= 0 && iw < s.w) sum[o] += plane[ih * s.w + iw];
            }
        }
    }
}

// avg_pool_row for 2x2 windows at stride 2 inside the plane: the same sums in
// the same order (0, then row 0's two taps, then row 1's), a vector of outputs
// at a time.
template <typename T>
void avg_pool_row_2x2(const PoolShape& s, const T* __restrict plane, i64 oh, T* __restrict sum) {
    using V = typename Lanes<T>::V;
    constexpr int L = Lanes<T>::n;
    const T* r0 = plane + 2 * oh * s.w;
    const T* r1 = r0 + s.w;
    const i64 done = vector_starts(s.ow, L, [&](i64 o) {
        V e0, o0, e1, o1;
        deinterleave_in_halves(load<V>(r0 + 2 * o), load<V>(r0 + 2 * o + L), e0, o0);
        deinterleave_in_halves(load<V>(r1 + 2 * o), load<V>(r1 + 2 * o + L), e1, o1);
        store(sum + o, in_order(V{} + e0 + o0 + e1 + o1));
    });
    for (i64 o = done; o < s.ow; ++o)
        sum[o] = T(0) + r0[2 * o] + r0[2 * o + 1] + r1[2 * o] + r1[2 * o + 1];
}

template <typename T>
void avg_pool(const PoolShape& s, const AvgDivisor& d, const T* x, T* out, int threads) {
    const Units u = split_rows(s.planes, s.oh, threads);
    const int nt = threads_for(s.planes * s.oh * s.ow * s.kh * s.kw, u.count, threads);
    team(u.count, nt, [&](UnitQueue& q) {
        T* sum = new T[s.ow];
        T* cols = new T[s.ow];  // the divisor's column factor
        for (i64 o = 0; o < s.ow; ++o)
            cols[o] = d.override_value > 0
                          ? T(1)
                          : T(avg_count(o, s.w, s.kw, s.sw, s.pw, d.count_include_pad));
        for (i64 unit; claim(q, unit);) {
            const UnitSpan span = unit_span(u, unit, s.planes, s.oh);
            for (i64 p = span.p0; p < span.p1; ++p) {
                const T* plane = x + p * s.h * s.w;
                for (i64 oh = span.r0; oh < span.r1; ++oh) {
                    if (plain_2x2(s))
                        avg_pool_row_2x2<T>(s, plane, oh, sum);
                    else if (s.sw == 1)
                        avg_pool_row<T, 1>(s, plane, oh, sum);
                    else if (s.sw == 2)
                        avg_pool_row<T, 2>(s, plane, oh, sum);
                    else
                        avg_pool_row<T, 0>(s, plane, oh, sum);
                    const T rows =
                        d.override_value > 0
                            ? T(d.override_value)
                            : T(avg_count(oh, s.h, s.kh, s.sh, s.ph, d.count_include_pad));
                    T* dst = out + (p * s.oh + oh) * s.ow;
                    for (i64 o = 0; o < s.ow; ++o) dst[o] = sum[o] / (rows * cols[o]);
                }
            }
        }
        delete[] sum;
        delete[] cols;
    });
}

// acc[o] <- sum over (c, kh, kw) of weight * input, for output row oh of one
// filter. Inside the row's interior, Lanes<T>::n outputs at a time sum the
// whole window in a register; the rest go tap by tap, in the same order.
// K > 0: a depthwise filter (one channel), K x K, no dilation: its taps stay
// broadcast in registers for the whole row (same sums, same order).
template <typename T, int SW, int K = 0>
void conv_row(const ConvShape& s, const T* __restrict image, const T* __restrict filter, i64 oh,
              T* __restrict acc) {
    using V = typename Lanes<T>::V;
    constexpr int L = Lanes<T>::n;
    const i64 cg = s.c / s.groups;
    const Span in = inside_span(s.ow, s.w, s.kw, s.sw, s.pad_left, s.dw);
    const i64 sw = SW ? SW : s.sw;
    const i64 ih0 = oh * s.sh - s.pad_top;
    // Rows of the window inside the input: the same for every column.
    i64 kh0 = 0, kh1 = s.kh;
    while (kh0 < s.kh && ih0 + kh0 * s.dh < 0) ++kh0;
    while (kh1 > kh0 && ih0 + (kh1 - 1) * s.dh >= s.h) --kh1;
    const i64 vec_end = in.last - in.first >= L ? in.last : in.first;
    if constexpr (K > 0) {
        V taps[K][K];
        for (int kh = 0; kh < K; ++kh)
            for (int kw = 0; kw < K; ++kw) taps[kh][kw] = V{} + filter[kh * K + kw];
        const T* rows = image + ih0 * s.w - s.pad_left;
        for (i64 next = in.first; next < vec_end; next += L) {
            const i64 o = next + L <= vec_end ? next : vec_end - L;  // the last may overlap
            V sum = V{};
            for (i64 kh = kh0; kh < kh1; ++kh) {
                const T* row = rows + kh * s.w + o * sw;
                for (int kw = 0; kw < K; ++kw)
                    sum += taps[kh][kw] * load_strided<T, SW>(row + kw, sw);
            }
            store(acc + o, sum);
        }
    }
    for (i64 next = in.first; K == 0 && next < vec_end; next += L) {
        const i64 o = next + L <= vec_end ? next : vec_end - L;  // the last may overlap
        V sum = V{};
        for (i64 c = 0; c < cg; ++c) {
            for (i64 kh = kh0; kh < kh1; ++kh) {
                const T* row = image + (c * s.h + ih0 + kh * s.dh) * s.w - s.pad_left + o * sw;
                const T* taps = filter + (c * s.kh + kh) * s.kw;
                for (i64 kw = 0; kw < s.kw; ++kw)
                    sum += taps[kw] * load_strided<T, SW>(row + kw * s.dw, sw);
            }
        }
        store(acc + o, sum);
    }
    for (i64 o = 0; o < s.ow; ++o) {  // the other columns, tap by tap
        if (o == in.first && vec_end > in.first) o = vec_end;
        if (o >= s.ow) break;
        T sum = T(0);
        for (i64 c = 0; c < cg; ++c) {
            for (i64 kh = kh0; kh < kh1; ++kh) {
                const T* row = image + (c * s.h + ih0 + kh * s.dh) * s.w;
                const T* taps = filter + (c * s.kh + kh) * s.kw;
                for (i64 kw = 0; kw < s.kw; ++kw) {
                    const i64 iw = o * sw - s.pad_left + kw * s.dw;
                    if (iw >= 0 && iw < s.w) sum += taps[kw] * row[iw];
                }
            }
        }
        acc[o] = sum;
    }
}

template <typename T>
void conv(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out, bool relu,
          int threads) {
    const i64 cg = s.c / s.groups, kg = s.k / s.groups;
    const Units u = split_rows(s.n * s.k, s.oh, threads);
    const int nt = threads_for(s.n * s.k * s.oh * s.ow * cg * s.kh * s.kw, u.count, threads);
    // depthwise 3x3 and 5x5 without dilation: conv_row with the window fixed
    const int square = cg == 1 && s.kh == s.kw && s.dh == 1 && s.dw == 1 &&
                       (s.kh == 3 || s.kh == 5) ? int(s.kh) : 0;
    team(u.count, nt, [&](UnitQueue& q) {
        T* acc = new T[s.ow];
        for (i64 unit; claim(q, unit);) {
            const UnitSpan span = unit_span(u, unit, s.n * s.k, s.oh);
            for (i64 plane = span.p0; plane < span.p1; ++plane) {  // n * K + k
                const i64 n = plane / s.k, k = plane % s.k, g = k / kg;
                const T* image = x + (n * s.c + g * cg) * s.h * s.w;
                const T* filter = weight + k * cg * s.kh * s.kw;
                for (i64 oh = span.r0; oh < span.r1; ++oh) {
                    if (square == 3 && s.sw == 1)
                        conv_row<T, 1, 3>(s, image, filter, oh, acc);
                    else if (square == 3 && s.sw == 2)
                        conv_row<T, 2, 3>(s, image, filter, oh, acc);
                    else if (square == 5 && s.sw == 1)
                        conv_row<T, 1, 5>(s, image, filter, oh, acc);
                    else if (square == 5 && s.sw == 2)
                        conv_row<T, 2, 5>(s, image, filter, oh, acc);
                    else if (s.sw == 1)
                        conv_row<T, 1>(s, image, filter, oh, acc);
                    else if (s.sw == 2)
                        conv_row<T, 2>(s, image, filter, oh, acc);
                    else
                        conv_row<T, 0>(s, image, filter, oh, acc);
                    const T b = bias ? bias[k] : T(0);
                    T* dst = out + (plane * s.oh + oh) * s.ow;
                    if (relu) {
                        for (i64 o = 0; o < s.ow; ++o) {
                            const T v = acc[o] + b;
                            dst[o] = v < T(0) ? T(0) : v;  // keeps NaN
                        }
                    } else {
                        for (i64 o = 0; o < s.ow; ++o) dst[o] = acc[o] + b;
                    }
                }
            }
        }
        delete[] acc;
    });
}

}  // namespace

// The sum of a vector's lanes, halves first (three shuffles and adds for
// eight lanes instead of a chain of seven).
template <typename V>
inline auto lane_sum(V v) {
    if constexpr (sizeof(v) / sizeof(v[0]) == 8) {
        const auto h =
            __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
        const auto q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
        return q[0] + q[1];
    } else {
        const auto h = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
        return h[0] + h[1];
    }
}

// Where conv_weight_grad's row pairs lie: images, then output rows within one.
struct RowWalk {
    i64 images, rows;          // rows per image
    i64 g_image, g_row;        // steps between grad rows
    i64 x_image, x_row;        // steps between input rows
};

/* One register tile of conv_weight_grad: sums[a][q] <- sum over the row pairs of
   the grad row (from g[a]) times the input row (from xs) shifted by tap[q],
   vectorised along the row: `full` whole vectors, then one masked by `tail`. */
template <typename T, int KT, int QT>
void weight_grad_tile(const T* const* g, const T* xs, const RowWalk& w, const i64* tap,
                      i64 full, typename Lanes<T>::I tail, bool has_tail, T (*sums)[QT]) {
    using V = typename Lanes<T>::V;
    using I = typename Lanes<T>::I;
    constexpr int L = Lanes<T>::n;
    V acc[KT][QT] = {};
    for (i64 n = 0; n < w.images; ++n) {
        const T* xr = xs + n * w.x_image;
        const i64 g0 = n * w.g_image;
        for (i64 r = 0; r < w.rows; ++r, xr += w.x_row) {
            const i64 gr = g0 + r * w.g_row;
            for (i64 v = 0; v < full; ++v) {
                V xv[QT];
                for (int q = 0; q < QT; ++q) xv[q] = load<V>(xr + tap[q] + v * L);
                for (int a = 0; a < KT; ++a) {
                    const V gv = load<V>(g[a] + gr + v * L);
                    for (int q = 0; q < QT; ++q) acc[a][q] += gv * xv[q];
                }
            }
            if (has_tail) {  // lanes past the row are zero in both (an input there may be inf)
                V xv[QT];
                for (int q = 0; q < QT; ++q)
                    xv[q] = V(I(load<V>(xr + tap[q] + full * L)) & tail);
                for (int a = 0; a < KT; ++a) {
                    const V gv = load<V>(g[a] + gr + full * L);
                    for (int q = 0; q < QT; ++q) acc[a][q] += gv * xv[q];
                }
            }
        }
    }
    for (int a = 0; a < KT; ++a)
        for (int q = 0; q < QT; ++q) sums[a][q] = lane_sum(acc[a][q]);
}

/* See DirectKernels::conv_weight_grad. The images' input is copied zero-padded
   (so every tap reads inside it) and grad_out with rows rounded up to whole
   vectors (zeros past the row), both only for the filters' groups; each
   (c, kh) then takes tiles of KT filters x QT taps kw, a tile's remainder
   repeating its last filter or tap. A filter's sums do not depend on its tile. */
template <typename T, int KT, int QT>
void conv_weight_grad_tiles(const ConvShape& s, const T* grad_out, const T* x, i64 n0, i64 n1,
                            i64 f0, i64 f1, T* grad_weight, bool accumulate) {
    using I = typename Lanes<T>::I;
    constexpr int L = Lanes<T>::n;
    const i64 cg = s.c / s.groups, kg = s.k / s.groups, images = n1 - n0;
    const i64 full = s.ow / L, has_tail = s.ow % L != 0, owv = (full + has_tail) * L;
    const i64 hp = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1, wp = owv + (s.kw - 1) * s.dw;
    const i64 c0 = f0 / kg * cg, c1 = (f1 - 1) / kg * cg + cg;  // the groups' channels
    T* xp = static_cast<T*>(scratch_bytes(ScratchSlot::padded_input,
                                          sizeof(T) * images * s.c * hp * wp));
    T* gp = static_cast<T*>(scratch_bytes(ScratchSlot::padded_grad,
                                          sizeof(T) * images * s.k * s.oh * owv));
    for (i64 n = 0; n < images; ++n) {
        for (i64 c = c0; c < c1; ++c) {
            const i64 plane = n * s.c + c;
            const T* src = x + (n0 * s.c + plane) * s.h * s.w;
            for (i64 r = 0; r < hp; ++r) {
                T* dst = xp + (plane * hp + r) * wp;
                const i64 ih = r - s.pad_top;
                for (i64 col = 0; col < wp; ++col) {
                    const i64 iw = col - s.pad_left;
                    dst[col] =
                        ih >= 0 && ih < s.h && iw >= 0 && iw < s.w ? src[ih * s.w + iw] : T(0);
                }
            }
        }
        for (i64 row = (n * s.k + f0) * s.oh; row < (n * s.k + f1) * s.oh; ++row) {
            const T* src = grad_out + n0 * s.k * s.oh * s.ow + row * s.ow;
            T* dst = gp + row * owv;
            for (i64 o = 0; o < s.ow; ++o) dst[o] = src[o];
            for (i64 o = s.ow; o < owv; ++o) dst[o] = T(0);
        }
    }
    I tail;
    for (int l = 0; l < L; ++l) tail[l] = l < s.ow - full * L ? -1 : 0;
    const RowWalk walk{images, s.oh, s.k * s.oh * owv, owv, s.c * hp * wp, s.sh * wp};
    T sums[KT][QT];
    // filters outermost: their grad rows stay in cache while the input streams
    for (i64 f = f0; f < f1;) {
        const i64 grp = f / kg, k0 = f % kg, tile = min_(KT, min_(kg - k0, f1 - f));
        const T* g[KT];
        for (int a = 0; a < KT; ++a) g[a] = gp + (f + min_(a, tile - 1)) * s.oh * owv;
        for (i64 c = 0; c < cg; ++c) {
            for (i64 kh = 0; kh < s.kh; ++kh) {
                const T* xs = xp + ((grp * cg + c) * hp + kh * s.dh) * wp;
                for (i64 kw0 = 0; kw0 < s.kw; kw0 += QT) {
                    i64 tap[QT];
                    for (int q = 0; q < QT; ++q) tap[q] = min_(kw0 + q, s.kw - 1) * s.dw;
                    weight_grad_tile<T, KT, QT>(g, xs, walk, tap, full, tail, has_tail, sums);
                    for (int a = 0; a < tile; ++a) {
                        for (int q = 0; q < QT && kw0 + q < s.kw; ++q) {
                            T& w = grad_weight[(((f + a) * cg + c) * s.kh + kh) * s.kw + kw0 + q];
                            w = accumulate ? w + sums[a][q] : sums[a][q];
                        }
                    }
                }
            }
        }
        f += tile;
    }
}

template <typename T>
void conv_weight_grad(const ConvShape& s, const T* grad_out, const T* x, i64 n0, i64 n1, i64 f0,
                      i64 f1, T* grad_weight, bool accumulate) {
    // 4 filters x 3 taps fill 12 of the 16 vector registers (x kept, g streamed);
    // depthwise layers have one filter per group
    if (s.k / s.groups < 4)
        conv_weight_grad_tiles<T, 1, 3>(s, grad_out, x, n0, n1, f0, f1, grad_weight, accumulate);
    else if (s.kw == 1)
        conv_weight_grad_tiles<T, 4, 1>(s, grad_out, x, n0, n1, f0, f1, grad_weight, accumulate);
    else if (s.kw % 2 == 0 && s.kw < 6)
        conv_weight_grad_tiles<T, 4, 2>(s, grad_out, x, n0, n1, f0, f1, grad_weight, accumulate);
    else
        conv_weight_grad_tiles<T, 4, 3>(s, grad_out, x, n0, n1, f0, f1, grad_weight, accumulate);
}

/* See DirectKernels::pack_input. Row by row of B, so that the reads walk along
   input rows; NR is a compile-time constant so that the common case (one run
   wholly inside the image) is a few whole vectors: loads at stride 1,
   loads and shuffles at strides 2 and 4 (float) (nothing past the last element
   used is read). */
template <typename T, int NR>
void pack_input_nr(const ConvShape& s, const T* x, i64 p0, i64 kc, const PanelRunsView& pr,
                   T* bp) {
    using V = typename Lanes<T>::V;
    constexpr int L = Lanes<T>::n;
    constexpr bool whole_vectors = NR % L == 0;
    i64 c = p0 / (s.kh * s.kw), kh = p0 / s.kw % s.kh, kw = p0 % s.kw;
    for (i64 p = 0; p < kc; ++p) {
        for (i64 q = 0; q < pr.panels; ++q) {
            if (pr.in_place[2 * q] >= 0) continue;  // read in place
            T* dst = bp + (q * kc + p) * NR;
            const PanelRun* run = pr.runs + pr.start[q];
            const PanelRun* end = pr.runs + pr.start[q + 1];
            const i64 first_iw = run->iw0 + kw * s.dw;
            const i64 first_ih = run->ih0 + kh * s.dh;
            if (end - run == 1 && run->len == NR && first_ih >= 0 && first_ih < s.h &&
                first_iw >= 0 && first_iw + (NR - 1) * s.sw < s.w) {
                const T* src = x + run->image + (c * s.h + first_ih) * s.w + first_iw;
                if (whole_vectors && s.sw == 1) {
                    for (int t = 0; t < NR; t += L) store(dst + t, load<V>(src + t));
                } else if (whole_vectors && s.sw == 2) {
                    for (int t = 0; t < NR; t += L)
                        store(dst + t, load_strided<T, 2>(src + 2 * t, 2));
                } else if (whole_vectors && s.sw == 4 && L == 8) {
                    for (int t = 0; t < NR; t += L)
                        store(dst + t, load_strided<T, 4>(src + 4 * t, 4));
                } else {
                    for (int t = 0; t < NR; ++t) dst[t] = src[t * s.sw];
                }
                continue;
            }
            for (int t = 0; t < NR; ++t) dst[t] = T(0);
            for (; run != end; ++run) {
                const i64 ih = run->ih0 + kh * s.dh;
                if (ih < 0 || ih >= s.h) continue;
                const T* row = x + run->image + (c * s.h + ih) * s.w;
                const i64 iw = run->iw0 + kw * s.dw;  // input column of the run's first pixel
                // pixels t with 0 <= iw + t*sw < w
                const i64 lo = iw >= 0 ? 0 : ceil_div(-iw, s.sw);
                const i64 hi = iw + (run->len - 1) * s.sw < s.w ? run->len
                               : iw < s.w                        ? ceil_div(s.w - iw, s.sw)
                                                                 : 0;
                T* d = dst + run->first;
                if (s.sw == 1 && hi - lo >= L) {  // whole vectors, the last one overlapping
                    for (i64 t = lo; t + L < hi; t += L) store(d + t, load<V>(row + iw + t));
                    store(d + hi - L, load<V>(row + iw + hi - L));
                    continue;
                }
                for (i64 t = lo; t < hi; ++t) d[t] = row[iw + t * s.sw];
            }
        }
        if (++kw == s.kw) {
            kw = 0;
            if (++kh == s.kh) kh = 0, ++c;
        }
    }
}

template <typename T>
void pack_input(const ConvShape& s, const T* x, i64 p0, i64 kc, int nr, const PanelRunsView& pr,
                T* bp) {
    switch (nr) {
        case 4: return pack_input_nr<T, 4>(s, x, p0, kc, pr, bp);
        case 8: return pack_input_nr<T, 8>(s, x, p0, kc, pr, bp);
        case 16: return pack_input_nr<T, 16>(s, x, p0, kc, pr, bp);
        default: __builtin_trap();  // no micro-kernel has another width
    }
}

template <typename T>
DirectKernels<T> direct_kernels() {
    return {&max_pool<T>, &avg_pool<T>, &conv<T>, &conv_weight_grad<T>, &pack_input<T>,
            FASTCONV_ISA_NAME};
}

template DirectKernels<float> direct_kernels<float>();
template DirectKernels<double> direct_kernels<double>();

}  // namespace FASTCONV_ISA_NS
}  // namespace fastconv
