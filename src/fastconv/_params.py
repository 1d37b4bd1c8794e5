"""Argument checking and normalisation, done once for every backend.

Each public function's arguments become a frozen spec (every size resolved)
plus read-only, C-contiguous arrays of the compute dtype. Backends trust both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

Pair = tuple[int, int]
Pads = tuple[int, int, int, int]  # top, bottom, left, right

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
ACTIVATIONS = (None, "relu")


# ---------------------------------------------------------------- specs


# Specs are NamedTuples: immutable like frozen dataclasses, and ten times
# cheaper to build, which matters on a small call's path.
class ConvSpec(NamedTuple):
    """A convolution (or unfolding) with every size resolved.

    `n, c, h, w` describe the input, `k` the filters (0 for im2col/col2im),
    `pads` the (top, bottom, left, right) padding, `oh, ow` the output size.
    """

    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: Pair
    pads: Pads
    dilation: Pair
    groups: int
    padding_mode: str
    activation: str | None
    has_bias: bool
    dtype: np.dtype
    batched: bool
    oh: int
    ow: int

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The conv2d result's shape as the caller sees it."""
        shape = (self.n, self.k, self.oh, self.ow)
        return shape if self.batched else shape[1:]

    @property
    def in_shape(self) -> tuple[int, ...]:
        shape = (self.n, self.c, self.h, self.w)
        return shape if self.batched else shape[1:]

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.c // self.groups, self.kh, self.kw)

    @property
    def cols_shape(self) -> tuple[int, int]:
        """im2col's result: (N*OH*OW, C*KH*KW)."""
        return (self.n * self.oh * self.ow, self.c * self.kh * self.kw)

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel at stride 1 without padding: unfolding is the identity."""
        return (self.kh, self.kw, self.stride, self.pads) == (1, 1, (1, 1), (0, 0, 0, 0))

    @property
    def flops(self) -> int:
        """2*N*K*(C/groups)*KH*KW*OH*OW, the convention of the benchmarks."""
        return (2 * self.n * self.k * (self.c // self.groups)
                * self.kh * self.kw * self.oh * self.ow)


class PoolSpec(NamedTuple):
    """A max or average pooling with every size resolved."""

    kind: str  # "max" or "avg"
    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride: Pair
    padding: Pair
    dilation: Pair
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None
    return_indices: bool
    dtype: np.dtype
    batched: bool
    oh: int
    ow: int

    @property
    def out_shape(self) -> tuple[int, ...]:
        shape = (self.n, self.c, self.oh, self.ow)
        return shape if self.batched else shape[1:]

    @property
    def in_shape(self) -> tuple[int, ...]:
        shape = (self.n, self.c, self.h, self.w)
        return shape if self.batched else shape[1:]


# ------------------------------------------------------- scalar arguments


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int(value, name: str, minimum: int) -> int:
    if type(value) is int and value >= minimum:  # the common case, quickly
        return value
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _pair(value, name: str, minimum: int) -> Pair:
    """An int or a sequence of two ints, each >= minimum."""
    if type(value) is int and value >= minimum:  # the common case, quickly
        return (value, value)
    if _is_int(value):
        v = _int(value, name, minimum)
        return (v, v)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (_int(value[0], f"{name}[0]", minimum), _int(value[1], f"{name}[1]", minimum))
    raise TypeError(f"{name} must be an integer or a pair of integers, got {value!r}")


def _bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _conv_pads(padding, h: int, w: int, kh: int, kw: int,
               stride: Pair, dilation: Pair) -> Pads:
    """Resolve every padding form of conv2d to (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            # TensorFlow's rule, for any stride: OH = ceil(H / sh).
            pads = []
            for size, k, s, d in ((h, kh, stride[0], dilation[0]), (w, kw, stride[1], dilation[1])):
                out = -(-size // s)
                total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(f"padding must be 'valid', 'same', an integer or pairs, got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        top, bottom = _pair(padding[0], "padding[0] (top, bottom)", 0)
        left, right = _pair(padding[1], "padding[1] (left, right)", 0)
        return (top, bottom, left, right)
    ph, pw = _pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


# ------------------------------------------------------------- arrays


def _array(value, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None


_FLOAT32 = np.dtype(np.float32)


def compute_dtype(named: dict[str, np.ndarray]) -> np.dtype:
    """np.result_type of the inputs and float32; float32 or float64, else TypeError."""
    if all(a.dtype == _FLOAT32 for a in named.values()):  # the common case, quickly
        return _FLOAT32
    for name, a in named.items():
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} has unsupported dtype {a.dtype}; "
                            "use a real floating, integer or bool array")
    dtype = np.result_type(*named.values(), np.float32)
    if dtype not in (np.float32, np.float64):
        names = ", ".join(f"{n}: {a.dtype}" for n, a in named.items())
        raise TypeError(f"the inputs ({names}) promote to {dtype}; "
                        "fastconv computes in float32 or float64 only")
    return dtype


def _readonly(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A C-contiguous read-only view (a copy only if layout or dtype differ)."""
    a = np.ascontiguousarray(a, dtype=dtype).view()
    a.flags.writeable = False
    return a


def _image(x: np.ndarray, name: str, fn: str) -> tuple[np.ndarray, bool]:
    """x as 4-D (N, C, H, W), and whether the caller's x was batched."""
    if x.ndim == 4:
        batched = True
    elif x.ndim == 3:
        batched = False
        x = x[np.newaxis]
    else:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W) or 3-D (C, H, W), "
                         f"got shape {x.shape}")
    if 0 in x.shape[1:]:
        raise ValueError(f"{fn}: {name} has a zero C, H or W dimension: shape "
                         f"{x.shape if batched else x.shape[1:]}")
    return x, batched


def check_out(out, shape: tuple[int, ...], dtype: np.dtype, inputs: tuple, name: str = "out"):
    """`out` as NumPy's ufuncs take it: C-contiguous, exact shape and dtype, no overlap."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {dtype}, "
                         f"got shape {out.shape} and dtype {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous array")
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{name} must not overlap the inputs")
    return out


def _check_mode_pads(mode: str, pads: Pads, h: int, w: int, fn: str):
    if mode == "zeros":
        return
    top, bottom, left, right = pads
    for axis, size, before, after in (("H", h, top, bottom), ("W", w, left, right)):
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(f"{fn}: padding_mode='reflect' needs padding < input size, "
                             f"got padding ({before}, {after}) for {axis}={size}")
        if mode == "circular" and max(before, after) > size:
            raise ValueError(f"{fn}: padding_mode='circular' needs padding <= input size, "
                             f"got padding ({before}, {after}) for {axis}={size}")


def _conv_geometry(fn: str, in_shape, n, c, h, w, kh, kw, stride, padding, dilation):
    """Resolve padding and output size; reject kernels larger than the padded input."""
    stride = _pair(stride, "stride", 1)
    dilation = _pair(dilation, "dilation", 1)
    pads = _conv_pads(padding, h, w, kh, kw, stride, dilation)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    ekh, ekw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if ekh > hp or ekw > wp:
        raise ValueError(f"{fn}: kernel ({kh}, {kw}) with dilation {dilation} spans "
                         f"({ekh}, {ekw}), larger than the padded input ({hp}, {wp}) "
                         f"of input shape {in_shape} with padding {pads}")
    oh = (hp - ekh) // stride[0] + 1
    ow = (wp - ekw) // stride[1] + 1
    return stride, pads, dilation, oh, ow


# ------------------------------------------------------------ conv2d


# Specs of recent conv2d calls by their arguments' shapes, dtypes and options:
# a repeated call (a layer in a training loop) skips the checks, which cost a
# tiny call more than its arithmetic. Only exact ndarrays and int or str
# options (True == 1 and 1.0 == 1 as keys, but only 1 passes the checks).
_conv_specs: dict = {}
_CONV_SPECS_SIZE = 512
_KEY_TYPES = (int, str)


def conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode,
           activation, fn="conv2d"):
    """-> (ConvSpec, x4, weight, bias) for conv2d."""
    key = None
    if (type(x) is np.ndarray and type(weight) is np.ndarray
            and (bias is None or type(bias) is np.ndarray)
            and type(stride) in _KEY_TYPES and type(padding) in _KEY_TYPES
            and type(dilation) in _KEY_TYPES and type(groups) in _KEY_TYPES):
        key = (fn, x.shape, x.dtype, weight.shape, weight.dtype,
               None if bias is None else (bias.shape, bias.dtype),
               stride, padding, dilation, groups, padding_mode, activation)
        try:
            spec = _conv_specs.get(key)
        except TypeError:  # an unhashable padding_mode or activation
            spec = key = None
        if spec is not None:
            x4 = x if spec.batched else x[np.newaxis]
            return (spec, _readonly(x4, spec.dtype), _readonly(weight, spec.dtype),
                    None if bias is None else _readonly(bias, spec.dtype))
    spec, x4, weight, bias = _conv2d(x, weight, bias, stride, padding, dilation, groups,
                                     padding_mode, activation, fn)
    if key is not None:
        if len(_conv_specs) >= _CONV_SPECS_SIZE:
            _conv_specs.clear()
        _conv_specs[key] = spec
    return spec, x4, weight, bias


def _conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode,
            activation, fn):
    x = _array(x, "x")
    weight = _array(weight, "weight")
    named = {"x": x, "weight": weight}
    if bias is not None:
        bias = _array(bias, "bias")
        named["bias"] = bias
    dtype = compute_dtype(named)
    x4, batched = _image(x, "x", fn)
    if weight.ndim != 4:
        raise ValueError(f"{fn}: weight must be 4-D (K, C/groups, KH, KW), got shape {weight.shape}")
    if 0 in weight.shape:
        raise ValueError(f"{fn}: weight has a zero dimension: shape {weight.shape}")
    n, c, h, w = x4.shape
    k, cg, kh, kw = weight.shape
    groups = _int(groups, "groups", 1)
    if c % groups or k % groups:
        raise ValueError(f"{fn}: groups={groups} must divide both the input channels "
                         f"C={c} (x shape {x.shape}) and the filters K={k} "
                         f"(weight shape {weight.shape})")
    if cg * groups != c:
        raise ValueError(f"{fn}: channel mismatch: x has C={c} channels (shape {x.shape}) "
                         f"but weight {weight.shape} with groups={groups} expects "
                         f"C = {cg}*{groups} = {cg * groups}")
    if bias is not None and bias.shape != (k,):
        raise ValueError(f"{fn}: bias must have shape ({k},) to match weight {weight.shape}, "
                         f"got {bias.shape}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{fn}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}")
    stride, pads, dilation, oh, ow = _conv_geometry(
        fn, x.shape, n, c, h, w, kh, kw, stride, padding, dilation)
    _check_mode_pads(padding_mode, pads, h, w, fn)
    spec = ConvSpec(n=n, c=c, h=h, w=w, k=k, kh=kh, kw=kw, stride=stride, pads=pads,
                    dilation=dilation, groups=groups, padding_mode=padding_mode,
                    activation=activation, has_bias=bias is not None, dtype=dtype,
                    batched=batched, oh=oh, ow=ow)
    bias = None if bias is None else _readonly(bias, dtype)
    return spec, _readonly(x4, dtype), _readonly(weight, dtype), bias


def conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups, padding_mode):
    """-> (ConvSpec, grad_out4, x4, weight) for conv2d_backward."""
    fn = "conv2d_backward"
    grad_out = _array(grad_out, "grad_out")
    x = _array(x, "x")
    weight = _array(weight, "weight")
    dtype = compute_dtype({"grad_out": grad_out, "x": x, "weight": weight})
    spec, x4, weight, _ = conv2d(x.astype(dtype, copy=False), weight.astype(dtype, copy=False),
                                 None, stride, padding, dilation, groups, padding_mode, None, fn)
    if grad_out.shape != spec.out_shape:
        raise ValueError(f"{fn}: grad_out must have the forward result's shape "
                         f"{spec.out_shape} (x {x.shape}, weight {weight.shape}), "
                         f"got {grad_out.shape}")
    g4 = grad_out if spec.batched else grad_out[np.newaxis]
    return spec, _readonly(g4, dtype), x4, weight


# ------------------------------------------------------------ unfolding


def im2col(x, kernel_size, stride, padding, dilation):
    """-> (ConvSpec, x4) for im2col; x must be 4-D."""
    fn = "im2col"
    x = _array(x, "x")
    dtype = compute_dtype({"x": x})
    if x.ndim != 4:
        raise ValueError(f"{fn}: x must be 4-D (N, C, H, W), got shape {x.shape}")
    x4, _ = _image(x, "x", fn)
    spec = _unfold_spec(fn, x.shape, kernel_size, stride, padding, dilation, dtype)
    return spec, _readonly(x4, dtype)


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """-> (ConvSpec, cols) for col2im."""
    fn = "col2im"
    cols = _array(cols, "cols")
    dtype = compute_dtype({"cols": cols})
    shape = _shape(input_shape, "input_shape", fn, allow_unbatched=False)
    spec = _unfold_spec(fn, shape, kernel_size, stride, padding, dilation, dtype)
    if cols.shape != spec.cols_shape:
        raise ValueError(f"{fn}: cols must have shape (N*OH*OW, C*KH*KW) = {spec.cols_shape} "
                         f"for input_shape {shape} and kernel ({spec.kh}, {spec.kw}), "
                         f"got {cols.shape}")
    return spec, _readonly(cols, dtype)


def _shape(value, name: str, fn: str, allow_unbatched: bool) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
        raise TypeError(f"{fn}: {name} must be a tuple of integers, got {value!r}")
    shape = tuple(int(v) for v in value)
    lengths = (3, 4) if allow_unbatched else (4,)
    if len(shape) not in lengths or any(v < 0 for v in shape):
        form = "(N, C, H, W) or (C, H, W)" if allow_unbatched else "(N, C, H, W)"
        raise ValueError(f"{fn}: {name} must be {form} with non-negative sizes, got {shape}")
    if 0 in shape[-3:]:
        raise ValueError(f"{fn}: {name} has a zero C, H or W dimension: {shape}")
    return shape


def _unfold_spec(fn, shape, kernel_size, stride, padding, dilation, dtype) -> ConvSpec:
    n, c, h, w = shape
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    if isinstance(padding, str):
        raise TypeError(f"{fn}: padding must be an integer or pairs, got {padding!r}")
    stride, pads, dilation, oh, ow = _conv_geometry(
        fn, shape, n, c, h, w, kh, kw, stride, padding, dilation)
    return ConvSpec(n=n, c=c, h=h, w=w, k=0, kh=kh, kw=kw, stride=stride, pads=pads,
                    dilation=dilation, groups=1, padding_mode="zeros", activation=None,
                    has_bias=False, dtype=dtype, batched=True, oh=oh, ow=ow)


# ------------------------------------------------------------- pooling


def _pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size; the last window starts inside input or left pad."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_spec(kind, fn, shape, batched, kernel_size, stride, padding, dilation,
               ceil_mode, count_include_pad, divisor_override, return_indices, dtype):
    n, c, h, w = shape
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    stride = (kh, kw) if stride is None else _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    dilation = _pair(dilation, "dilation", 1)
    ceil_mode = _bool(ceil_mode, "ceil_mode")
    count_include_pad = _bool(count_include_pad, "count_include_pad")
    return_indices = _bool(return_indices, "return_indices")
    if divisor_override is not None:
        divisor_override = _int(divisor_override, "divisor_override", 1)
    in_shape = shape if batched else shape[1:]
    sizes = []
    for axis, size, k, s, p, d in (("H", h, kh, stride[0], padding[0], dilation[0]),
                                   ("W", w, kw, stride[1], padding[1], dilation[1])):
        if p > k // 2:
            raise ValueError(f"{fn}: padding {p} along {axis} must be at most half the "
                             f"kernel size {k} (kernel_size // 2 = {k // 2})")
        out = _pool_out_size(size, k, s, p, d, ceil_mode)
        if out < 1:
            raise ValueError(f"{fn}: input {in_shape} is too small for kernel_size "
                             f"({kh}, {kw}) with padding {padding} and dilation {dilation}: "
                             f"the output size along {axis} would be {out}")
        # Every window must hold at least one input element (dilation can skip them
        # all). A window starting at st >= 0 holds st (the last one starts inside the
        # input), so only the first ceil(p / s) windows, starting in the padding, can
        # miss: their first tap at or after 0 is st + d*ceil(-st / d).
        for o in range(min(out, -(-p // s))):
            st = o * s - p
            j = -(st // d)  # ceil(-st / d)
            if j >= k or st + d * j >= size:
                raise ValueError(f"{fn}: with kernel_size {k}, stride {s}, padding {p} and "
                                 f"dilation {d}, some window along {axis} (size {size}) "
                                 f"holds no input element")
        sizes.append(out)
    return PoolSpec(kind=kind, n=n, c=c, h=h, w=w, kh=kh, kw=kw, stride=stride,
                    padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                    count_include_pad=count_include_pad, divisor_override=divisor_override,
                    return_indices=return_indices, dtype=dtype, batched=batched,
                    oh=sizes[0], ow=sizes[1])


def pool2d(kind, x, kernel_size, stride, padding, dilation, ceil_mode,
           count_include_pad=True, divisor_override=None, return_indices=False):
    """-> (PoolSpec, x4) for max_pool2d / avg_pool2d."""
    fn = f"{kind}_pool2d"
    x = _array(x, "x")
    dtype = compute_dtype({"x": x})
    x4, batched = _image(x, "x", fn)
    spec = _pool_spec(kind, fn, x4.shape, batched, kernel_size, stride, padding, dilation,
                      ceil_mode, count_include_pad, divisor_override, return_indices, dtype)
    return spec, _readonly(x4, dtype)


def max_pool2d_backward(grad_out, x, kernel_size, stride, padding, dilation, ceil_mode):
    """-> (PoolSpec, grad_out4, x4)."""
    fn = "max_pool2d_backward"
    grad_out = _array(grad_out, "grad_out")
    x = _array(x, "x")
    dtype = compute_dtype({"grad_out": grad_out, "x": x})
    x4, batched = _image(x, "x", fn)
    spec = _pool_spec("max", fn, x4.shape, batched, kernel_size, stride, padding,
                      dilation, ceil_mode, True, None, False, dtype)
    _check_grad_shape(fn, grad_out, spec)
    g4 = grad_out if batched else grad_out[np.newaxis]
    return spec, _readonly(g4, dtype), _readonly(x4, dtype)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override):
    """-> (PoolSpec, grad_out4)."""
    fn = "avg_pool2d_backward"
    grad_out = _array(grad_out, "grad_out")
    dtype = compute_dtype({"grad_out": grad_out})
    shape = _shape(input_shape, "input_shape", fn, allow_unbatched=True)
    batched = len(shape) == 4
    shape4 = shape if batched else (1, *shape)
    spec = _pool_spec("avg", fn, shape4, batched, kernel_size, stride, padding, 1,
                      ceil_mode, count_include_pad, divisor_override, False, dtype)
    _check_grad_shape(fn, grad_out, spec)
    g4 = grad_out if batched else grad_out[np.newaxis]
    return spec, _readonly(g4, dtype)


def _check_grad_shape(fn: str, grad_out: np.ndarray, spec: PoolSpec):
    if grad_out.shape != spec.out_shape:
        raise ValueError(f"{fn}: grad_out must have the forward result's shape "
                         f"{spec.out_shape} for input {spec.in_shape}, got {grad_out.shape}")

