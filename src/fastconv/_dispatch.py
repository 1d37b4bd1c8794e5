"""Which backend runs a call: the registry, the caller's choice, auto's measured
rules (fastconv._rules), autotuning (fastconv._tuning) and explain()'s plan."""

from __future__ import annotations

import contextlib
import math
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from . import _rules, _threads, _tuning
from .backends import Backend, NumpyBackend
from .backends.cpp_backend import CppBackend
from .backends.numba_backend import NumbaBackend

# Every backend, in the order auto falls back on when a rule's choices cannot run.
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
    """Every backend, with its availability (auto picks among them by measured rules)."""
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


try:  # os.environ's own dict: a lookup there costs 30 ns, os.environ.get 1 us
    _ENV_KEY = os.environ.encodekey("FASTCONV_BACKEND")
except AttributeError:  # pragma: no cover - not CPython's os.environ
    _ENV_KEY = None


def _env_backend() -> str:
    """FASTCONV_BACKEND as it is now (read on every call, cheaply)."""
    environ = os.environ
    data = getattr(environ, "_data", None)
    if _ENV_KEY is not None and type(data) is dict:
        raw = data.get(_ENV_KEY)
        return "" if raw is None else environ.decodevalue(raw)
    return environ.get("FASTCONV_BACKEND", "")


def requested(backend: str) -> str:
    """The backend a call asks for: its own `backend=` unless that is "auto",
    then use_backend's, then FASTCONV_BACKEND's, else "auto"."""
    if backend != "auto":
        return _check_name(backend, "backend")
    if (name := _default.get()) is not None:
        return name
    env = _env_backend()
    if not env:
        return "auto"
    env = env.strip()
    return _check_name(env, "FASTCONV_BACKEND") if env else "auto"


# ------------------------------------------------------------ kernel variants


class _Kernel:
    """A backend with one of its conv2d kernels pinned (cpp's "direct", "gemm",
    "1x1"); everything else goes to the backend itself."""

    __slots__ = ("impl", "kernel", "name")

    def __init__(self, impl, kernel: str):
        self.impl, self.kernel, self.name = impl, kernel, impl.name

    def conv2d(self, spec, x, weight, bias, out) -> None:
        self.impl.conv2d(spec, x, weight, bias, out, kernel=self.kernel)

    def __getattr__(self, attr):
        return getattr(self.impl, attr)


_kernels: dict[tuple, _Kernel] = {}


def _with_kernel(impl, kernel: str | None):
    if kernel is None:
        return impl
    pinned = _kernels.get((impl, kernel))
    if pinned is None:
        pinned = _kernels[(impl, kernel)] = _Kernel(impl, kernel)
    return pinned


def _runs(impl, op: str, spec) -> str:
    """'' if `impl` is available and runs `op` for `spec`, else why not."""
    ok, why = impl.available()
    return (impl.supports(op, spec) or "") if ok else why


# ------------------------------------------------------------------ choosing


def _named(name: str, op: str, spec):
    impl = _require(name)
    if why := impl.supports(op, spec):
        raise BackendUnavailableError(why)
    return impl


def _auto(op: str, spec, rejected: list | None = None):
    """(impl, rule): the first backend of the rule's order that runs the call,
    with the rule's cpp kernel pinned."""
    rule = _rules.auto(op, spec)
    for name in rule.order:
        impl = _REGISTRY[name]
        ok, why = impl.available()
        if ok:
            why = impl.supports(op, spec)
            if not why:
                if rule.kernel is not None and name == "cpp":
                    impl = _with_kernel(impl, rule.kernel)
                return impl, rule
        if rejected is not None:
            rejected.append((name, why))
    raise AssertionError("the numpy backend runs every op")  # pragma: no cover


def _candidates(op: str, spec) -> list[tuple[str, str, str | None, object]]:
    """What autotuning times: [(label, backend, kernel, impl)], the rule's choice first."""
    out = []
    for name, kernel in _rules.candidates(op, spec):
        impl = _REGISTRY[name]
        if not _runs(impl, op, spec):
            out.append((f"{name}/{kernel}" if kernel else name, name, kernel,
                        _with_kernel(impl, kernel)))
    return out


