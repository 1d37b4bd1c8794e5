"""auto's rules: which backend (and cpp kernel) runs a call, by op and problem
size, and what each path needs in memory (for explain()).

The rules are a short decision list per op, cheap enough for the smallest call
(a few attribute reads and comparisons on the spec, under half a microsecond).
Each rule orders the backends; the dispatcher runs the first one that is
available and implements the call, so a missing backend (no Numba, no
extension) falls through to the next. cpp picks its own conv2d kernel
(CppBackend.conv2d_kernel: direct below 4 filters per group, 1x1, else the
GEMM). Autotuning (fastconv.autotune) replaces the rules by measurements of
the call itself where it is on.

The measurements behind them: `python -m fastconv bench`'s layer table and
sweeps around each boundary, on the development machine (2-core AMD EPYC,
AVX2 path, OpenBLAS 0.3.31, Numba 0.68, float32, 2 threads), shared with
other jobs: medians of 4-9 interleaved rounds; a single run's ratios moved
by 10-30%, so a rule needs a consistent margin. Figures of 2026-11-27 (after
cpp's GEMM read the weights unpacked and Numba got a few-filter kernel),
except the rows marked (earlier), from previous sessions.

    conv2d (time per call)               cpp     numba   numpy   rule
    tiny 1x1x8x8, 1 filter 3x3           23 us   40 us   74 us   tiny: cpp
    depthwise_3x3 (n8 c128 56x56 s1)   4.1 ms  3.8 ms   46 ms   depthwise s1: numba
    depthwise n1 c64 14x14 s1           63 us   52 us  132 us   (earlier)
    depthwise n8 c128 56x56 s2          2.8 ms  4.0 ms   10 ms   depthwise strided: cpp (earlier)
    deep n1 c512 7x7 k512 3x3           6.4 ms   19 ms  7.7 ms  gemm: cpp
    deep n1 c256 14x14 k256 3x3         4.8 ms   19 ms  7.8 ms
    resnet_3x3_7 / _14                  18 / 17 ms   20 / 18  22 / 19
    resnet_3x3_28 / _56                 20 / 19 ms   17 / 19  25 / 40
    resnet_stem / alexnet_c1            25 / 16 ms   24 / 16   75 / 48
    lenet_c1 / lenet_c2                 0.27 / 0.30 ms  0.49 / 0.60   1.3 / 1.6
    pointwise_1x1 (cpp 1x1 kernel)      13.5 ms  15 ms   15 ms
    cpp's direct kernel, 64+ filters per group: 8-140x its GEMM (never a candidate; earlier)

    conv2d_backward                      cpp     numba   numpy
    tiny                                53 us  116 us  180 us   tiny: cpp
    depthwise_3x3                        11 ms   45 ms  192 ms  depthwise: cpp
    pointwise_1x1                        52 ms   36 ms   33 ms  1x1: numpy
    resnet_stem / alexnet_c1            65 / 48 ms   54 / 38  114 / 88   strided: numba
    resnet_3x3_7 / _14                  49 / 49 ms   91 / 54  112 / 60   stride 1: cpp
    resnet_3x3_28 / _56                 44 / 42 ms   42 / 48   61 / 124
    batch1_3x3_56                      5.2-6.0 ms  5.8-6.9  13-17    (grad weight in filter slices)
    n1 c512 7x7 / n1 c256 14x14        13 / 6.1 ms  20 / 10  15 / 6.5
    lenet_c1 / lenet_c2                  1.1 / 1.1 ms  2.0 / 1.9  4.9 / 5.9

    others (earlier)                     cpp     numba   numpy
    im2col, 3x3 layers                   1.0    1.0-1.8x 1.8-3.7x slower   unfold: cpp
    im2col pointwise_1x1                 5.1 ms  6.1 ms  2.1 ms  1x1 unfold: numpy
    col2im, the table                    1.0    0.75-1.4x 1.4-4.7x          unfold: cpp
    max_pool2d with indices              23 / 1.2 / 0.64 ms   60 / 3.0 / 4.0     pooling: cpp

    pooling, 2026-11-27 afternoon        cpp                   numba
    max_pool2d, no indices               2.6 / 0.17 / 0.064 ms  3.6 / 0.23 / 0.068
    avg_pool2d                           3.9 / 0.25 / 0.071 ms  4.3 / 1.0 / 0.22
    max_pool2d_backward                  9.8 / 1.9 / 0.27 ms    21 / 3.8 / 0.95
    avg_pool2d_backward                  5.8 / 1.0 / 0.25 ms    8.1 / 1.3 / 0.29
      (pool_112_k3s2 / pool_56_k2s2 / pool_lenet; numpy 2-40x slower)

Numba's first call in a process imports Numba (~1 s) and, on a cold kernel
cache, compiles (seconds); the rules count steady-state time only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backends.cpp_backend import CppBackend


class Rule(NamedTuple):
    name: str
    order: tuple[str, ...]  # backends, best first
    kernel: str | None  # cpp's conv2d kernel when cpp runs; None: cpp's own choice
    why: str


CPP = ("cpp", "numba", "numpy")
NUMBA = ("numba", "cpp", "numpy")
NUMPY = ("numpy", "cpp", "numba")
SMALL = ("cpp", "numpy", "numba")  # numba's call costs the most (~15 us more than cpp's)

# At most this many multiply-adds (pooling: taps) is a tiny call, where the
# fixed cost per call decides: cpp's is the least.
TINY_WORK = 1 << 16

_TINY = Rule("tiny", SMALL, None, f"at most {TINY_WORK} multiply-adds (taps when pooling): "
             "the least overhead per call decides (cpp's)")
_DEPTHWISE_S1 = Rule("depthwise, stride 1", NUMBA, None,
                     "Numba's depthwise kernel (a multiply-add per tap over a whole padded "
                     "plane) beats cpp's direct kernel 1.2-3.4x")
_DEPTHWISE = Rule("depthwise, strided", CPP, None,
                  "cpp's direct kernel (1.5x Numba's depthwise kernel at stride 2)")
_GEMM = Rule("gemm", CPP, None, "cpp's packed GEMM (implicit im2col; 1x1 and few-filter "
             "layers by cpp's own kernel choice): 0.9-1.8x Numba, 1.0-6x NumPy")

_BWD_POINTWISE = Rule("1x1 gradients", NUMPY, None,
                      "1x1, stride 1, no padding: NumPy's batched matmuls need no unfolding "
                      "(1.1x Numba, 1.6x cpp)")
_BWD_DEPTHWISE = Rule("depthwise gradients", CPP, None,
                      "cpp's direct kernels for both gradients (4x Numba)")
_BWD_STRIDED = Rule("strided gradients", NUMBA, None,
                    "stride > 1: Numba's GEMM gradients in two waves (1.1-1.2x cpp, whose "
                    "direct weight-gradient kernel needs stride 1)")
_BWD = Rule("gradients", CPP, None, "stride 1: cpp's direct weight gradient and GEMMs "
            "over chunks of images (1.0-1.9x Numba)")

_IM2COL_POINTWISE = Rule("1x1 unfold", NUMPY, None,
                         "a 1x1 unit-stride unfold is a transpose: NumPy's copy (2.4x cpp)")
_UNFOLD = Rule("unfold", CPP, None, "cpp's unfolding kernels")
_POOL = Rule("pooling", CPP, None, "cpp's vector kernels (1.1-4x Numba)")


def _conv2d(s) -> Rule:
    cg = s.c // s.groups
    if s.n * s.k * cg * s.kh * s.kw * s.oh * s.ow <= TINY_WORK:
        return _TINY
    if s.groups == s.c and s.groups > 1:
        return _DEPTHWISE_S1 if s.stride == (1, 1) else _DEPTHWISE
    return _GEMM


def _conv2d_backward(s) -> Rule:
    depth = (s.c // s.groups) * s.kh * s.kw
    if s.n * s.k * depth * s.oh * s.ow <= TINY_WORK:
        return _TINY
    if s.groups == s.c and s.groups > 1:
        return _BWD_DEPTHWISE
    if s.pointwise and s.groups == 1:
        return _BWD_POINTWISE
    return _BWD_STRIDED if s.stride != (1, 1) else _BWD


def auto(op: str, spec) -> Rule:
    """The rule for `op` on `spec` (see the module docstring)."""
    if op == "conv2d":
        return _conv2d(spec)
    if op == "conv2d_backward":
        return _conv2d_backward(spec)
    if op == "im2col":
        return _IM2COL_POINTWISE if spec.pointwise else _UNFOLD
    if op == "col2im":
        return _UNFOLD
    if spec.n * spec.c * spec.oh * spec.ow * spec.kh * spec.kw <= TINY_WORK:
        return _TINY
    return _POOL


def cpp_kernels(spec) -> tuple[str, ...]:
    """cpp's conv2d kernels that run `spec`."""
    return ("gemm", "direct", "1x1") if spec.pointwise else ("gemm", "direct")


