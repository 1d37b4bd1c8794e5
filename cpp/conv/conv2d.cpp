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
    std::vector<i64> out_at;    // tile_start of each panel
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

// Where the GEMM's column j goes in the output: image j / per_image, row
// (j % per_image) / pitch, column (j % per_image) % pitch; dropped when that
// row or column is past the output's (the phased layout's extra columns).
struct OutputColumns {
    i64 per_image, pitch;
};

// Where the tile of columns [j0, j0 + NR) starts in the output, for the
// images' first filter, when those columns are NR consecutive pixels of one
// image; else -1 (an edge, image-crossing or dropped column).
i64 tile_start(const ConvShape& s, const OutputColumns& oc, int nr, i64 j0, i64 je) {
    const i64 n = j0 / oc.per_image, col = j0 % oc.per_image;
    const i64 oh = col / oc.pitch, ow = col % oc.pitch;
    const bool maps = j0 + nr <= je && (oc.pitch == s.ow ? col + nr <= s.oh * s.ow
                                                          : oh < s.oh && ow + nr <= s.ow);
    return maps ? n * s.k * s.oh * s.ow + oh * s.ow + ow : -1;
}

// Columns [j0, j0 + nr_eff) of the GEMM, rows [i0, i0 + mr_eff) of group g;
// `at`: tile_start of the columns. kernel(c, ldc, accumulate, bias, relu)
// runs the micro-kernel on the tile. A tile that does not map onto the output
// sums its depth blocks in `tile` (MR x NR, kept by the caller from one depth
// block to the next) and is written out after the last one.
template <typename T, typename Kernel>
void compute_tile(const ConvShape& s, const OutputColumns& oc, const UKernel<T>& uk,
                  Kernel kernel, i64 g, i64 i0, int mr_eff, i64 j0, int nr_eff, i64 at,
                  bool accumulate, bool last, const T* bias, bool relu, T* out, T* tile) {
    const i64 pixels = s.oh * s.ow;
    const i64 k0 = g * (s.k / s.groups) + i0;
    const T* tile_bias = last && bias ? bias + k0 : nullptr;
    const bool tile_relu = last && relu;
    if (mr_eff == uk.mr && at >= 0) {
        kernel(out + at + k0 * pixels, pixels, accumulate, tile_bias, tile_relu);
        return;
    }
    kernel(tile, uk.nr, accumulate, nullptr, false);
    if (!last) return;
    // runs of columns that are consecutive pixels of one image, row by row of the tile
    const bool rows_join = oc.pitch == s.ow;  // a run goes on to the next output row
    i64 n = j0 / oc.per_image, col = j0 % oc.per_image;
    for (int t = 0; t < nr_eff;) {
        const i64 oh = col / oc.pitch, ow = col % oc.pitch;
        i64 len = std::min<i64>(nr_eff - t, oc.per_image - col);
        if (oh >= s.oh || ow >= s.ow) {  // dropped: up to the next output row
            len = std::min(len, oc.pitch - ow);
        } else {
            len = std::min(len, rows_join ? pixels - col : s.ow - ow);
            T* dst = out + (n * s.k + k0) * pixels + oh * s.ow + ow;
            for (int i = 0; i < mr_eff; ++i) {
                const T* src = tile + i * uk.nr + t;
                for (i64 u = 0; u < len; ++u) {
                    T v = src[u];
                    if (tile_bias) v += tile_bias[i];
                    dst[i * pixels + u] = tile_relu && v < T(0) ? T(0) : v;
                }
            }
        }
        t += int(len);
        if ((col += len) == oc.per_image) col = 0, ++n;
    }
}

