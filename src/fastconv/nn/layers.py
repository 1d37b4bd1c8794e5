"""Layers in the style of Deep Learning from Scratch (ch. 5 and 7), on fastconv's kernels.

Every layer has `forward(x)` and `backward(dout)`; backward returns the
gradient with respect to forward's input and stores the gradients of the
layer's parameters in `grads`, under the same keys as `params`. As in the
textbook, backward overwrites `grads` (it does not accumulate), and
optimisers update the arrays of `params` in place.

Parameter shapes and names follow PyTorch (Conv2d weight (K, C/groups, KH, KW),
Linear weight (out, in), "weight" and "bias"), so a state_dict reads the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

import fastconv as fc

from .. import _threads
from .._params import _bool, _conv_pads, _int, _pair
from .init import as_rng, float_dtype, initial_weight

__all__ = ["AvgPool2d", "Conv2d", "Flatten", "Layer", "Linear", "MaxPool2d", "ReLU",
           "Sequential", "SoftmaxCrossEntropy"]

# The fastconv functions a layer may call, the keys of a per-function backend dict.
FASTCONV_OPS = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                "avg_pool2d", "avg_pool2d_backward")


def _check_backend(backend):
    """A backend name, or a dict from fastconv function name to backend name."""
    names = ("auto", *fc.backends())
    if isinstance(backend, str):
        if backend not in names:
            raise ValueError(f"backend must be one of {names} or a dict from function name "
                             f"to backend name, got {backend!r}")
        return backend
    if isinstance(backend, Mapping):
        for op, name in backend.items():
            if op not in FASTCONV_OPS:
                raise ValueError(f"backend dict keys must be fastconv functions {FASTCONV_OPS}, "
                                 f"got {op!r}")
            if name not in names:
                raise ValueError(f"backend[{op!r}] must be one of {names}, got {name!r}")
        return dict(backend)
    raise TypeError(f"backend must be a backend name or a dict, got {backend!r}")


class Layer:
    """Base class: `params` and `grads` dicts, forward/backward, state_dict, save/load."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- backend

    @property
    def backend(self):
        """"auto", a backend name, or a dict {fastconv function name: backend name}
        (functions not in it use "auto"); passed to every fastconv call of the layer."""
        return getattr(self, "_backend", "auto")

    @backend.setter
    def backend(self, value):
        self._backend = _check_backend(value)

    def _backend_for(self, op: str) -> str:
        b = self.backend
        return b if isinstance(b, str) else b.get(op, "auto")

    # -- parameters

    def reset_parameters(self, rng=None) -> Layer:
        """Draw the parameters afresh (layers without parameters: nothing to do)."""
        return self

    def astype(self, dtype) -> Layer:
        """Convert the parameters (and gradients) to float32 or float64, in place; returns self."""
        dtype = float_dtype(dtype)
        for store in (self.params, self.grads):
            for key, value in store.items():
                store[key] = value.astype(dtype)
        if hasattr(self, "dtype"):
            self.dtype = dtype
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, by name."""
        return {key: value.copy() for key, value in self.params.items()}

    def load_state_dict(self, state: Mapping, strict: bool = True) -> None:
        """Copy the arrays of `state` into the parameters of the same name.

        With strict=True the names must match exactly; shapes must always match.
        Values are cast to the parameters' dtype.
        """
        params = self.params
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key in params.keys() & state.keys():
            value = np.asarray(state[key])
            if value.shape != params[key].shape:
                raise ValueError(f"load_state_dict: {key!r} has shape {value.shape}, "
                                 f"the model's parameter has shape {params[key].shape}")
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {key!r} has unsupported dtype {value.dtype}")
            np.copyto(params[key], value, casting="unsafe")

    def save(self, path) -> None:
        """Write state_dict() to an .npz file (numpy adds the suffix if missing)."""
        np.savez(path, **self.state_dict())

    def load(self, path, strict: bool = True) -> Layer:
        """Load parameters saved by save() into this (identically built) model; returns self."""
        with np.load(path, allow_pickle=False) as data:
            self.load_state_dict({key: data[key] for key in data.files}, strict=strict)
        return self

    # -- helpers

    def _saved(self, name: str):
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value


def _positive(value, name: str) -> int:
    return _int(value, name, 1)


# ------------------------------------------------------------------ layers


class Conv2d(Layer):
    """fc.conv2d as a layer: weight (K, C/groups, KH, KW), bias (K,).

    stride, padding, dilation, groups, padding_mode and activation ("relu",
    fused into the kernel) take every form fc.conv2d takes. init: "he"
    (default), "xavier" or a standard deviation; the bias starts at zero.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, *, padding_mode="zeros", activation=None,
                 init="he", rng=None, dtype=np.float32, backend="auto"):
        super().__init__()
        self.in_channels = _positive(in_channels, "in_channels")
        self.out_channels = _positive(out_channels, "out_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.groups = _positive(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels={self.in_channels} "
                             f"and out_channels={self.out_channels}")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.padding_mode, self.activation = padding_mode, activation
        self.init = init
        self.dtype = float_dtype(dtype)
        self.backend = backend
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.params["weight"] = initial_weight(shape, init, as_rng(rng), self.dtype)
        if _bool(bias, "bias"):
            self.params["bias"] = np.zeros(self.out_channels, self.dtype)
        self._check_call()

    def _check_call(self):
        """Validate stride, padding, ... now, on an empty batch of images large
        enough for any check that depends on the image size to pass."""
        stride = _pair(self.stride, "stride", 1)
        dilation = _pair(self.dilation, "dilation", 1)
        extent = max(d * (k - 1) + 1 for d, k in zip(dilation, self.kernel_size))
        pads = _conv_pads(self.padding, extent, extent, *self.kernel_size, stride, dilation)
        size = extent + max(pads) + 1
        x = np.empty((0, self.in_channels, size, size), self.dtype)
        fc.explain("conv2d", x, self.params["weight"], self.params.get("bias"), self.stride,
                   self.padding, self.dilation, self.groups, padding_mode=self.padding_mode,
                   activation=self.activation, backend="numpy")

    @property
    def weight(self) -> np.ndarray:
        return self.params["weight"]

    @property
    def bias(self) -> np.ndarray | None:
        return self.params.get("bias")

    def reset_parameters(self, rng=None) -> Conv2d:
        w = self.params["weight"]
        self.params["weight"] = initial_weight(w.shape, self.init, as_rng(rng), w.dtype)
        if "bias" in self.params:
            self.params["bias"] = np.zeros_like(self.params["bias"])
        return self

    def _args(self):
        return (self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        out = fc.conv2d(x, self.weight, self.bias, *self._args(),
                        padding_mode=self.padding_mode, activation=self.activation,
                        backend=self._backend_for("conv2d"))
        self._x = x
        self._out = out if self.activation == "relu" else None
        return out

    def backward(self, dout):
        x = self._saved("_x")
        if self.activation == "relu":
            dout = np.where(self._out > 0, dout, 0)
        g = fc.conv2d_backward(dout, x, self.weight, *self._args(),
                               padding_mode=self.padding_mode,
                               backend=self._backend_for("conv2d_backward"))
        self.grads["weight"] = g.weight.astype(self.weight.dtype, copy=False)
        if "bias" in self.params:
            self.grads["bias"] = g.bias.astype(self.weight.dtype, copy=False)
        return g.input

    def __repr__(self) -> str:
        extra = "".join(f", {name}={value!r}" for name, value, default in (
            ("stride", self.stride, 1), ("padding", self.padding, 0),
            ("dilation", self.dilation, 1), ("groups", self.groups, 1),
            ("padding_mode", self.padding_mode, "zeros"),
            ("activation", self.activation, None)) if value != default)
        bias = "" if "bias" in self.params else ", bias=False"
        return (f"Conv2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}{extra}{bias})")


class MaxPool2d(Layer):
    """fc.max_pool2d as a layer. forward keeps the indices of the maxima;
    backward adds each output's gradient at its maximum (what
    fc.max_pool2d_backward computes, without redoing the forward pass)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
                 backend="auto"):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode
        self.backend = backend
        _check_pool("max_pool2d", self._args())

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def forward(self, x):
        out, indices = fc.max_pool2d(x, *self._args(), return_indices=True,
                                     backend=self._backend_for("max_pool2d"))
        self._in_shape, self._indices = np.shape(x), indices
        return out

    def backward(self, dout):
        indices = self._saved("_indices")
        h, w = self._in_shape[-2:]
        planes = math.prod(self._in_shape[:-2])
        dout = np.asarray(dout)
        if dout.shape != indices.shape:
            raise ValueError(f"MaxPool2d.backward: dout has shape {dout.shape}, "
                             f"forward's output had shape {indices.shape}")
        flat = indices.reshape(planes, -1) + (np.arange(planes) * (h * w))[:, None]
        dx = np.bincount(flat.ravel(), weights=dout.ravel(), minlength=planes * h * w)
        return dx.astype(np.result_type(dout, np.float32), copy=False).reshape(self._in_shape)

    def __repr__(self) -> str:
        return (f"MaxPool2d(kernel_size={self.kernel_size!r}, stride={self.stride!r}, "
                f"padding={self.padding!r})")


class AvgPool2d(Layer):
    """fc.avg_pool2d as a layer; backward is fc.avg_pool2d_backward."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, *, backend="auto"):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override
        self.backend = backend
        _check_pool("avg_pool2d", self._args())

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        out = fc.avg_pool2d(x, *self._args(), backend=self._backend_for("avg_pool2d"))
        self._in_shape = np.shape(x)
        return out

    def backward(self, dout):
        return fc.avg_pool2d_backward(dout, self._saved("_in_shape"), *self._args(),
                                      backend=self._backend_for("avg_pool2d_backward"))

    def __repr__(self) -> str:
        return (f"AvgPool2d(kernel_size={self.kernel_size!r}, stride={self.stride!r}, "
                f"padding={self.padding!r})")


def _check_pool(op: str, args) -> None:
    """Validate pooling arguments now, on an empty batch of images large enough
    for any check that depends on the image size to pass."""
    kh, kw = _pair(args[0], "kernel_size", 1)
    dh, dw = _pair(args[3], "dilation", 1) if op == "max_pool2d" else (1, 1)
    size = 2 * max(dh * (kh - 1), dw * (kw - 1)) + 2
    x = np.empty((0, 1, size, size), np.float32)
    fc.explain(op, x, *args, backend="numpy")


class ReLU(Layer):
    """max(x, 0); the gradient passes where x > 0."""

    def forward(self, x):
        x = np.asarray(x)
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dout):
        return np.where(self._saved("_mask"), dout, 0)


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)), as the textbook's Affine does on its way in."""

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"Flatten needs a batch (N, ...), got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return np.reshape(dout, self._saved("_shape"))


