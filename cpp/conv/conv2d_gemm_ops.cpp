// The convolutions that are plain GEMMs on the input or on one image's
// im2col matrix: the 1x1 forward and the gradients.
#include <algorithm>
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
#pragma omp parallel num_threads(nt)
    {
        GemmWorkspace<T> ws;
#pragma omp for schedule(static)
        for (i64 unit = 0; unit < units; ++unit) {
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
    }
}

template <typename T>
void conv2d_backward(const ConvShape& s, const T* grad_out, const T* x, const T* weight,
                     T* grad_input, T* grad_weight, T* grad_bias, int threads) {
    const i64 cg = s.c / s.groups, kg = s.k / s.groups;
    const i64 depth = cg * s.kh * s.kw, pixels = s.oh * s.ow;
    ConvShape image = s;
    image.n = 1;
    std::vector<T> cols(s.c * s.kh * s.kw * pixels), dcols(cols.size());
    if (s.n == 0) std::fill(grad_weight, grad_weight + s.k * depth, T(0));
    for (i64 n = 0; n < s.n; ++n) {
        const T* gn = grad_out + n * s.k * pixels;
        unfold_image(image, x + n * s.c * s.h * s.w, cols.data(), threads);
        for (i64 g = 0; g < s.groups; ++g) {
            /* grad_weight[g*Kg + i][q] += sum_p grad_out[n][g*Kg + i][p] * cols[g*depth + q][p] */
            gemm<T>(kg, depth, pixels, {gn + g * kg * pixels, pixels, 1},
                    {cols.data() + g * depth * pixels, 1, pixels}, grad_weight + g * kg * depth,
                    depth, n > 0, nullptr, false, threads);
            /* dcols[g*depth + q][p] <- sum_i weight[g*Kg + i][q] * grad_out[n][g*Kg + i][p] */
            gemm<T>(depth, pixels, kg, {weight + g * kg * depth, 1, depth},
                    {gn + g * kg * pixels, pixels, 1}, dcols.data() + g * depth * pixels, pixels,
                    false, nullptr, false, threads);
        }
        fold_image(image, dcols.data(), grad_input + n * s.c * s.h * s.w, threads);
    }
    const int nt = threads_for(s.n * s.k * pixels, s.k, threads);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (i64 k = 0; k < s.k; ++k) {
        double sum = 0;  // in order, images then pixels
        for (i64 n = 0; n < s.n; ++n) {
            const T* g = grad_out + (n * s.k + k) * pixels;
            for (i64 p = 0; p < pixels; ++p) sum += g[p];
        }
        grad_bias[k] = T(sum);
    }
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
