#include "gemm.h"

#include <algorithm>
#include <vector>

#include "../direct/direct.h"
#include "blocking.h"
#include "ukernel.h"

namespace fastconv {

namespace {

using i64 = std::int64_t;


i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }

/* ap[panel][p][r] <- a[i0 + panel*MR + r][p0 + p], zero past row m */
template <typename T>
void pack_a(const MatView<T>& a, i64 i0, i64 rows, i64 p0, i64 kc, int mr, T* ap) {
    for (i64 panel = 0; panel < ceil_div(rows, mr); ++panel, ap += kc * mr) {
        for (int r = 0; r < mr; ++r) {
            const i64 i = panel * mr + r;
            if (i >= rows) {
                for (i64 p = 0; p < kc; ++p) ap[p * mr + r] = T(0);
                continue;
            }
            const T* src = a.p + (i0 + i) * a.rs + p0 * a.cs;
            for (i64 p = 0; p < kc; ++p) ap[p * mr + r] = src[p * a.cs];
        }
    }
}

/* bp[panel][p][j] <- b[p0 + p][j0 + panel*NR + j], zero past column n */
template <typename T>
void pack_b(const MatView<T>& b, i64 j0, i64 cols, i64 p0, i64 kc, int nr, T* bp) {
    for (i64 panel = 0; panel < ceil_div(cols, nr); ++panel, bp += kc * nr) {
        const i64 jn = std::min<i64>(nr, cols - panel * nr);
        for (i64 p = 0; p < kc; ++p) {
            const T* src = b.p + (p0 + p) * b.rs + (j0 + panel * nr) * b.cs;
            T* dst = bp + p * nr;
            if (b.cs == 1) {
                std::copy(src, src + jn, dst);
            } else {
                for (i64 j = 0; j < jn; ++j) dst[j] = src[j * b.cs];
            }
            std::fill(dst + jn, dst + nr, T(0));
        }
    }
}

}  // namespace

template <typename T>
void gemm(i64 m, i64 n, i64 k, MatView<T> a, MatView<T> b, T* c, i64 ldc, bool accumulate,
          const T* bias, bool relu, int threads) {
    if (m <= 0 || n <= 0) return;
    const UKernel<T> uk = gemm_ukernel<T>();
    using B = Blocking<T>;
    const i64 kKC = B::kc, kNC = B::nc;
    const i64 mc = B::mc / uk.mr * uk.mr;
    const i64 row_tiles = ceil_div(m, mc), col_tiles = ceil_div(n, kNC);
    const int nt = threads_for(m * n * std::max<i64>(k, 1), row_tiles * col_tiles, threads);
#pragma omp parallel num_threads(nt)
    {
        std::vector<T> ap(mc * kKC), bp(kKC * (kNC + uk.nr)), tile(uk.mr * uk.nr);
#pragma omp for schedule(static) collapse(2)
        for (i64 it = 0; it < row_tiles; ++it) {
            for (i64 jt = 0; jt < col_tiles; ++jt) {
                const i64 i0 = it * mc, rows = std::min(mc, m - i0);
                const i64 j0 = jt * kNC, cols = std::min(kNC, n - j0);
                if (k == 0) {  // an empty sum: c keeps or becomes 0, then the epilogue
                    for (i64 i = 0; i < rows; ++i) {
                        for (i64 j = 0; j < cols; ++j) {
                            T& dst = c[(i0 + i) * ldc + j0 + j];
                            T v = accumulate ? dst : T(0);
                            if (bias) v += bias[i0 + i];
                            if (relu && v < T(0)) v = T(0);
                            dst = v;
                        }
                    }
                    continue;
                }
                for (i64 p0 = 0; p0 < k; p0 += kKC) {  // depth blocks: pack A and B
                    const i64 kc = std::min(kKC, k - p0);
                    const bool acc = accumulate || p0 > 0, last = p0 + kc == k;
                    pack_a(a, i0, rows, p0, kc, uk.mr, ap.data());
                    pack_b(b, j0, cols, p0, kc, uk.nr, bp.data());
                    for (i64 j = 0; j < cols; j += uk.nr) {  // NR columns
                        const int nr_eff = int(std::min<i64>(uk.nr, cols - j));
                        const T* bpanel = bp.data() + (j / uk.nr) * kc * uk.nr;
                        for (i64 i = 0; i < rows; i += uk.mr) {  // MR rows
                            const int mr_eff = int(std::min<i64>(uk.mr, rows - i));
                            const T* apanel = ap.data() + (i / uk.mr) * kc * uk.mr;
                            T* dst = c + (i0 + i) * ldc + j0 + j;
                            const T* tb = last && bias ? bias + i0 + i : nullptr;
                            if (mr_eff == uk.mr && nr_eff == uk.nr) {
                                uk.fn(kc, apanel, bpanel, dst, ldc, acc, tb, last && relu);
                                continue;
                            }
                            uk.fn(kc, apanel, bpanel, tile.data(), uk.nr, false, nullptr, false);
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
    }
}

template void gemm<float>(i64, i64, i64, MatView<float>, MatView<float>, float*, i64, bool,
                          const float*, bool, int);
template void gemm<double>(i64, i64, i64, MatView<double>, MatView<double>, double*, i64, bool,
                           const double*, bool, int);

}  // namespace fastconv