def _tuned_impl(tuned: _tuning.Tuned, op: str, spec):
    """The impl a tuning names, or None when it no longer runs here."""
    impl = getattr(tuned, "impl", None)
    if impl is None:
        base = _REGISTRY.get(tuned.backend)
        if base is None or _runs(base, op, spec):
            return None
        if tuned.kernel is not None and tuned.kernel not in _rules.cpp_kernels(spec):
            return None
        impl = tuned.impl = _with_kernel(base, tuned.kernel)
    return impl


def _autotuned(op: str, spec, threads: int, execute) -> _tuning.Tuned:
    """The tuning autotuning runs, its impl set: in memory, else in the file,
    else measured now (run() looks in memory first itself)."""
    tuned = _tuning.lookup(op, spec, threads)
    if tuned is not None:
        if _tuned_impl(tuned, op, spec) is not None:
            return tuned
        _tuning.forget(op, spec, threads)
    candidates = _candidates(op, spec)
    if len(candidates) == 1:  # nothing to time; remembered in memory only
        label, name, kernel, impl = candidates[0]
        tuned = _tuning.Tuned(name, kernel, {}, 0.0, impl=impl)
        _tuning.record(op, spec, threads, tuned, save=False)
        return tuned
    winner, tuned = _tuning.tune(op, spec, threads, candidates,
                                 lambda impl: _execute(impl, op, execute),
                                 [_spins(op, name) for _, name, _, _ in candidates])
    tuned.impl = candidates[winner][3]
    _tuning.record(op, spec, threads, tuned)
    return tuned


def _calls_blas(op: str, backend: str) -> bool:
    return op in _rules.BLAS_OPS and backend in _rules.BLAS_BACKENDS


def _spins(op: str, backend: str) -> bool:
    """Whether the backend's threads keep spinning after a call of op: BLAS's,
    and Numba's OpenMP threads after any op (busy for some 9 ms after a 0.2
    ms max_pool2d)."""
    return backend == "numba" or _calls_blas(op, backend)


def _execute(impl, op: str, execute):
    if _calls_blas(op, impl.name):
        _threads.blas.enter(_threads.get_num_threads())
        try:
            return execute(impl)
        finally:
            _threads.blas.exit()
    return execute(impl)


def run(op: str, spec, backend: str, execute):
    """Run a validated call: `execute(impl)` on the backend it asks for, else
    the autotuned one, else the one auto's rules pick."""
    name = requested(backend)
    if name != "auto":
        impl = _named(name, op, spec)
    elif _tuning._enabled or (_tuning._enabled is None and _tuning.is_enabled()):
        # the winner in memory without a function call: on a 12 us conv2d,
        # going through lookup() cost autotuned calls 1 us more than auto's
        threads = _threads.get_num_threads()
        store = _tuning._scratch or _tuning._store
        tuned = None if store is None else store.memory.get((op, spec, threads))
        if tuned is None or tuned.impl is None:
            tuned = _autotuned(op, spec, threads, execute)
        elif tuned.second_look_in:  # a first tuning: tuned again after a while
            tuned.second_look_in -= 1
            if tuned.second_look_in <= 0:
                _tuning.second_look(op, spec, threads, tuned)
        impl = tuned.impl
        if tuned.recheck_above:  # the winner's calls are watched (_tuning.watch)
            start = time.perf_counter()
            result = _execute(impl, op, execute)
            _tuning.watch(op, spec, threads, tuned, time.perf_counter() - start)
            return result
    else:
        impl = _auto_memo.get((op, spec))
        if impl is None:
            if len(_auto_memo) >= _AUTO_MEMO_SIZE:
                _auto_memo.clear()
            impl = _auto_memo[op, spec] = _auto(op, spec)[0]
    return _execute(impl, op, execute)


# auto's pick per (op, spec): the rules are a pure function of the call, and
# looking it up costs a tenth of evaluating them (a tiny call's dispatch time).
_auto_memo: dict = {}
_AUTO_MEMO_SIZE = 1024


def select(op: str, spec, backend: str = "auto") -> tuple[Backend, tuple[tuple[str, str], ...]]:
    """The backend that runs `op` for `spec` by the rules (not autotuning), and the
    (name, reason) of those skipped."""
    name = requested(backend)
    if name != "auto":
        return _named(name, op, spec), ()
    rejected = []
    impl, _ = _auto(op, spec, rejected)
    return impl, tuple(rejected)


