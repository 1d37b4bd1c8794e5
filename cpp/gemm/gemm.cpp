#include "gemm.h"

#include <algorithm>
#include <vector>

#include "../direct/direct.h"
#include "../scratch.h"
#include "blocking.h"
#include "ukernel.h"

namespace fastconv {

namespace {

using i64 = std::int64_t;


i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }

// The packers walk the operand along its contiguous direction: reading
// across rows that lie a power of two apart would make them collide in the
// same cache sets.

/* ap[panel][p][r] <- a[i0 + panel*MR + r][p0 + p], zero past row m */
template <typename T>
void pack_a(const MatView<T>& a, i64 i0, i64 rows, i64 p0, i64 kc, int mr, T* ap) {
    for (i64 panel = 0; panel < ceil_div(rows, mr); ++panel, ap += kc * mr) {
        const int rn = int(std::min<i64>(mr, rows - panel * mr));
        const T* src = a.p + (i0 + panel * mr) * a.rs + p0 * a.cs;
        if (a.rs == 1) {  // columns of a are contiguous
            for (i64 p = 0; p < kc; ++p) {
                for (int r = 0; r < rn; ++r) ap[p * mr + r] = src[p * a.cs + r];
                for (int r = rn; r < mr; ++r) ap[p * mr + r] = T(0);
            }
            continue;
        }
        for (int r = 0; r < mr; ++r) {
            if (r >= rn) {
                for (i64 p = 0; p < kc; ++p) ap[p * mr + r] = T(0);
                continue;
            }
            for (i64 p = 0; p < kc; ++p) ap[p * mr + r] = src[r * a.rs + p * a.cs];
        }
    }
}

// dst[j] <- src[j] for j < nr: moves of a size known at compile time for the
// micro-kernels' panel widths (std::copy called memmove for each row of a
// panel: 14% of resnet_stem's backward).
template <int N, typename T>
inline void copy_fixed(const T* __restrict src, T* __restrict dst) {
    for (int j = 0; j < N; ++j) dst[j] = src[j];
}

template <typename T>
inline void copy_panel_row(const T* src, int nr, T* dst) {
    switch (nr) {
        case 4: return copy_fixed<4>(src, dst);
        case 8: return copy_fixed<8>(src, dst);
        case 16: return copy_fixed<16>(src, dst);
        default: std::copy(src, src + nr, dst);
    }
}

/* bp[panel][p][j] <- b[p0 + p][j0 + panel*NR + j], zero past column n */
template <typename T>
void pack_b(const MatView<T>& b, i64 j0, i64 cols, i64 p0, i64 kc, int nr, T* bp) {
    for (i64 panel = 0; panel < ceil_div(cols, nr); ++panel, bp += kc * nr) {
        const i64 jn = std::min<i64>(nr, cols - panel * nr);
        const T* src = b.p + p0 * b.rs + (j0 + panel * nr) * b.cs;
        if (b.rs == 1 && b.cs != 1) {  // columns of b are contiguous
            for (i64 j = 0; j < jn; ++j)
                for (i64 p = 0; p < kc; ++p) bp[p * nr + j] = src[j * b.cs + p];
            for (i64 p = 0; p < kc; ++p) std::fill(bp + p * nr + jn, bp + (p + 1) * nr, T(0));
            continue;
        }
        for (i64 p = 0; p < kc; ++p) {
            const T* row = src + p * b.rs;
            T* dst = bp + p * nr;
            if (b.cs == 1 && jn == nr) {
                copy_panel_row(row, nr, dst);
            } else if (b.cs == 1) {
                std::copy(row, row + jn, dst);
            } else {
                for (i64 j = 0; j < jn; ++j) dst[j] = row[j * b.cs];
            }
            std::fill(dst + jn, dst + nr, T(0));
        }
    }
}

// c[i0, i0 + rows) x [j0, j0 + cols) <- the epilogue of an empty sum (k == 0).
template <typename T>
void empty_sum(i64 i0, i64 rows, i64 j0, i64 cols, T* c, i64 ldc, bool accumulate,
               const T* bias, bool relu) {
    for (i64 i = i0; i < i0 + rows; ++i) {
        for (i64 j = j0; j < j0 + cols; ++j) {
            T v = accumulate ? c[i * ldc + j] : T(0);
            if (bias) v += bias[i];
            if (relu && v < T(0)) v = T(0);
            c[i * ldc + j] = v;
        }
    }
}

}  // namespace