def default_kernel(op: str, spec) -> str | None:
    """The kernel cpp's conv2d runs by its own choice."""
    return CppBackend.conv2d_kernel(spec) if op == "conv2d" else None


def candidates(op: str, spec) -> list[tuple[str, str | None]]:
    """What autotuning times: (backend, cpp conv2d kernel or None), the rule's
    choice first. cpp's direct conv2d kernel only where it could win: at most
    DIRECT_MAX_FILTERS filters per group (measured 4-40x slower than the GEMM
    with 32 and more; timing it would cost the most)."""
    rule = auto(op, spec)
    out = []
    for name in rule.order:
        if name == "cpp" and op == "conv2d":
            first = rule.kernel or default_kernel(op, spec)
            kernels = [k for k in cpp_kernels(spec)
                       if k != "direct" or spec.k // spec.groups <= DIRECT_MAX_FILTERS]
            out += [("cpp", first)] + [("cpp", k) for k in kernels if k != first]
        else:
            out.append((name, None))
    return out


DIRECT_MAX_FILTERS = 16


# The ops and backends that call BLAS (NumPy's matmul; Numba's cblas calls): the
# convolutions, except on cpp.
BLAS_OPS = frozenset({"conv2d", "conv2d_backward"})
BLAS_BACKENDS = frozenset({"numpy", "numba"})


# ------------------------------------------------------------- workspace
#
# What each path allocates besides its result, from the code: a prediction for
# explain(), not a measurement (`python -m fastconv memory` measures).


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _threads_for(work: int, units: int, threads: int) -> int:
    """cpp/direct/direct_select.cpp's threads_for: 2**16 work per thread at least."""
    return max(1, min(work >> 16, units, threads))


def _extension():
    """The C++ extension module, or None when it is not built."""
    if _CPP[0] is None:
        _CPP[0] = CppBackend().module
    return _CPP[0]


def _generic_path() -> bool:
    module = _extension()
    return module is not None and module.isa_path() == "generic"


def _micro_tile(dtype) -> tuple[int, int]:
    """(MR, NR) of the GEMM micro-kernel of the ISA path in force (cpp/gemm/ukernel_*.cpp)."""
    f32 = np.dtype(dtype) == np.float32
    if _generic_path():
        return (4, 8) if f32 else (4, 4)
    return (6, 16) if f32 else (6, 8)


_CPP = [None]


class _Blocking(NamedTuple):
    """cpp/gemm/blocking.h, in elements of the dtype."""

    kc: int
    mc: int
    nc: int

    @classmethod
    def of(cls, itemsize: int):
        return cls(256, 288 // itemsize, 1024 // itemsize)


def _gemm_workspace(itemsize: int, mr: int, nr: int) -> int:
    """One thread's GemmWorkspace (cpp/gemm/gemm.cpp): packed A and B blocks and a tile."""
    b = _Blocking.of(itemsize)
    return (b.mc // mr * mr * b.kc + b.kc * _cdiv(b.nc, nr) * nr + mr * nr) * itemsize


def _gemm_split_units(m: int, n: int, threads: int, itemsize: int, mr: int, nr: int) -> int:
    """cpp/gemm/gemm.cpp's gemm_split: column blocks x row groups."""
    b = _Blocking.of(itemsize)
    mc = b.mc // mr * mr
    cols_per_block = _cdiv(_cdiv(n, _cdiv(n, b.nc)), nr) * nr
    col_blocks, row_blocks = _cdiv(n, cols_per_block), _cdiv(m, mc)
    row_groups = min(row_blocks, _cdiv(2 * threads, col_blocks))
    rows_per_group = _cdiv(row_blocks, row_groups) * mc
    return col_blocks * _cdiv(m, rows_per_group)


def _count(n: int, noun: str) -> str:
    """"1 thread", "2 threads"."""
    return f"{n} {noun}{'s' if n > 1 else ''}"


def _kernel_geometry(s) -> tuple[tuple[int, int], int, int]:
    """((H, W), top, left) of the input the cpp kernels get: x itself, or its
    padded copy (CppBackend._zero_padded) for the other padding modes."""
    top, bottom, left, right = s.pads
    if s.padding_mode != "zeros":
        return (s.h + top + bottom, s.w + left + right), 0, 0
    return (s.h, s.w), top, left


def _gemm_input(s, threads: int) -> dict | None:
    """How cpp conv2d's GEMM runs s (_cpp.conv2d_gemm_input: its layout, input
    copy, packed weights and split, from the extension's own rules in
    cpp/conv/conv2d.cpp), or None when the extension is not built."""
    module = _extension()
    if module is None:
        return None
    hw, top, left = _kernel_geometry(s)
    return module.conv2d_gemm_input(hw, s.n, s.c, s.k, (s.kh, s.kw), s.stride, (top, left),
                                    s.dilation, s.groups, (s.oh, s.ow), np.dtype(s.dtype).name,
                                    threads)


def _padded(s) -> int:
    """Elements of the padded copy of the input (N, C, H + top + bottom, W + left + right)."""
    top, bottom, left, right = s.pads
    return s.n * s.c * (s.h + top + bottom) * (s.w + left + right)


def _gemm_items(g: dict, item: int) -> list[tuple[str, int]]:
    """The workspace of cpp conv2d's GEMM, as _gemm_input describes it."""
    out = []
    if g["copy_elements"]:
        what = "phase planes of" if g["layout"] == "phased" else "chunks of"
        out.append((f"{what} a zero-padded input copy ({g['layout']} layout)",
                    g["copy_elements"] * item))
    if g["packed_weights"]:
        out.append(("packed weights", g["packed_weights"] * item))
    nt, block_cols = g["threads"], g["block_cols"]
    threads_x = _count(nt, "thread") + " x"
    # a B block (the runs layout packs), and an edge tile per (column panel, MR
    # filters) of a unit
    if g["layout"] == "phased":
        out.append((f"edge tiles ({threads_x} {block_cols} columns)", nt * g["tiles"] * item))
    else:
        out.append((f"B blocks ({threads_x} KC {_Blocking.of(item).kc} x {block_cols} "
                    f"columns)", nt * (g["b_block"] + g["tiles"]) * item))
    return out


def _cpp_backward(s, threads: int, item: int) -> list[tuple[str, int]]:
    """The workspace of cpp's conv2d_backward: the buffers of the path that
    _cpp.conv2d_backward_plan says it takes (cpp/conv/conv2d_gemm_ops.cpp)."""
    module = _extension()
    if module is None or s.n == 0:
        return []
    mr, nr = _micro_tile(s.dtype)
    (h, w), top, left = _kernel_geometry(s)
    plan = module.conv2d_backward_plan((h, w), s.n, s.c, s.k, (s.kh, s.kw), s.stride,
                                       (top, left), s.dilation, s.groups, (s.oh, s.ow),
                                       np.dtype(s.dtype).name, threads)
    cg, kg = s.c // s.groups, s.k // s.groups
    depth, pixels, taps_all = cg * s.kh * s.kw, s.oh * s.ow, s.c * s.kh * s.kw
    weight = s.k * depth
    nt, images, direct = plan["threads"], plan["piece_images"], plan["direct_weight"]
    on_threads = _count(nt, "thread")
    gemm_ws = _gemm_workspace(item, mr, nr)
    # the direct grad weight kernel's copies of a step of images: the input
    # zero-padded, grad_out in rows of whole vectors (direct_impl.h)
    lanes = 32 // item
    owv = _cdiv(s.ow, lanes) * lanes
    hp = (s.oh - 1) * s.stride[0] + (s.kh - 1) * s.dilation[0] + 1
    wp = owv + (s.kw - 1) * s.dilation[1]
    step = plan["weight_step"]
    direct_copies = step * (s.c * hp * wp + s.k * s.oh * owv) * item
    out = []
    if plan["weight_units"]:
        out.append((f"partial grad weights ({plan['weight_units']})",
                    plan["weight_units"] * weight * item))
    if images:  # in pieces through L2
        rows = plan["piece_rows"]
        piece = images * rows * s.ow
        grad = s.k * piece if images > 1 else 0  # one image's is read in place
        per = (taps_all * piece * (1 if direct else 2) + grad
               + (0 if direct else s.groups * _cdiv(kg, mr) * mr * piece)) * item + gemm_ws
        per += direct_copies if direct else 0
        what = _count(images, "image") if rows == s.oh else f"{rows} rows"
        out.append(("packed weights", s.groups * _cdiv(depth, mr) * mr * kg * item))
        out.append((f"im2col pieces of {what}, their gradients and packing buffers "
                    f"({on_threads})", nt * per))
        return out
    # the input gradient as a stride-1 convolution of grad_out with the
    # flipped filters, then grad weight
    out.append(("flipped weights", weight * item))
    if cg < module.DIRECT_BELOW_GROUP_FILTERS:
        out.append(("row accumulators", threads * w * item))
    else:
        out += _gemm_items(module.conv2d_gemm_input(
            (s.oh, s.ow), s.n, s.k, s.c, (s.kh, s.kw), (1, 1),
            (s.dilation[0] * (s.kh - 1) - top, s.dilation[1] * (s.kw - 1) - left), s.dilation,
            s.groups, (h, w), np.dtype(s.dtype).name, threads), item)
    if direct:
        out.append((f"padded copies of {_count(step, 'image')} and its gradient "
                    f"({on_threads})", nt * direct_copies))
        return out
    chunk, slices = plan["chunk"], plan["slices"]
    out.append((f"im2col and gradient of {_count(chunk, 'image')}",
                chunk * (taps_all + s.k) * pixels * item))
    if slices > 1:
        out.append((f"partial grad weights ({slices} slices of the pixels)",
                    slices * kg * depth * item))
    out.append((f"packing buffers ({_count(threads, 'thread')})",
                threads * gemm_ws))
    return out


def _cpp(kernel, op, s, threads, item) -> list[tuple[str, int]]:
    out = []
    copy = op in ("conv2d", "conv2d_backward") and s.padding_mode != "zeros" and any(s.pads)
    if copy:
        out.append((f"{s.padding_mode} pad copy", _padded(s) * item))
    if op == "conv2d":
        mr, nr = _micro_tile(s.dtype)
        cg, kg = s.c // s.groups, s.k // s.groups
        if kernel == "gemm":
            g = _gemm_input(s, threads)
            if g is None:  # no extension: nothing of cpp runs
                return out
            out += _gemm_items(g, item)
        elif kernel == "1x1":
            pixels = s.h * s.w
            out.append(("packed weights", s.groups * _cdiv(kg, mr) * mr * cg * item))
            units = s.n * s.groups * _gemm_split_units(kg, pixels, threads, item, mr, nr)
            nt = _threads_for(s.n * s.k * cg * pixels, units, threads)
            per = _gemm_workspace(item, mr, nr)
            out.append((f"packing buffers ({_count(nt, 'thread')})", nt * per))
        else:  # direct: one output row per thread
            out.append(("row accumulators", threads * s.ow * item))
    elif op == "conv2d_backward":
        out += _cpp_backward(s, threads, item)
        if copy:
            out.append(("gradient of the pad copy", _padded(s) * item))
    elif op == "max_pool2d_backward":
        out.append(("forward maxima and int64 indices", s.n * s.c * s.oh * s.ow * (item + 8)))
    return out


def _numba(op, s, threads, item) -> list[tuple[str, int]]:
    from .backends import numba_backend

    out = []
    if op in ("conv2d", "conv2d_backward") and s.padding_mode != "zeros" and any(s.pads):
        out.append((f"{s.padding_mode} pad copy", _padded(s) * item))
    if op not in ("conv2d", "conv2d_backward"):
        if op == "max_pool2d_backward":
            out.append(("forward maxima and int64 indices",
                        s.n * s.c * s.oh * s.ow * (item + 8)))
        return out
    work = s.flops // 2 if op == "conv2d" else s.flops
    nt = 1 if work < numba_backend._SERIAL_WORK else threads
    ckk = s.c * s.kh * s.kw
    if op == "conv2d" and s.groups == s.c:
        hp = (s.oh - 1) * s.stride[0] + (s.kh - 1) * s.dilation[0] + 1
        wp = (s.ow - 1) * s.stride[1] + (s.kw - 1) * s.dilation[1] + 1
        span = (s.oh - 1) * wp + s.ow if s.stride == (1, 1) else s.ow
        out.append((f"padded planes ({_count(nt, 'thread')})",
                    nt * (hp * wp + span) * item))
    elif op == "conv2d" and numba_backend.few_filters(s):
        hp, wp = s.oh + (s.kh - 1) * s.dilation[0], s.ow + (s.kw - 1) * s.dilation[1]
        span = -(-((s.oh - 1) * wp + s.ow) // 32) * 32
        per = s.c * hp * wp + 5 * span + (s.k + 4) * (s.c // s.groups) * s.kh * (s.kw + 3)
        out.append((f"padded images and filter rows ({_count(nt, 'thread')})",
                    nt * per * item))
    elif op in ("conv2d", "conv2d_backward"):
        if op == "conv2d":
            q = numba_backend.unfold_width(s) if s.padding_mode == "zeros" else s.ow
            rows = numba_backend.gemm_rows(s.n, s.oh, q, ckk, nt)
            per = (ckk + s.k) * rows * q * item
            out.append((f"column blocks ({_count(nt, 'thread')} x {rows} output "
                        "rows)", nt * per))
        else:
            rows = numba_backend.backward_rows(numba_backend.gemm_rows(s.n, s.oh, s.ow, ckk, nt),
                                               s.kh, s.dilation[0], s.stride[0])
            kg, cgkk = s.k // s.groups, (s.c // s.groups) * s.kh * s.kw
            per = ((2 * ckk + s.k) * rows * s.ow + kg * cgkk) * item
            out.append((f"column blocks ({_count(nt, 'thread')} x {rows} output "
                        "rows)", nt * per))
            out.append(("per-thread weight gradients", nt * s.k * cgkk * item))
            if any(s.pads):
                out.append(("padded input gradient", _padded(s) * item))
    return out


def _numpy(op, s, item) -> list[tuple[str, int]]:
    out = []
    if op in ("conv2d", "conv2d_backward", "im2col"):
        if any(s.pads):
            out.append(("pad copy", _padded(s) * item))
        cols = s.n * s.c * s.kh * s.kw * s.oh * s.ow
        if op == "conv2d":  # one product per group over the whole batch
            out.append(("unfolded batch", cols * item))
            out.append(("product before the transpose", s.n * s.k * s.oh * s.ow * item))
        elif op == "conv2d_backward":
            out.append(("unfolded input", cols * item))
            out.append(("its gradient", cols * item))
            out.append(("per-image weight gradients",
                        s.n * s.k * (s.c // s.groups) * s.kh * s.kw * item))
            out.append(("folded padded gradient", _padded(s) * item))
    elif op == "col2im":
        out.append(("folded padded image", _padded(s) * item))
    elif op in ("max_pool2d", "avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward"):
        plane = s.n * s.c * s.oh * s.ow
        padded = s.n * s.c * (s.h + 2 * s.padding[0] + s.stride[0]) * (
            s.w + 2 * s.padding[1] + s.stride[1])  # at most: ceil_mode's extra row
        out.append(("padded input (or its gradient), at most", padded * item))
        if op.startswith("max"):
            out.append(("running maxima, indices and masks", plane * (2 * item + 8 + 8)))
        else:
            out.append(("running sums", plane * item))
    return out


def workspace(name: str, kernel: str | None, op: str, spec, threads: int) -> list[tuple[str, int]]:
    """[(what, bytes)]: the memory a path allocates besides its result, predicted."""
    item = np.dtype(spec.dtype).itemsize
    if name == "cpp":
        return _cpp(kernel, op, spec, threads, item)
    if name == "numba":
        return _numba(op, spec, threads, item)
    return _numpy(op, spec, item)
