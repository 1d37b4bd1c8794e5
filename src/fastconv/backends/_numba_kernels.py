"""The Numba JIT kernels of the "numba" backend (private; imports Numba).

Every kernel is compiled by `_jit` with the project's options and cached on
disk. Kernels take C-contiguous arrays and plain integers, write into the
arrays they are given and never check arguments (fastconv._params did).

Naming: x (N, C, H, W) input, out (N, K, OH, OW) result; (top, left) the
leading zero padding; sh, sw strides; dh, dw dilations. An output row r is
n*OH + oh.

Inner loops index flat arrays with `_u(...)` (unsigned): the index is known
to be in bounds, and unsigned indices need no negative-index wraparound, so
LLVM vectorizes the loops. Slicing views in hot loops is avoided: each view
costs an atomic reference count, shared by all threads.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_u = numba.uintp


def _jit(parallel=False, inline=False, contract=False):
    """The project's Numba options: cached on disk, the GIL released, no
    fastmath (results round as the reference's do), NumPy's error model (no
    zero-division checks in the hot loops). inline=True inlines a helper into
    its callers at Numba's level. contract=True lets LLVM fuse a multiply and
    an add into one FMA (one rounding instead of two, as BLAS does), and
    nothing else of fastmath."""
    return numba.njit(cache=True, parallel=parallel, nogil=True,
                      fastmath={"contract"} if contract else False,
                      error_model="numpy", inline="always" if inline else "never")


@_jit()
def _span(count, off, stride, size):
    """[lo, hi): the o in [0, count) with 0 <= o*stride + off < size (lo <= count)."""
    lo = 0 if off >= 0 else min(count, (stride - 1 - off) // stride)
    last = size - 1 - off
    hi = 0 if last < 0 else min(count, last // stride + 1)
    return lo, max(lo, hi)


@intrinsic
def _claim(typingctx, counter):
    """The next task: atomically counter[0] += 1, returning the old value.

    Kernels hand out tasks this way inside `for t in prange(nt)`, so a thread
    slowed down (by other processes on the machine) takes fewer of them;
    prange alone gives each thread a fixed share."""
    sig = types.int64(counter)

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary,
                                       [context.get_constant(types.intp, 0)])
        return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "monotonic")

    return sig, codegen


@intrinsic
def _gemm(typingctx, fn, ilp64, trans_a, trans_b, m, n, k, a, ao, lda, b, bo, ldb, beta, c,
          co, ldc):
    """c[co:] <- op(a[ao:]) @ op(b[bo:]) + beta * c[co:], row-major (M, N) by (K):
    cblas_?gemm at address `fn` (NumPy's BLAS, found by numba_backend), its
    integers 64-bit if `ilp64`; op transposes where trans_a / trans_b.

    Flat arrays and offsets, no views: a view in a hot loop costs an atomic
    reference count. The address comes in as an argument, so the kernels
    stay cacheable."""
    sig = types.void(fn, ilp64, trans_a, trans_b, m, n, k, a, ao, lda, b, bo, ldb, beta, c,
                     co, ldc)

    def codegen(context, builder, sig, args):
        aty, bty, cty = sig.args[7], sig.args[10], sig.args[14]
        ft = context.get_value_type(cty.dtype)
        i32 = ir.IntType(32)

        def i64(i):
            return context.cast(builder, args[i], sig.args[i], types.int64)

        def ptr(i, aryty, off):
            data = context.make_array(aryty)(context, builder, args[i]).data
            return builder.gep(data, [i64(off)])

        def flag(i):
            return context.cast(builder, args[i], sig.args[i], types.boolean)

        def trans(i):  # CblasTrans 112, CblasNoTrans 111
            return builder.select(flag(i), ir.Constant(i32, 112), ir.Constant(i32, 111))

        beta_v = context.cast(builder, args[13], sig.args[13], cty.dtype)
        pa, pb, pc = ptr(7, aty, 8), ptr(10, bty, 11), ptr(14, cty, 15)
        ints = [i64(4), i64(5), i64(6), i64(9), i64(12), i64(16)]  # m n k lda ldb ldc
        with builder.if_else(flag(1)) as (wide, narrow):
            for it, block in ((ir.IntType(64), wide), (i32, narrow)):
                with block:
                    fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, it, it, it, ft,
                                                           ft.as_pointer(), it, ft.as_pointer(),
                                                           it, ft, ft.as_pointer(), it])
                    mi, ni, ki, la, lb, lc = (v if it.width == 64 else builder.trunc(v, it)
                                              for v in ints)
                    builder.call(builder.inttoptr(i64(0), fnty.as_pointer()),
                                 [ir.Constant(i32, 101), trans(2), trans(3), mi, ni, ki,
                                  ir.Constant(ft, 1.0), pa, la, pb, lb, beta_v, pc, lc])
        return context.get_dummy_value()

    return sig, codegen


# ------------------------------------------------- flat loops (d at db, s at sb)


@_jit(inline=True)
def _fill(d, db, n, v):
    for o in range(n):
        d[_u(db + o)] = v


@_jit(inline=True)
def _copy(d, db, s, sb, n, sw):
    """d[db + o] <- s[sb + o*sw]."""
    if sw == 1:
        for o in range(n):
            d[_u(db + o)] = s[_u(sb + o)]
    elif sw == 2:
        for o in range(n):
            d[_u(db + o)] = s[_u(sb + 2 * o)]
    else:
        for o in range(n):
            d[_u(db + o)] = s[_u(sb + o * sw)]


@_jit(inline=True)
def _axpy(d, db, s, sb, n, a, sw):
    """d[db + o] += a * s[sb + o*sw]."""
    if sw == 1:
        for o in range(n):
            d[_u(db + o)] += a * s[_u(sb + o)]
    elif sw == 2:
        for o in range(n):
            d[_u(db + o)] += a * s[_u(sb + 2 * o)]
    else:
        for o in range(n):
            d[_u(db + o)] += a * s[_u(sb + o * sw)]


@_jit(inline=True)
def _bias_relu(d, db, s, sb, n, b, has_bias, relu):
    """d[db + o] <- act(s[sb + o] + b); relu keeps NaN, as np.maximum does."""
    zero = d.dtype.type(0)
    for o in range(n):
        v = s[_u(sb + o)] + b if has_bias else s[_u(sb + o)]
        d[_u(db + o)] = zero if relu and v < 0 else v


# ------------------------------------------------------------ convolution


@_jit()
def _spans(ow_, kw, sw, dw, left, w):
    """(KW, 2): per kernel column j, the [lo, hi) of output columns whose tap
    lies inside the input row (hoisted: integer division is slow)."""
    spans = np.empty((kw, 2), np.int64)
    for j in range(kw):
        spans[j, 0], spans[j, 1] = _span(ow_, j * dw - left, sw, w)
    return spans


@_jit()
def _gather(xf, c_, h, w, cols, r0, r1, oh_, ow_, q, kh, kw, sh, sw, top, left, dh, dw):
    """Output rows [r0, r1) unfolded into cols (C*KH*KW, P), zeros in the padding,
    rows of q columns: OW, or W (unit strides only; columns from OW on are
    left undefined).

    /* cols[(c*KH + i)*KW + j][(r - r0)*q + ow]
           <- x[n][c][oh*sh - top + i*dh][ow*sw - left + j*dw] */
    """
    if sh == 1 and sw == 1 and q == w:
        _gather_same_pitch(xf, c_, h, w, cols, r0, r1, oh_, ow_, kh, kw, top, left, dh, dw)
        return
    p = (r1 - r0) * ow_
    spans = _spans(ow_, kw, sw, dw, left, w)
    n = r0 // oh_
    oh = r0 - n * oh_
    for db in range(0, p, ow_):
        for c in range(c_):
            for i in range(kh):
                ih = oh * sh - top + i * dh
                sb = ((n * c_ + c) * h + ih) * w - left
                for j in range(kw):
                    d = ((c * kh + i) * kw + j) * p + db
                    if ih < 0 or ih >= h:
                        _fill(cols, d, ow_, 0)
                    else:
                        lo, hi = spans[j, 0], spans[j, 1]
                        _fill(cols, d, lo, 0)
                        _copy(cols, d + lo, xf, sb + lo * sw + j * dw, hi - lo, sw)
                        _fill(cols, d + hi, ow_ - hi, 0)
        oh += 1
        if oh == oh_:
            oh = 0
            n += 1


@_jit()
def _gather_same_pitch(xf, c_, h, w, cols, r0, r1, oh_, ow_, kh, kw, top, left, dh, dw):
    """_gather for unit strides and q == W: input and output rows share one
    pitch, so a tap's inside rows of an image copy as one run; the columns
    below OW that run brings in from the neighbouring rows are then zeroed."""
    p = (r1 - r0) * w
    spans = _spans(w, kw, 1, dw, left, w)
    r = r0
    while r < r1:
        n = r // oh_
        a = r - n * oh_  # this image's output rows [a, b) in the block
        b = min(oh_, a + r1 - r)
        for c in range(c_):
            for i in range(kh):
                shift = i * dh - top  # ih = oh + shift
                va = min(b, max(a, -shift))  # inside rows [va, vb)
                vb = max(va, min(b, h - shift))
                for j in range(kw):
                    lo, hi = spans[j, 0], spans[j, 1]
                    d = ((c * kh + i) * kw + j) * p + (r - r0 - a) * w  # at output row 0
                    if hi == lo:  # the tap misses the input's columns
                        _fill(cols, d + a * w, (b - a) * w, 0)
                        continue
                    _fill(cols, d + a * w, (va - a) * w, 0)
                    if vb > va:
                        _copy(cols, d + va * w + lo, xf,
                              ((n * c_ + c) * h + va + shift) * w + lo + j * dw - left,
                              (vb - va - 1) * w + hi - lo, 1)
                        if lo > 0 or hi < ow_:
                            for oh in range(va, vb):
                                _fill(cols, d + oh * w, min(lo, ow_), 0)
                                _fill(cols, d + oh * w + hi, max(0, ow_ - hi), 0)
                    _fill(cols, d + vb * w, (b - vb) * w, 0)
        r += b - a


@_jit()
def _epilogue(yf, yb, q, outf, k_, oh_, ow_, r0, r1, bias, has_bias, relu):
    """out[n][k][oh][:OW] <- act(y[k][(r - r0)*q:][:OW] + bias[k]) for the rows r
    of a block; y (K, P) lies in yf at yb with rows of q >= OW columns (the
    extra ones dropped). One run per image and filter when q == OW."""
    p = (r1 - r0) * q
    r = r0
    while r < r1:
        n = r // oh_
        a = r - n * oh_
        m = min(oh_ - a, r1 - r)  # this image's rows in the block
        for k in range(k_):
            b = bias[k] if has_bias else bias[0]
            d = ((n * k_ + k) * oh_ + a) * ow_
            e = yb + k * p + (r - r0) * q
            if q == ow_:
                _bias_relu(outf, d, yf, e, m * ow_, b, has_bias, relu)
            else:
                for i in range(m):
                    _bias_relu(outf, d + i * ow_, yf, e + i * q, ow_, b, has_bias, relu)
        r += m


@_jit()
def _group_gemm(blas, ilp64, w2f, k_, cgkk, bf, bb, ldb, yf, yb, ldy, p, groups):
    """y (K, P) at yf[yb:] (row pitch ldy) <- w2 (K, C/groups*KH*KW) @ the
    columns (C*KH*KW, P) at bf[bb:] (row pitch ldb), one GEMM per group."""
    kg = k_ // groups
    for g in range(groups):
        _gemm(blas, ilp64, False, False, kg, p, cgkk, w2f, g * kg * cgkk, cgkk,
              bf, bb + g * cgkk * ldb, ldb, 0, yf, yb + g * kg * ldy, ldy)


@_jit(parallel=True)
def conv2d_gemm(x, w2, bias, has_bias, relu, out, kh, kw, sh, sw, top, left, dh, dw,
                groups, rows, q, nt, blas, ilp64):
    """out <- act(conv(x, w) + bias) as GEMMs on unfolded blocks of output rows.

    w2 is the weight as (K, C/groups*KH*KW); blas, ilp64 the GEMM of _gemm.
    A block is `rows` output rows of one image (rows < OH: images split in
    equal parts) or rows / OH whole images. Unfolded rows are q columns wide:
    OW, or W for unit strides, which unfolds runs of whole rows (the GEMM then
    computes W - OW columns more, which the epilogue drops). Each of the `nt`
    threads claims blocks in turn: unfolds them, multiplies per group (the
    caller keeps BLAS single-threaded), and writes them with bias and relu. A
    block of one image with q == OW is multiplied into `out` itself, and a 1x1
    unit-stride unpadded one reads `x` itself.
    """
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        _conv2d_blocks(x, w2, bias, has_bias, relu, out, kh, kw, sh, sw, top, left, dh, dw,
                       groups, rows, q, blas, ilp64, counter)


@_jit()
def _conv2d_blocks(x, w2, bias, has_bias, relu, out, kh, kw, sh, sw, top, left, dh, dw,
                   groups, rows, q, blas, ilp64, counter):
    """conv2d_gemm's work for one thread: the blocks it claims from `counter`
    (numba_backend calls it for nt == 1 itself)."""
    n_, k_, oh_, ow_ = out.shape
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    ckk = c_ * kh * kw
    total = n_ * oh_
    parts = (oh_ + rows - 1) // rows  # blocks per image, when rows < OH
    nblocks = n_ * parts if rows < oh_ else (total + rows - 1) // rows
    pointwise = (kh == 1 and kw == 1 and sh == 1 and sw == 1 and top == 0 and left == 0
                 and h == oh_ and w == ow_)
    direct = rows <= oh_ and q == ow_  # blocks inside one image, written in place
    xf = x.reshape(x.size)
    outf = out.reshape(out.size)
    w2f = w2.reshape(w2.size)
    colsbuf = np.empty(0 if direct and pointwise else ckk * rows * q, x.dtype)
    ybuf = np.empty(0 if direct else k_ * rows * q, x.dtype)
    while True:
        b = _claim(counter)
        if b >= nblocks:
            break
        if rows < oh_:
            n0 = b // parts
            a = (b - n0 * parts) * rows
            r0, r1 = n0 * oh_ + a, n0 * oh_ + min(oh_, a + rows)
        else:
            r0 = b * rows
            r1 = min(total, r0 + rows)
            n0, a = r0 // oh_, 0
        p = (r1 - r0) * q
        if direct:  # y (K, P) inside out[n0], rows of OH*OW
            yf, yb, ldy = outf, n0 * k_ * oh_ * ow_ + a * ow_, oh_ * ow_
        else:
            yf, yb, ldy = ybuf, 0, p
        if direct and pointwise:  # the columns are x[n0] (C, H*W) from row a
            _group_gemm(blas, ilp64, w2f, k_, ckk // groups, xf, n0 * ckk * h * w + a * w,
                        h * w, yf, yb, ldy, p, groups)
        else:
            _gather(xf, c_, h, w, colsbuf, r0, r1, oh_, ow_, q, kh, kw, sh, sw, top, left,
                    dh, dw)
            _group_gemm(blas, ilp64, w2f, k_, ckk // groups, colsbuf, 0, p, yf, yb, ldy, p,
                        groups)
        if direct:
            if has_bias or relu:
                for k in range(k_):
                    _bias_relu(outf, yb + k * ldy, outf, yb + k * ldy, p,
                               bias[k] if has_bias else bias[0], has_bias, relu)
        else:
            _epilogue(yf, yb, q, outf, k_, oh_, ow_, r0, r1, bias, has_bias, relu)


@_jit(parallel=True)
def conv2d_depthwise(x, w, bias, has_bias, relu, out, sh, sw, top, left, dh, dw, nt):
    """out <- act(conv(x, w) + bias) for groups == C: output channel k reads
    input channel k // (K / C) only.

    One (image, channel) plane per task, claimed by `nt` threads, copied into
    a zero-padded buffer so taps need no bounds. With unit stride each tap is
    one multiply-add over all output rows at once, laid out at the padded
    row pitch.
    """
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        _depthwise_planes(x, w, bias, has_bias, relu, out, sh, sw, top, left, dh, dw, counter)


@_jit()
def _depthwise_planes(x, w, bias, has_bias, relu, out, sh, sw, top, left, dh, dw, counter):
    """conv2d_depthwise's work for one thread: the planes it claims from `counter`
    (numba_backend calls it for nt == 1 itself)."""
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
    xf = x.reshape(x.size)
    outf = out.reshape(out.size)
    xp = np.empty(hp * wp, x.dtype)
    acc = np.empty(span, x.dtype)
    while True:
        task = _claim(counter)
        if task >= n_ * c_:
            break
        _depthwise_plane(xf, w, bias, has_bias, relu, outf, task, xp, acc, c_, h, wd, k_,
                         oh_, ow_, m, hp, wp, rows, cols, span, sh, sw, top, left, dh, dw)


@_jit()
def _depthwise_plane(xf, w, bias, has_bias, relu, outf, task, xp, acc, c_, h, wd, k_, oh_,
                     ow_, m, hp, wp, rows, cols, span, sh, sw, top, left, dh, dw):
    """conv2d_depthwise for the plane task = n*C + c, with buffers xp and acc."""
    kh, kw = w.shape[2], w.shape[3]
    unit = sh == 1 and sw == 1
    xp[:] = 0
    for ih in range(rows):
        _copy(xp, (ih + top) * wp + left, xf, (task * h + ih) * wd, cols, 1)
    for k in range(task % c_ * m, (task % c_ + 1) * m):
        b = bias[k] if has_bias else bias[0]
        ob = (task // c_ * k_ + k) * oh_ * ow_
        if unit:
            acc[:] = 0
            for i in range(kh):
                for j in range(kw):
                    _axpy(acc, 0, xp, i * dh * wp + j * dw, span, w[k, 0, i, j], 1)
            for oh in range(oh_):
                _bias_relu(outf, ob + oh * ow_, acc, oh * wp, ow_, b, has_bias, relu)
        else:
            for oh in range(oh_):
                acc[:] = 0
                for i in range(kh):
                    for j in range(kw):
                        _axpy(acc, 0, xp, (oh * sh + i * dh) * wp + j * dw, ow_,
                              w[k, 0, i, j], sw)
                _bias_relu(outf, ob + oh * ow_, acc, 0, ow_, b, has_bias, relu)


@_jit(parallel=True)
def conv2d_few_filters(x, w, bias, has_bias, relu, out, top, left, dh, dw, kchunk, nt):
    """out <- act(conv(x, w) + bias) at unit stride by direct loops, for
    layers with so few filters per group that the GEMM is too thin for BLAS.

    A task is one image and `kchunk` of its filters (a multiple of 4; all of
    them unless the batch is too small to share out), claimed by `nt` threads.
    It copies the image into a zero-padded buffer. All output rows of a
    filter are one span at the padded row pitch, as in conv2d_depthwise;
    filters go four at a time and taps three at a time, so each loaded input
    vector feeds twelve multiply-adds.
    """
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        _few_filter_tasks(x, w, bias, has_bias, relu, out, top, left, dh, dw, kchunk, counter)


@_jit(contract=True)
def _few_filter_tasks(x, w, bias, has_bias, relu, out, top, left, dh, dw, kchunk, counter):
    """conv2d_few_filters' work for one thread: the tasks it claims from
    `counter` (numba_backend calls it for nt == 1 itself)."""
    n_, k_, oh_, ow_ = out.shape
    c_, h, wd = x.shape[1], x.shape[2], x.shape[3]
    cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    kg = k_ // (c_ // cg)  # filters per group
    hp = oh_ + (kh - 1) * dh
    wp = ow_ + (kw - 1) * dw
    rows = min(h, hp - top)  # input rows and columns inside the buffer
    cols = min(wd, wp - left)
    # A whole number of LLVM's vector loop steps (32 lanes): no scalar remainder.
    span = ((oh_ - 1) * wp + ow_ + 31) // 32 * 32
    xf = x.reshape(x.size)
    outf = out.reshape(out.size)
    # The weights (K, C/groups, KH, KW) with 3 zero taps after each row, so
    # that four filters' taps are read as scalars from one row pitch.
    kwp = kw + 3
    wz = np.zeros(k_ * cg * kh * kwp + 4 * cg * kh * kwp, x.dtype)
    for k in range(k_):
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    wz[((k * cg + c) * kh + i) * kwp + j] = w[k, c, i, j]
    fs = cg * kh * kwp  # one filter's taps in wz
    # the padding stays zero; taps of the last channel may read on to span
    xp = np.zeros(c_ * hp * wp + span, x.dtype)
    acc = np.empty(4 * span, x.dtype)
    parts = (k_ + kchunk - 1) // kchunk
    while True:
        task = _claim(counter)
        if task >= n_ * parts:
            break
        n = task // parts
        k = task % parts * kchunk
        k_end = min(k_, k + kchunk)
        for c in range(c_):
            for ih in range(rows):
                _copy(xp, (c * hp + ih + top) * wp + left, xf, ((n * c_ + c) * h + ih) * wd,
                      cols, 1)
        while k < k_end:
            g = k // kg
            # this pass's m filters; the 4 - m rows after them (the next
            # filters' taps, or zeros past K) are computed and dropped
            m = min(4, (g + 1) * kg - k, k_end - k)
            _fill(acc, 0, 4 * span, x.dtype.type(0))
            for c in range(cg):
                for i in range(kh):
                    xb = ((g * cg + c) * hp + i * dh) * wp
                    wb = ((k * cg + c) * kh + i) * kwp
                    j = 0
                    while j < kw:
                        t = min(3, kw - j)
                        o = wb + j
                        _taps(acc, span, xp, xb + j * dw, dw, t,
                              wz[_u(o)], wz[_u(o + 1)], wz[_u(o + 2)],
                              wz[_u(o + fs)], wz[_u(o + fs + 1)], wz[_u(o + fs + 2)],
                              wz[_u(o + 2 * fs)], wz[_u(o + 2 * fs + 1)], wz[_u(o + 2 * fs + 2)],
                              wz[_u(o + 3 * fs)], wz[_u(o + 3 * fs + 1)], wz[_u(o + 3 * fs + 2)])
                        j += t
            for kk in range(k, k + m):
                b = bias[kk] if has_bias else bias[0]
                ob = (n * k_ + kk) * oh_ * ow_
                for oh in range(oh_):
                    _bias_relu(outf, ob + oh * ow_, acc, (kk - k) * span + oh * wp, ow_, b,
                               has_bias, relu)
            k += m


@_jit(inline=True)
def _taps(acc, span, xp, xb, dw, t, a0, a1, a2, b0, b1, b2, c0, c1, c2, d0, d1, d2):
    """acc[f*span + o] += filter f's t (1-3) taps (a, b, c, d for f = 0-3)
    times xp[xb + tap*dw + o], for o in [0, span). One loop body per tap
    count, so LLVM vectorizes it."""
    if t == 3:
        for o in range(span):
            v0 = xp[_u(xb + o)]
            v1 = xp[_u(xb + dw + o)]
            v2 = xp[_u(xb + 2 * dw + o)]
            acc[_u(o)] += a0 * v0 + a1 * v1 + a2 * v2
            acc[_u(span + o)] += b0 * v0 + b1 * v1 + b2 * v2
            acc[_u(2 * span + o)] += c0 * v0 + c1 * v1 + c2 * v2
            acc[_u(3 * span + o)] += d0 * v0 + d1 * v1 + d2 * v2
    elif t == 2:
        for o in range(span):
            v0 = xp[_u(xb + o)]
            v1 = xp[_u(xb + dw + o)]
            acc[_u(o)] += a0 * v0 + a1 * v1
            acc[_u(span + o)] += b0 * v0 + b1 * v1
            acc[_u(2 * span + o)] += c0 * v0 + c1 * v1
            acc[_u(3 * span + o)] += d0 * v0 + d1 * v1
    else:
        for o in range(span):
            v0 = xp[_u(xb + o)]
            acc[_u(o)] += a0 * v0
            acc[_u(span + o)] += b0 * v0
            acc[_u(2 * span + o)] += c0 * v0
            acc[_u(3 * span + o)] += d0 * v0


@_jit(parallel=True)
def conv2d_gemm_backward(x, w2, g, gi, gw_t, kh, kw, sh, sw, top, left, dh, dw, groups,
                         rows, nt, blas, ilp64):
    """gi += the input gradient, gw_t[t] += thread t's part of the weight gradient.

    gi (N, C, Hp, Wp) is zeroed and in padded coordinates (ih + top, iw + left);
    gw_t is (nt, K, C/groups*KH*KW), zeroed. Blocks of `rows` output rows as in
    conv2d_gemm: per group gw += gy @ cols^T and dcols = w^T @ gy, then dcols
    is added back at its taps. Blocks two apart touch disjoint input rows
    (numba_backend.backward_rows sees to it), so the even blocks run in
    parallel, then the odd ones.
    """
    n_, k_, oh_, ow_ = g.shape
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = gi.shape[2], gi.shape[3]
    ckk = c_ * kh * kw
    kg = k_ // groups
    cgkk = ckk // groups
    total = n_ * oh_
    nblocks = (total + rows - 1) // rows
    xf = x.reshape(x.size)
    gf = g.reshape(g.size)
    gif = gi.reshape(gi.size)
    w2f = w2.reshape(w2.size)
    gwf = gw_t.reshape(gw_t.size)
    for wave in range(2):
        for t in prange(nt):
            colsbuf = np.empty(ckk * rows * ow_, x.dtype)
            dcolsbuf = np.empty(ckk * rows * ow_, x.dtype)
            gybuf = np.empty(k_ * rows * ow_, x.dtype)
            for b in range(wave + 2 * t, nblocks, 2 * nt):
                r0 = b * rows
                r1 = min(total, r0 + rows)
                p = (r1 - r0) * ow_
                _gather(xf, c_, h, w, colsbuf, r0, r1, oh_, ow_, ow_, kh, kw, sh, sw, top, left,
                        dh, dw)
                n = r0 // oh_
                oh = r0 - n * oh_
                for db in range(0, p, ow_):  # gy[k][(r - r0)*OW + ow] <- g[n][k][oh][ow]
                    for k in range(k_):
                        _copy(gybuf, k * p + db, gf, ((n * k_ + k) * oh_ + oh) * ow_, ow_, 1)
                    oh += 1
                    if oh == oh_:
                        oh = 0
                        n += 1
                for gr in range(groups):
                    k0, q0 = gr * kg, gr * cgkk
                    # gw[k0:] += gy[k0:] @ cols[q0:]^T; dcols[q0:] <- w2[k0:]^T @ gy[k0:]
                    _gemm(blas, ilp64, False, True, kg, cgkk, p, gybuf, k0 * p, p,
                          colsbuf, q0 * p, p, 1, gwf, (t * k_ + k0) * cgkk, cgkk)
                    _gemm(blas, ilp64, True, False, cgkk, p, kg, w2f, k0 * cgkk, cgkk,
                          gybuf, k0 * p, p, 0, dcolsbuf, q0 * p, p)
                n = r0 // oh_
                oh = r0 - n * oh_
                # gi[n][c][oh*sh + i*dh][ow*sw + j*dw] += dcols[(c*KH + i)*KW + j][...]
                for sb in range(0, p, ow_):
                    for c in range(c_):
                        for i in range(kh):
                            row = ((n * c_ + c) * hp + oh * sh + i * dh) * wp
                            for j in range(kw):
                                d = row + j * dw
                                e = ((c * kh + i) * kw + j) * p + sb
                                if sw == 1:
                                    for o in range(ow_):
                                        gif[_u(d + o)] += dcolsbuf[_u(e + o)]
                                else:
                                    for o in range(ow_):
                                        gif[_u(d + o * sw)] += dcolsbuf[_u(e + o)]
                    oh += 1
                    if oh == oh_:
                        oh = 0
                        n += 1


# --------------------------------------------------------------- unfolding


@_jit(parallel=True)
def im2col(x, out, kh, kw, sh, sw, top, left, dh, dw, oh_, ow_):
    """/* out[(n*OH + oh)*OW + ow][(c*KH + i)*KW + j] <- x[n][c][ih][iw], 0 in the padding */

    One output row (n, oh) per task, in tiles of 16 patches: each tile is
    filled column by column (16 cache lines written, one input row read in
    order), which keeps it in L1 even when C*KH*KW is large."""
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    ckk = c_ * kh * kw
    spans = _spans(ow_, kw, sw, dw, left, w)
    xf = x.reshape(x.size)
    outf = out.reshape(out.size)
    for r in prange(x.shape[0] * oh_):
        n = r // oh_
        oh = r % oh_
        for t0 in range(0, ow_, 16):
            t1 = min(ow_, t0 + 16)
            q = 0
            for c in range(c_):
                for i in range(kh):
                    ih = oh * sh - top + i * dh
                    sb = ((n * c_ + c) * h + ih) * w - left
                    for j in range(kw):
                        if ih < 0 or ih >= h:
                            lo = hi = t1
                        else:
                            lo = min(max(spans[j, 0], t0), t1)
                            hi = min(max(spans[j, 1], t0), t1)
                        db = r * ow_ * ckk + q
                        s0 = sb + j * dw
                        for ow in range(t0, lo):
                            outf[_u(db + ow * ckk)] = 0
                        for ow in range(lo, hi):
                            outf[_u(db + ow * ckk)] = xf[_u(s0 + ow * sw)]
                        for ow in range(hi, t1):
                            outf[_u(db + ow * ckk)] = 0
                        q += 1


@_jit(parallel=True)
def col2im(cols, out, kh, kw, sh, sw, top, left, dh, dw, oh_, ow_):
    """/* out[n][c][ih][iw] += cols[(n*OH + oh)*OW + ow][(c*KH + i)*KW + j] */

    One plane per task; taps in (i, j) order, as the reference sums them."""
    n_, c_, h, w = out.shape
    ckk = c_ * kh * kw
    colsf = cols.reshape(cols.size)
    outf = out.reshape(out.size)
    for plane in prange(n_ * c_):
        n = plane // c_
        c = plane % c_
        _fill(outf, plane * h * w, h * w, 0)
        for i in range(kh):
            for j in range(kw):
                q = (c * kh + i) * kw + j
                off = j * dw - left
                lo, hi = _span(ow_, off, sw, w)
                for oh in range(oh_):
                    ih = oh * sh - top + i * dh
                    if ih < 0 or ih >= h:
                        continue
                    db = (plane * h + ih) * w + off
                    sb = (n * oh_ + oh) * ow_ * ckk + q
                    for ow in range(lo, hi):
                        outf[_u(db + ow * sw)] += colsf[_u(sb + ow * ckk)]


# ----------------------------------------------------------------- pooling


@_jit(inline=True)
def _wins(v, best):
    """Whether tap v replaces the running maximum: greater, or NaN over non-NaN.
    Taps come in row-major window order, so ties keep the first maximum and
    the first NaN stays."""
    return (v > best) | ((v != v) & (best == best))


@_jit(inline=True)
def _max2(best, v):
    return v if _wins(v, best) else best


@_jit(inline=True)
def _edge_max(s, sb, w, d, db, o, sw, kw, dw, pw):
    """d[db + o] <- max of row s[sb:sb + w] over the columns of window o inside it."""
    first = True
    for j in range(kw):
        iw = o * sw + j * dw - pw
        if 0 <= iw < w:
            v = s[_u(sb + iw)]
            d[_u(db + o)] = v if first else _max2(d[_u(db + o)], v)
            first = False


@_jit()
def _inside(ow_, w, sw, kw, dw, pw):
    """[lo, hi): the windows whose every column lies inside a row of w."""
    lo = min(ow_, (pw + sw - 1) // sw)  # the first window starting inside
    last = w - 1 - ((kw - 1) * dw - pw)
    return lo, max(lo, 0 if last < 0 else min(ow_, last // sw + 1))


@_jit(inline=True)
def _row_max(s, sb, w, d, db, ow_, sw, kw, dw, pw, lo, hi):
    """d[db + o] <- max of row s[sb:sb + w] over window o's columns o*sw + j*dw - pw.

    Windows [lo, hi) (see _inside) run fused for the common 2- and 3-wide
    windows of stride 1 or 2; the edge windows tap by tap."""
    b = sb + lo * sw - pw
    e = db + lo
    if dw == 1 and sw == 2 and kw == 2:
        for o in range(hi - lo):
            d[_u(e + o)] = _max2(s[_u(b + 2 * o)], s[_u(b + 2 * o + 1)])
    elif dw == 1 and sw == 2 and kw == 3:
        for o in range(hi - lo):
            d[_u(e + o)] = _max2(_max2(s[_u(b + 2 * o)], s[_u(b + 2 * o + 1)]),
                                 s[_u(b + 2 * o + 2)])
    elif dw == 1 and sw == 1 and kw == 2:
        for o in range(hi - lo):
            d[_u(e + o)] = _max2(s[_u(b + o)], s[_u(b + o + 1)])
    elif dw == 1 and sw == 1 and kw == 3:
        for o in range(hi - lo):
            d[_u(e + o)] = _max2(_max2(s[_u(b + o)], s[_u(b + o + 1)]), s[_u(b + o + 2)])
    else:
        _copy(d, e, s, b, hi - lo, sw)
        for j in range(1, kw):
            for o in range(hi - lo):
                d[_u(e + o)] = _max2(d[_u(e + o)], s[_u(b + j * dw + o * sw)])
    for o in range(lo):
        _edge_max(s, sb, w, d, db, o, sw, kw, dw, pw)
    for o in range(hi, ow_):
        _edge_max(s, sb, w, d, db, o, sw, kw, dw, pw)


@_jit(inline=True)
def _max_tap_index(d, ind, db, s, sb, n, sw, first):
    """One tap over a row: d[db + o], ind[db + o] <- s[sb + o*sw], first + o*sw
    where it wins or is the window's first (ind < 0)."""
    if sw == 1:
        for o in range(n):
            v, best = s[_u(sb + o)], d[_u(db + o)]
            take = (ind[_u(db + o)] < 0) | _wins(v, best)
            d[_u(db + o)] = v if take else best
            ind[_u(db + o)] = first + o if take else ind[_u(db + o)]
    elif sw == 2:
        for o in range(n):
            v, best = s[_u(sb + 2 * o)], d[_u(db + o)]
            take = (ind[_u(db + o)] < 0) | _wins(v, best)
            d[_u(db + o)] = v if take else best
            ind[_u(db + o)] = first + 2 * o if take else ind[_u(db + o)]
    else:
        for o in range(n):
            v, best = s[_u(sb + o * sw)], d[_u(db + o)]
            take = (ind[_u(db + o)] < 0) | _wins(v, best)
            d[_u(db + o)] = v if take else best
            ind[_u(db + o)] = first + o * sw if take else ind[_u(db + o)]


@_jit(parallel=True)
def max_pool2d(x, out, idx, want_idx, kh, kw, sh, sw, ph, pw, dh, dw, nt):
    """out <- window maxima, idx (if want_idx) <- their flat positions ih*W + iw.

    Output rows (n, c, oh) in chunks claimed by `nt` threads (for nt == 1 all
    in one, no parallel region). With indices the taps run in row-major
    window order, each over the whole output row. Without, the window's rows
    are reduced first (contiguous), then its columns. Either way NaN wins (at
    its first position) and ties keep the first maximum.
    """
    n_, c_, oh_, ow_ = out.shape
    h, w = x.shape[2], x.shape[3]
    total = n_ * c_ * oh_
    xf = x.reshape(x.size)
    outf = out.reshape(out.size)
    idxf = idx.reshape(idx.size)
    spans = _spans(ow_, kw, sw, dw, pw, w)
    lo, hi = _inside(ow_, w, sw, kw, dw, pw)
    # 2x2 windows tiling the rows exactly and inside the plane (ceil_mode may
    # add a last row of windows that is not): row pairs into vm, then the
    # pairs of columns of many rows in one loop
    pairs = (not want_idx and kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0
             and pw == 0 and dh == 1 and dw == 1 and w == 2 * ow_ and h >= 2 * oh_)
    vm_size = max(w, 4096) if pairs else w
    if nt == 1:
        _max_pool_chunk(xf, outf, idxf, want_idx, pairs, np.empty(vm_size, x.dtype), spans, lo,
                        hi, 0, total, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw)
        return
    chunk = max(1, total // (16 * nt))
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        vm = np.empty(vm_size, x.dtype)
        while True:
            t0 = _claim(counter) * chunk
            if t0 >= total:
                break
            _max_pool_chunk(xf, outf, idxf, want_idx, pairs, vm, spans, lo, hi, t0,
                            min(total, t0 + chunk), h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh,
                            dw)


@_jit(inline=True)
def _max_pool_chunk(xf, outf, idxf, want_idx, pairs, vm, spans, lo, hi, t0, t1, h, w, oh_, ow_,
                    kh, kw, sh, sw, ph, pw, dh, dw):
    if pairs:
        _max_pool_pairs(xf, outf, vm, t0, t1, h, w, oh_, ow_)
    else:
        _max_pool_rows(xf, outf, idxf, want_idx, vm, spans, lo, hi, t0, t1, h, w, oh_, ow_,
                       kh, kw, sh, sw, ph, pw, dh, dw)


@_jit()
def _max_pool_pairs(xf, outf, vm, t0, t1, h, w, oh_, ow_):
    """max_pool2d for output rows [t0, t1) of 2x2 windows at stride 2 with
    W == 2*OW: as many rows as vm holds get their row pairs' maxima, then
    the column pairs of all of them run as one loop (rows hold whole pairs)."""
    per = len(vm) // w
    r = t0
    plane = t0 // oh_
    oh = t0 - plane * oh_
    while r < t1:
        m = min(t1 - r, per)
        for a in range(m):
            sb = (plane * h + 2 * oh) * w
            for iw in range(w):
                vm[_u(a * w + iw)] = _max2(xf[_u(sb + iw)], xf[_u(sb + w + iw)])
            oh += 1
            if oh == oh_:
                oh = 0
                plane += 1
        db = r * ow_
        for q in range(m * ow_):
            outf[_u(db + q)] = _max2(vm[_u(2 * q)], vm[_u(2 * q + 1)])
        r += m


@_jit()
def _max_pool_rows(xf, outf, idxf, want_idx, vm, spans, lo, hi, t0, t1, h, w, oh_, ow_, kh, kw,
                   sh, sw, ph, pw, dh, dw):
    """max_pool2d for output rows [t0, t1), with the row buffer vm; spans and
    [lo, hi) are the column ranges of _spans and _inside (no division per row)."""
    plane = t0 // oh_
    oh = t0 - plane * oh_
    for db in range(t0 * ow_, t1 * ow_, ow_):
        if want_idx:
            _fill(idxf, db, ow_, -1)
        rows = first = 0
        for i in range(kh):
            ih = oh * sh - ph + i * dh
            if ih < 0 or ih >= h:
                continue
            sb = (plane * h + ih) * w
            if want_idx:
                for j in range(kw):
                    a, b = spans[j, 0], spans[j, 1]
                    off = j * dw - pw
                    _max_tap_index(outf, idxf, db + a, xf, sb + a * sw + off, b - a, sw,
                                   ih * w + a * sw + off)
            elif rows == 0:
                first = sb
            elif rows == 1:
                for iw in range(w):
                    vm[_u(iw)] = _max2(xf[_u(first + iw)], xf[_u(sb + iw)])
            else:
                for iw in range(w):
                    vm[_u(iw)] = _max2(vm[_u(iw)], xf[_u(sb + iw)])
            rows += 1
        if not want_idx:
            if rows == 1:
                _row_max(xf, first, w, outf, db, ow_, sw, kw, dw, pw, lo, hi)
            else:
                _row_max(vm, 0, w, outf, db, ow_, sw, kw, dw, pw, lo, hi)
        oh += 1
        if oh == oh_:
            oh = 0
            plane += 1


@_jit(inline=True)
def _add_tap(d, db, s, sb, n, sw):
    """d[db + o] += s[sb + o*sw]."""
    if sw == 1:
        for o in range(n):
            d[_u(db + o)] += s[_u(sb + o)]
    elif sw == 2:
        for o in range(n):
            d[_u(db + o)] += s[_u(sb + 2 * o)]
    else:
        for o in range(n):
            d[_u(db + o)] += s[_u(sb + o * sw)]


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

    Sums in the dtype with taps in row-major order, as the reference adds
    them; the division in float64, as NumPy does for the reference."""
    n_, c_, oh_, ow_ = out.shape
    h, w = x.shape[2], x.shape[3]
    spans = _spans(ow_, kw, sw, 1, pw, w)
    xf = x.reshape(x.size)
    outf = out.reshape(out.size)
    for task in prange(n_ * c_ * oh_):
        plane = task // oh_
        oh = task % oh_
        db = task * ow_
        _fill(outf, db, ow_, 0)
        for i in range(kh):
            ih = oh * sh - ph + i
            if ih < 0 or ih >= h:
                continue
            for j in range(kw):
                lo, hi = spans[j, 0], spans[j, 1]
                _add_tap(outf, db + lo, xf, (plane * h + ih) * w + lo * sw + j - pw, hi - lo, sw)
        rows = _avg_count(oh, sh, ph, kh, h, include_pad)
        for o in range(ow_):
            d = divisor if divisor > 0 else rows * _avg_count(o, sw, pw, kw, w, include_pad)
            outf[_u(db + o)] = outf[_u(db + o)] / np.float64(d)


@_jit(parallel=True)
def max_pool2d_backward(g, idx, gi):
    """gi[n][c] <- each output's gradient added at its maximum's position.

    One plane per task; sums in float64 in output order, then rounded to the
    dtype, as the reference's np.bincount does."""
    n_, c_, oh_, ow_ = g.shape
    h, w = gi.shape[2], gi.shape[3]
    gf = g.reshape(g.size)
    idxf = idx.reshape(idx.size)
    gif = gi.reshape(gi.size)
    for plane in prange(n_ * c_):
        acc = np.zeros(h * w, np.float64)
        for o in range(plane * oh_ * ow_, (plane + 1) * oh_ * ow_):
            acc[_u(idxf[_u(o)])] += gf[_u(o)]
        _copy(gif, plane * h * w, acc, 0, h * w, 1)


@_jit(parallel=True)
def avg_pool2d_backward(g, gi, kh, kw, sh, sw, ph, pw, include_pad, divisor):
    """gi <- each output's gradient / divisor added over its window.

    One plane per task; taps in row-major order as the reference adds them."""
    n_, c_, oh_, ow_ = g.shape
    h, w = gi.shape[2], gi.shape[3]
    gf = g.reshape(g.size)
    gif = gi.reshape(gi.size)
    for plane in prange(n_ * c_):
        share = np.empty(oh_ * ow_, g.dtype)
        for oh in range(oh_):
            rows = _avg_count(oh, sh, ph, kh, h, include_pad)
            for ow in range(ow_):
                d = divisor if divisor > 0 else rows * _avg_count(ow, sw, pw, kw, w, include_pad)
                share[oh * ow_ + ow] = gf[_u((plane * oh_ + oh) * ow_ + ow)] / g.dtype.type(d)
        _fill(gif, plane * h * w, h * w, 0)
        for i in range(kh):
            for j in range(kw):
                off = j - pw
                lo, hi = _span(ow_, off, sw, w)
                for oh in range(oh_):
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= h:
                        continue
                    db = (plane * h + ih) * w + lo * sw + off
                    sb = oh * ow_ + lo
                    if sw == 1:
                        for o in range(hi - lo):
                            gif[_u(db + o)] += share[_u(sb + o)]
                    else:
                        for o in range(hi - lo):
                            gif[_u(db + o * sw)] += share[_u(sb + o)]


# The kernels the adapter calls (the serial bodies of two of them too), for cache_status().
KERNELS = (conv2d_gemm, _conv2d_blocks, conv2d_depthwise, _depthwise_planes, conv2d_few_filters,
           _few_filter_tasks, conv2d_gemm_backward,
           im2col, col2im, max_pool2d, avg_pool2d, max_pool2d_backward, avg_pool2d_backward)