template <typename T>
GemmWorkspace<T>::GemmWorkspace() : uk(gemm_ukernel<T>()) {
    using B = Blocking<T>;
    ap.resize(B::mc / uk.mr * uk.mr * B::kc);
    bp.resize(B::kc * ceil_div(B::nc, uk.nr) * uk.nr);
    tile.resize(uk.mr * uk.nr);
}

template <typename T>
void pack_a_rows(MatView<T> a, i64 i0, i64 rows, i64 k, T* ap) {
    pack_a(a, i0, rows, 0, k, gemm_ukernel<T>().mr, ap);
}

template <typename T>
void gemm_block(i64 m, i64 n, i64 k, MatView<T> a, MatView<T> b, T* c, i64 ldc, bool accumulate,
                const T* bias, bool relu, i64 j0, i64 cols, i64 i_begin, i64 i_end,
                GemmWorkspace<T>& ws, const T* a_packed) {
    const UKernel<T>& uk = ws.uk;
    const i64 mc = Blocking<T>::mc / uk.mr * uk.mr;
    if (k == 0) {
        empty_sum(i_begin, i_end - i_begin, j0, cols, c, ldc, accumulate, bias, relu);
        return;
    }
    const i64 kc_max = ceil_div(k, ceil_div(k, Blocking<T>::kc));  // equal depth blocks
    for (i64 p0 = 0; p0 < k; p0 += kc_max) {  // depth blocks: pack B once
        const i64 kc = std::min(kc_max, k - p0);
        const bool acc = accumulate || p0 > 0, last = p0 + kc == k;
        pack_b(b, j0, cols, p0, kc, uk.nr, ws.bp.data());
        for (i64 i0 = i_begin; i0 < i_end; i0 += mc) {  // row blocks: pack A
            const i64 rows = std::min(mc, i_end - i0);
            if (!a_packed) pack_a(a, i0, rows, p0, kc, uk.mr, ws.ap.data());
            for (i64 j = 0; j < cols; j += uk.nr) {  // NR columns
                const int nr_eff = int(std::min<i64>(uk.nr, cols - j));
                const T* bpanel = ws.bp.data() + (j / uk.nr) * kc * uk.nr;
                for (i64 i = 0; i < rows; i += uk.mr) {  // MR rows
                    const int mr_eff = int(std::min<i64>(uk.mr, rows - i));
                    const T* apanel = a_packed
                        ? a_packed + ((i0 + i) / uk.mr * k + p0) * uk.mr
                        : ws.ap.data() + (i / uk.mr) * kc * uk.mr;
                    T* dst = c + (i0 + i) * ldc + j0 + j;
                    const T* tb = last && bias ? bias + i0 + i : nullptr;
                    if (mr_eff == uk.mr && nr_eff == uk.nr) {
                        uk.fn(kc, apanel, bpanel, dst, ldc, acc, tb, last && relu);
                        continue;
                    }
                    T* tile = ws.tile.data();
                    uk.fn(kc, apanel, bpanel, tile, uk.nr, false, nullptr, false);
                    for (int r = 0; r < mr_eff; ++r) {
                        for (int q = 0; q < nr_eff; ++q) {
                            T v = tile[r * uk.nr + q];
                            if (acc) v += dst[r * ldc + q];
                            if (tb) v += tb[r];
                            if (last && relu && v < T(0)) v = T(0);
                            dst[r * ldc + q] = v;
                        }
                    }
                }
            }
        }
    }
}

template <typename T>
GemmSplit gemm_split(i64 m, i64 n, int threads) {
    const i64 mc = Blocking<T>::mc / gemm_ukernel<T>().mr * gemm_ukernel<T>().mr;
    const i64 nr = gemm_ukernel<T>().nr;
    const i64 cols_per_block = ceil_div(ceil_div(n, ceil_div(n, Blocking<T>::nc)), nr) * nr;
    const i64 col_blocks = ceil_div(n, cols_per_block), row_blocks = ceil_div(m, mc);
    const i64 row_groups = std::min(row_blocks, ceil_div(2 * threads, col_blocks));
    const i64 rows_per_group = ceil_div(row_blocks, row_groups) * mc;
    return {col_blocks, ceil_div(m, rows_per_group), rows_per_group, cols_per_block};
}

