"""Which backend runs a call: an ordered registry, the caller's choice, explain()."""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from dataclasses import dataclass, field

from .backends import Backend, NumpyBackend
from .backends.cpp_backend import CppBackend
from .backends.numba_backend import NumbaBackend

# auto's order of preference, until measured rules exist.
_REGISTRY: dict[str, Backend] = {b.name: b for b in (CppBackend(), NumbaBackend(), NumpyBackend())}
_CHOICES = ("auto", *_REGISTRY)
_default: ContextVar[str | None] = ContextVar("fastconv_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """A backend asked for by name cannot run this call; the message says why."""


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str  # why not, "" when available


def backends() -> dict[str, BackendInfo]:
    """Every backend, in auto's order of preference, with its availability."""
    return {name: BackendInfo(name, *b.available()) for name, b in _REGISTRY.items()}


def _check_name(name, source: str) -> str:
    if name not in _CHOICES:
        raise ValueError(f"{source} must be one of {_CHOICES}, got {name!r}")
    return name


def _require(name: str) -> Backend:
    impl = _REGISTRY[name]
    ok, reason = impl.available()
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    return impl


@contextlib.contextmanager
def use_backend(name: str):
    """Make `name` the default backend inside the block (per thread and task)."""
    _check_name(name, "use_backend(name)")
    if name != "auto":
        _require(name)
    token = _default.set(name)
    try:
        yield
    finally:
        _default.reset(token)


def requested(backend: str) -> str:
    """The backend a call asks for: its own `backend=` unless that is "auto",
    then use_backend's, then FASTCONV_BACKEND's, else "auto"."""
    _check_name(backend, "backend")
    if backend != "auto":
        return backend
    if (name := _default.get()) is not None:
        return name
    env = os.environ.get("FASTCONV_BACKEND", "").strip()
    return _check_name(env, "FASTCONV_BACKEND") if env else "auto"


@dataclass(frozen=True)
class Plan:
    """What a call would run: `backend` names the backend, str() says why."""

    op: str
    backend: str
    requested: str
    spec: object
    out_shape: tuple[int, ...]
    rejected: tuple[tuple[str, str], ...] = field(default=())

    def __str__(self) -> str:
        s = self.spec
        lines = [f"fastconv.{self.op}: backend {self.backend!r} "
                 f"({'asked for' if self.requested != 'auto' else 'chosen by auto'})"]
        for name, why in self.rejected:
            lines.append(f"  skipped {name}: {why}")
        lines.append(f"  input {s.in_shape} -> output {self.out_shape}, {s.dtype}")
        if hasattr(s, "pads"):
            lines.append(f"  stride {s.stride}, padding (top, bottom, left, right) {s.pads}, "
                         f"dilation {s.dilation}, groups {s.groups}")
            if s.k:
                lines.append(f"  {s.flops / 1e9:.4g} GFLOP")
        else:
            lines.append(f"  kernel ({s.kh}, {s.kw}), stride {s.stride}, padding {s.padding}, "
                         f"dilation {s.dilation}, ceil_mode {s.ceil_mode}")
        return "\n".join(lines)


def select(op: str, spec, backend: str = "auto") -> tuple[Backend, tuple[tuple[str, str], ...]]:
    """The backend that runs `op` for `spec`, and the (name, reason) of those skipped."""
    name = requested(backend)
    if name != "auto":
        impl = _require(name)
        if why := impl.supports(op, spec):
            raise BackendUnavailableError(why)
        return impl, ()
    rejected = []
    for impl in _REGISTRY.values():
        ok, why = impl.available()
        if ok and not (why := impl.supports(op, spec)):
            return impl, tuple(rejected)
        rejected.append((impl.name, why))
    raise AssertionError("the numpy backend runs every op")  # pragma: no cover