# Below this many FLOPs a product runs on one BLAS thread: waking BLAS threads
# saves at most a few microseconds there, and on a busy machine their join
# waits for a core (LeNet's 64x256x128 product took 8 ms on 2 threads at
# load 2.5, against 40 us on one).
_THREADED_MATMUL_FLOPS = 1 << 24


def _matmul(a, b):
    if 2 * a.shape[0] * a.shape[1] * b.shape[1] >= _THREADED_MATMUL_FLOPS:
        return a @ b
    _threads.blas.enter(1)
    try:
        return a @ b
    finally:
        _threads.blas.exit()


class Linear(Layer):
    """x @ weight.T + bias, weight (out_features, in_features) as in PyTorch
    (the textbook's Affine holds its transpose). x must be 2-D: put a Flatten first."""

    def __init__(self, in_features, out_features, bias=True, *, init="he", rng=None,
                 dtype=np.float32):
        super().__init__()
        self.in_features = _positive(in_features, "in_features")
        self.out_features = _positive(out_features, "out_features")
        self.init = init
        self.dtype = float_dtype(dtype)
        shape = (self.out_features, self.in_features)
        self.params["weight"] = initial_weight(shape, init, as_rng(rng), self.dtype)
        if _bool(bias, "bias"):
            self.params["bias"] = np.zeros(self.out_features, self.dtype)

    @property
    def weight(self) -> np.ndarray:
        return self.params["weight"]

    @property
    def bias(self) -> np.ndarray | None:
        return self.params.get("bias")

    def reset_parameters(self, rng=None) -> Linear:
        w = self.params["weight"]
        self.params["weight"] = initial_weight(w.shape, self.init, as_rng(rng), w.dtype)
        if "bias" in self.params:
            self.params["bias"] = np.zeros_like(self.params["bias"])
        return self

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) needs x of shape "
                             f"(N, {self.in_features}), got {x.shape}"
                             + (" (put a Flatten before it)" if x.ndim > 2 else ""))
        if x.dtype.kind not in "biuf":
            raise TypeError(f"x has unsupported dtype {x.dtype}")
        self._x = x
        out = _matmul(x, self.weight.T)
        if self.bias is not None:
            out += self.bias
        return out

    def backward(self, dout):
        x = self._saved("_x")
        dout = np.asarray(dout)
        self.grads["weight"] = _matmul(dout.T, x).astype(self.weight.dtype, copy=False)
        if self.bias is not None:
            self.grads["bias"] = dout.sum(axis=0).astype(self.weight.dtype, copy=False)
        return _matmul(dout, self.weight)

    def __repr__(self) -> str:
        bias = "" if "bias" in self.params else ", bias=False"
        return f"Linear({self.in_features}, {self.out_features}{bias})"