template <typename T>
void gemm(i64 m, i64 n, i64 k, MatView<T> a, MatView<T> b, T* c, i64 ldc, bool accumulate,
          const T* bias, bool relu, int threads) {
    if (m <= 0 || n <= 0) return;
    const GemmSplit split = gemm_split<T>(m, n, threads);
    const i64 units = split.col_blocks * split.row_groups;
    const int nt = threads_for(m * n * std::max<i64>(k, 1), units, threads);
    team(units, nt, [&](UnitQueue& q) {
        GemmWorkspace<T> ws;
        for (i64 unit; claim(q, unit);) {
            const i64 j0 = unit % split.col_blocks * split.cols_per_block;
            const i64 i0 = unit / split.col_blocks * split.rows_per_group;
            gemm_block(m, n, k, a, b, c, ldc, accumulate, bias, relu, j0,
                       std::min(split.cols_per_block, n - j0), i0,
                       std::min(m, i0 + split.rows_per_group), ws);
        }
    });
}

template <typename T>
void gemm_depth_sliced(i64 m, i64 n, i64 k, MatView<T> a, MatView<T> b, T* c, bool accumulate,
                       i64 slice, int threads) {
    const i64 slices = slice > 0 ? ceil_div(k, slice) : 1;
    if (slices <= 1 || m <= 0 || n <= 0) {
        gemm<T>(m, n, k, a, b, c, n, accumulate, nullptr, false, threads);
        return;
    }
    T* partials = scratch<T>(ScratchSlot::partials, slices * m * n);
    const GemmSplit split = gemm_split<T>(m, n, threads);
    const i64 tiles = split.col_blocks * split.row_groups;
    const int nt = threads_for(m * n * k, slices * tiles, threads);
    team(slices * tiles, nt, [&](UnitQueue& q) {
        GemmWorkspace<T> ws;
        for (i64 unit; claim(q, unit);) {
            const i64 s = unit / tiles, tile = unit % tiles;
            const i64 j0 = tile % split.col_blocks * split.cols_per_block;
            const i64 i0 = tile / split.col_blocks * split.rows_per_group;
            const i64 p0 = s * slice;
            const MatView<T> as{a.p + p0 * a.cs, a.rs, a.cs}, bs{b.p + p0 * b.rs, b.rs, b.cs};
            gemm_block<T>(m, n, std::min(slice, k - p0), as, bs, partials + s * m * n, n, false,
                       nullptr, false, j0, std::min(split.cols_per_block, n - j0), i0,
                       std::min(m, i0 + split.rows_per_group), ws);
        }
    });
    sum_in_order(partials, slices, m * n, c, accumulate, threads);
}

template <typename T>
void sum_in_order(const T* parts, i64 count, i64 size, T* out, bool accumulate, int threads) {
    constexpr i64 kBlock = 1024;
    const i64 blocks = ceil_div(size, kBlock);
    parallel_for(blocks, threads_for(size * count, blocks, threads), [&](i64 b) {
        const i64 lo = b * kBlock, hi = std::min(size, lo + kBlock);
        if (!accumulate) std::copy(parts + lo, parts + hi, out + lo);
        for (i64 u = accumulate ? 0 : 1; u < count; ++u)
            for (i64 i = lo; i < hi; ++i) out[i] += parts[u * size + i];
    });
}

#define FASTCONV_GEMM(T)                                                                 \
    template struct GemmWorkspace<T>;                                                    \
    template void gemm_block<T>(i64, i64, i64, MatView<T>, MatView<T>, T*, i64, bool,    \
                                const T*, bool, i64, i64, i64, i64, GemmWorkspace<T>&,   \
                                const T*);                                               \
    template void pack_a_rows<T>(MatView<T>, i64, i64, i64, T*);                        \
    template GemmSplit gemm_split<T>(i64, i64, int);                                     \
    template void gemm<T>(i64, i64, i64, MatView<T>, MatView<T>, T*, i64, bool, const T*, \
                          bool, int);                                                    \
    template void gemm_depth_sliced<T>(i64, i64, i64, MatView<T>, MatView<T>, T*, bool, i64, \
                                       int);                                               \
    template void sum_in_order<T>(const T*, i64, i64, T*, bool, int);
FASTCONV_GEMM(float)
FASTCONV_GEMM(double)
#undef FASTCONV_GEMM

}  // namespace fastconv
