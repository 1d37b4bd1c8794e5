"""`python -m fastconv bench`: time every backend (and PyTorch, when installed) on the layer table."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import fastconv as fc

from . import textbook
from .shapes import CONV_LAYERS, POOL_LAYERS, ConvLayer, PoolLayer

SUITES = {
    # repeats, and the least total time spent timing one cell
    "quick": (3, 0.05),
    "full": (10, 0.5),
}


@dataclass
class Cell:
    """One contender on one layer."""

    contender: str
    times: list[float] = field(default_factory=list)
    error: str = ""  # why it did not run, or how its result differed

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_call(fn: Callable[[], object], repeat: int, min_time: float) -> list[float]:
    """Per-call seconds. Two untimed calls first (JIT compiles, first-touch page
    faults of the allocator), then at least `repeat` timed calls lasting `min_time`."""
    fn()
    fn()
    times: list[float] = []
    while len(times) < repeat or sum(times) < min_time:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if len(times) >= 100 * repeat:
            break
    return times


# glibc's mallopt parameters (malloc.h) and the values the benchmarks fix.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest: buffers below it are reused, not re-faulted
_TRIM_THRESHOLD = 1 << 30


def fix_allocator() -> str:
    """Put glibc's allocator in one fixed state for the whole run, and say which.

    glibc adapts its mmap threshold to the frees it has seen, so whether a fresh
    large result costs page faults on every call depends on the process's
    history (a 1.6-8x swing for PyTorch here). Fixing both thresholds makes
    every contender pay the same way."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "allocator: not glibc, left as is"
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    if not ok:
        return "allocator: glibc refused mallopt, left as is"
    return (f"allocator: glibc with mmap threshold {_MMAP_THRESHOLD >> 20} MB and trim "
            f"threshold {_TRIM_THRESHOLD >> 20} MB fixed for every contender")


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def conv_contenders(layer: ConvLayer, x, w, backends, torch) -> dict[str, Callable]:
    """name -> a call computing this layer's convolution."""
    kw = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
    calls = {name: (lambda name=name: fc.conv2d(x, w, backend=name, **kw)) for name in backends}
    calls["textbook"] = lambda: textbook.grouped_conv2d(x, w, None, layer.stride,
                                                        layer.padding, layer.groups)
    if torch is not None:
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        f = torch.nn.functional.conv2d

        def run_torch():
            with torch.no_grad():
                return f(tx, tw, None, **kw).numpy()

        calls["torch"] = run_torch
    return calls


def pool_contenders(op: str, layer: PoolLayer, x, backends, torch) -> dict[str, Callable]:
    kw = dict(kernel_size=layer.kernel, stride=layer.stride, padding=layer.padding)
    fn = getattr(fc, op)
    calls = {name: (lambda name=name: fn(x, backend=name, **kw)) for name in backends}
    if torch is not None:
        tfn = getattr(torch.nn.functional, op)
        tx = torch.from_numpy(x)
        tx_last = tx.contiguous(memory_format=torch.channels_last)

        def run(t):
            with torch.no_grad():
                return tfn(t, **kw).contiguous().numpy()

        calls["torch"] = lambda: run(tx)
        calls["torch_cl"] = lambda: run(tx_last)  # channels_last, PyTorch's fast path
    return calls


def _supports(op: str, name: str, probe: Callable[[str], object]) -> bool:
    try:
        probe(name)
    except fc.BackendUnavailableError:
        return False
    return True


def run_layer(layer, op: str, dtype, backends, torch, repeat, min_time) -> list[Cell]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape).astype(dtype)
    if op == "conv2d":
        w = rng.standard_normal(layer.weight_shape).astype(dtype)
        calls = conv_contenders(layer, x, w, backends, torch)
    else:
        calls = pool_contenders(op, layer, x, backends, torch)
    reference = np.asarray(calls["numpy"]()) if "numpy" in calls else None
    tol = 1e-4 if dtype == np.float32 else 1e-10
    cells = []
    for name, call in calls.items():
        cell = Cell(name)
        try:
            result = np.asarray(call())
            if reference is not None:
                err = np.max(np.abs(result - reference), initial=0.0)
                if not err <= tol * (1 + np.max(np.abs(reference), initial=0.0)):
                    cell.error = f"differs from numpy by {err:.3g}"
            cell.times = time_call(call, repeat, min_time)
        except Exception as exc:  # a contender failing is reported, not fatal
            cell.error = f"{type(exc).__name__}: {exc}"
        cells.append(cell)
    return cells


