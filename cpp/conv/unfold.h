// im2col and its adjoint, in the textbook's layout (for fastconv.im2col) and
// per image in the GEMM's layout (for the gradients). Zero padding is implied
// by the ConvShape's pad_top/pad_left and output size; k and groups are unused.
#pragma once

#include "conv2d.h"

namespace fastconv {

/* out[(n*OH + oh)*OW + ow][(c*KH + kh)*KW + kw] <- x[n][c][ih][iw] or 0 */
template <typename T>
void im2col_rows(const ConvShape& s, const T* x, T* out, int threads);

/* out[n][c][ih][iw] <- sum of cols[(n*OH + oh)*OW + ow][(c*KH + kh)*KW + kw] over the
   taps that read it (the adjoint of im2col_rows) */
template <typename T>
void col2im_rows(const ConvShape& s, const T* cols, T* out, int threads);

/* cols[(c*KH + kh)*KW + kw][j*OH*OW + oh*OW + ow] <- x[j][c][ih][iw] or 0, for the
   s.n images of x side by side: one GEMM operand for a chunk of the batch */
template <typename T>
void unfold_images(const ConvShape& s, const T* x, T* cols, int threads);

/* x[j][c][ih][iw] <- (0 if zero_first, else itself) + the sum of
   cols[(c*KH + kh)*KW + kw][j*OH*OW + oh*OW + ow] over the taps that read it
   (the adjoint of unfold_images) */
template <typename T>
void fold_images(const ConvShape& s, const T* cols, T* x, int threads, bool zero_first);

}  // namespace fastconv