# ---------------------------------------------------------------------- plan


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.3g} ms"


@dataclass(frozen=True)
class Plan:
    """What a call would run. `backend` and `kernel` name the path, str() shows
    why, the rejected ones and why, the resolved call, its cost and memory."""

    op: str
    backend: str
    requested: str
    spec: object
    out_shape: tuple[int, ...]
    rejected: tuple[tuple[str, str], ...] = field(default=())
    kernel: str | None = None  # cpp's conv2d kernel: "direct", "gemm" or "1x1"
    reason: str = ""  # why this path
    threads: int = 1  # the threads the call would run with
    workspace: tuple[tuple[str, int], ...] = field(default=())  # (what, bytes) besides the result
    copies: tuple[str, ...] = field(default=())  # what happens to each input
    autotune: str = ""  # autotuning's state for this call
    tuned: _tuning.Tuned | None = None  # the candidates' times, when tuned
    chosen_by: str = "auto's rules"  # or "asked for", "autotuning"

    @property
    def flops(self) -> int:
        """2*N*K*(C/groups)*KH*KW*OH*OW for convolutions (twice that for the
        gradients), 0 for the other ops."""
        s = self.spec
        if not hasattr(s, "pads") or not s.k:
            return 0
        return s.flops * (2 if self.op == "conv2d_backward" else 1)

    @property
    def workspace_bytes(self) -> int:
        return sum(b for _, b in self.workspace)

    @property
    def path(self) -> str:
        return f"{self.backend}/{self.kernel}" if self.kernel else self.backend

    def __str__(self) -> str:
        s = self.spec
        how = "asked for" if self.chosen_by == "asked for" else f"chosen by {self.chosen_by}"
        lines = [f"fastconv.{self.op}: backend {self.backend!r}"
                 + (f", kernel {self.kernel!r}" if self.kernel else "") + f" ({how})"]
        if self.reason:
            lines.append(f"  why: {self.reason}")
        if self.op == "conv2d_backward":
            lines.append(f"  grad_out {s.out_shape}, input {s.in_shape} -> gradients of the "
                         f"input {s.in_shape}, weight {s.weight_shape}, bias ({s.k},); {s.dtype}")
        elif self.op.endswith("_backward"):
            lines.append(f"  grad_out {s.out_shape} -> gradient of the input {s.in_shape}; "
                         f"{s.dtype}")
        else:
            lines.append(f"  input {s.in_shape} -> output {self.out_shape}, {s.dtype}")
        if hasattr(s, "pads"):
            if s.k:
                lines.append(f"  weight {s.weight_shape}, stride {s.stride}, padding (top, "
                             f"bottom, left, right) {s.pads} {s.padding_mode!r}, dilation "
                             f"{s.dilation}, groups {s.groups}"
                             + (", relu" if s.activation else ""))
            else:
                lines.append(f"  kernel ({s.kh}, {s.kw}), stride {s.stride}, padding (top, "
                             f"bottom, left, right) {s.pads}, dilation {s.dilation}")
        else:
            lines.append(f"  kernel ({s.kh}, {s.kw}), stride {s.stride}, padding {s.padding}, "
                         f"dilation {s.dilation}, ceil_mode {s.ceil_mode}")
        if self.flops:
            lines.append(f"  work: {self.flops / 1e9:.4g} GFLOP")
        lines.append(f"  threads: up to {self.threads} (budget {_threads.budget()}; the "
                     "kernels use fewer on small work)")
        if self.workspace:
            parts = "; ".join(f"{what} {_bytes(b)}" for what, b in self.workspace)
            lines.append(f"  workspace: {_bytes(self.workspace_bytes)} ({parts})")
        else:
            lines.append("  workspace: none besides the result")
        for text in self.copies:
            lines.append(f"  {text}")
        if self.rejected:
            lines.append("  not chosen:")
            for name, why in self.rejected:
                lines.append(f"    skipped {name}: {why}")
        if self.autotune:
            lines.append(f"  autotune: {self.autotune}")
        if self.tuned is not None:
            t = self.tuned
            times = ", ".join(f"{label} {_time(sec)}" for label, sec in
                              sorted(t.seconds.items(), key=lambda kv: kv[1]))
            lines.append(f"  timed ({t.source}): {times}; timing them cost "
                         f"{_time(t.tuning_seconds)}")
        return "\n".join(lines)


