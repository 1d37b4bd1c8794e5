"""`python -m fastconv bench`: every backend (and the textbook code, and PyTorch when
installed) on the layer table, against the limits of this machine measured in the same run.

How a layer is timed: each contender's result is checked against the NumPy
reference, then it is called once more untimed (JIT compiles and first-touch
page faults are behind us after these two calls). Then come `rounds` rounds; in
each, every contender takes one sample in turn: as many back-to-back calls as
last at least the suite's sample time, averaged. Interleaving the contenders
round by round spreads any load the machine picks up over all of them, so their
ratios stay fair on a shared machine; every other round runs them in reverse
order, so that no contender always follows the same one. A cell's median and
min are over its samples, its noise the spread of them (see `report`).

Samples a second apart, even of the same code, differ by 10-50% here on calls
under a millisecond: too much to tell whether auto is within 10% of the fastest
backend. So after the rounds each auto contender is also timed against the
backend it ran, their calls alternating one by one (`interleave`), and the
report rates it by that ratio times its backend's against the fastest (see
`report.auto_ratio`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable

import numpy as np

import fastconv as fc

from .. import _tuning
from . import limits as limits_mod
from . import ops, report
from .report import Cell
from .shapes import LAYERS


# Idle time before each sample: the previous contender's worker threads keep
# spinning after its last call (OpenBLAS's about 2^28 cycles, some 0.1 s here;
# OpenMP's less) and would take the second core from the next contender. In
# a run without it, `auto` (the very cpp kernel, timed right after numpy) came
# out 1.4-1.9x slower than `cpp` on the GEMM layers.
SETTLE = 0.12


@dataclass(frozen=True)
class Suite:
    rounds: int  # samples per cell
    sample_time: float  # least seconds of back-to-back calls in one sample
    gemm_n: int  # the GEMM probe's matrix side
    gemm_repeat: int
    copy_bytes: int  # the copy probe's array size
    copy_repeat: int
    settle: float = SETTLE  # idle seconds before each sample


SUITES = {
    "quick": Suite(3, 0.02, 1024, 3, 128 << 20, 3),
    "full": Suite(10, 0.1, 2048, 5, 256 << 20, 5),
}


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


# ----------------------------------------------------------------- timing


def _per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleave(call: Callable[[], object], name: str, base: Callable[[], object],
               samples: int, sample_time: float) -> list[float]:
    """Per sample, the time of `call` (the contender `name`, in its state) over that of
    `base`: their calls alternate one by one, so both meet the same machine; which goes
    first alternates between samples. A sample lasts at least `sample_time`, and at
    least two calls of each."""
    ratios = []
    for s in range(samples):
        spent, pairs, start = [0.0, 0.0], 0, time.perf_counter()
        while pairs < 2 or time.perf_counter() - start < sample_time:
            for i in ((0, 1) if s % 2 == 0 else (1, 0)):
                with ops.contender_state(name) if i == 0 else contextlib.nullcontext():
                    t = time.perf_counter()
                    (call if i == 0 else base)()
                    spent[i] += time.perf_counter() - t
            pairs += 1
        ratios.append(spent[0] / spent[1])
    return ratios


def measure_layer(op: str, layer, dtype, backends, torch, suite: Suite,
                  tick: Callable[[], None] = lambda: None) -> tuple[list[Cell], list[str]]:
    """(one cell per contender, notes on contenders that do not run this layer
    and on autotuning that changed its pick while it was timed). Calls `tick`
    once after the checks, once per round and once after the auto contenders'
    interleaved timings."""
    with _tuning.scratch():  # autotuning starts afresh on each layer, in memory only
        return _measure_layer(op, layer, dtype, backends, torch, suite, tick)


def _measure_layer(op, layer, dtype, backends, torch, suite, tick):
    a = ops.inputs(op, layer, dtype)
    work = ops.work(op, layer, np.dtype(dtype).itemsize)
    calls = ops.contenders(op, layer, a, backends, torch)
    ref = ops.reference(op, layer, a)
    cells, live, notes = [], {}, []
    for name, call in calls.items():
        cell = Cell(op, layer.name, name, work, ops.unit(op))
        try:
            with ops.contender_state(name):
                start = time.perf_counter()
                result = call()
                cell.first = time.perf_counter() - start
                cell.error = ops.mismatch(op, name, result, ref, layer)
                del result
                if name in ops.AUTO:
                    cell.path = ops.auto_choice(op, layer, a, name)
                call()  # the second untimed call
                once = _per_call(call, 1)
            live[name] = (call, max(1, min(10_000, math.ceil(suite.sample_time / once))))
        except fc.BackendUnavailableError as exc:
            notes.append(f"{op} {layer.name}: {name} does not run it: {exc}")
            continue
        except Exception as exc:  # a contender failing is reported, not fatal
            cell.error = f"{type(exc).__name__}: {exc}"
        cells.append(cell)
    del ref
    tick()
    by_name = {c.contender: c for c in cells}
    for r in range(suite.rounds):
        order = list(live.items())
        for name, (call, inner) in order[::-1] if r % 2 else order:
            time.sleep(suite.settle)
            try:
                with ops.contender_state(name):
                    by_name[name].times.append(_per_call(call, inner))
            except Exception as exc:
                by_name[name].error = f"{type(exc).__name__}: {exc}"
                del live[name]
        tick()

    def tuned_again(name: str) -> bool:
        """Whether autotuning moved to another path since it was read (its second
        look, or its watch; see fastconv._tuning): then it is noted and taken."""
        cell = by_name[name]
        if name != "autotuned" or (path := ops.auto_choice(op, layer, a, name)) == cell.path:
            return False
        why = ("its calls ran slower than the runner-up had" if ops.rechecks(op, layer, a)
               else "its second look")
        notes.append(f"{op} {layer.name}: {name} ran {cell.path} at first, then {path}, "
                     f"tuned again ({why})")
        cell.path = path
        return True

    for name in (n for n in ops.AUTO if n in live):
        cell = by_name[name]
        tuned_again(name)
        for _ in range(2):  # once more if it moved to another backend meanwhile
            if (base := cell.path.split("/")[0]) not in live:
                break
            time.sleep(suite.settle)
            try:
                cell.ab = interleave(live[name][0], name, live[base][0], suite.rounds,
                                     suite.sample_time)
            except Exception as exc:
                cell.error = f"{type(exc).__name__}: {exc}"
                break
            cell.against = base
            if not tuned_again(name):
                break
    if "autotuned" in live and (cost := ops.tuning_cost(op, layer, a)) is not None:
        by_name["autotuned"].tuning, by_name["autotuned"].tunings = cost
    tick()
    return cells, notes


# --------------------------------------------------------------- progress


class Progress:
    """A tqdm bar on a terminal (when tqdm is installed), else a plain line on a
    terminal, else nothing: piped output stays clean."""

    def __init__(self, total: int, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.bar = total, 0, None
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        if self.tty:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, file=self.stream, unit="step", leave=False,
                                dynamic_ncols=True)

    def describe(self, text: str) -> None:
        self.text = text
        if self.bar is not None:
            self.bar.set_description_str(text)
        elif self.tty:
            self._line()

    def tick(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.tty:
            self._line()

    def _line(self) -> None:
        self.stream.write(f"\r[{self.done}/{self.total}] {getattr(self, 'text', '')}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


# ------------------------------------------------------------- arguments


class UsageError(ValueError):
    pass


def plan(op_args, layer_args, backend_args):
    """({op: [layers]}, [backend names], notes) from the command line, or UsageError.

    `--op` and `--backends` take several values, so a layer name written after
    them lands there; it is moved back to the layers here."""
    op_args = list(op_args or ["conv2d"])
    layer_args = list(layer_args or [])
    known_backends = [*fc.backends(), *ops.AUTO]
    wanted_ops, wanted_backends = [], []
    for value in op_args:
        for v in str(value).split(","):
            if v == "all":
                wanted_ops += list(ops.OPS)
            elif v in ops.OPS:
                wanted_ops.append(v)
            elif v in LAYERS:
                layer_args.append(v)
            elif v:
                raise UsageError(f"unknown op {v!r}; choose from {', '.join(ops.OPS)} or all")
    for value in backend_args or []:
        for v in str(value).split(","):
            if v in known_backends:
                wanted_backends.append(v)
            elif v in LAYERS:
                layer_args.append(v)
            elif v:
                raise UsageError(f"unknown backend {v!r}; choose from "
                                 f"{', '.join(known_backends)}")
    unknown = [name for name in layer_args if name not in LAYERS]
    if unknown:
        conv = ", ".join(l.name for l in ops.table("conv2d"))
        pool = ", ".join(l.name for l in ops.table("max_pool2d"))
        raise UsageError(f"unknown layer{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; convolution layers: {conv}; "
                         f"pooling cases: {pool}")
    chosen, notes = {}, []
    for op in dict.fromkeys(wanted_ops):
        table = ops.table(op)
        chosen[op] = [l for l in table if not layer_args or l.name in layer_args]
    if layer_args:
        empty = [op for op, layers in chosen.items() if not layers]
        chosen = {op: layers for op, layers in chosen.items() if layers}
        notes += [f"{op}: left out, none of the named layers is one of its cases"
                  for op in empty]
        if not chosen:
            kind = "pooling cases" if all(n in {l.name for l in ops.table("max_pool2d")}
                                          for n in layer_args) else "convolution layers"
            raise UsageError(f"{', '.join(layer_args)}: {kind}, not layers of "
                             f"{', '.join(empty)}; pick a matching --op")
    return chosen, wanted_backends or None, notes


# ------------------------------------------------------------------ main


def _blas_threads(threads: int):
    """(context holding NumPy's BLAS to `threads`, what it says)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext(), "NumPy's BLAS as it is (threadpoolctl not installed)"
    return threadpool_limits(threads, user_api="blas"), f"NumPy's BLAS {threads}"


def _load(load) -> str:
    return "unknown" if load is None else " ".join(f"{v:.2f}" for v in load)


def main(args) -> int:
    def fail(message: str) -> int:
        print(f"python -m fastconv bench: error: {message}", file=sys.stderr)
        return 2

    try:
        chosen, backend_names, left_out = plan(args.op, args.layers, args.backends)
    except UsageError as exc:
        return fail(str(exc))
    if args.plot:
        from . import plot

        if not plot.available():
            return fail(plot.MISSING)
    old = None
    if args.compare:
        try:
            old = report.load(args.compare)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return fail(f"--compare: {exc}")
    suite = SUITES[args.suite]
    if args.repeat:
        suite = replace(suite, rounds=args.repeat)
    threads = args.threads or fc.get_num_threads()
    fc.set_num_threads(threads)
    torch = None if args.no_torch else _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    dtype = np.dtype(args.dtype)
    blas_limit, blas_text = _blas_threads(threads)
    allocator = fix_allocator()

    # Auto's contenders join by default, or when --backends names them.
    auto = [n for n in backend_names or ops.AUTO if n in ops.AUTO]
    named = [n for n in backend_names or () if n not in ops.AUTO]
    with blas_limit:
        per_op = {op: ops.backends_for(op, None if backend_names is None else named)
                  for op in chosen}
        per_op = {op: (names + auto, skipped) for op, (names, skipped) in per_op.items()}
        header = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": limits_mod.machine(threads),
            "versions": limits_mod.versions(torch),
            "settings": {"suite": args.suite, "ops": list(chosen), "dtype": dtype.name,
                         "threads": threads, "rounds": suite.rounds,
                         "sample_time": suite.sample_time,
                         "layers": sorted({l.name for ls in chosen.values() for l in ls})},
            "allocator": allocator,
            "threads": f"fastconv {threads}, "
                       + (f"PyTorch {threads}, " if torch is not None else "") + blas_text,
            "load": {"start": limits_mod.load_average()},
        }
        m, v = header["machine"], header["versions"]
        print(f"fastconv {v['fastconv']} bench, {header['date'].replace('T', ' ')}; suite "
              f"{args.suite}: {suite.rounds} rounds, samples of >= {suite.sample_time * 1e3:.0f}"
              f" ms, contenders interleaved round by round; {dtype.name}")
        print(f"machine: {m['cpu']} ({m['arch']}), {m['cpus']} CPUs usable, ISA path "
              f"{m['isa_path']}; load average {_load(header['load']['start'])} (1/5/15 min)")
        print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
        if torch is None:
            print("torch: " + ("left out (--no-torch)" if args.no_torch else "not installed"))
        print(f"threads: {header['threads']}")
        print(allocator)
        for note in left_out:
            print(note)
        for op, (names, skipped) in per_op.items():
            if skipped:
                print(f"{op}: without " + "; ".join(f"{n} ({why})" for n, why in skipped.items()))
        cells, notes, interrupted, lim = [], [], False, None
        try:
            lim = limits_mod.measure(threads, suite.gemm_n, suite.gemm_repeat,
                                     suite.copy_bytes, suite.copy_repeat)
            header["limits"] = lim.to_dict()
            print(lim.describe())
            sys.stdout.flush()
            progress = Progress(sum(len(ls) for ls in chosen.values()) * (suite.rounds + 2))
            try:
                for op, layers in chosen.items():
                    for layer in layers:
                        progress.describe(f"{op} {layer.name}")
                        got, why = measure_layer(op, layer, dtype, per_op[op][0], torch,
                                                 suite, progress.tick)
                        cells += got
                        notes += why
            finally:
                progress.close()
            end = limits_mod.measure(threads, suite.gemm_n, suite.gemm_repeat,
                                     suite.copy_bytes, suite.copy_repeat)
            print("limits at the end: " + end.describe().split(": ", 1)[1])
            lim = limits_mod.higher(lim, end)
            header["limits"] = lim.to_dict()
            print("the tables rate against the higher of the two")
        except KeyboardInterrupt:
            interrupted = True

    header["load"]["end"] = limits_mod.load_average()
    header["interrupted"] = interrupted
    header["notes"] = notes
    if interrupted:
        print("interrupted: showing the layers that finished")
    for op in chosen:
        if any(c.op == op for c in cells):
            print()
            print(report.format_table(op, cells, dtype.name, lim))
            auto = report.format_auto(op, cells)
            if auto:
                print()
                print(auto)
    print()
    for note in notes:
        print(note)
    print(report.describe_noise(cells))
    print(f"load average at the end: {_load(header['load']['end'])}")
    if args.json:
        report.save(args.json, header, cells)
        print(f"wrote {args.json}")
    if args.plot and any(c.ok for c in cells):
        from . import plot

        plot.plot(args.plot, header, cells)
        print(f"wrote {args.plot}")
    if old is not None:
        print()
        print(report.compare(old[0], old[1], header, cells))
    if interrupted:
        return 130
    return 1 if any(c.error for c in cells) else 0
