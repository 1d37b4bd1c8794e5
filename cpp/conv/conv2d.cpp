#include "conv2d.h"

#include <algorithm>
#include <vector>

#include "../direct/direct.h"
#include "../gemm/blocking.h"
#include "../gemm/gemm.h"
#include "../gemm/ukernel.h"
#include "../scratch.h"
#include "panel_runs.h"

namespace fastconv {

namespace {

using i64 = std::int64_t;


i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }

// One group's GEMM: C (K/groups x N*OH*OW) = A (K/groups x C/groups*KH*KW) * B.
struct Gemm {
    i64 rows;   // K / groups
    i64 depth;  // C / groups * KH * KW
    i64 cols;   // N * OH * OW, over the whole batch
};

/* ap[g][panel - first][p][r] <- weight[g*Kg + panel*MR + r][p], zero past Kg, for the
   panels from `first` on: the GEMM's packed A, a panel per task */
template <typename T>
void pack_weights(const ConvShape& s, const Gemm& gm, int mr, i64 first, const T* weight,
                  T* ap, int threads) {
    const i64 packed = ceil_div(gm.rows, mr) - first;
    parallel_for(s.groups * packed, threads, [&](i64 gp) {
        const i64 g = gp / packed, row = (first + gp % packed) * mr;
        pack_a_rows<T>({weight + g * gm.rows * gm.depth, gm.depth, 1}, row,
                       std::min<i64>(mr, gm.rows - row), gm.depth, ap + gp * gm.depth * mr);
    });
}

using Run = PanelRun;

// The runs of every micro-panel of columns [jb, je): panel q's runs are
// runs[start[q]] .. runs[start[q + 1]]. in_place[2q], in_place[2q + 1]: -1
// when the panel is packed, else where in x its two halves' first taps are:
// each half a run of one input row whose every tap lies inside the image, at
// stride 1, which the micro-kernel reads in place instead of a packed copy.
// (At stride 2 the shuffles this takes made resnet_stem 1.5x slower.)
struct PanelRuns {
    std::vector<Run> runs;
    std::vector<int> start;
    std::vector<i64> in_place;  // 2 per panel
};

// Where half h (NR/2 columns from panel column `first`) of a panel reads x in
// place, or -1 when it must be packed.
i64 half_in_place(const ConvShape& s, const Run* run, const Run* end, int first, int half) {
    for (; run != end; ++run) {
        if (run->first <= first && first + half <= run->first + run->len) {
            const i64 iw = run->iw0 + (first - run->first);  // stride 1
            const bool inside = run->ih0 >= 0 && run->ih0 + (s.kh - 1) * s.dh < s.h &&
                                iw >= 0 && iw + half - 1 + (s.kw - 1) * s.dw < s.w;
            return inside ? run->image + run->ih0 * s.w + iw : -1;
        }
    }
    return -1;
}

void runs_of_panels(const ConvShape& s, i64 jb, i64 je, int nr, i64 group_offset,
                    bool in_place, PanelRuns& pr) {
    pr.runs.clear();
    pr.start.clear();
    pr.in_place.clear();
    const i64 pixels = s.oh * s.ow;
    i64 n = jb / pixels, pix = jb % pixels;
    i64 oh = pix / s.ow, ow = pix % s.ow;
    for (i64 j0 = jb; j0 < je; j0 += nr) {
        pr.start.push_back(int(pr.runs.size()));
        for (i64 j = j0; j < std::min(j0 + nr, je);) {
            const i64 len = std::min({s.ow - ow, j0 + nr - j, je - j});
            pr.runs.push_back({int(j - j0), int(len), n * s.c * s.h * s.w + group_offset,
                               oh * s.sh - s.pad_top, ow * s.sw - s.pad_left});
            j += len;
            ow += len;
            if (ow == s.ow) {
                ow = 0;
                if (++oh == s.oh) oh = 0, ++n;
            }
        }
    }
    pr.start.push_back(int(pr.runs.size()));
    for (size_t q = 0; q + 1 < pr.start.size(); ++q) {
        const Run* run = pr.runs.data() + pr.start[q];
        const Run* end = pr.runs.data() + pr.start[q + 1];
        i64 h0 = -1, h1 = -1;
        if (in_place && s.sw == 1) {
            h0 = half_in_place(s, run, end, 0, nr / 2);
            h1 = h0 < 0 ? -1 : half_in_place(s, run, end, nr / 2, nr / 2);
        }
        pr.in_place.push_back(h1 < 0 ? -1 : h0);
        pr.in_place.push_back(h1);
    }
}

template <typename T>
struct Workspace {
    std::vector<T> bp;
    PanelRuns runs;
    std::vector<T> tile;
};

// Columns [j0, j0 + nr_eff) of the output, rows [i0, i0 + mr_eff) of group g.
// kernel(c, ldc, accumulate, bias, relu) runs the micro-kernel on the tile.
// A tile that does not map onto the output (edge or image-crossing) sums its
// depth blocks in `tile` (MR x NR, kept by the caller from one depth block to
// the next) and is written out after the last one.
template <typename T, typename Kernel>
void compute_tile(const ConvShape& s, const UKernel<T>& uk, Kernel kernel, i64 g, i64 i0,
                  int mr_eff, i64 j0, int nr_eff, bool accumulate, bool last,
                  const T* bias, bool relu, T* out, T* tile) {
    const i64 pixels = s.oh * s.ow;
    const i64 k0 = g * (s.k / s.groups) + i0;
    i64 n = j0 / pixels, pix = j0 % pixels;
    const T* tile_bias = last && bias ? bias + k0 : nullptr;
    const bool tile_relu = last && relu;
    if (mr_eff == uk.mr && nr_eff == uk.nr && pix + uk.nr <= pixels) {
        kernel(out + (n * s.k + k0) * pixels + pix, pixels, accumulate, tile_bias, tile_relu);
        return;
    }
    kernel(tile, uk.nr, accumulate, nullptr, false);
    if (!last) return;
    for (int t = 0; t < nr_eff; ++t) {
        T* col = out + (n * s.k + k0) * pixels + pix;
        for (int i = 0; i < mr_eff; ++i) {
            T& dst = col[i * pixels];
            T v = tile[i * uk.nr + t];
            if (tile_bias) v += tile_bias[i];
            if (tile_relu && v < T(0)) v = T(0);
            dst = v;
        }
        if (++pix == pixels) pix = 0, ++n;
    }
}

template <typename T>
void conv2d_packed(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                   bool relu, int threads);

// Below this many GEMM columns (N*OH*OW) the micro-kernel reads the weights
// unpacked (see conv2d_packed).
constexpr std::int64_t kReadWeightsBelowColumns = 1024;

// Whether a zero-padded copy of the input pays: at stride 1 along rows, a
// micro-panel half that stays inside one output row is read in place only
// when none of its taps falls in the padding; on the copy none does. Rows of
// at least two half-panels, so that most halves stay inside a row.
template <typename T>
bool pad_a_copy_first(const ConvShape& s) {
    const UKernel<T> uk = gemm_ukernel<T>();
    return uk.in_place != nullptr && s.sw == 1 && (s.pad_top > 0 || s.pad_left > 0) &&
           s.ow >= uk.nr;
}

/* The convolution on zero-padded copies of chunks of images (a bounded
   buffer, kept by the thread), run without padding: exactly the rows and
   columns the taps reach. */
template <typename T>
void conv2d_on_padded_copies(const ConvShape& s, const T* x, const T* weight, const T* bias,
                             T* out, bool relu, int threads) {
    ConvShape p = s;
    p.h = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1;
    p.w = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
    p.pad_top = p.pad_left = 0;
    constexpr i64 kBudgetBytes = 8 << 20;
    const i64 per_image = std::max<i64>(1, s.c * p.h * p.w);
    const i64 chunk = std::max<i64>(1, std::min(s.n, kBudgetBytes / (per_image * i64(sizeof(T)))));
    T* padded = scratch<T>(ScratchSlot::padded_conv_input, chunk * per_image);
    for (i64 n0 = 0; n0 < s.n; n0 += chunk) {
        p.n = std::min(chunk, s.n - n0);
        parallel_for(p.n * s.c, threads_for(p.n * per_image, p.n * s.c, threads), [&](i64 plane) {
            const T* src = x + (n0 * s.c + plane) * s.h * s.w;
            T* dst = padded + plane * p.h * p.w;
            for (i64 r = 0; r < p.h; ++r, dst += p.w) {
                const i64 ih = r - s.pad_top;
                if (ih < 0 || ih >= s.h) {
                    std::fill(dst, dst + p.w, T(0));
                    continue;
                }
                // columns [lo, hi) of the copy are input columns lo - pad_left ...
                const i64 lo = std::min(p.w, s.pad_left);
                const i64 hi = std::max(lo, std::min(p.w, s.w + s.pad_left));
                std::fill(dst, dst + lo, T(0));
                std::copy(src + ih * s.w + lo - s.pad_left, src + ih * s.w + hi - s.pad_left,
                          dst + lo);
                std::fill(dst + hi, dst + p.w, T(0));
            }
        });
        conv2d_packed(p, padded, weight, bias, out + n0 * s.k * s.oh * s.ow, relu, threads);
    }
}

}  // namespace

