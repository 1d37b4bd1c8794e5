// The convolutions that are plain GEMMs on the input or on one image's
// im2col matrix: the 1x1 forward and the gradients.
#include <algorithm>
#include <memory>
#include <vector>

#include "../direct/direct.h"
#include "../gemm/blocking.h"
#include "../gemm/gemm.h"
#include "../scratch.h"
#include "conv2d.h"
#include "unfold.h"

namespace fastconv {

using i64 = std::int64_t;

template <typename T>
void conv2d_1x1(const ConvShape& s, const T* x, const T* weight, const T* bias, T* out, bool relu,
                int threads) {
    /* out[n][g*Kg + i][p] <- sum_c weight[g*Kg + i][c] * x[n][g*Cg + c][p]: per image and
       group a GEMM whose B is the input itself; all of them in one team of threads */
    const i64 cg = s.c / s.groups, kg = s.k / s.groups, pixels = s.h * s.w;
    const GemmSplit split = gemm_split<T>(kg, pixels, threads);
    const i64 per_product = split.col_blocks * split.row_groups;
    const i64 units = s.n * s.groups * per_product;
    const int nt = threads_for(s.n * s.k * cg * pixels, units, threads);
    // the weights packed once, not again by every unit (32 times on pointwise_1x1)
    const int mr = gemm_ukernel<T>().mr;
    const i64 group_packed = (kg + mr - 1) / mr * mr * cg;
    T* packed = scratch<T>(ScratchSlot::packed_weights, s.groups * group_packed);
    parallel_for(s.groups, threads_for(s.k * cg, s.groups, nt), [&](i64 g) {
        pack_a_rows<T>({weight + g * kg * cg, cg, 1}, 0, kg, cg, packed + g * group_packed);
    });
    team(units, nt, [&](UnitQueue& q) {
        GemmWorkspace<T> ws;
        for (i64 unit; claim(q, unit);) {
            const i64 product = unit / per_product, part = unit % per_product;
            const i64 n = product / s.groups, g = product % s.groups;
            const i64 j0 = part % split.col_blocks * split.cols_per_block;
            const i64 i0 = part / split.col_blocks * split.rows_per_group;
            gemm_block<T>(kg, pixels, cg, {weight + g * kg * cg, cg, 1},
                          {x + (n * s.c + g * cg) * pixels, pixels, 1},
                          out + (n * s.k + g * kg) * pixels, pixels, false,
                          bias ? bias + g * kg : nullptr, relu, j0,
                          std::min(split.cols_per_block, pixels - j0), i0,
                          std::min(kg, i0 + split.rows_per_group), ws, packed + g * group_packed);
        }
    });
}

/* grad_input[n][g*Cg + c] <- sum over i, a, b of grad_out[n][g*Kg + i] shifted by (a, b)
   times weight[g*Kg + i][c][KH-1-a][KW-1-b]: conv2d of grad_out (stride 1) with padding
   dilation*(K-1) - pad on each side, whose output is the input's size. */
template <typename T>
void input_gradient_as_conv(const ConvShape& s, const T* grad_out, const T* weight,
                            T* grad_input, int threads) {
    const i64 cg = s.c / s.groups, kg = s.k / s.groups, taps = s.kh * s.kw;
    T* flipped = scratch<T>(ScratchSlot::flipped_weight, s.c * kg * taps);
    for (i64 g = 0; g < s.groups; ++g)
        for (i64 c = 0; c < cg; ++c)
            for (i64 i = 0; i < kg; ++i)
                for (i64 t = 0; t < taps; ++t)
                    flipped[((g * cg + c) * kg + i) * taps + t] =
                        weight[((g * kg + i) * cg + c) * taps + taps - 1 - t];
    ConvShape t = s;
    t.c = s.k, t.h = s.oh, t.w = s.ow, t.k = s.c;
    t.pad_top = s.dh * (s.kh - 1) - s.pad_top, t.pad_left = s.dw * (s.kw - 1) - s.pad_left;
    t.oh = s.h, t.ow = s.w;
    if (t.k / t.groups < kDirectBelowGroupFilters)  // depthwise: the direct kernel, as forward
        direct_kernels<T>().conv(t, grad_out, flipped, nullptr, grad_input, false, threads);
    else
        conv2d_gemm<T>(t, grad_out, flipped, nullptr, grad_input, false, threads);
}

/* grad_bias[k] <- sum over images and pixels of grad_out[n][k] */
template <typename T>
void grad_bias_sums(const ConvShape& s, const T* grad_out, T* grad_bias, int threads) {
    const i64 pixels = s.oh * s.ow;
    parallel_for(s.k, threads_for(s.n * s.k * pixels, s.k, threads), [&](i64 k) {
        // in double, images in order; pixels p go to partial sum p % 4, so
        // that four additions are in flight instead of one
        double sum[4] = {};
        for (i64 n = 0; n < s.n; ++n) {
            const T* gk = grad_out + (n * s.k + k) * pixels;
            i64 p = 0;
            for (; p + 4 <= pixels; p += 4)
                for (int l = 0; l < 4; ++l) sum[l] += gk[p + l];
            for (; p < pixels; ++p) sum[p % 4] += gk[p];
        }
        grad_bias[k] = T((sum[0] + sum[1]) + (sum[2] + sum[3]));
    });
}

/* c (m x n) (+)= a (m x k) * b (k x n) on the calling thread; a_packed as for
   gemm_block */
template <typename T>
void gemm_here(i64 m, i64 n, i64 k, MatView<T> a, MatView<T> b, T* c, i64 ldc, bool accumulate,
               GemmWorkspace<T>& ws, const T* a_packed = nullptr) {
    for (i64 j0 = 0; j0 < n; j0 += Blocking<T>::nc)
        gemm_block<T>(m, n, k, a, b, c, ldc, accumulate, nullptr, false, j0,
                      std::min(Blocking<T>::nc, n - j0), 0, m, ws, a_packed);
}

// The pieces of the batch that the L2 backward's units unfold and fold:
// `images` whole images, or (images == 1) `rows` output rows of one image.
struct Pieces {
    i64 images, rows;
};

// Sized so that a piece's im2col matrix and its gradient (a unit works on one
// of them) stay in a 512 KB L2 with room for the GEMM's packed blocks: 192 KB
// for whole images, 384 KB for rows (alexnet_c1 1.07x faster than 192, 768
// even); {0, 0} when an image does not fit and rows are not allowed.
template <typename T>
Pieces l2_pieces(const ConvShape& s, bool row_pieces) {
    constexpr i64 kImagesBytes = 192 << 10, kRowsBytes = 384 << 10;
    const i64 per_row = s.c * s.kh * s.kw * s.ow * i64(sizeof(T)) * 2;
    const i64 per_image = per_row * s.oh;
    if (per_image <= kImagesBytes) return {std::min(s.n, kImagesBytes / per_image), s.oh};
    if (!row_pieces) return {0, 0};
    return {1, std::clamp<i64>(kRowsBytes / per_row, 1, s.oh)};
}

/* A piece's convolution: images [n0, ...) of x and grad_out seen from n0,
   output rows [oh0, oh0 + rows) (the row shift goes into pad_top). */
ConvShape piece_shape(const ConvShape& s, i64 images, i64 oh0, i64 rows) {
    ConvShape p = s;
    p.n = images, p.oh = rows, p.pad_top = s.pad_top - oh0 * s.sh;
    return p;
}

/* g[k][j*P + p] <- grad_out[n0 + j][k][oh0*OW + p], P = rows*OW, for j < images:
   the gradient of a piece as one matrix */
template <typename T>
void gather_grad(const ConvShape& s, const T* grad_out, i64 n0, i64 images, i64 oh0, i64 rows,
                 T* g) {
    const i64 pixels = s.oh * s.ow, piece = rows * s.ow;
    for (i64 j = 0; j < images; ++j)
        for (i64 k = 0; k < s.k; ++k)
            std::copy_n(grad_out + ((n0 + j) * s.k + k) * pixels + oh0 * s.ow, piece,
                        g + k * images * piece + j * piece);
}

/* The gradient of a piece as a K x P matrix: grad_out itself for one image's
   rows, else gathered into g */
template <typename T>
MatView<T> grad_piece(const ConvShape& s, const T* grad_out, i64 n0, i64 images, i64 oh0,
                      i64 rows, T* g) {
    if (images == 1) return {grad_out + n0 * s.k * s.oh * s.ow + oh0 * s.ow, s.oh * s.ow, 1};
    gather_grad(s, grad_out, n0, images, oh0, rows, g);
    return {g, images * rows * s.ow, 1};
}

/* Images per step of the direct grad weight kernel: about 2^21 multiply-adds
   (each step ends with a sum of lanes per weight) */
i64 weight_grad_step(const ConvShape& s) {
    const i64 per_image = std::max<i64>(1, s.k * (s.c / s.groups) * s.kh * s.kw * s.oh * s.ow);
    return std::clamp<i64>((1 << 21) / per_image, 1, std::max<i64>(s.n, 1));
}

/* Whether grad weight goes to the direct kernel: stride 1 along rows, taps
   along the row to fill its register tiles (1x1 layers are plain GEMMs), and
   enough rows per step to pay for the tiles' final sums. Against unfold + GEMM
   at 1 thread: lenet_c2 about 2x, resnet_3x3_28 1.1x, depthwise_3x3 (a GEMM
   of one row per group) 10x; resnet_3x3_14 (28 vector rows an image) was no
   faster. */
bool direct_weight_grad_pays(const ConvShape& s) {
    const i64 vector_rows = s.oh * ((s.ow + 7) / 8) * weight_grad_step(s);
    return s.sw == 1 && s.kw >= 2 && vector_rows >= 48;
}

/* How grad weight is split over the batch: `units` runs of `per_unit` images
   (the last may be shorter), each summed in steps of `step` images into a
   partial grad weight; the partials are then added in unit order. Shapes
   alone fix the split, so the sums do not depend on the thread count. At most
   16 units and 32 MB of partials: memory that does not grow with the batch. */
struct WeightSplit {
    i64 units, per_unit, step;
};

template <typename T>
WeightSplit weight_split(const ConvShape& s, i64 step) {
    const i64 weight_bytes = s.k * (s.c / s.groups) * s.kh * s.kw * i64(sizeof(T));
    const i64 most = std::clamp<i64>((32 << 20) / std::max<i64>(weight_bytes, 1), 1, 16);
    const i64 steps = (s.n + step - 1) / step;
    const i64 per_unit = (steps + most - 1) / most * step;
    return {(s.n + per_unit - 1) / per_unit, per_unit, step};
}

int weight_grad_direct_threads(const ConvShape& s, const WeightSplit& split, int threads) {
    const i64 weight_size = s.k * (s.c / s.groups) * s.kh * s.kw;
    return threads_for(s.n * weight_size * s.oh * s.ow, split.units * s.k, threads);
}

/* grad weight by the direct kernel (stride 1 along rows). Where the units of
   the split do not share out evenly over the threads (batch 1 has one), each
   is cut into as many filter slices as there are threads; a filter's sums do
   not depend on its slice. */
template <typename T>
void weight_grad_direct(const ConvShape& s, const T* grad_out, const T* x, T* grad_weight,
                        int threads) {
    const i64 weight_size = s.k * (s.c / s.groups) * s.kh * s.kw;
    const WeightSplit split = weight_split<T>(s, weight_grad_step(s));
    T* partial = scratch<T>(ScratchSlot::partials, split.units * weight_size);
    const auto kernel = direct_kernels<T>().conv_weight_grad;
    const int nt = weight_grad_direct_threads(s, split, threads);
    const i64 slices = split.units % nt == 0 ? 1 : std::min<i64>(nt, (s.k + 3) / 4);
    // slice boundaries on whole tiles of 4 filters
    const auto filter = [&](i64 slice) {
        return std::min(s.k, (s.k * slice / slices + 3) / 4 * 4);
    };
    parallel_for(split.units * slices, nt, [&](i64 unit) {
        const i64 u = unit / slices, f0 = filter(unit % slices), f1 = filter(unit % slices + 1);
        if (f0 == f1) return;
        const i64 begin = u * split.per_unit, end = std::min(s.n, begin + split.per_unit);
        for (i64 n0 = begin; n0 < end; n0 += split.step)
            kernel(s, grad_out, x, n0, std::min(end, n0 + split.step), f0, f1,
                   partial + u * weight_size, n0 > begin);
    });
    sum_in_order(partial, split.units, weight_size, grad_weight, false, threads);
}

int pieces_threads(const ConvShape& s, i64 units, int threads) {
    const i64 depth = s.c / s.groups * s.kh * s.kw;
    return threads_for(2 * s.n * s.k * depth * s.oh * s.ow, units, threads);
}

/* conv2d_backward in pieces (see Pieces) small enough to stay in one core's L2
   from unfolding to folding. Each unit runs on one thread from start to end
   (handing im2col matrices between threads step by step cost more than the
   second thread gained): grad input units are one piece of whole images each,
   or one image whose row pieces are folded in order (pieces of rows overlap in
   input rows); grad weight units (see WeightSplit, first in the same team, so
   that the small units even out the threads' shares) run the direct kernel, or
   unfold and multiply piece by piece. */
template <typename T>
void backward_in_l2_pieces(const ConvShape& s, Pieces pieces, const T* grad_out, const T* x,
                           const T* weight, T* grad_input, T* grad_weight, int threads) {
    const i64 cg = s.c / s.groups, kg = s.k / s.groups;
    const i64 depth = cg * s.kh * s.kw, plane = s.h * s.w;
    const i64 input_units = (s.n + pieces.images - 1) / pieces.images, weight_size = s.k * depth;
    const i64 piece = pieces.images * pieces.rows * s.ow;  // GEMM columns of a full piece
    const bool direct_weight = direct_weight_grad_pays(s);
    const WeightSplit split =
        weight_split<T>(s, direct_weight ? weight_grad_step(s) : pieces.images);
    T* partial = scratch<T>(ScratchSlot::partials, split.units * weight_size);
    // the grad input GEMMs' a, weight^T per group, packed once for every piece
    const int mr = gemm_ukernel<T>().mr;
    const i64 group_packed = (depth + mr - 1) / mr * mr * kg;
    T* packed = scratch<T>(ScratchSlot::packed_weights, s.groups * group_packed);
    for (i64 grp = 0; grp < s.groups; ++grp)
        pack_a_rows<T>({weight + grp * kg * depth, 1, depth}, 0, depth, kg,
                       packed + grp * group_packed);
    const auto weight_kernel = direct_kernels<T>().conv_weight_grad;
    const int nt = pieces_threads(s, split.units + input_units, threads);
    team(split.units + input_units, nt, [&](UnitQueue& q) {
        // this thread's buffers (the caller's slots are free: it holds only
        // `partial` and `packed`); grad weight's im2col matrix in the textbook's
        // layout (pixels x taps), so that the GEMM reads its b by rows
        const i64 cols_size = s.c * s.kh * s.kw * piece;
        T* cols = direct_weight ? nullptr : scratch<T>(ScratchSlot::backward_cols, cols_size);
        T* dcols = scratch<T>(ScratchSlot::backward_dcols, cols_size);
        T* g = scratch<T>(ScratchSlot::backward_grad, s.k * piece);
        // grad weight's a, a piece's gradient, packed once for its column blocks
        const i64 grad_packed = (kg + mr - 1) / mr * mr * piece;
        T* gp = direct_weight ? nullptr
                              : scratch<T>(ScratchSlot::packed_grad, s.groups * grad_packed);
        GemmWorkspace<T> ws;
        for (i64 unit; claim(q, unit);) {
            if (unit < split.units) {
                T* part = partial + unit * weight_size;
                const i64 begin = unit * split.per_unit;
                const i64 end = std::min(s.n, begin + split.per_unit);
                for (i64 n0 = begin; n0 < end; n0 += split.step) {
                    const i64 images = std::min(end, n0 + split.step) - n0;
                    if (direct_weight) {
                        weight_kernel(s, grad_out, x, n0, n0 + images, 0, s.k, part, n0 > begin);
                        continue;
                    }
                    for (i64 oh0 = 0; oh0 < s.oh; oh0 += pieces.rows) {
                        const i64 rows = std::min(pieces.rows, s.oh - oh0);
                        const i64 ld = images * rows * s.ow;
                        im2col_rows(piece_shape(s, images, oh0, rows), x + n0 * s.c * plane,
                                    cols, 1);
                        const MatView<T> gv = grad_piece(s, grad_out, n0, images, oh0, rows, g);
                        for (i64 grp = 0; grp < s.groups; ++grp) {
                            const MatView<T> a{gv.p + grp * kg * gv.rs, gv.rs, 1};
                            T* a_packed = gp + grp * grad_packed;
                            pack_a_rows<T>(a, 0, kg, ld, a_packed);
                            gemm_here<T>(kg, depth, ld, a,
                                         {cols + grp * depth, s.c * s.kh * s.kw, 1},
                                         part + grp * kg * depth, depth,
                                         n0 > begin || oh0 > 0, ws, a_packed);
                        }
                    }
                }
                continue;
            }
            const i64 n0 = (unit - split.units) * pieces.images;
            const i64 images = std::min(pieces.images, s.n - n0);
            for (i64 oh0 = 0; oh0 < s.oh; oh0 += pieces.rows) {
                const i64 rows = std::min(pieces.rows, s.oh - oh0);
                const i64 ld = images * rows * s.ow;
                const MatView<T> gv = grad_piece(s, grad_out, n0, images, oh0, rows, g);
                for (i64 grp = 0; grp < s.groups; ++grp)
                    gemm_here<T>(depth, ld, kg, {weight + grp * kg * depth, 1, depth},
                                 {gv.p + grp * kg * gv.rs, gv.rs, 1}, dcols + grp * depth * ld,
                                 ld, false, ws, packed + grp * group_packed);
                fold_images(piece_shape(s, images, oh0, rows), dcols,
                            grad_input + n0 * s.c * plane, 1, oh0 == 0);
            }
        }
    });
    sum_in_order(partial, split.units, weight_size, grad_weight, false, threads);
}

/* At stride 1 the input gradient is a convolution of grad_out with the
   filters flipped and transposed, padded to "full": the forward GEMM kernel
   computes it for the whole batch, with no im2col matrix to fold. It
   multiplies by the zeros of that padding too, so only where the input is
   hardly larger than the output ("same" padding). Every other shape goes in
   pieces through L2, of rows where an image does not fit. */
bool input_gradient_is_conv(const ConvShape& s) {
    return s.sh == 1 && s.sw == 1 && s.pad_top <= s.dh * (s.kh - 1) &&
           s.pad_left <= s.dw * (s.kw - 1) && 4 * s.h * s.w <= 5 * s.oh * s.ow;
}

/* The whole-batch path's GEMM grad weight: images go in chunks whose im2col
   matrix fits a fixed budget (not the thread count, so that the sums do not
   depend on it), a few GEMMs per chunk instead of several per image. */
template <typename T>
i64 im2col_chunk(const ConvShape& s) {
    constexpr i64 kChunkBytes = 8 << 20;
    const i64 per_image = s.c * s.kh * s.kw * s.oh * s.ow;
    return std::max<i64>(1, std::min(s.n, kChunkBytes / (per_image * i64(sizeof(T)))));
}

/* grad weight is a small matrix (K x depth) summed over every pixel of the
   batch: with few tiles of it, the pixels are cut into slices too (of 4 depth
   blocks at least, and about 2^20 multiply-adds); 0 for no slices */
template <typename T>
i64 weight_pixel_slice(const ConvShape& s) {
    constexpr i64 kc = Blocking<T>::kc;
    const i64 kg = s.k / s.groups, depth = s.c / s.groups * s.kh * s.kw;
    const i64 weight_tiles = (kg + Blocking<T>::mc - 1) / Blocking<T>::mc *
                             ((depth + Blocking<T>::nc - 1) / Blocking<T>::nc);
    return weight_tiles >= 8 ? 0
                             : std::max(4 * kc, ((1 << 20) / (kg * depth) + kc - 1) / kc * kc);
}

template <typename T>
BackwardPlan conv2d_backward_plan(const ConvShape& s, int threads) {
    BackwardPlan plan;
    if (s.n == 0) return plan;
    plan.direct_weight = direct_weight_grad_pays(s);
    plan.weight_step = weight_grad_step(s);
    const Pieces pieces = l2_pieces<T>(s, !input_gradient_is_conv(s));
    plan.piece_images = pieces.images, plan.piece_rows = pieces.rows;
    if (pieces.images) {
        const WeightSplit split =
            weight_split<T>(s, plan.direct_weight ? plan.weight_step : pieces.images);
        plan.weight_units = split.units;
        plan.threads = pieces_threads(s, split.units + (s.n + pieces.images - 1) / pieces.images,
                                      threads);
    } else if (plan.direct_weight) {
        const WeightSplit split = weight_split<T>(s, plan.weight_step);
        plan.weight_units = split.units;
        plan.threads = weight_grad_direct_threads(s, split, threads);
    } else {
        plan.chunk = im2col_chunk<T>(s);
        const i64 slice = weight_pixel_slice<T>(s);
        plan.slices = slice > 0 ? std::max<i64>(1, (plan.chunk * s.oh * s.ow + slice - 1) / slice)
                                : 1;
        plan.threads = threads;
    }
    return plan;
}

template <typename T>
void conv2d_backward(const ConvShape& s, const T* grad_out, const T* x, const T* weight,
                     T* grad_input, T* grad_weight, T* grad_bias, int threads) {
    const i64 cg = s.c / s.groups, kg = s.k / s.groups;
    const i64 depth = cg * s.kh * s.kw, pixels = s.oh * s.ow, plane = s.h * s.w;
    grad_bias_sums(s, grad_out, grad_bias, threads);
    if (s.n == 0) {
        std::fill(grad_weight, grad_weight + s.k * depth, T(0));
        return;
    }
    const BackwardPlan plan = conv2d_backward_plan<T>(s, threads);
    if (plan.piece_images) {
        backward_in_l2_pieces(s, {plan.piece_images, plan.piece_rows}, grad_out, x, weight,
                              grad_input, grad_weight, threads);
        return;
    }
    // every element is written before it is read: no zero-filling
    input_gradient_as_conv(s, grad_out, weight, grad_input, threads);
    if (plan.direct_weight) {
        weight_grad_direct(s, grad_out, x, grad_weight, threads);
        return;
    }
    const i64 per_image = s.c * s.kh * s.kw * pixels, chunk = plan.chunk;
    T* cols = scratch<T>(ScratchSlot::backward_cols, per_image * chunk);
    T* g = scratch<T>(ScratchSlot::backward_grad, s.k * pixels * chunk);
    const i64 weight_slice = weight_pixel_slice<T>(s);
    for (i64 n0 = 0; n0 < s.n; n0 += chunk) {
        ConvShape part = s;
        part.n = std::min(chunk, s.n - n0);
        const i64 cols_ld = part.n * pixels;
        unfold_images(part, x + n0 * s.c * plane, cols, threads);
        gather_grad(s, grad_out, n0, part.n, 0, s.oh, g);
        /* grad_weight[grp*Kg + i][q] += sum_p g[grp*Kg + i][p] * cols[grp*depth + q][p] */
        for (i64 grp = 0; grp < s.groups; ++grp)
            gemm_depth_sliced<T>(kg, depth, cols_ld, {g + grp * kg * cols_ld, cols_ld, 1},
                                 {cols + grp * depth * cols_ld, 1, cols_ld},
                                 grad_weight + grp * kg * depth, n0 > 0, weight_slice, threads);
    }
}

template void conv2d_1x1<float>(const ConvShape&, const float*, const float*, const float*, float*,
                                bool, int);
template void conv2d_1x1<double>(const ConvShape&, const double*, const double*, const double*,
                                 double*, bool, int);
template BackwardPlan conv2d_backward_plan<float>(const ConvShape&, int);
template BackwardPlan conv2d_backward_plan<double>(const ConvShape&, int);
template void conv2d_backward<float>(const ConvShape&, const float*, const float*, const float*,
                                     float*, float*, float*, int);
template void conv2d_backward<double>(const ConvShape&, const double*, const double*,
                                      const double*, double*, double*, double*, int);

}  // namespace fastconv
