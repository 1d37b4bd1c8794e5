"""The public functions: validate once, pick a backend, run it.

Each op below is written as a function that validates its arguments and
returns a `_Call`; the `_op` decorator turns it into the public function that
runs the call, and `explain` uses the same function to plan without running.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, NamedTuple

import numpy as np

from . import _dispatch, _params, _threads

_OPS: dict[str, Callable] = {}


class _Call(NamedTuple):  # a NamedTuple: a frozen dataclass costs a tiny call 1 us more
    op: str
    spec: object
    out_shape: tuple[int, ...]
    backend: str
    execute: Callable  # (backend impl) -> result


def _op(prepare):
    """Public op from a function that validates and returns a _Call."""

    @functools.wraps(prepare)
    def run(*args, **kwargs):
        call = prepare(*args, **kwargs)
        share = _threads.acquire()
        try:
            return _dispatch.run(call.op, call.spec, call.backend, call.execute)
        finally:
            _threads.release(share)

    _OPS[prepare.__name__] = prepare
    return run


# The array arguments of each op, whose conversion explain() reports.
_ARRAYS = {"conv2d": ("x", "weight", "bias"), "conv2d_backward": ("grad_out", "x", "weight"),
           "max_pool2d": ("x",), "avg_pool2d": ("x",), "max_pool2d_backward": ("grad_out", "x"),
           "avg_pool2d_backward": ("grad_out",), "im2col": ("x",), "col2im": ("cols",)}


def _copies(op: str, spec, args, kwargs) -> list[str]:
    """What happens to each array argument: used in place, or copied and why."""
    bound = inspect.signature(_OPS[op]).bind(*args, **kwargs).arguments
    notes = []
    for name in _ARRAYS[op]:
        value = bound.get(name)
        if value is None:
            continue
        a = value if isinstance(value, np.ndarray) else np.asarray(value)
        why = []
        if not isinstance(value, np.ndarray):
            why.append(f"converted from {type(value).__name__}")
        if a.dtype != spec.dtype:
            why.append(f"dtype {a.dtype} -> {spec.dtype}")
        if not a.flags.c_contiguous:
            why.append("layout: not C-contiguous")
        size = _dispatch._bytes(a.size * spec.dtype.itemsize)
        notes.append(f"{name}: copied ({', '.join(why)}; {size})" if why
                     else f"{name}: used in place (C-contiguous {a.dtype})")
    return notes


def explain(op: str, *args, **kwargs) -> _dispatch.Plan:
    """The plan `op(*args, **kwargs)` would run, without running it: `.backend`
    and `.kernel`, the reason and the rejected paths, the resolved call, FLOPs,
    predicted workspace, input copies and tuned times; str() shows it all."""
    if op not in _OPS:
        raise ValueError(f"explain: op must be one of {tuple(_OPS)}, got {op!r}")
    call = _OPS[op](*args, **kwargs)
    share = _threads.acquire()
    try:
        return _dispatch.plan(call.op, call.spec, call.backend, call.out_shape,
                              _copies(op, call.spec, args, kwargs))
    finally:
        _threads.release(share)


def _result(out, shape, dtype):
    return np.empty(shape, dtype) if out is None else out


def _batched(a: np.ndarray, batched: bool) -> np.ndarray:
    """The 4-D view the backends write into."""
    return a if batched else a[np.newaxis]


# ------------------------------------------------------------ convolution


@_op
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, out=None, backend="auto"):
    """2-D cross-correlation of x (N, C, H, W) or (C, H, W) with weight (K, C/groups, KH, KW).

    padding: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
    (TensorFlow's rule, any stride). padding_mode: "zeros", "reflect",
    "replicate" or "circular". activation: None or "relu", fused. Returns a new
    C-contiguous array (N, K, OH, OW), or (K, OH, OW) for unbatched x, or `out`.
    """
    spec, x4, w, b = _params.conv2d(x, weight, bias, stride, padding, dilation, groups,
                                    padding_mode, activation)
    out = _params.check_out(out, spec.out_shape, spec.dtype, (x, weight, bias))

    def execute(impl):
        result = _result(out, spec.out_shape, spec.dtype)
        if spec.n:
            impl.conv2d(spec, x4, w, b, _batched(result, spec.batched))
        return result

    return _Call("conv2d", spec, spec.out_shape, backend, execute)


class Conv2dGrads(NamedTuple):
    """Gradients of a conv2d call with respect to its input, weight and bias."""

    input: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


@_op
def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    padding_mode="zeros", backend="auto"):
    """Gradients of conv2d (without activation), as PyTorch's autograd gives them.

    Returns Conv2dGrads(input, weight, bias); bias is grad_out summed over N, OH, OW.
    """
    spec, g4, x4, w = _params.conv2d_backward(grad_out, x, weight, stride, padding,
                                              dilation, groups, padding_mode)

    def execute(impl):
        if spec.n == 0:
            return Conv2dGrads(np.zeros(spec.in_shape, spec.dtype),
                               np.zeros(spec.weight_shape, spec.dtype),
                               np.zeros(spec.k, spec.dtype))
        gi, gw, gb = impl.conv2d_backward(spec, g4, x4, w)
        gi = gi if spec.batched else gi[0]
        return Conv2dGrads(*(np.ascontiguousarray(a, spec.dtype) for a in (gi, gw, gb)))

    return _Call("conv2d_backward", spec, spec.in_shape, backend, execute)


# --------------------------------------------------------------- pooling


@_op
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None, backend="auto"):
    """Max pooling over windows of x (N, C, H, W) or (C, H, W), padding with -inf.

    NaN propagates (its index is the first NaN in the window); on ties the first
    maximum in row-major window order wins. With return_indices=True returns
    (out, indices), indices as int64 positions h * W + w in each input plane.
    """
    spec, x4 = _params.pool2d("max", x, kernel_size, stride, padding, dilation, ceil_mode,
                              return_indices=return_indices)
    out = _params.check_out(out, spec.out_shape, spec.dtype, (x,))

    def execute(impl):
        result = _result(out, spec.out_shape, spec.dtype)
        indices = np.empty(spec.out_shape, np.int64) if spec.return_indices else None
        if spec.n:
            impl.max_pool2d(spec, x4, _batched(result, spec.batched),
                            None if indices is None else _batched(indices, spec.batched))
        return (result, indices) if spec.return_indices else result

    return _Call("max_pool2d", spec, spec.out_shape, backend, execute)


@_op
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, out=None, backend="auto"):
    """Average pooling over windows of x (N, C, H, W) or (C, H, W), as in PyTorch."""
    spec, x4 = _params.pool2d("avg", x, kernel_size, stride, padding, 1, ceil_mode,
                              count_include_pad, divisor_override)
    out = _params.check_out(out, spec.out_shape, spec.dtype, (x,))

    def execute(impl):
        result = _result(out, spec.out_shape, spec.dtype)
        if spec.n:
            impl.avg_pool2d(spec, x4, _batched(result, spec.batched))
        return result

    return _Call("avg_pool2d", spec, spec.out_shape, backend, execute)


def _pool_backward(op, spec, backend, compute):
    def execute(impl):
        if spec.n == 0:
            return np.zeros(spec.in_shape, spec.dtype)
        grad = compute(impl)
        return np.ascontiguousarray(grad if spec.batched else grad[0], spec.dtype)

    return _Call(op, spec, spec.in_shape, backend, execute)


@_op
def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, backend="auto"):
    """Gradient of max_pool2d with respect to x: each output's gradient goes to its maximum."""
    spec, g4, x4 = _params.max_pool2d_backward(grad_out, x, kernel_size, stride, padding,
                                               dilation, ceil_mode)
    return _pool_backward("max_pool2d_backward", spec, backend,
                          lambda impl: impl.max_pool2d_backward(spec, g4, x4))


@_op
def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, *,
                        backend="auto"):
    """Gradient of avg_pool2d with respect to its input of shape input_shape."""
    spec, g4 = _params.avg_pool2d_backward(grad_out, input_shape, kernel_size, stride,
                                           padding, ceil_mode, count_include_pad,
                                           divisor_override)
    return _pool_backward("avg_pool2d_backward", spec, backend,
                          lambda impl: impl.avg_pool2d_backward(spec, g4))


# -------------------------------------------------------------- unfolding


@_op
def im2col(x, kernel_size, stride=1, padding=0, dilation=1, *, backend="auto"):
    """Patches of x (N, C, H, W) as rows: (N*OH*OW, C*KH*KW), the textbook's layout.

    Row (n*OH + oh)*OW + ow, column (c*KH + kh)*KW + kw; zero padding.
    """
    spec, x4 = _params.im2col(x, kernel_size, stride, padding, dilation)

    def execute(impl):
        result = np.empty(spec.cols_shape, spec.dtype)
        if spec.n:
            impl.im2col(spec, x4, result)
        return result

    return _Call("im2col", spec, spec.cols_shape, backend, execute)


@_op
def col2im(cols, input_shape, kernel_size, stride=1, padding=0, dilation=1, *,
           backend="auto"):
    """The adjoint of im2col: patches summed back into an (N, C, H, W) array."""
    spec, cols = _params.col2im(cols, input_shape, kernel_size, stride, padding, dilation)

    def execute(impl):
        result = np.zeros((spec.n, spec.c, spec.h, spec.w), spec.dtype)
        if spec.n:
            impl.col2im(spec, cols, result)
        return result

    return _Call("col2im", spec, spec.in_shape, backend, execute)
