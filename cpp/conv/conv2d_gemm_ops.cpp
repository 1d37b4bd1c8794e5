// The convolutions that are plain GEMMs on the input or on one image's
// im2col matrix: the 1x1 forward and the gradients.
#include <algorithm>
#include <memory>
#include <vector>

#include "../direct/direct.h"
#include "../gemm/blocking.h"
#include "../gemm/gemm.h"
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
    team(units, nt, [&](UnitQueue& q) {
        GemmWorkspace<T> ws;
        for (i64 unit; claim(q, unit);) {
            const i64 product = unit / per_product, part = unit % per_product;
            const i64 n = product / s.groups, g = product % s.groups;
            const i64 j0 = part % split.col_blocks * Blocking<T>::nc;
            const i64 i0 = part / split.col_blocks * split.rows_per_group;
            gemm_block<T>(kg, pixels, cg, {weight + g * kg * cg, cg, 1},
                          {x + (n * s.c + g * cg) * pixels, pixels, 1},
                          out + (n * s.k + g * kg) * pixels, pixels, false,
                          bias ? bias + g * kg : nullptr, relu, j0,
                          std::min(Blocking<T>::nc, pixels - j0), i0,
                          std::min(kg, i0 + split.rows_per_group), ws);
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
    std::unique_ptr<T[]> flipped(new T[s.c * kg * taps]);
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
    conv2d_gemm<T>(t, grad_out, flipped.get(), nullptr, grad_input, false, threads);
}

template <typename T>
void conv2d_backward(const ConvShape& s, const T* grad_out, const T* x, const T* weight,
                     T* grad_input, T* grad_weight, T* grad_bias, int threads) {
    const i64 cg = s.c / s.groups, kg = s.k / s.groups;
    const i64 depth = cg * s.kh * s.kw, pixels = s.oh * s.ow, plane = s.h * s.w;
    // Images go in chunks whose im2col matrix fits a fixed budget (not the
    // thread count, so that the sums do not depend on it): a few GEMMs per
    // chunk instead of several per image.
    constexpr i64 kChunkBytes = 8 << 20;
    const i64 per_image = s.c * s.kh * s.kw * pixels;
    const i64 chunk = std::max<i64>(1, std::min(s.n, kChunkBytes / (per_image * i64(sizeof(T)))));
    // every element is written before it is read: no zero-filling
    // At stride 1 the input gradient is a convolution of grad_out with the
    // filters flipped and transposed, padded to "full": the forward GEMM
    // kernel computes it for the whole batch, with no im2col matrix to fold.
    // It multiplies by the zeros of that padding too, so only where the input
    // is hardly larger than the output ("same" padding).
    const bool as_conv = s.sh == 1 && s.sw == 1 && s.pad_top <= s.dh * (s.kh - 1) &&
                         s.pad_left <= s.dw * (s.kw - 1) && 4 * plane <= 5 * pixels;
    if (as_conv) input_gradient_as_conv(s, grad_out, weight, grad_input, threads);
    std::unique_ptr<T[]> cols(new T[per_image * chunk]);
    std::unique_ptr<T[]> dcols(as_conv ? nullptr : new T[per_image * chunk]);
    std::unique_ptr<T[]> g(new T[s.k * pixels * chunk]);
    if (s.n == 0) std::fill(grad_weight, grad_weight + s.k * depth, T(0));
    for (i64 n0 = 0; n0 < s.n; n0 += chunk) {
        ConvShape part = s;
        part.n = std::min(chunk, s.n - n0);
        const i64 cols_ld = part.n * pixels;
        unfold_images(part, x + n0 * s.c * plane, cols.get(), threads);
        /* g[k][j*P + p] <- grad_out[n0 + j][k][p]: the chunk's gradient as one matrix */
        for (i64 j = 0; j < part.n; ++j)
            for (i64 k = 0; k < s.k; ++k)
                std::copy_n(grad_out + ((n0 + j) * s.k + k) * pixels, pixels,
                            g.get() + k * cols_ld + j * pixels);
        for (i64 grp = 0; grp < s.groups; ++grp) {
            const T* gg = g.get() + grp * kg * cols_ld;
            /* grad_weight[grp*Kg + i][q] += sum_p g[grp*Kg + i][p] * cols[grp*depth + q][p] */
            gemm<T>(kg, depth, cols_ld, {gg, cols_ld, 1},
                    {cols.get() + grp * depth * cols_ld, 1, cols_ld},
                    grad_weight + grp * kg * depth, depth, n0 > 0, nullptr, false, threads);
            if (as_conv) continue;
            /* dcols[grp*depth + q][p] <- sum_i weight[grp*Kg + i][q] * g[grp*Kg + i][p] */
            gemm<T>(depth, cols_ld, kg, {weight + grp * kg * depth, 1, depth}, {gg, cols_ld, 1},
                    dcols.get() + grp * depth * cols_ld, cols_ld, false, nullptr, false,
                    threads);
        }
        if (!as_conv) fold_images(part, dcols.get(), grad_input + n0 * s.c * plane, threads);
    }
    const int nt = threads_for(s.n * s.k * pixels, s.k, threads);
    parallel_for(s.k, nt, [&](i64 k) {
        double sum = 0;  // in order, images then pixels
        for (i64 n = 0; n < s.n; ++n) {
            const T* gk = grad_out + (n * s.k + k) * pixels;
            for (i64 p = 0; p < pixels; ++p) sum += gk[p];
        }
        grad_bias[k] = T(sum);
    });
}

template void conv2d_1x1<float>(const ConvShape&, const float*, const float*, const float*, float*,
                                bool, int);
template void conv2d_1x1<double>(const ConvShape&, const double*, const double*, const double*,
                                 double*, bool, int);
template void conv2d_backward<float>(const ConvShape&, const float*, const float*, const float*,
                                     float*, float*, float*, int);
template void conv2d_backward<double>(const ConvShape&, const double*, const double*,
                                      const double*, double*, double*, double*, int);

}  // namespace fastconv