// The phased layout of conv2d's GEMM. The input is copied, zero-padded, into
// sh x sw phase planes per channel: plane (a, b) holds the padded rows a,
// a + sh, ... and columns b, b + sw, ..., `pitch` columns each. Column j of an
// image's GEMM is output row j / pitch, column j % pitch, and tap
// (c, kh, kw) of every column reads the copy at j plus one offset per tap:
// every micro-panel is read in place, at any stride. The columns from OW to
// `pitch` (and past OH * pitch, up to a multiple of NR) are computed and
// dropped.
struct Phased {
    i64 sh, sw;   // phases: the strides
    i64 rows;     // of a phase plane
    i64 pitch;    // row length of a phase plane, GEMM columns per output row
    i64 channel;  // sh * sw * rows * pitch: one channel of the copy
    i64 cols;     // GEMM columns per image: OH * pitch, rounded up to NR
};

// `split`: phases at the strides; else one plane, the zero-padded input.
Phased phased_layout(const ConvShape& s, int nr, bool split) {
    const i64 padded_h = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1;
    const i64 padded_w = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
    const i64 sh = split ? s.sh : 1, sw = split ? s.sw : 1;
    Phased f{sh, sw, ceil_div(padded_h, sh), ceil_div(padded_w, sw), 0, 0};
    f.channel = f.sh * f.sw * f.rows * f.pitch;
    f.cols = ceil_div(s.oh * f.pitch, nr) * nr;
    return f;
}

// Where tap p = (c*KH + kh)*KW + kw of a GEMM column reads, from the column's
// own position (runs layout: in x, from the tap (0, 0, 0); phased: in the copy).
std::vector<std::ptrdiff_t> tap_offsets(const ConvShape& s, const Phased* f, i64 depth) {
    std::vector<std::ptrdiff_t> off(depth);
    for (i64 p = 0; p < depth; ++p) {
        const i64 c = p / (s.kh * s.kw), dy = p / s.kw % s.kh * s.dh, dx = p % s.kw * s.dw;
        off[p] = f ? c * f->channel + ((dy % f->sh) * f->sw + dx % f->sw) * f->rows * f->pitch +
                         dy / f->sh * f->pitch + dx / f->sw
                   : (c * s.h + dy) * s.w + dx;
    }
    return off;
}

// dst[j] <- src[j * step] for j in [lo, hi); step = N when N > 0.
template <int N, typename T>
void every_nth(T* __restrict dst, const T* __restrict src, i64 lo, i64 hi, i64 step) {
    if (N > 0) step = N;
    for (i64 j = lo; j < hi; ++j) dst[j] = src[j * step];
}

// copy[plane (a, b), row i, column j] <- the padded input at row i*sh + a,
// column j*sw + b, for `images` images from x; zero outside the input.
template <typename T>
void copy_phased(const ConvShape& s, const Phased& f, const T* x, i64 images, T* copy,
                 int threads) {
    const i64 padded_w = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
    const i64 col_end = std::min(padded_w, s.w + s.pad_left);  // padded columns of x end here
    // a unit per phase plane: an image's 3 channels would keep a thread idle
    const i64 units = images * s.c * f.sh * f.sw;
    parallel_for(units, threads_for(images * s.c * f.channel, units, threads), [&](i64 unit) {
        const i64 plane = unit / (f.sh * f.sw), a = unit / f.sw % f.sh, b = unit % f.sw;
        const T* src = x + plane * s.h * s.w;
        T* dst = copy + plane * f.channel + (a * f.sw + b) * f.rows * f.pitch;
        // columns [lo, hi) of the phase plane's rows are inside x
        const i64 lo = std::min(f.pitch, std::max<i64>(0, ceil_div(s.pad_left - b, f.sw)));
        const i64 hi = std::max(lo, std::min(f.pitch, ceil_div(col_end - b, f.sw)));
        const i64 first = b - s.pad_left;  // x's column of the plane's column 0
        for (i64 i = 0; i < f.rows; ++i, dst += f.pitch) {
            const i64 ih = i * f.sh + a - s.pad_top;
            if (ih < 0 || ih >= s.h) {
                std::fill(dst, dst + f.pitch, T(0));
                continue;
            }
            const T* row = src + ih * s.w;
            std::fill(dst, dst + lo, T(0));
            if (f.sw == 1)
                std::copy(row + lo + first, row + hi + first, dst + lo);
            else if (f.sw == 2)  // a stride known here vectorises (resnet_stem)
                every_nth<2>(dst, row + first, lo, hi, 2);
            else if (f.sw == 4)  // alexnet_c1
                every_nth<4>(dst, row + first, lo, hi, 4);
            else
                every_nth<0>(dst, row + first, lo, hi, f.sw);
            std::fill(dst + hi, dst + f.pitch, T(0));
        }
    });
}