def plan(op: str, spec, backend: str, out_shape, copies=()) -> Plan:
    """The Plan of a validated call: what run() would do, without running it."""
    name = requested(backend)
    threads = _threads.get_num_threads()
    tuned = None
    rejected: list[tuple[str, str]] = []
    if name != "auto":
        impl = _named(name, op, spec)
        kernel = _rules.default_kernel(op, spec) if name == "cpp" else None
        chosen_by = "asked for"
        reason = (f"backend={backend!r}" if backend != "auto" else
                  f"the default backend {name!r} (use_backend or FASTCONV_BACKEND)")
        autotune = "not used: a backend was asked for"
    else:
        impl, rule = _auto(op, spec, rejected)  # rejected: unavailable ones ranked higher
        name = impl.name
        kernel = (rule.kernel or _rules.default_kernel(op, spec)) if name == "cpp" else None
        rule_path = f"{name}/{kernel}" if kernel else name
        chosen_by = "auto's rules"
        reason = f"rule {rule.name!r}: {rule.why}"
        for other in rule.order[rule.order.index(name) + 1:]:
            rejected.append((other, _runs(_REGISTRY[other], op, spec)
                             or f"ranked below {name} by rule {rule.name!r}"))
        if name == "cpp" and op == "conv2d":
            rejected += [(f"cpp/{k}", f"cpp runs {kernel} for this shape")
                         for k in _rules.cpp_kernels(spec) if k != kernel]
        labels = [label for label, *_ in _candidates(op, spec)]
        timed = ", ".join(labels)
        if _tuning.is_enabled():
            tuned = _tuning.lookup(op, spec, threads)
            if tuned is not None and tuned.seconds and _tuned_impl(tuned, op, spec) is not None:
                name, kernel, chosen_by = tuned.backend, tuned.kernel, "autotuning"
                reason = (f"the fastest of {len(tuned.seconds)} candidates timed here "
                          f"({_time(tuned.seconds.get(tuned.label, math.nan))} a call); auto's "
                          f"rules would run {rule_path} (rule {rule.name!r})")
                rejected = [(label, f"{_time(sec)} a call when timed")
                            for label, sec in sorted(tuned.seconds.items(), key=lambda kv: kv[1])
                            if label != tuned.label]
                autotune = f"on; this signature was timed ({tuned.source})"
                if tuned.tunings > 1:
                    autotune += (f", ranked by {tuned.tunings} tunings (geometric mean of "
                                 f"their times)")
                elif tuned.second_look_in:
                    autotune += (f"; timed again after {tuned.second_look_in} more calls "
                                 f"(about {_time(_tuning.SECOND_LOOK_AFTER)} of them), ranked "
                                 f"by both tunings")
                if again := _tuning.rechecks(op, spec, threads):
                    autotune += (f", {_rules._count(again, 'more time')} after the "
                                 "winner's calls ran slower than the runner-up's time")
                if tuned.recheck_above:
                    autotune += (f"; its calls are timed, and running over "
                                 f"{_time(tuned.recheck_above)} a call (the runner-up's time "
                                 f"+{_tuning.RECHECK_ABOVE - 1:.0%}) times the candidates again")
            else:
                tuned = None
                autotune = (f"on; not timed yet: the first call times {timed} with "
                            f"{_rules._count(threads, 'thread')} and runs the fastest"
                            if len(labels) > 1 else "on; one candidate only, nothing to time")
        else:
            tuned = _tuning.lookup(op, spec, threads, load=False)  # known, not in use
            tuned = tuned if tuned is not None and tuned.seconds else None
            autotune = (f"off; fastconv.autotune(True) would time {timed}" if len(labels) > 1
                        else "off")
    workspace = _rules.workspace(name, kernel, op, spec, threads)
    return Plan(op, name, requested(backend), spec, tuple(out_shape), tuple(rejected), kernel,
                reason, threads, tuple(workspace), tuple(copies), autotune, tuned, chosen_by)
