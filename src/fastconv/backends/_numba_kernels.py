"""The Numba JIT kernels of the "numba" backend (private; imports Numba).

Every kernel is compiled by `_jit` with the project's options and cached on
disk. Kernels take C-contiguous arrays and plain integers, write into the
arrays they are given and never check arguments (fastconv._params did).

Naming: x (N, C, H, W) input, out (N, K, OH, OW) result; (top, left) the
leading zero padding; sh, sw strides; dh, dw dilations. An output row r is
n*OH + oh.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


def _jit(parallel=False, inline=False):
    """The project's Numba options: cached on disk, the GIL released, no
    fastmath (results round as the reference's do), NumPy's error model (no
    zero-division checks in the hot loops).

    inline=True inlines a helper into its callers at Numba's level, so the
    array views it is handed cost no reference counting (atomic, and shared
    between threads) per call.
    """
    return numba.njit(cache=True, parallel=parallel, nogil=True, fastmath=False,
                      error_model="numpy", inline="always" if inline else "never")


@_jit()
def _span(count, off, stride, size):
    """[lo, hi): the o in [0, count) with 0 <= o*stride + off < size."""
    lo = 0 if off >= 0 else (stride - 1 - off) // stride
    last = size - 1 - off
    hi = 0 if last < 0 else min(count, last // stride + 1)
    return lo, max(lo, hi)


# Inner loops run over views from index 0, so Numba knows the index is not
# negative (no wraparound code) and LLVM vectorizes them.


@_jit(inline=True)
def _copy(d, s, sw):
    """d[o] <- s[o*sw]."""
    if sw == 1:
        for o in range(d.size):
            d[o] = s[o]
    else:
        for o in range(d.size):
            d[o] = s[o * sw]


@_jit(inline=True)
def _axpy(d, s, a, sw):
    """d[o] += a * s[o*sw]."""
    if sw == 1:
        for o in range(d.size):
            d[o] += a * s[o]
    else:
        for o in range(d.size):
            d[o] += a * s[o * sw]


@_jit(inline=True)
def _bias_relu(d, s, b, has_bias, relu):
    """d[o] <- act(s[o] + b); relu keeps NaN, as np.maximum does."""
    zero = d.dtype.type(0)
    for o in range(d.size):
        v = s[o] + b if has_bias else s[o]
        d[o] = zero if relu and v < 0 else v


# ------------------------------------------------------------ convolution


@_jit()
def _gather(x, cols, r0, r1, oh_, ow_, kh, kw, sh, sw, top, left, dh, dw):
    """Output rows [r0, r1) unfolded, zeros where the taps fall in the padding.

    /* cols[(c*KH + i)*KW + j][(r - r0)*OW + ow] <- x[n][c][oh*sh - top + i*dh][ow*sw - left + j*dw] */
    """
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    for q in range(c_ * kh * kw):
        c = q // (kh * kw)
        i = (q // kw) % kh
        off = (q % kw) * dw - left
        lo, hi = _span(ow_, off, sw, w)
        base = 0
        for r in range(r0, r1):
            n = r // oh_
            ih = (r - n * oh_) * sh - top + i * dh
            dst = cols[q, base:base + ow_]
            if ih < 0 or ih >= h:
                dst[:] = 0
            else:
                dst[:lo] = 0
                _copy(dst[lo:hi], x[n, c, ih, lo * sw + off:], sw)
                dst[hi:] = 0
            base += ow_


@_jit()
def _epilogue(y, out, r0, r1, bias, has_bias, relu):
    """out[n][k][oh][:] <- act(y[k][(r - r0)*OW:] + bias[k]) for rows r in [r0, r1)."""
    oh_, ow_ = out.shape[2], out.shape[3]
    for k in range(out.shape[1]):
        b = bias[k] if has_bias else bias[0]
        base = 0
        for r in range(r0, r1):
            n = r // oh_
            _bias_relu(out[n, k, r - n * oh_], y[k, base:base + ow_], b, has_bias, relu)
            base += ow_


@_jit()
def _group_dot(w2, cols, y, groups):
    """y[group rows] <- w2[group rows] @ cols[group rows], one np.dot per group."""
    kg = w2.shape[0] // groups
    cgkk = cols.shape[0] // groups
    for g in range(groups):
        np.dot(w2[g * kg:(g + 1) * kg], cols[g * cgkk:(g + 1) * cgkk], y[g * kg:(g + 1) * kg])


@_jit(parallel=True)
def conv2d_gemm(x, w2, bias, has_bias, relu, out, kh, kw, sh, sw, top, left, dh, dw,
                groups, rows, nt):
    """out <- act(conv(x, w) + bias) as GEMMs on unfolded blocks of `rows` output rows.

    w2 is the weight as (K, C/groups*KH*KW). Each of the `nt` threads takes
    blocks t, t + nt, ...: gathers the block's columns, multiplies per group
    with np.dot (the caller keeps BLAS single-threaded), and writes the block
    with bias and relu. A block holding exactly one image is multiplied into
    `out` directly, and a 1x1 unit-stride unpadded one needs no gather.
    """
    n_, k_, oh_, ow_ = out.shape
    c_ = x.shape[1]
    ckk = c_ * kh * kw
    total = n_ * oh_
    nblocks = (total + rows - 1) // rows
    pointwise = (kh == 1 and kw == 1 and sh == 1 and sw == 1 and top == 0 and left == 0
                 and x.shape[2] == oh_ and x.shape[3] == ow_)
    whole = rows == oh_
    for t in prange(nt):
        colsbuf = np.empty(ckk * rows * ow_, x.dtype)
        ybuf = np.empty(k_ * rows * ow_, x.dtype)
        for b in range(t, nblocks, nt):
            r0 = b * rows
            r1 = min(total, r0 + rows)
            p = (r1 - r0) * ow_
            y = out[r0 // oh_].reshape((k_, p)) if whole else ybuf[:k_ * p].reshape((k_, p))
            if whole and pointwise:
                _group_dot(w2, x[r0 // oh_].reshape((ckk, p)), y, groups)
            else:
                cols = colsbuf[:ckk * p].reshape((ckk, p))
                _gather(x, cols, r0, r1, oh_, ow_, kh, kw, sh, sw, top, left, dh, dw)
                _group_dot(w2, cols, y, groups)
            if not whole or has_bias or relu:
                _epilogue(y, out, r0, r1, bias, has_bias, relu)


def gemm_rows(n, oh, ow, ckk, nt):
    """Output rows per block of conv2d_gemm: about 512 pixels (fewer when the
    columns of a block would pass 4 MB), whole images when they are smaller,
    and a block count that is a multiple of the threads. Blocks may straddle
    images."""
    pixels = max(64, min(512, (4 << 20) // (4 * ckk)))
    total = n * oh
    if oh * ow <= pixels:
        per = max(1, min(pixels // (oh * ow), -(-n // nt)))
        return oh * per
    rows = max(1, pixels // ow)
    blocks = -(-total // rows)
    blocks = -(-blocks // nt) * nt
    return -(-total // blocks)


@_jit(parallel=True)
def conv2d_depthwise(x, w, bias, has_bias, relu, out, sh, sw, top, left, dh, dw):
    """out <- act(conv(x, w) + bias) for groups == C: output channel k reads
    input channel k // (K / C) only.

    One (image, channel) plane per task, copied into a zero-padded buffer so
    taps need no bounds. With unit stride each tap is one multiply-add over
    all output rows at once, laid out at the padded row pitch.
    """
    n_, k_, oh_, ow_ = out.shape
    c_, h, wd = x.shape[1], x.shape[2], x.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    m = k_ // c_
    hp = (oh_ - 1) * sh + (kh - 1) * dh + 1
    wp = (ow_ - 1) * sw + (kw - 1) * dw + 1
    rows = min(h, hp - top)  # input rows and columns inside the buffer
    cols = min(wd, wp - left)
    unit = sh == 1 and sw == 1
    span = (oh_ - 1) * wp + ow_ if unit else ow_
    for task in prange(n_ * c_):
        n = task // c_
        c = task % c_
        xp = np.zeros(hp * wp, x.dtype)
        for ih in range(rows):
            start = (ih + top) * wp + left
            _copy(xp[start:start + cols], x[n, c, ih], 1)
        acc = np.empty(span, x.dtype)
        for k in range(c * m, (c + 1) * m):
            b = bias[k] if has_bias else bias[0]
            if unit:
                acc[:] = 0
                for i in range(kh):
                    for j in range(kw):
                        _axpy(acc, xp[i * dh * wp + j * dw:], w[k, 0, i, j], 1)
                for oh in range(oh_):
                    _bias_relu(out[n, k, oh], acc[oh * wp:oh * wp + ow_], b, has_bias, relu)
            else:
                for oh in range(oh_):
                    acc[:] = 0
                    for i in range(kh):
                        for j in range(kw):
                            _axpy(acc, xp[(oh * sh + i * dh) * wp + j * dw:], w[k, 0, i, j], sw)
                    _bias_relu(out[n, k, oh], acc, b, has_bias, relu)


# --------------------------------------------------------------- unfolding


@_jit(parallel=True)
def im2col(x, out, kh, kw, sh, sw, top, left, dh, dw, oh_, ow_):
    """/* out[(n*OH + oh)*OW + ow][(c*KH + i)*KW + j] <- x[n][c][ih][iw], 0 in the padding */"""
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    for r in prange(x.shape[0] * oh_):
        n = r // oh_
        oh = r % oh_
        for ow in range(ow_):
            dst = out[r * ow_ + ow]
            for c in range(c_):
                for i in range(kh):
                    ih = oh * sh - top + i * dh
                    q = (c * kh + i) * kw
                    if ih < 0 or ih >= h:
                        dst[q:q + kw] = 0
                        continue
                    for j in range(kw):
                        iw = ow * sw - left + j * dw
                        dst[q + j] = x[n, c, ih, iw] if 0 <= iw < w else 0


@_jit(parallel=True)
def col2im(cols, out, kh, kw, sh, sw, top, left, dh, dw, oh_, ow_):
    """/* out[n][c][ih][iw] += cols[(n*OH + oh)*OW + ow][(c*KH + i)*KW + j] */

    One plane per task; taps in (i, j) order, as the reference sums them."""
    n_, c_, h, w = out.shape
    for plane in prange(n_ * c_):
        n = plane // c_
        c = plane % c_
        dst = out[n, c]
        dst[:, :] = 0
        for i in range(kh):
            for j in range(kw):
                q = (c * kh + i) * kw + j
                off = j * dw - left
                lo, hi = _span(ow_, off, sw, w)
                for oh in range(oh_):
                    ih = oh * sh - top + i * dh
                    if ih < 0 or ih >= h:
                        continue
                    row = (n * oh_ + oh) * ow_
                    for ow in range(lo, hi):
                        dst[ih, ow * sw + off] += cols[row + ow, q]


# ----------------------------------------------------------------- pooling

# The tap loops below take a row view s starting at the first tap; strides 1
# and 2 are spelled out so LLVM sees the access pattern and vectorizes it.


@_jit(inline=True)
def _max_tap(d, s, sw):
    """d[o] <- s[o*sw] if it is greater or NaN (NaN stays once in)."""
    if sw == 1:
        for o in range(d.size):
            v, best = s[o], d[o]
            d[o] = v if (v > best) | (v != v) else best
    elif sw == 2:
        for o in range(d.size):
            v, best = s[2 * o], d[o]
            d[o] = v if (v > best) | (v != v) else best
    else:
        for o in range(d.size):
            v, best = s[o * sw], d[o]
            d[o] = v if (v > best) | (v != v) else best


@_jit(inline=True)
def _max_tap_index(d, ind, s, sw, first):
    """As _max_tap, also ind[o] <- first + o*sw where the tap wins; a tap also
    wins as the window's first (ind < 0), and NaN only over a non-NaN."""
    if sw == 1:
        for o in range(d.size):
            v, best = s[o], d[o]
            take = (ind[o] < 0) | (v > best) | ((v != v) & (best == best))
            d[o] = v if take else best
            ind[o] = first + o if take else ind[o]
    elif sw == 2:
        for o in range(d.size):
            v, best = s[2 * o], d[o]
            take = (ind[o] < 0) | (v > best) | ((v != v) & (best == best))
            d[o] = v if take else best
            ind[o] = first + 2 * o if take else ind[o]
    else:
        for o in range(d.size):
            v, best = s[o * sw], d[o]
            take = (ind[o] < 0) | (v > best) | ((v != v) & (best == best))
            d[o] = v if take else best
            ind[o] = first + o * sw if take else ind[o]


@_jit(inline=True)
def _add_tap(d, s, sw):
    """d[o] += s[o*sw]."""
    if sw == 1:
        for o in range(d.size):
            d[o] += s[o]
    elif sw == 2:
        for o in range(d.size):
            d[o] += s[2 * o]
    else:
        for o in range(d.size):
            d[o] += s[o * sw]


@_jit(parallel=True)
def max_pool2d(x, out, idx, want_idx, kh, kw, sh, sw, ph, pw, dh, dw):
    """out <- window maxima, idx (if want_idx) <- their flat positions ih*W + iw.

    One output row per task; taps in row-major window order, each over the
    whole row. A tap wins if it is the window's first, greater, or the first
    NaN; so NaN wins at its first position and ties keep the first maximum.
    """
    n_, c_, oh_, ow_ = out.shape
    h, w = x.shape[2], x.shape[3]
    for task in prange(n_ * c_ * oh_):
        plane = task // oh_
        oh = task % oh_
        n = plane // c_
        c = plane % c_
        dst = out[n, c, oh]
        dst[:] = -np.inf
        if want_idx:
            ind = idx[n, c, oh]
            ind[:] = -1
        for i in range(kh):
            ih = oh * sh - ph + i * dh
            if ih < 0 or ih >= h:
                continue
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _span(ow_, off, sw, w)
                s = x[n, c, ih, lo * sw + off:]
                if want_idx:
                    _max_tap_index(dst[lo:hi], ind[lo:hi], s, sw, ih * w + lo * sw + off)
                else:
                    _max_tap(dst[lo:hi], s, sw)


@_jit()
def _avg_count(o, stride, pad, k, size, include_pad):
    """How many taps of window o count for the divisor along one axis (PyTorch's rule)."""
    start = o * stride - pad
    end = min(start + k, size + pad)
    if include_pad:
        return end - start
    return min(end, size) - max(start, 0)


@_jit(parallel=True)
def avg_pool2d(x, out, kh, kw, sh, sw, ph, pw, include_pad, divisor):
    """out <- window sums / divisor (`divisor` if > 0, else PyTorch's count).

    Sums in float of the dtype, taps in row-major order as the reference adds
    them; the division in float64, as NumPy does for the reference."""
    n_, c_, oh_, ow_ = out.shape
    h, w = x.shape[2], x.shape[3]
    for task in prange(n_ * c_ * oh_):
        plane = task // oh_
        oh = task % oh_
        n = plane // c_
        c = plane % c_
        dst = out[n, c, oh]
        dst[:] = 0
        for i in range(kh):
            ih = oh * sh - ph + i
            if ih < 0 or ih >= h:
                continue
            for j in range(kw):
                off = j - pw
                lo, hi = _span(ow_, off, sw, w)
                _add_tap(dst[lo:hi], x[n, c, ih, lo * sw + off:], sw)
        rows = _avg_count(oh, sh, ph, kh, h, include_pad)
        for o in range(ow_):
            d = divisor if divisor > 0 else rows * _avg_count(o, sw, pw, kw, w, include_pad)
            dst[o] = dst[o] / np.float64(d)


# The public kernels, for cache_status().
KERNELS = (conv2d_gemm, conv2d_depthwise, im2col, col2im, max_pool2d, avg_pool2d)