template <typename T>
void conv2d_packed(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                   bool relu, int threads, const Phased* phased);

// Below this many GEMM columns (N*OH*OW) the micro-kernel reads the weights
// unpacked (see plan_gemm).
constexpr std::int64_t kReadWeightsBelowColumns = 1024;

// How conv2d_packed runs one GEMM of `columns` columns per group: which
// panels of MR filters it packs, its threads, and its work units, (group,
// block of columns), blocks of nearly equal numbers of micro-panels.
struct GemmPlan {
    Gemm gm;
    i64 panels;        // of MR filters, per group
    i64 first_packed;  // panels before it are read from the weights as they are
    int threads;
    i64 blocks;        // column blocks per group
    i64 col_panels;    // micro-panels of NR columns, per group
    i64 block_cols;    // columns of the widest block
};

template <typename T>
GemmPlan plan_gemm(const ConvShape& s, i64 columns, int threads) {
    const UKernel<T> uk = gemm_ukernel<T>();
    GemmPlan p{{s.k / s.groups, s.c / s.groups * s.kh * s.kw, columns}, 0, 0, 0, 0, 0, 0};
    const Gemm& gm = p.gm;
    p.panels = ceil_div(gm.rows, uk.mr);
    p.threads = threads_for(s.groups * gm.rows * gm.depth * gm.cols, s.groups * gm.cols, threads);
    // With few columns, the micro-kernel reads whole panels of MR filters from
    // the weights as they are (packing 9 MB of them took 6% of resnet_3x3_7,
    // which ran 5% faster so); only a last panel of fewer filters is packed,
    // with zeros after them. With more columns packing pays for itself: the
    // packed panel is one stream, not MR (3-12% faster from batch1_3x3_56's
    // 3136 columns to resnet_3x3_56's 25088; about even at resnet_3x3_14's
    // 1568). The sums are the same either way.
    const bool rows_a = gm.cols < kReadWeightsBelowColumns && uk.rows != nullptr &&
                        (uk.in_place == nullptr || uk.rows_in_place);
    p.first_packed = rows_a ? gm.rows / uk.mr : 0;
    using B = Blocking<T>;
    p.col_panels = ceil_div(gm.cols, uk.nr);
    p.blocks = std::max(ceil_div(gm.cols, B::nc), ceil_div(p.threads, s.groups));
    if (s.groups == 1) p.blocks = ceil_div(p.blocks, p.threads) * p.threads;
    p.blocks = std::min(p.blocks, p.col_panels);
    p.block_cols = ceil_div(p.col_panels, p.blocks) * uk.nr;
    return p;
}

// Whether a zero-padded copy of the input pays in the runs layout: at stride
// 1 along rows, a micro-panel half that stays inside one output row is read
// in place only when none of its taps falls in the padding; on the copy none
// does. Rows of at least two half-panels, so that most halves stay inside a row.
template <typename T>
bool pad_a_copy_first(const ConvShape& s) {
    const UKernel<T> uk = gemm_ukernel<T>();
    return uk.in_place != nullptr && s.sw == 1 && (s.pad_top > 0 || s.pad_left > 0) &&
           s.ow >= uk.nr;
}

