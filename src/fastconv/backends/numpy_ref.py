"""The NumPy reference backend: the readable definition every backend is tested against.

Everything is vectorised over batch, channels and pixels; the only Python loops
run over the KH*KW kernel offsets. Convolution is a matrix product of the
weights with the unfolded input, per image, cols[n][c][kh][kw][oh][ow], which
writes the (N, K, OH, OW) result in place; when images are small, one product
over the whole batch, cols[c][kh][kw][n][oh][ow], makes better use of BLAS.
"""

from __future__ import annotations

import numpy as np

from .._params import ConvSpec, PoolSpec


def _offsets(spec):
    """Yield (kh, kw, rows, cols): the slices of the padded input that kernel
    offset (kh, kw) reads for every output pixel."""
    sh, sw = spec.stride
    dh, dw = spec.dilation
    for kh in range(spec.kh):
        rows = slice(kh * dh, kh * dh + (spec.oh - 1) * sh + 1, sh)
        for kw in range(spec.kw):
            cols = slice(kw * dw, kw * dw + (spec.ow - 1) * sw + 1, sw)
            yield kh, kw, rows, cols


# -------------------------------------------------------------- padding


def _pad_index(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every padded position along one axis (modes other than zeros)."""
    i = np.arange(-before, size + after)
    if mode == "reflect":
        i = np.abs(i)
        return np.where(i >= size, 2 * (size - 1) - i, i)
    if mode == "replicate":
        return np.clip(i, 0, size - 1)
    if mode == "circular":
        return i % size
    raise AssertionError(mode)


def pad(x: np.ndarray, pads, mode: str = "zeros") -> np.ndarray:
    """x (N, C, H, W) padded by (top, bottom, left, right) in PyTorch's padding modes."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    if mode == "zeros":
        n, c, h, w = x.shape
        xp = np.zeros((n, c, h + top + bottom, w + left + right), x.dtype)
        xp[:, :, top:top + h, left:left + w] = x
        return xp
    rows = _pad_index(x.shape[2], top, bottom, mode)
    cols = _pad_index(x.shape[3], left, right, mode)
    return x[:, :, rows[:, None], cols[None, :]]


def pad_adjoint(grad_padded: np.ndarray, pads, mode: str, h: int, w: int) -> np.ndarray:
    """The adjoint of `pad`: every padded position's gradient goes back to its source."""
    top, bottom, left, right = pads
    if mode == "zeros":
        return grad_padded[:, :, top:top + h, left:left + w]
    rows = _pad_index(h, top, bottom, mode)
    cols = _pad_index(w, left, right, mode)
    n, c = grad_padded.shape[:2]
    by_rows = np.zeros((n, c, h, grad_padded.shape[3]), grad_padded.dtype)
    np.add.at(by_rows, (slice(None), slice(None), rows), grad_padded)
    grad = np.zeros((n, c, h, w), grad_padded.dtype)
    np.add.at(grad, (slice(None), slice(None), slice(None), cols), by_rows)
    return grad


# ------------------------------------------------------- unfold and fold


def windows(xp: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Every window of the padded input, a strided view (N, C, KH, KW, OH, OW).

    /* windows[n][c][kh][kw][oh][ow] = xp[n][c][oh*sh + kh*dh][ow*sw + kw*dw] */
    """
    sh, sw = spec.stride
    dh, dw = spec.dilation
    n, c, hp, wp = xp.shape
    s_n, s_c, s_h, s_w = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, spec.kh, spec.kw, spec.oh, spec.ow),
        strides=(s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)


def unfold(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The padded input unfolded per image and group, (N, groups, C/groups*KH*KW, OH*OW).

    A copy of `windows`, except for 1x1 kernels with unit stride and no
    padding, where the input itself already is that matrix.
    """
    cols = windows(pad(x, spec.pads, spec.padding_mode), spec)
    return cols.reshape(spec.n, spec.groups, -1, spec.oh * spec.ow)


def unfold_batch(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The padded input unfolded per group over the whole batch, (groups, C/groups*KH*KW, N*OH*OW)."""
    cols = windows(pad(x, spec.pads, spec.padding_mode), spec)
    return cols.transpose(1, 2, 3, 0, 4, 5).reshape(spec.groups, -1, spec.n * spec.oh * spec.ow)


def fold(cols: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The adjoint of `windows`: sums cols (N, C, KH, KW, OH, OW) into the padded input.

    /* xp[n][c][oh*sh + kh*dh][ow*sw + kw*dw] += cols[n][c][kh][kw][oh][ow] */
    """
    top, bottom, left, right = spec.pads
    xp = np.zeros((spec.n, spec.c, spec.h + top + bottom, spec.w + left + right), cols.dtype)
    for kh, kw, rows, cols_ in _offsets(spec):
        xp[:, :, rows, cols_] += cols[:, :, kh, kw]
    return xp


def _weights(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """(K, C/groups, KH, KW) -> one matrix per group, (groups, K/groups, C/groups*KH*KW)."""
    return weight.reshape(spec.groups, spec.k // spec.groups, -1)


# ------------------------------------------------------------- the ops


def conv2d(spec: ConvSpec, x, weight, bias, out) -> None:
    """out (N, K, OH, OW) <- act(weight * x + bias)."""
    # Ungrouped layers: one GEMM over the whole batch; one BLAS call keeps its
    # threads busy where one call per image made them wait on each other (on a
    # loaded machine, up to 4x slower), and costs a transposed copy of the result.
    w = _weights(spec, weight)
    if spec.groups == 1 and spec.pointwise:
        # The input already is the matrix: one product per image, straight
        # into the output (2x faster than unfolding into one batch-wide one).
        np.matmul(w[0], x.reshape(spec.n, spec.c, -1), out=out.reshape(spec.n, spec.k, -1))
        _epilogue(spec, bias, out)
        return
    if spec.groups > 1:
        # Per image and group, straight into the output: a batch-wide unfold
        # would transpose the whole im2col matrix (115 MB on depthwise_3x3).
        np.matmul(w, unfold(x, spec), out=out.reshape(spec.n, spec.groups, -1, spec.oh * spec.ow))
        _epilogue(spec, bias, out)
        return
    cols = unfold_batch(x, spec)
    if spec.n == 1:
        # One image: the wide product is already NCHW, no transposed copy.
        np.matmul(w[0], cols[0], out=out.reshape(spec.k, -1))
    elif spec.n * spec.oh * spec.ow >= spec.k:
        # One 2-D product with its long side first, as the textbook has it
        # (transposed views, no copies): OpenBLAS threads that better than a
        # stack of products or the wide orientation (24 against 36 ms on
        # resnet_3x3_14); with more filters than pixels the other way round.
        y = (cols[0].T @ w[0].T).reshape(spec.n, spec.oh, spec.ow, spec.k)
        np.copyto(out, y.transpose(0, 3, 1, 2))
    else:
        y = w[0] @ cols[0]
        np.copyto(out, y.reshape(spec.k, spec.n, spec.oh, spec.ow).transpose(1, 0, 2, 3))
    _epilogue(spec, bias, out)


def _epilogue(spec: ConvSpec, bias, out) -> None:
    if bias is not None:
        out += bias[:, None, None]
    if spec.activation == "relu":
        np.maximum(out, 0, out=out)


def conv2d_backward(spec: ConvSpec, grad_out, x, weight):
    """-> (grad_input (N, C, H, W), grad_weight, grad_bias)."""
    g = grad_out.reshape(spec.n, spec.groups, spec.k // spec.groups, spec.oh * spec.ow)
    cols = unfold(x, spec)
    grad_weight = np.matmul(g, cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(weight.shape)
    grad_cols = np.matmul(_weights(spec, weight).transpose(0, 2, 1), g)
    grad_cols = grad_cols.reshape(spec.n, spec.c, spec.kh, spec.kw, spec.oh, spec.ow)
    grad_input = pad_adjoint(fold(grad_cols, spec), spec.pads, spec.padding_mode,
                             spec.h, spec.w)
    grad_bias = grad_out.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


def im2col(spec: ConvSpec, x, out) -> None:
    """out (N*OH*OW, C*KH*KW) <- the textbook's patch matrix."""
    cols = windows(pad(x, spec.pads), spec)
    np.copyto(out.reshape(spec.n, spec.oh, spec.ow, spec.c, spec.kh, spec.kw),
              cols.transpose(0, 4, 5, 1, 2, 3))


def col2im(spec: ConvSpec, cols, out) -> None:
    """out (N, C, H, W) <- the sum of every patch back at its place."""
    patches = cols.reshape(spec.n, spec.oh, spec.ow, spec.c, spec.kh, spec.kw)
    xp = fold(patches.transpose(0, 3, 4, 5, 1, 2), spec)
    np.copyto(out, pad_adjoint(xp, spec.pads, "zeros", spec.h, spec.w))


# --------------------------------------------------------------- pooling


def _pool_pads(spec: PoolSpec):
    """(top, bottom, left, right) padding that holds every window, ceil_mode's
    last one included (its taps past the input are masked out)."""
    sh, sw = spec.stride
    ph, pw = spec.padding
    dh, dw = spec.dilation
    bottom = max((spec.oh - 1) * sh + (spec.kh - 1) * dh + 1 - spec.h - ph, 0)
    right = max((spec.ow - 1) * sw + (spec.kw - 1) * dw + 1 - spec.w - pw, 0)
    return (ph, bottom, pw, right)


def _pool_taps(spec: PoolSpec):
    """Yield (rows, cols, inside, index) per kernel offset in row-major order:
    the slices of the padded input the windows read there, whether each tap
    (OH, OW) lies inside the input rather than the padding, and its flat
    position h * W + w in the input plane."""
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh = np.arange(spec.oh) * sh - spec.padding[0]
    ow = np.arange(spec.ow) * sw - spec.padding[1]
    for kh in range(spec.kh):
        ih = oh + kh * dh
        rows = slice(kh * dh, kh * dh + (spec.oh - 1) * sh + 1, sh)
        for kw in range(spec.kw):
            iw = ow + kw * dw
            cols = slice(kw * dw, kw * dw + (spec.ow - 1) * sw + 1, sw)
            inside = ((ih >= 0) & (ih < spec.h))[:, None] & ((iw >= 0) & (iw < spec.w))[None, :]
            yield rows, cols, inside, ih[:, None] * spec.w + iw[None, :]


def max_pool2d(spec: PoolSpec, x, out, indices) -> None:
    """out <- the window maxima; indices (if not None) <- their flat input positions.

    NaN wins (the first NaN in row-major window order); on ties the first maximum
    wins; padding never wins.
    """
    best = np.full(out.shape, -np.inf, out.dtype)
    best_index = np.zeros(out.shape, np.int64)
    seen = np.zeros((spec.oh, spec.ow), bool)
    xp = pad(x, _pool_pads(spec))  # padding never wins, so its value does not matter
    for rows, cols, inside, index in _pool_taps(spec):
        values = xp[:, :, rows, cols]
        take = inside & (~seen | (values > best) | (np.isnan(values) & ~np.isnan(best)))
        best = np.where(take, values, best)
        best_index = np.where(take, index, best_index)
        seen |= inside
    np.copyto(out, best)
    if indices is not None:
        np.copyto(indices, best_index)


def _avg_divisor(spec: PoolSpec) -> np.ndarray:
    """What each window's sum is divided by, (OH, OW), as PyTorch defines it."""
    if spec.divisor_override is not None:
        return np.full((spec.oh, spec.ow), spec.divisor_override)
    counts = []
    for out, size, k, s, p in ((spec.oh, spec.h, spec.kh, spec.stride[0], spec.padding[0]),
                               (spec.ow, spec.w, spec.kw, spec.stride[1], spec.padding[1])):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)  # the window clipped to the padded input
        if spec.count_include_pad:
            counts.append(end - start)
        else:
            counts.append(np.minimum(end, size) - np.maximum(start, 0))
    return counts[0][:, None] * counts[1][None, :]


def avg_pool2d(spec: PoolSpec, x, out) -> None:
    """out <- window sums / divisor."""
    total = np.zeros(out.shape, out.dtype)
    xp = pad(x, _pool_pads(spec))
    with np.errstate(invalid="ignore"):  # inf + -inf is NaN, quietly, as in PyTorch
        for rows, cols, _, _ in _pool_taps(spec):
            total += xp[:, :, rows, cols]
    np.divide(total, _avg_divisor(spec), out=out, casting="unsafe")


def max_pool2d_backward(spec: PoolSpec, grad_out, x):
    """grad_input: each output's gradient added at its maximum's position."""
    out = np.empty(grad_out.shape, spec.dtype)
    indices = np.empty(grad_out.shape, np.int64)
    max_pool2d(spec, x, out, indices)
    plane = spec.h * spec.w
    flat = indices + plane * np.arange(spec.n * spec.c).reshape(spec.n, spec.c, 1, 1)
    grad = np.bincount(flat.ravel(), weights=grad_out.ravel(), minlength=spec.n * spec.c * plane)
    return grad.astype(spec.dtype).reshape(spec.n, spec.c, spec.h, spec.w)


def avg_pool2d_backward(spec: PoolSpec, grad_out):
    """grad_input: each output's gradient / divisor spread over its window."""
    share = grad_out / _avg_divisor(spec).astype(spec.dtype)
    pads = _pool_pads(spec)
    grad = np.zeros((spec.n, spec.c, spec.h + pads[0] + pads[1], spec.w + pads[2] + pads[3]),
                    spec.dtype)
    for rows, cols, _, _ in _pool_taps(spec):
        grad[:, :, rows, cols] += share
    return pad_adjoint(grad, pads, "zeros", spec.h, spec.w)