# -------------------------------------------------------------- containers


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse.

    params/grads hold every layer's, named "<index>.<name>" ("0.weight") as
    PyTorch's nn.Sequential does. backend, if given, is set on every layer.
    """

    def __init__(self, *layers, backend=None):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} is not a fastconv.nn.Layer, got "
                                f"{layer!r}" + (" (a loss goes outside the Sequential)"
                                                if isinstance(layer, SoftmaxCrossEntropy)
                                                else ""))
        self.layers = list(layers)
        if backend is not None:
            self.backend = backend

    @property
    def backend(self):
        return getattr(self, "_backend", "auto")

    @backend.setter
    def backend(self, value):
        self._backend = _check_backend(value)
        for layer in self.layers:
            layer.backend = self._backend

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def _named(self, attr: str) -> dict[str, np.ndarray]:
        return {f"{i}.{key}": value for i, layer in enumerate(self.layers)
                for key, value in getattr(layer, attr).items()}

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every layer's parameters (the arrays themselves: update them in place)."""
        return self._named("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._named("grads")

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def reset_parameters(self, rng=None) -> Sequential:
        """Draw every layer's parameters afresh, in order, from one generator."""
        rng = as_rng(rng)
        for layer in self.layers:
            layer.reset_parameters(rng)
        return self

    def astype(self, dtype) -> Sequential:
        for layer in self.layers:
            layer.astype(dtype)
        return self


# ------------------------------------------------------------------- loss


class SoftmaxCrossEntropy:
    """Softmax followed by the mean cross-entropy, the textbook's SoftmaxWithLoss.

    forward(x, t) takes scores x (N, classes) and labels t, either class
    indices (N,) or one-hot / probability rows (N, classes), and returns the
    loss; backward(dout=1.0) returns its gradient with respect to x.
    """

    def forward(self, x, t) -> float:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"SoftmaxCrossEntropy needs scores of shape (N, classes), "
                             f"got {x.shape}")
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        t = np.asarray(t)
        n, k = x.shape
        if t.shape == (n,):
            if t.dtype.kind not in "iu":
                raise TypeError(f"labels t of shape (N,) must be integers, got {t.dtype}")
            if n and (t.min() < 0 or t.max() >= k):
                raise ValueError(f"labels t must lie in [0, {k}), got values from "
                                 f"{t.min()} to {t.max()}")
            target = np.zeros_like(x)
            target[np.arange(n), t] = 1
        elif t.shape == x.shape:
            if t.dtype.kind not in "biuf":
                raise TypeError(f"targets t have unsupported dtype {t.dtype}")
            target = t.astype(x.dtype)
        else:
            raise ValueError(f"labels t must have shape ({n},) or {x.shape}, got {t.shape}")
        shifted = x - x.max(axis=1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.y = np.exp(log_prob)  # the softmax, as in the textbook
        self._target = target
        return float(-(target * log_prob).sum() / max(n, 1))

    __call__ = forward

    def backward(self, dout=1.0):
        if getattr(self, "_target", None) is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        n = max(len(self._target), 1)
        return ((self.y - self._target) * (dout / n)).astype(self.y.dtype, copy=False)

    def __repr__(self) -> str:
        return "SoftmaxCrossEntropy()"