// Whether the phased layout is the faster one. Measured against the runs
// layout (float32, 2 threads), it computes at most 12% extra columns and
//  - at stride 1 along rows, the runs layout's rows are long enough to be read
//    in place but not whole half-panels, so that some panels are packed:
//    1.03-1.15x on 20-, 28-, 36- and 100-wide rows, even on 58; at 56 and
//    224 (whole half-panels) 0.98x, at 13 and 14 (all packed) 0.7-0.9x.
//  - strided along rows, the taps span more than two strides (resnet_stem's
//    7 at 2: 1.04-1.35x; alexnet_c1's 11 at 4: 1.02-1.07x); 3x3 and 1x1 at
//    stride 2 ran 0.92x and 0.65x (its copy costs as much as its GEMM).
bool phased_pays(const ConvShape& s, int nr) {
    const Phased f = phased_layout(s, nr, true);
    if (f.cols * 100 > s.oh * s.ow * 112) return false;  // dropped columns
    if (s.sw == 1) return s.ow >= nr && s.ow % (nr / 2) != 0;
    return (s.kw - 1) * s.dw + 1 > 2 * s.sw;
}

// The copies the convolution runs on: chunks of `chunk` images, `per_image`
// elements each, and `tail` zeros after the last, which the phased layout's
// dropped columns read past it. A chunk holds images enough for 8192 GEMM
// columns (an interleaved A/B on resnet_stem, alexnet_c1 and resnet_3x3_56:
// as fast as the whole batch; resnet_3x3_28 with an image per chunk, 848
// columns, ran 0.81x), within 8 MB.
struct CopyPlan {
    Phased f;
    i64 per_image, chunk, tail;
};

CopyPlan copy_plan(const ConvShape& s, int nr, bool phased, i64 item_size) {
    constexpr i64 kMinColumns = 8192, kBudgetBytes = 8 << 20;
    CopyPlan c{phased_layout(s, nr, phased), 0, 0, 0};
    c.per_image = s.c * c.f.channel;
    const i64 columns = phased ? c.f.cols : s.oh * s.ow;
    c.chunk = std::min({s.n, ceil_div(kMinColumns, columns),
                        std::max<i64>(1, kBudgetBytes / (c.per_image * item_size))});
    if (phased) {
        const std::vector<std::ptrdiff_t> off = tap_offsets(s, &c.f, s.c / s.groups * s.kh * s.kw);
        const i64 last_read = (c.chunk - 1) * c.per_image +
                              (s.groups - 1) * (s.c / s.groups) * c.f.channel + c.f.cols - 1 +
                              *std::max_element(off.begin(), off.end());
        c.tail = std::max<i64>(0, last_read + 1 - c.chunk * c.per_image);
    }
    return c;
}

/* The convolution on copies of chunks of images (a bounded buffer, kept by
   the thread): zero-padded and run without padding in the runs layout, or in
   phase planes in the phased layout. The last chunk's dropped columns may
   read the images of the chunk before it: they are dropped. */
template <typename T>
void conv2d_on_copies(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                      bool relu, int threads, bool phased) {
    const CopyPlan c = copy_plan(s, gemm_ukernel<T>().nr, phased, sizeof(T));
    ConvShape p = s;  // the runs layout reads the copy as an unpadded input
    if (!phased) {
        p.h = c.f.rows;
        p.w = c.f.pitch;
        p.pad_top = p.pad_left = 0;
    }
    T* copy = scratch<T>(ScratchSlot::padded_conv_input, c.chunk * c.per_image + c.tail);
    std::fill(copy + c.chunk * c.per_image, copy + c.chunk * c.per_image + c.tail, T(0));
    for (i64 n0 = 0; n0 < s.n; n0 += c.chunk) {
        p.n = std::min(c.chunk, s.n - n0);
        copy_phased(s, c.f, x + n0 * s.c * s.h * s.w, p.n, copy, threads);
        conv2d_packed(p, copy, weight, bias, out + n0 * s.k * s.oh * s.ow, relu, threads,
                      phased ? &c.f : nullptr);
    }
}

