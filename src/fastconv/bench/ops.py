"""What each benchmarked op computes, on which layers, and who competes.

One place for the CLI (`python -m fastconv bench`) and the pytest-benchmark
suites under `benchmarks/`: the layer table (from `shapes`), the inputs, the
work per call, the contenders (every fastconv backend implementing the op, the
textbook NumPy code where there is one, PyTorch when installed) and the check
of each result against the NumPy reference.

Work per call, so rates compare across layers and with the machine's limits:
- conv2d: 2*N*K*(C/groups)*KH*KW*OH*OW FLOPs; conv2d_backward twice that
  (grad input and grad weight each cost a forward; the bias sum is left out).
  Rated in GFLOP/s against the GEMM peak.
- pooling and im2col: the bytes the op must move at least, inputs read plus
  result written, as the copy probe counts its bytes. Rated in GB/s against
  the copy bandwidth.

PyTorch is called the way its autograd runs each op, under `no_grad`:
`F.conv2d`, `aten.convolution_backward`, `F.unfold` (its own layout,
(N, C*KH*KW, OH*OW); the check transposes it), pooling NCHW (`torch`) and
channels_last (`torch_cl`, its fast path), `aten.avg_pool2d_backward`. Max
pooling's backward takes only (grad_out, x) here, so the `torch` contender runs
`max_pool2d_with_indices` and its backward: what autograd does over a forward
and a backward, with the same inputs and result as ours.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

import fastconv as fc

from .. import _tuning
from . import textbook
from .shapes import CONV_LAYERS, POOL_LAYERS, ConvLayer, PoolLayer

OPS = ("conv2d", "conv2d_backward", "im2col", "max_pool2d", "max_pool2d_backward",
       "avg_pool2d", "avg_pool2d_backward")
CONV_OPS = ("conv2d", "conv2d_backward", "im2col")
TEXTBOOK_OPS = ("conv2d", "im2col")
# backend="auto" by its measured rules, and with autotuning on (each layer
# tunes from scratch, so its first call shows what tuning costs).
AUTO = ("auto", "autotuned")


def table(op: str) -> tuple:
    """The layers `op` runs on."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose from {', '.join(OPS)}")
    return CONV_LAYERS if op in CONV_OPS else POOL_LAYERS


def unit(op: str) -> str:
    return "GFLOP/s" if op in ("conv2d", "conv2d_backward") else "GB/s"


def limit_kind(op: str) -> str:
    """Which of the machine's limits bounds `op`: "gemm" or "copy"."""
    return "gemm" if unit(op) == "GFLOP/s" else "copy"


def stand_in(layer):
    """A small layer with the same kernel, stride, padding and groups, for smoke runs."""
    if isinstance(layer, ConvLayer):
        c = min(layer.c, 8 if layer.groups == 1 else layer.groups)
        groups = min(layer.groups, c)
        k = min(layer.k, 8) if layer.groups == 1 else c * (layer.k // layer.c)
        side = max(layer.kh + layer.stride, 12)
        return layer._replace(n=1, c=c, k=k, groups=groups, h=min(layer.h, side),
                              w=min(layer.w, side))
    return layer._replace(n=1, c=min(layer.c, 4), h=min(layer.h, 16), w=min(layer.w, 16))


def _pool_kw(layer: PoolLayer) -> dict:
    return dict(kernel_size=layer.kernel, stride=layer.stride, padding=layer.padding)


def _conv_kw(layer: ConvLayer) -> dict:
    return dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)


