"""Optimisers in the textbook's style: `update(params, grads)` changes params in place.

    opt = Adam(lr=1e-3)
    opt.update(model.params, model.grads)

The updates are PyTorch's (torch.optim.SGD, SGD with momentum, Adam), so a
model trains the same step for step; weight_decay adds weight_decay * param
to the gradient, as PyTorch's does.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

__all__ = ["Adam", "Momentum", "Optimizer", "SGD"]


def _number(value, name: str, low: float, high: float = math.inf, *,
            low_open: bool = False, high_open: bool = True) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if math.isnan(value) or below or above:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value!r}")
    return value


class Optimizer:
    """Base class: validates the arguments of update() and keeps state per parameter name."""

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = _number(lr, "lr", 0.0, low_open=True)
        self.weight_decay = _number(weight_decay, "weight_decay", 0.0)
        self.state: dict[str, dict] = {}

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """One step: every array of `params` moves along the gradient of the same name."""
        missing = [key for key in params if key not in grads]
        if missing:
            raise KeyError(f"{type(self).__name__}.update: no gradient for {missing} "
                           "(call backward before update)")
        for key, param in params.items():
            grad = np.asarray(grads[key])
            if not isinstance(param, np.ndarray) or param.dtype.kind != "f":
                raise TypeError(f"{type(self).__name__}.update: parameter {key!r} must be a "
                                f"floating-point ndarray, got {type(param).__name__}")
            if grad.shape != param.shape:
                raise ValueError(f"{type(self).__name__}.update: gradient {key!r} has shape "
                                 f"{grad.shape}, the parameter {param.shape}")
            grad = grad.astype(param.dtype, copy=False)
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            state = self.state.setdefault(key, {})
            self._step(param, grad, state)

    def _step(self, param: np.ndarray, grad: np.ndarray, state: dict) -> None:
        raise NotImplementedError

    def _buffer(self, state: dict, name: str, param: np.ndarray) -> np.ndarray:
        buf = state.get(name)
        if buf is None:
            buf = state[name] = np.zeros_like(param)
        elif buf.shape != param.shape:
            raise ValueError(f"{type(self).__name__}: the state kept for this parameter has "
                             f"shape {buf.shape}, the parameter {param.shape}; use a new "
                             "optimiser for a new model")
        elif buf.dtype != param.dtype:  # the model was converted with astype()
            buf = state[name] = buf.astype(param.dtype)
        return buf

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "state")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """param -= lr * grad."""

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)

    def _step(self, param, grad, state):
        param -= self.lr * grad


class Momentum(Optimizer):
    """v = momentum * v + grad; param -= lr * v (PyTorch's SGD with momentum; the
    textbook's v = momentum * v - lr * grad, param += v is the same for a fixed lr)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _number(momentum, "momentum", 0.0, 1.0)

    def _step(self, param, grad, state):
        v = self._buffer(state, "velocity", param)
        v *= self.momentum
        v += grad
        param -= self.lr * v


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, exactly as torch.optim.Adam:
    m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
    param -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = _number(beta1, "beta1", 0.0, 1.0)
        self.beta2 = _number(beta2, "beta2", 0.0, 1.0)
        self.eps = _number(eps, "eps", 0.0)

    def _step(self, param, grad, state):
        m = self._buffer(state, "m", param)
        v = self._buffer(state, "v", param)
        t = state["step"] = state.get("step", 0) + 1
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * grad * grad
        denom = np.sqrt(v) / math.sqrt(1 - self.beta2 ** t)
        denom += self.eps
        param -= (self.lr / (1 - self.beta1 ** t)) * m / denom
