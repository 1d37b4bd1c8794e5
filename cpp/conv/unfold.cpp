#include "unfold.h"

#include <algorithm>
#include <vector>

#include "../direct/direct.h"

namespace fastconv {

namespace {

using i64 = std::int64_t;

// Outputs o in [lo, hi) of [0, out) whose input index o*stride + offset lies in [0, size).
struct Range {
    i64 lo, hi;
};

Range valid(i64 out, i64 size, i64 stride, i64 offset) {
    const i64 lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    const i64 lim = size - 1 - offset;  // o*stride <= lim
    const i64 hi = lim < 0 ? 0 : std::min(lim / stride + 1, out);
    return {std::min(lo, hi), hi};
}

i64 taps(const ConvShape& s) { return s.kh * s.kw; }

// dst[i * dst_stride] += src[i * src_stride] for i < count. Out of line and
// restrict: inlined into the folds' loops, GCC kept the source pointer on the
// stack, a store and reload per element (5x slower).
template <typename T>
__attribute__((noinline)) void add_strided(T* __restrict dst, i64 dst_stride,
                                           const T* __restrict src, i64 src_stride, i64 count) {
    if (dst_stride == 1 && src_stride == 1) {
        for (i64 i = 0; i < count; ++i) dst[i] += src[i];
    } else if (src_stride == 1) {
        for (i64 i = 0; i < count; ++i) dst[i * dst_stride] += src[i];
    } else {
        for (i64 i = 0; i < count; ++i) dst[i * dst_stride] += src[i * src_stride];
    }
}

}  // namespace

// im2col's rows are C*KH*KW long. Two orders of writing them, per output row
// (n, oh), each the faster one on its layers (whole output rows column by
// column, as before both, ran at 2-3 GB/s on alexnet_c1's 35 MB: 55 lines a
// column, out of L1):
//  - taps_by_patch: patch by patch, a block of channels at a time (at most 64
//    input rows, which stay in L1 from patch to patch), each patch's part
//    written front to back in runs of KW taps. For KW >= 4: alexnet_c1 3.5 ms
//    instead of 10 ms (kernel alone), lenet_c1 1.0x-1.5x faster.
//  - taps_by_column: in tiles of 16 patches filled column by column (a column
//    writes 16 lines and reads one input row in order; the tile stays in L1
//    up to C*KH*KW = 512 or so). For short runs of taps: resnet_3x3_56
//    14-15 ms instead of 14-17, depthwise_3x3 30-32 instead of 40-42.
template <typename T>
void taps_by_patch(const ConvShape& s, const T* x, T* out, i64 row,
                   std::vector<const T*>& rows) {
    constexpr i64 kRowsAtOnce = 64;
    const i64 width = s.c * taps(s);
    const i64 block = std::max<i64>(1, kRowsAtOnce / s.kh);  // channels
    const i64 n = row / s.oh, oh = row % s.oh;
    for (i64 c = 0; c < s.c; ++c)  // the input row of (c, kh), nullptr in the padding
        for (i64 kh = 0; kh < s.kh; ++kh) {
            const i64 ih = oh * s.sh + kh * s.dh - s.pad_top;
            rows[c * s.kh + kh] = ih >= 0 && ih < s.h ? x + ((n * s.c + c) * s.h + ih) * s.w
                                                      : nullptr;
        }
    for (i64 c0 = 0; c0 < s.c; c0 += block) {
        const i64 r0 = c0 * s.kh, r1 = std::min(s.c, c0 + block) * s.kh;
        for (i64 ow = 0; ow < s.ow; ++ow) {
            T* dst = out + (row * s.ow + ow) * width + r0 * s.kw;
            const i64 iw0 = ow * s.sw - s.pad_left;
            const bool inside = iw0 >= 0 && iw0 + (s.kw - 1) * s.dw < s.w;
            for (i64 r = r0; r < r1; ++r, dst += s.kw) {
                const T* src = rows[r];
                if (!src) {
                    std::fill(dst, dst + s.kw, T(0));
                } else if (inside) {
                    for (i64 kw = 0; kw < s.kw; ++kw) dst[kw] = src[iw0 + kw * s.dw];
                } else {
                    for (i64 kw = 0; kw < s.kw; ++kw) {
                        const i64 iw = iw0 + kw * s.dw;
                        dst[kw] = iw >= 0 && iw < s.w ? src[iw] : T(0);
                    }
                }
            }
        }
    }
}

// ranges[kw]: the patches whose tap kw lies inside an input row.
template <typename T>
void taps_by_column(const ConvShape& s, const T* x, T* out, i64 row,
                    const std::vector<Range>& ranges) {
    constexpr i64 kTile = 16;
    const i64 width = s.c * taps(s);
    const i64 n = row / s.oh, oh = row % s.oh;
    T* dst = out + row * s.ow * width;
    for (i64 t0 = 0; t0 < s.ow; t0 += kTile) {
        const i64 t1 = std::min(s.ow, t0 + kTile);
        for (i64 c = 0; c < s.c; ++c) {
            for (i64 kh = 0; kh < s.kh; ++kh) {
                const i64 ih = oh * s.sh + kh * s.dh - s.pad_top;
                const bool inside = ih >= 0 && ih < s.h;
                const T* src = x + ((n * s.c + c) * s.h + (inside ? ih : 0)) * s.w;
                for (i64 kw = 0; kw < s.kw; ++kw) {
                    const i64 col = (c * s.kh + kh) * s.kw + kw;
                    const i64 offset = kw * s.dw - s.pad_left;
                    const i64 lo = inside ? std::clamp(ranges[kw].lo, t0, t1) : t1;
                    const i64 hi = inside ? std::clamp(ranges[kw].hi, lo, t1) : t1;
                    for (i64 ow = t0; ow < lo; ++ow) dst[ow * width + col] = T(0);
                    for (i64 ow = lo; ow < hi; ++ow)
                        dst[ow * width + col] = src[ow * s.sw + offset];
                    for (i64 ow = hi; ow < t1; ++ow) dst[ow * width + col] = T(0);
                }
            }
        }
    }
}

template <typename T>
void im2col_rows(const ConvShape& s, const T* x, T* out, int threads) {
    const i64 width = s.c * taps(s);
    const int nt = threads_for(s.n * s.oh * s.ow * width, s.n * s.oh, threads);
    std::vector<Range> ranges(s.kw);
    for (i64 kw = 0; kw < s.kw; ++kw)
        ranges[kw] = valid(s.ow, s.w, s.sw, kw * s.dw - s.pad_left);
    const bool by_patch = s.kw >= 4;
    team(s.n * s.oh, nt, [&](UnitQueue& q) {
        std::vector<const T*> rows(by_patch ? s.c * s.kh : 0);
        for (i64 row; claim(q, row);) {
            if (by_patch)
                taps_by_patch(s, x, out, row, rows);
            else
                taps_by_column(s, x, out, row, ranges);
        }
    });
}

template <typename T>
void col2im_rows(const ConvShape& s, const T* cols, T* out, int threads) {
    const i64 width = s.c * taps(s);
    const int nt = threads_for(s.n * s.oh * s.ow * width, s.n * s.c, threads);
    parallel_for(s.n * s.c, nt, [&](i64 plane) {
        const i64 n = plane / s.c, c = plane % s.c;
        T* dst = out + plane * s.h * s.w;
        std::fill(dst, dst + s.h * s.w, T(0));
        for (i64 kh = 0; kh < s.kh; ++kh) {
            for (i64 kw = 0; kw < s.kw; ++kw) {
                const i64 col = (c * s.kh + kh) * s.kw + kw;
                const i64 offset = kw * s.dw - s.pad_left;
                const Range r = valid(s.ow, s.w, s.sw, offset);
                for (i64 oh = 0; oh < s.oh; ++oh) {
                    const i64 ih = oh * s.sh + kh * s.dh - s.pad_top;
                    if (ih < 0 || ih >= s.h) continue;
                    const T* src = cols + (n * s.oh + oh) * s.ow * width + col;
                    add_strided(dst + ih * s.w + offset + r.lo * s.sw, s.sw, src + r.lo * width,
                                width, r.hi - r.lo);
                }
            }
        }
    });
}

template <typename T>
void unfold_images(const ConvShape& s, const T* x, T* cols, int threads) {
    const i64 rows = s.c * taps(s), pixels = s.oh * s.ow, ld = s.n * pixels;
    // a unit is one row of cols for a run of images: a few thousand elements
    const i64 images = std::clamp<i64>(4096 / std::max<i64>(pixels, 1), 1, std::max<i64>(s.n, 1));
    const i64 runs = (s.n + images - 1) / images;
    const int nt = threads_for(rows * ld, rows * runs, threads);
    parallel_for(rows * runs, nt, [&](i64 unit) {
        const i64 r = unit / runs, j0 = unit % runs * images;
        const i64 c = r / taps(s), kh = (r / s.kw) % s.kh, kw = r % s.kw;
        const i64 offset = kw * s.dw - s.pad_left;
        const Range cr = valid(s.ow, s.w, s.sw, offset);
        for (i64 j = j0; j < std::min(s.n, j0 + images); ++j) {
            const T* image = x + j * s.c * s.h * s.w;
            T* dst = cols + r * ld + j * pixels;
            for (i64 oh = 0; oh < s.oh; ++oh, dst += s.ow) {
                const i64 ih = oh * s.sh + kh * s.dh - s.pad_top;
                if (ih < 0 || ih >= s.h) {
                    std::fill(dst, dst + s.ow, T(0));
                    continue;
                }
                const T* src = image + (c * s.h + ih) * s.w + offset;
                std::fill(dst, dst + cr.lo, T(0));
                for (i64 ow = cr.lo; ow < cr.hi; ++ow) dst[ow] = src[ow * s.sw];
                std::fill(dst + cr.hi, dst + s.ow, T(0));
            }
        }
    });
}

template <typename T>
void fold_images(const ConvShape& s, const T* cols, T* x, int threads, bool zero_first) {
    const i64 pixels = s.oh * s.ow, ld = s.n * pixels;
    const int nt = threads_for(s.c * taps(s) * ld, s.n * s.c, threads);
    parallel_for(s.n * s.c, nt, [&](i64 plane) {
        const i64 j = plane / s.c, c = plane % s.c;
        T* dst = x + plane * s.h * s.w;
        if (zero_first) std::fill(dst, dst + s.h * s.w, T(0));
        for (i64 kh = 0; kh < s.kh; ++kh) {
            for (i64 kw = 0; kw < s.kw; ++kw) {
                const i64 offset = kw * s.dw - s.pad_left;
                const Range cr = valid(s.ow, s.w, s.sw, offset);
                const T* src = cols + ((c * s.kh + kh) * s.kw + kw) * ld + j * pixels;
                for (i64 oh = 0; oh < s.oh; ++oh, src += s.ow) {
                    const i64 ih = oh * s.sh + kh * s.dh - s.pad_top;
                    if (ih < 0 || ih >= s.h) continue;
                    add_strided(dst + ih * s.w + offset + cr.lo * s.sw, s.sw, src + cr.lo, 1,
                                cr.hi - cr.lo);
                }
            }
        }
    });
}

#define FASTCONV_UNFOLD(T)                                                       \
    template void im2col_rows<T>(const ConvShape&, const T*, T*, int);           \
    template void col2im_rows<T>(const ConvShape&, const T*, T*, int);           \
    template void unfold_images<T>(const ConvShape&, const T*, T*, int);         \
    template void fold_images<T>(const ConvShape&, const T*, T*, int, bool);
FASTCONV_UNFOLD(float)
FASTCONV_UNFOLD(double)
#undef FASTCONV_UNFOLD

}  // namespace fastconv