def inputs(op: str, layer, dtype) -> dict[str, np.ndarray]:
    """Seeded unit-scale inputs of one call."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape).astype(dtype)
    if op in ("conv2d", "conv2d_backward"):
        w = rng.standard_normal(layer.weight_shape).astype(dtype)
        if op == "conv2d":
            return {"x": x, "w": w}
        out = (layer.n, layer.k, *layer.out_hw)
        return {"x": x, "w": w, "g": rng.standard_normal(out).astype(dtype)}
    if op == "im2col":
        return {"x": x}
    if op.endswith("_backward"):
        g = rng.standard_normal((layer.n, layer.c, *_pool_out_hw(layer))).astype(dtype)
        return {"x": x, "g": g}
    return {"x": x}


def _pool_out_hw(layer: PoolLayer) -> tuple[int, int]:
    plane = np.zeros((1, 1, layer.h, layer.w), np.float32)
    return fc.max_pool2d(plane, backend="numpy", **_pool_kw(layer)).shape[2:]


def work(op: str, layer, itemsize: int) -> float:
    """GFLOPs or GB per call (see the module docstring)."""
    if op == "conv2d":
        return layer.flops / 1e9
    if op == "conv2d_backward":
        return 2 * layer.flops / 1e9
    n, c, h, w = layer.x_shape
    if op == "im2col":
        oh, ow = layer.out_hw
        return (n * c * h * w + n * oh * ow * c * layer.kh * layer.kw) * itemsize / 1e9
    out = n * c * int(np.prod(_pool_out_hw(layer)))
    moved = {"max_pool2d": n * c * h * w + out,
             "avg_pool2d": n * c * h * w + out,
             "max_pool2d_backward": 2 * n * c * h * w + out,  # reads x and grad_out
             "avg_pool2d_backward": n * c * h * w + out}[op]
    return moved * itemsize / 1e9


def _fc_args(op: str, layer, a: dict) -> tuple[tuple, dict]:
    """(args, kwargs) of the fastconv call of `op` on `layer`, backend aside."""
    if op in ("conv2d", "conv2d_backward"):
        args = (a["x"], a["w"]) if op == "conv2d" else (a["g"], a["x"], a["w"])
        return args, _conv_kw(layer)
    if op == "im2col":
        return (a["x"], (layer.kh, layer.kw), layer.stride, layer.padding), {}
    if op == "max_pool2d_backward":
        return (a["g"], a["x"]), _pool_kw(layer)
    if op == "avg_pool2d_backward":
        return (a["g"], a["x"].shape), _pool_kw(layer)
    return (a["x"],), _pool_kw(layer)


def _fc_call(op: str, layer, a: dict, backend: str) -> Callable[[], object]:
    fn, (args, kw) = getattr(fc, op), _fc_args(op, layer, a)
    return lambda: fn(*args, backend=backend, **kw)


@contextlib.contextmanager
def _autotuning(on: bool):
    """Autotuning switched on or off inside the block, as it was after it."""
    was = fc.autotune()
    fc.autotune(on)
    try:
        yield
    finally:
        fc.autotune(was)


def contender_state(name: str):
    """The state a contender's calls run in: autotuning on for "autotuned", off
    for "auto", as it was for every other contender. Set around a whole sample,
    not per call: switching it costs a few microseconds, a quarter of a tiny
    call."""
    return _autotuning(name == "autotuned") if name in AUTO else contextlib.nullcontext()


def _plan(op: str, layer, a: dict, contender: str):
    """explain() of an auto contender's call on `layer`, in that contender's state."""
    args, kw = _fc_args(op, layer, a)
    with _autotuning(contender == "autotuned"):
        return fc.explain(op, *args, **kw)


def auto_choice(op: str, layer, a: dict, contender: str) -> str:
    """The path an auto contender runs ("cpp/gemm", "numba"...), as explain() gives it:
    the rules' pick, or with autotuning the winner of its latest timing."""
    return _plan(op, layer, a, contender).path


def tuning_cost(op: str, layer, a: dict) -> tuple[float, int] | None:
    """(seconds, count) of the tunings of autotuned's signature so far, or None."""
    tuned = _plan(op, layer, a, "autotuned").tuned
    return None if tuned is None else (tuned.tuning_seconds, tuned.tunings)


def rechecks(op: str, layer, a: dict) -> int:
    """How often autotuning's watch re-tuned the layer's signature (fastconv._tuning.watch)."""
    plan = _plan(op, layer, a, "autotuned")
    return _tuning.rechecks(plan.op, plan.spec, plan.threads)


def _textbook_call(op: str, layer, a: dict) -> Callable[[], object]:
    if op == "conv2d":
        return lambda: textbook.grouped_conv2d(a["x"], a["w"], None, layer.stride,
                                               layer.padding, layer.groups)
    return lambda: textbook.im2col(a["x"], layer.kh, layer.kw, layer.stride, layer.padding)


def _torch_call(op: str, layer, a: dict, torch, channels_last=False) -> Callable[[], object]:
    F, aten = torch.nn.functional, torch.ops.aten
    t = {k: torch.from_numpy(v) for k, v in a.items()}
    if channels_last:
        t["x"] = t["x"].contiguous(memory_format=torch.channels_last)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    if op == "conv2d":
        return no_grad(lambda: F.conv2d(t["x"], t["w"], **_conv_kw(layer)))
    if op == "conv2d_backward":
        s, p = [layer.stride] * 2, [layer.padding] * 2
        return no_grad(lambda: aten.convolution_backward(
            t["g"], t["x"], t["w"], [layer.k], s, p, [1, 1], False, [0, 0], layer.groups,
            [True, True, True]))
    if op == "im2col":
        return no_grad(lambda: F.unfold(t["x"], (layer.kh, layer.kw), padding=layer.padding,
                                        stride=layer.stride))
    k, s, p = [layer.kernel] * 2, [layer.stride] * 2, [layer.padding] * 2
    if op == "max_pool2d_backward":
        def max_back():
            _, idx = aten.max_pool2d_with_indices(t["x"], k, s, p, [1, 1], False)
            return aten.max_pool2d_with_indices_backward(t["g"], t["x"], k, s, p, [1, 1],
                                                         False, idx)
        return no_grad(max_back)
    if op == "avg_pool2d_backward":
        return no_grad(lambda: aten.avg_pool2d_backward(t["g"], t["x"], k, s, p, False,
                                                        True, None))
    fn = getattr(F, op)
    return no_grad(lambda: fn(t["x"], **_pool_kw(layer)))