def _work(layer, op: str, itemsize: int) -> tuple[float, str]:
    """(amount per call, unit): FLOPs for convolution, input bytes for pooling."""
    if op == "conv2d":
        return layer.flops / 1e9, "GFLOP/s"
    return int(np.prod(layer.x_shape)) * itemsize / 1e9, "GB/s"


def format_table(op: str, rows: list[tuple[object, list[Cell]]], itemsize: int) -> str:
    names = []
    for _, cells in rows:
        names += [c.contender for c in cells if c.contender not in names]
    unit = "GFLOP/s" if op == "conv2d" else "GB/s"
    head = f"{'layer':<15}" + "".join(f"{n:>22}" for n in names)
    lines = [f"{op}: median time per call and {unit}", head, "-" * len(head)]
    for layer, cells in rows:
        by_name = {c.contender: c for c in cells}
        work, _ = _work(layer, op, itemsize)
        line = f"{layer.name:<15}"
        for n in names:
            c = by_name.get(n)
            if c is None:
                text = "-"
            elif not c.times:
                text = "failed"
            else:
                t = c.median
                text = f"{_fmt_time(t)} {work / t:7.1f}" + ("!" if c.error else " ")
            line += f"{text:>22}"
        lines.append(line)
    errors = [f"  {layer.name} {c.contender}: {c.error}" for layer, cells in rows
              for c in cells if c.error]
    if errors:
        lines.append("! problems:")
        lines += errors
    return "\n".join(lines)


def _fmt_time(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:7.1f} us"
    return f"{t * 1e3:7.2f} ms"


def main(args) -> int:
    threads = args.threads or fc.get_num_threads()
    fc.set_num_threads(threads)
    torch = None if args.no_torch else _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    dtype = np.dtype(args.dtype)
    repeat, min_time = SUITES[args.suite]
    if args.repeat:
        repeat = args.repeat
    table = CONV_LAYERS if args.op == "conv2d" else POOL_LAYERS
    layers = [l for l in table if not args.layers or l.name in args.layers]
    unknown = set(args.layers or ()) - {l.name for l in table}
    if unknown:
        print(f"unknown {args.op} layers: {sorted(unknown)}; "
              f"choose from {[l.name for l in table]}")
        return 2
    wanted = args.backends or [n for n, b in fc.backends().items() if b.available]
    probe_x = np.ones((1, 1, 4, 4), dtype)
    probes = {
        "conv2d": lambda b: fc.conv2d(probe_x, np.ones((1, 1, 1, 1), dtype), backend=b),
        "max_pool2d": lambda b: fc.max_pool2d(probe_x, 2, backend=b),
        "avg_pool2d": lambda b: fc.avg_pool2d(probe_x, 2, backend=b),
    }
    backends = [b for b in wanted if _supports(args.op, b, probes[args.op])]
    skipped = [b for b in wanted if b not in backends]
    allocator = fix_allocator()
    print(f"fastconv {fc.__version__} bench: op {args.op}, {dtype}, {threads} threads, "
          f"suite {args.suite}; backends {backends}"
          + (f" (without {args.op}: {skipped})" if skipped else "")
          + (f"; torch {torch.__version__}" if torch is not None else "; torch not installed"))
    print(allocator)
    rows = []
    try:
        for layer in layers:
            rows.append((layer, run_layer(layer, args.op, dtype, backends, torch,
                                          repeat, min_time)))
    except KeyboardInterrupt:
        print("interrupted; showing the layers that finished")
    print(format_table(args.op, rows, dtype.itemsize))
    return 1 if any(c.error for _, cells in rows for c in cells) else 0