template <typename T>
GemmLayout resolve(const ConvShape& s, GemmLayout layout) {
    const UKernel<T> uk = gemm_ukernel<T>();
    if (uk.in_place == nullptr) return GemmLayout::runs;  // the phased layout reads in place
    if (layout == GemmLayout::choose)
        return phased_pays(s, uk.nr) ? GemmLayout::phased : GemmLayout::runs;
    return layout;
}

}  // namespace

template <typename T>
GemmInput conv2d_gemm_input(const ConvShape& s, GemmLayout layout, int threads) {
    const UKernel<T> uk = gemm_ukernel<T>();
    layout = resolve<T>(s, layout);
    const bool phased = layout == GemmLayout::phased;
    const bool copied = phased || pad_a_copy_first<T>(s);
    i64 copy = 0, columns = s.n * s.oh * s.ow;  // of the first (largest) chunk's GEMM
    if (copied) {
        const CopyPlan c = copy_plan(s, uk.nr, phased, sizeof(T));
        copy = c.chunk * c.per_image + c.tail;
        columns = c.chunk * (phased ? c.f.cols : s.oh * s.ow);
    }
    const GemmPlan plan = plan_gemm<T>(s, columns, threads);
    GemmInput in{layout, copy, columns};
    in.packed_weights = s.groups * (plan.panels - plan.first_packed) * uk.mr * plan.gm.depth;
    in.threads = plan.threads;
    in.block_cols = plan.block_cols;
    in.b_block = phased ? 0 : Blocking<T>::kc * plan.block_cols;
    in.tiles = ceil_div(plan.block_cols, uk.nr) * plan.panels * uk.mr * uk.nr;
    return in;
}

template <typename T>
void conv2d_gemm(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                 bool relu, int threads, GemmLayout layout) {
    layout = resolve<T>(s, layout);
    if (layout == GemmLayout::phased)
        conv2d_on_copies(s, x, weight, bias, out, relu, threads, true);
    else if (pad_a_copy_first<T>(s))
        conv2d_on_copies(s, x, weight, bias, out, relu, threads, false);
    else
        conv2d_packed(s, x, weight, bias, out, relu, threads, nullptr);
}