def torch_contenders(op: str) -> list[str]:
    """The PyTorch contender names of `op` (when PyTorch is installed)."""
    return ["torch", "torch_cl"] if op in ("max_pool2d", "avg_pool2d") else ["torch"]


def backends_for(op: str, names=None) -> tuple[list[str], dict[str, str]]:
    """(available backends implementing `op`, {left-out backend: why})."""
    one = np.ones((1, 1, 4, 4), np.float32)
    probe = {"conv2d": lambda b: fc.conv2d(one, one[..., :1, :1], backend=b),
             "conv2d_backward": lambda b: fc.conv2d_backward(one, one, one[..., :1, :1],
                                                             backend=b),
             "im2col": lambda b: fc.im2col(one, 2, backend=b),
             "max_pool2d": lambda b: fc.max_pool2d(one, 2, backend=b),
             "avg_pool2d": lambda b: fc.avg_pool2d(one, 2, backend=b),
             "max_pool2d_backward": lambda b: fc.max_pool2d_backward(one[..., :2, :2], one,
                                                                     2, backend=b),
             "avg_pool2d_backward": lambda b: fc.avg_pool2d_backward(one[..., :2, :2],
                                                                     one.shape, 2,
                                                                     backend=b)}[op]
    known = fc.backends()
    ok, skipped = [], {}
    for name in known if names is None else names:
        if not known[name].available:
            skipped[name] = known[name].reason
            continue
        try:
            probe(name)
        except fc.BackendUnavailableError as exc:
            skipped[name] = str(exc)
            continue
        ok.append(name)
    return ok, skipped


def contenders(op: str, layer, a: dict, backends, torch=None,
               textbook_too: bool = True) -> dict[str, Callable[[], object]]:
    """name -> a call computing `op` on `layer` with the inputs `a`."""
    names = [*backends, *(["textbook"] if textbook_too and op in TEXTBOOK_OPS else []),
             *(torch_contenders(op) if torch is not None else [])]
    return {name: contender_call(op, layer, a, name, torch) for name in names}


def contender_call(op: str, layer, a: dict, name: str, torch=None) -> Callable[[], object]:
    """The call of one contender by name."""
    if name in AUTO:  # run under contender_state(name)
        return _fc_call(op, layer, a, "auto")
    if name == "textbook":
        return _textbook_call(op, layer, a)
    if name.startswith("torch"):
        return _torch_call(op, layer, a, torch, channels_last=name == "torch_cl")
    return _fc_call(op, layer, a, name)


def reference(op: str, layer, a: dict):
    return _fc_call(op, layer, a, "numpy")()


def _arrays(op: str, contender: str, result, layer) -> tuple[np.ndarray, ...]:
    """The result as NumPy arrays in fastconv's layout."""
    parts = tuple(result) if isinstance(result, tuple) else (result,)
    parts = tuple(np.asarray(p.numpy() if hasattr(p, "numpy") else p) for p in parts)
    if op == "im2col" and contender.startswith("torch"):
        (cols,) = parts
        parts = (cols.transpose(0, 2, 1).reshape(-1, cols.shape[1]),)
    return parts


def mismatch(op: str, contender: str, result, ref, layer) -> str:
    """"" when `result` equals the reference within the contract's tolerance, else why not."""
    got, want = _arrays(op, contender, result, layer), _arrays(op, "numpy", ref, layer)
    if [g.shape for g in got] != [w.shape for w in want]:
        return f"shape {[g.shape for g in got]} instead of {[w.shape for w in want]}"
    for g, w in zip(got, want):
        tol = 1e-4 if w.dtype == np.float32 else 1e-10
        err = float(np.max(np.abs(g - w), initial=0.0))
        bound = tol * (1 + float(np.max(np.abs(w), initial=0.0)))
        if not err <= bound:
            return f"differs from numpy by {err:.3g} (allowed {bound:.3g})"
    return ""