template <typename T>
void conv2d_gemm(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                 bool relu, int threads) {
    if (pad_a_copy_first<T>(s)) {
        conv2d_on_padded_copies(s, x, weight, bias, out, relu, threads);
        return;
    }
    conv2d_packed(s, x, weight, bias, out, relu, threads);
}

namespace {

template <typename T>
void conv2d_packed(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                   bool relu, int threads) {
    const UKernel<T> uk = gemm_ukernel<T>();
    const Gemm gm{s.k / s.groups, s.c / s.groups * s.kh * s.kw, s.n * s.oh * s.ow};
    const i64 panels = ceil_div(gm.rows, uk.mr);
    threads = threads_for(s.groups * gm.rows * gm.depth * gm.cols, s.groups * gm.cols, threads);
    // With few columns, the micro-kernel reads whole panels of MR filters from
    // the weights as they are (packing 9 MB of them took 6% of resnet_3x3_7,
    // which ran 5% faster so); only a last panel of fewer filters is packed,
    // with zeros after them. With more columns packing pays for itself: the
    // packed panel is one stream, not MR (3-12% faster from batch1_3x3_56's
    // 3136 columns to resnet_3x3_56's 25088; about even at resnet_3x3_14's
    // 1568). The sums are the same either way. Every element of ap is
    // written: no zero-filling.
    const bool rows_a = gm.cols < kReadWeightsBelowColumns && uk.rows != nullptr &&
                        (uk.in_place == nullptr || uk.rows_in_place);
    const i64 first_packed = rows_a ? gm.rows / uk.mr : 0;
    const i64 packed_panels = panels - first_packed;
    T* ap = scratch<T>(ScratchSlot::packed_weights,
                       std::max<i64>(1, s.groups * packed_panels * uk.mr * gm.depth));
    pack_weights(s, gm, uk.mr, first_packed, weight, ap, threads);

    // Work units: (group, block of output columns). Enough of them to feed
    // every thread; each unit owns its output tiles, so the sums never depend
    // on the split.
    using B = Blocking<T>;
    i64 blocks = std::max(ceil_div(gm.cols, B::nc), ceil_div(threads, s.groups));
    if (s.groups == 1) blocks = ceil_div(blocks, threads) * threads;
    const i64 block_cols = ceil_div(ceil_div(gm.cols, blocks), uk.nr) * uk.nr;
    blocks = ceil_div(gm.cols, block_cols);
    const i64 units = s.groups * blocks;
    const i64 mc = B::mc / uk.mr * uk.mr;
    // depth blocks of (nearly) equal size, so that none is a short tail
    const i64 kc_max = ceil_div(gm.depth, ceil_div(gm.depth, B::kc));
    // Panels whose halves are runs inside one input row are read in place
    // (no packing); offsets[p]: where tap p = (c*KH + kh)*KW + kw reads, from
    // the tap (0, 0, 0) of the same output pixel.
    const bool in_place = uk.in_place != nullptr && s.sw == 1;
    std::vector<std::ptrdiff_t> offsets(in_place ? gm.depth : 0);
    for (i64 p = 0; p < i64(offsets.size()); ++p)
        offsets[p] = (p / (s.kh * s.kw) * s.h + p / s.kw % s.kh * s.dh) * s.w + p % s.kw * s.dw;

    const auto pack_input = direct_kernels<T>().pack_input;
    team(units, threads, [&](UnitQueue& q) {
        Workspace<T> ws;
        ws.bp.resize(B::kc * block_cols);
        // an edge tile per (column panel, MR rows) of the unit, kept across depth blocks
        ws.tile.resize(ceil_div(block_cols, uk.nr) * panels * uk.mr * uk.nr);
        for (i64 unit; claim(q, unit);) {
            const i64 g = unit / blocks;
            const i64 jb = (unit % blocks) * block_cols;
            const i64 je = std::min(jb + block_cols, gm.cols);
            const i64 col_panels = ceil_div(je - jb, uk.nr);
            const i64 group_offset = g * (s.c / s.groups) * s.h * s.w;
            const T* ag = ap + g * packed_panels * uk.mr * gm.depth;
            const T* wg = weight + g * gm.rows * gm.depth;
            runs_of_panels(s, jb, je, uk.nr, group_offset, in_place, ws.runs);
            const bool packed_panels = std::count(ws.runs.in_place.begin(),
                                                  ws.runs.in_place.end(), -1) > 0;
            for (i64 p0 = 0; p0 < gm.depth; p0 += kc_max) {            // depth blocks: pack B
                const i64 kc = std::min(kc_max, gm.depth - p0);
                if (packed_panels)
                    pack_input(s, x, p0, kc, uk.nr,
                               {ws.runs.runs.data(), ws.runs.start.data(),
                                ws.runs.in_place.data(), i64(ws.runs.start.size()) - 1},
                               ws.bp.data());
                const bool accumulate = p0 > 0, last = p0 + kc == gm.depth;
                for (i64 i0 = 0; i0 < gm.rows; i0 += mc) {              // A blocks
                    const i64 i1 = std::min(i0 + mc, gm.rows);
                    for (i64 jp = 0; jp < col_panels; ++jp) {            // NR columns
                        const i64 j0 = jb + jp * uk.nr;
                        const int nr_eff = int(std::min<i64>(uk.nr, je - j0));
                        const T* b = ws.bp.data() + jp * kc * uk.nr;
                        const i64 h0 = ws.runs.in_place[2 * jp], h1 = ws.runs.in_place[2 * jp + 1];
                        for (i64 i = i0; i < i1; i += uk.mr) {            // MR rows
                            const i64 panel = i / uk.mr;
                            const bool a_rows = panel < first_packed;  // read from the weights
                            const T* a =
                                a_rows ? wg + i * gm.depth + p0
                                       : ag + ((panel - first_packed) * gm.depth + p0) * uk.mr;
                            T* tile = ws.tile.data() + (jp * panels + panel) * uk.mr * uk.nr;
                            const int mr_eff = int(std::min<i64>(uk.mr, gm.rows - i));
                            if (h0 >= 0) {
                                compute_tile(s, uk, [&](T* c, i64 ldc, bool acc, const T* bi,
                                                        bool re) {
                                    if (a_rows)
                                        uk.rows_in_place(kc, a, gm.depth, x + h0, x + h1,
                                                         offsets.data() + p0, c, ldc, acc, bi, re);
                                    else
                                        uk.in_place(kc, a, x + h0, x + h1, offsets.data() + p0,
                                                    c, ldc, acc, bi, re);
                                }, g, i, mr_eff, j0, nr_eff, accumulate, last, bias, relu, out,
                                             tile);
                            } else {
                                compute_tile(s, uk, [&](T* c, i64 ldc, bool acc, const T* bi,
                                                        bool re) {
                                    if (a_rows)
                                        uk.rows(kc, a, gm.depth, b, c, ldc, acc, bi, re);
                                    else
                                        uk.fn(kc, a, b, c, ldc, acc, bi, re);
                                }, g, i, mr_eff, j0, nr_eff, accumulate, last, bias, relu, out,
                                             tile);
                            }
                        }
                    }
                }
            }
        }
    });
}

}  // namespace

template void conv2d_gemm<float>(const ConvShape&, const float*, const float*, const float*,
                                 float*, bool, int);
template void conv2d_gemm<double>(const ConvShape&, const double*, const double*,
                                  const double*, double*, bool, int);

}  // namespace fastconv
