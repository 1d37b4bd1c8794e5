"""Weight initialisation: He and Xavier (Glorot) normal, with a seedable generator.

    rng = np.random.default_rng(0)
    w = he_normal((16, 1, 5, 5), rng)          # std sqrt(2 / fan_in)
    w = xavier_normal((10, 64), rng)           # std sqrt(2 / (fan_in + fan_out))

Fans follow PyTorch: for a weight (out, in, *kernel), fan_in = in * prod(kernel)
and fan_out = out * prod(kernel).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["as_rng", "fans", "he_normal", "initial_weight", "xavier_normal"]

INITS = ("he", "xavier")


def as_rng(rng=None) -> np.random.Generator:
    """A Generator from None (fresh entropy), an int seed or a Generator (returned as is)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def float_dtype(dtype) -> np.dtype:
    """np.dtype(dtype) if it is float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel), as PyTorch counts them."""
    if len(shape) < 2:
        raise ValueError(f"a weight needs at least 2 dimensions (out, in, ...), got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def he_normal(shape, rng=None, dtype=np.float32) -> np.ndarray:
    """Normal with std sqrt(2 / fan_in): He et al. 2015, for layers followed by ReLU."""
    fan_in, _ = fans(shape)
    return _normal(shape, math.sqrt(2.0 / fan_in), rng, dtype)


def xavier_normal(shape, rng=None, dtype=np.float32) -> np.ndarray:
    """Normal with std sqrt(2 / (fan_in + fan_out)): Glorot & Bengio 2010."""
    fan_in, fan_out = fans(shape)
    return _normal(shape, math.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def initial_weight(shape, init="he", rng=None, dtype=np.float32) -> np.ndarray:
    """A weight drawn by `init`: "he", "xavier", or a number, the std of a normal
    (the textbook's weight_init_std)."""
    if init == "he":
        return he_normal(shape, rng, dtype)
    if init == "xavier":
        return xavier_normal(shape, rng, dtype)
    if isinstance(init, numbers.Real) and not isinstance(init, (bool, np.bool_)):
        if not (math.isfinite(init) and init >= 0):
            raise ValueError(f"init as a standard deviation must be finite and >= 0, got {init!r}")
        return _normal(shape, float(init), rng, dtype)
    raise ValueError(f"init must be one of {INITS} or a standard deviation, got {init!r}")


def _normal(shape, std: float, rng, dtype) -> np.ndarray:
    dtype = float_dtype(dtype)
    return (as_rng(rng).standard_normal(shape) * std).astype(dtype)