namespace {

// The in-place sources of the micro-panels of columns [jb, je) in the phased
// layout: each half NR/2 columns of one image's copy.
void phased_panels(const Phased& f, i64 per_image, i64 jb, i64 je, int nr, i64 group_offset,
                   PanelRuns& pr) {
    pr.runs.clear();
    pr.start.clear();  // nothing is packed
    pr.in_place.clear();
    for (i64 j0 = jb; j0 < je; j0 += nr) {
        const i64 at = j0 / f.cols * per_image + j0 % f.cols + group_offset;
        pr.in_place.push_back(at);
        pr.in_place.push_back(at + nr / 2);
    }
}

template <typename T>
void conv2d_packed(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out,
                   bool relu, int threads, const Phased* phased) {
    const UKernel<T> uk = gemm_ukernel<T>();
    const OutputColumns oc = phased ? OutputColumns{phased->cols, phased->pitch}
                                    : OutputColumns{s.oh * s.ow, s.ow};
    const GemmPlan plan = plan_gemm<T>(s, s.n * oc.per_image, threads);
    const Gemm& gm = plan.gm;
    const i64 panels = plan.panels, first_packed = plan.first_packed;
    const i64 blocks = plan.blocks, col_panels_all = plan.col_panels;
    const i64 block_cols = plan.block_cols;
    threads = plan.threads;
    // every element of ap is written: no zero-filling
    const i64 packed_panels = panels - first_packed;
    T* ap = scratch<T>(ScratchSlot::packed_weights,
                       std::max<i64>(1, s.groups * packed_panels * uk.mr * gm.depth));
    pack_weights(s, gm, uk.mr, first_packed, weight, ap, threads);

    // each unit owns its output tiles, so the sums never depend on the split
    using B = Blocking<T>;
    const i64 units = s.groups * blocks;
    const i64 mc = B::mc / uk.mr * uk.mr;
    // depth blocks of (nearly) equal size, so that none is a short tail
    const i64 kc_max = ceil_div(gm.depth, ceil_div(gm.depth, B::kc));
    // In the runs layout, panels whose halves are runs inside one input row
    // are read in place (no packing); in the phased layout, all of them.
    const bool in_place = uk.in_place != nullptr && (phased || s.sw == 1);
    const std::vector<std::ptrdiff_t> offsets =
        in_place ? tap_offsets(s, phased, gm.depth) : std::vector<std::ptrdiff_t>();
    const i64 image_size = phased ? s.c * phased->channel : s.c * s.h * s.w;
    const i64 channel_size = phased ? phased->channel : s.h * s.w;

    const auto pack_input = direct_kernels<T>().pack_input;
    team(units, threads, [&](UnitQueue& q) {
        Workspace<T> ws;
        ws.bp.resize(phased ? 0 : B::kc * block_cols);
        // an edge tile per (column panel, MR rows) of the unit, kept across depth blocks
        ws.tile.resize(ceil_div(block_cols, uk.nr) * panels * uk.mr * uk.nr);
        for (i64 unit; claim(q, unit);) {
            const i64 g = unit / blocks, block = unit % blocks;
            const i64 jb = block * col_panels_all / blocks * uk.nr;
            const i64 je = std::min((block + 1) * col_panels_all / blocks * uk.nr, gm.cols);
            const i64 col_panels = ceil_div(je - jb, uk.nr);
            const i64 group_offset = g * (s.c / s.groups) * channel_size;
            const T* ag = ap + g * packed_panels * uk.mr * gm.depth;
            const T* wg = weight + g * gm.rows * gm.depth;
            if (phased)
                phased_panels(*phased, image_size, jb, je, uk.nr, group_offset, ws.runs);
            else
                runs_of_panels(s, jb, je, uk.nr, group_offset, in_place, ws.runs);
            ws.runs.out_at.clear();
            for (i64 j0 = jb; j0 < je; j0 += uk.nr)
                ws.runs.out_at.push_back(tile_start(s, oc, uk.nr, j0, je));
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
                                compute_tile(s, oc, uk, [&](T* c, i64 ldc, bool acc, const T* bi,
                                                            bool re) {
                                    if (a_rows)
                                        uk.rows_in_place(kc, a, gm.depth, x + h0, x + h1,
                                                         offsets.data() + p0, c, ldc, acc, bi, re);
                                    else
                                        uk.in_place(kc, a, x + h0, x + h1, offsets.data() + p0,
                                                    c, ldc, acc, bi, re);
                                }, g, i, mr_eff, j0, nr_eff, ws.runs.out_at[jp], accumulate, last, bias, relu, out,
                                             tile);
                            } else {
                                compute_tile(s, oc, uk, [&](T* c, i64 ldc, bool acc, const T* bi,
                                                            bool re) {
                                    if (a_rows)
                                        uk.rows(kc, a, gm.depth, b, c, ldc, acc, bi, re);
                                    else
                                        uk.fn(kc, a, b, c, ldc, acc, bi, re);
                                }, g, i, mr_eff, j0, nr_eff, ws.runs.out_at[jp], accumulate, last, bias, relu, out,
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
                                 float*, bool, int, GemmLayout);
template void conv2d_gemm<double>(const ConvShape&, const double*, const double*,
                                  const double*, double*, bool, int, GemmLayout);
template GemmInput conv2d_gemm_input<float>(const ConvShape&, GemmLayout, int);
template GemmInput conv2d_gemm_input<double>(const ConvShape&, GemmLayout, int);

}  // namespace fastconv
