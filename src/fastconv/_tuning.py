"""Autotuning: time the candidate paths of a call signature once, remember the winner.

With `fastconv.autotune(True)` (or FASTCONV_AUTOTUNE=1), the first `auto` call
of each signature — the op and its resolved spec (shapes, stride, padding,
dilation, groups, padding mode, activation, dtype...) and the thread count the
call runs with — times every candidate (each backend that runs the call, and
cpp's conv2d kernels where more than one applies) and then runs the fastest.
Later calls of the signature run the winner straight away.

Timing starts once the threads of what ran before are idle. Then one untimed
warm-up call per candidate (JIT compiles, first-touch page faults), and
ROUNDS rounds in which the candidates take turns (a different one first each
round). Candidates whose threads keep spinning after a call (spinners:
OpenBLAS's threads spin about 0.1 s, Numba's OpenMP threads some 9 ms) go
through all this after the others, one at a time, each after the previous
one's threads stopped spinning (wait_for_idle_threads, at most BLAS_SPIN),
since they would slow the next candidate timed (cpp's max_pool2d on
pool_56_k2s2 ran 1.5-3x its time in samples right after Numba's, and lost
the tuning in the bench). Each sample is as many back-to-back calls as last
MIN_SAMPLE seconds; a candidate's time is the median of its samples, which a
burst of load from elsewhere on a shared machine moves only when it spoils
most of them. (The best sample favoured a candidate that is sometimes fast:
cpp's alexnet_c1 gradients take 33-35 or 41-46 ms, Numba's 36-39, and cpp
won the tunings on its fast mode.)
Short calls, whose rounds take under SHORT_TIME in all, get more rounds, up to
SHORT_ROUNDS: on a 0.2 ms pooling call, five samples of two backends 10%
apart picked the slower one. Calls under WAKE_BELOW also make one untimed
call before each sample: a backend's worker threads sleep while the others
run, and waking them cost the first call about 0.25 ms (cpp's max_pool2d on
pool_56_k2s2 measured 0.44 ms instead of 0.2, and lost to Numba in 7 of 8
tunings).
When a spinner comes out ahead, the others left get ROUNDS more rounds once
its threads are idle (their first ones shared one stretch of time), and
keep the lower of their two stretches' medians.
After PRUNE_AFTER rounds, candidates slower than PRUNE times the best so far
drop out (they cost the most time). The call's result comes from one more
run of the winner, so timing never changes what the call returns. The timing
runs with the call's thread share, as the call itself does.

A tuning is a snapshot well under a second long; what it saw may not last
(Numba's im2col of resnet_3x3_56 ran 11 ms a call for a few seconds and
16-19 ms otherwise, and a tuning in a fast stretch picked it over cpp's
11-14). So the winner's own calls are timed when it took WATCH_FROM or more.
When the median of a look at them (WATCH_LOOK seconds of calls, 3 to
WATCH_CALLS) is over RECHECK_ABOVE times the runner-up's time, SLOW_LOOKS
looks in a row, the tuning is forgotten and the next call times the
candidates again, RECHECKS times per signature and process at most (see
watch()).
The watch cannot see a runner-up that was timed in a slow stretch: in one
bench run cpp's conv2d of lenet_c1 ran 228-527 us a sample, and the tuning
picked Numba (1.89x slower than cpp's fast stretches). So a first tuning with
a runner-up is looked at once more, after SECOND_LOOK_AFTER seconds of its
winner's calls: the signature is tuned again, and the candidates are ranked by
the geometric mean of their times in both tunings (second_look()). The
count of tunings is kept in the file, so a second look happens once per
signature, in whichever process gets there.

Candidates (fastconv._rules.candidates): every available backend that runs
the call; for cpp's conv2d, each kernel that applies ("gemm", "1x1" for
pointwise layers, "direct" up to 16 filters per group).

Winners persist in one JSON file per machine key (CPU model, ISA path,
fastconv version) under the user cache directory — FASTCONV_CACHE_DIR, else
$XDG_CACHE_HOME/fastconv, else ~/.cache/fastconv (the platform's cache
directory on macOS and Windows) — with the thread count in each signature.
The file is read on first need, and written through a temporary file and
os.replace after each tuning, merged with what another process may have
written meanwhile, so readers never see a torn file. A corrupt or foreign file
is ignored with a TuningCacheWarning, never an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

FORMAT = "fastconv-tuning/1"
ROUNDS = 5
SHORT_ROUNDS = 20  # rounds for short calls, while their rounds took under SHORT_TIME
SHORT_TIME = 0.05  # seconds
MIN_SAMPLE = 2e-3  # seconds of back-to-back calls per sample
MAX_INNER = 50  # calls per sample at most
PRUNE = 3.0  # after the second round, drop candidates this much slower than the best
PRUNE_AFTER = 2  # rounds: a load spike rarely spans two samples of a candidate
BLAS_SPIN = 0.12  # seconds OpenBLAS's threads spin after a call (2^28 cycles): the longest wait
IDLE_STEP = 0.005  # seconds: wait_for_idle_threads looks at the process's CPU time this often
WAKE_BELOW = 0.01  # seconds: shorter calls get an untimed call before each sample
WATCH_FROM = 1e-3  # seconds: winners timed at this or more have their calls timed too
WATCH_CALLS = 9  # calls per look at a watched winner's times, at most
WATCH_LOOK = 0.05  # seconds of calls per look, at least 3 calls
SLOW_LOOKS = 2  # looks in a row over RECHECK_ABOVE that re-tune (the first look is skipped)
RECHECK_ABOVE = 1.1  # re-tune when the winner's calls take this times the runner-up's time
RECHECKS = 1  # re-tunings per signature and process at most
SECOND_LOOK_AFTER = 0.25  # seconds of a first tuning's winner's calls, then it is tuned again


class TuningCacheWarning(UserWarning):
    """The tuning cache file could not be read or written; tuning goes on in memory."""


# ------------------------------------------------------------------ switch

_enabled: bool | None = None  # None: FASTCONV_AUTOTUNE decides, read on first ask


def _from_env() -> bool:
    value = os.environ.get("FASTCONV_AUTOTUNE", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def is_enabled() -> bool:
    global _enabled
    if _enabled is None:
        _enabled = _from_env()
    return _enabled


def autotune(enabled: bool | None = None) -> bool:
    """Turn autotuning of backend="auto" calls on or off for this process, and
    return whether it is on (called without an argument, only that).

    When on, the first call of each signature (op, shapes, stride, padding,
    dilation, groups, dtype, thread count...) times every backend and kernel
    that can run it and runs the fastest; the winner is remembered, on disk
    too (see tuning_cache()). After SECOND_LOOK_AFTER seconds (a quarter
    of a second) of the winner's calls, the candidates are timed once more
    and ranked by both timings. When a winner's calls of a millisecond or
    more run 10% slower than the runner-up did when timed, the next call
    times the candidates again (once per signature and process). The
    default is FASTCONV_AUTOTUNE (1 for on).
    """
    global _enabled
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise TypeError(f"autotune(enabled) takes True, False or None, got {enabled!r}")
        _enabled = enabled
    return is_enabled()


# --------------------------------------------------------------- the file


def cache_dir() -> Path:
    """FASTCONV_CACHE_DIR, else the platform's user cache directory + fastconv."""
    env = os.environ.get("FASTCONV_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "").strip()
        return (Path(local) if local else home / "AppData" / "Local") / "fastconv" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "fastconv"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache"  # XDG: absolute only
    return base / "fastconv"


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, str]:
    """What a tuning is only valid for: CPU model, ISA path, fastconv version."""
    from . import __version__

    try:
        from . import _cpp

        isa = _cpp.isa_path()
    except ImportError:
        isa = "no cpp extension"
    return {"cpu": cpu_model(), "machine": platform.machine(), "isa_path": isa,
            "fastconv": __version__}


def signature(op: str, spec, threads: int) -> str:
    """The cache key of a call: op, every field of its spec, the thread count."""
    fields = ", ".join(f"{name}={value}" for name, value in zip(spec._fields, spec))
    return f"{op}({fields}) threads={threads}"


def _fail(message: str) -> None:
    warnings.warn(f"fastconv: {message}", TuningCacheWarning, stacklevel=4)


@dataclass
class Tuned:
    """One signature's tuning: the winner and each candidate's time per call."""

    backend: str
    kernel: str | None
    seconds: dict[str, float]  # candidate label ("cpp/gemm", "numba", ...) -> seconds per call
    tuning_seconds: float  # what timing the candidates cost (warm-ups and rounds), every tuning
    when: str = ""
    source: str = "measured"  # or "cache file"
    tunings: int = 1  # how many tunings `seconds` combines (see second_look())
    impl: object = field(default=None, repr=False, compare=False)  # what runs it, not saved
    # the winner's calls are timed (see watch()) when they take WATCH_FROM or
    # more and a runner-up was timed: re-tune above this many seconds a call
    recheck_above: float = field(default=0.0, init=False, repr=False, compare=False)
    calls: list = field(default_factory=list, init=False, repr=False, compare=False)
    look_calls: int = field(default=WATCH_CALLS, init=False, repr=False, compare=False)
    looks: int = field(default=0, init=False, repr=False, compare=False)
    slow_looks: int = field(default=0, init=False, repr=False, compare=False)  # in a row
    # calls left before a first tuning with a runner-up is tuned again; 0: none
    second_look_in: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self):
        own = self.seconds.get(self.label, math.inf)
        others = [t for label, t in self.seconds.items() if label != self.label]
        runner_up = min(others, default=math.inf)
        if WATCH_FROM <= own < math.inf and runner_up < math.inf:
            self.recheck_above = RECHECK_ABOVE * runner_up
            self.look_calls = max(3, min(WATCH_CALLS, math.ceil(WATCH_LOOK / own)))
        if self.tunings < 2 and 0 < own < math.inf and runner_up < math.inf:
            self.second_look_in = max(1, math.ceil(SECOND_LOOK_AFTER / own))

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.kernel}" if self.kernel else self.backend

    def to_json(self) -> dict:
        return {"backend": self.backend, "kernel": self.kernel, "seconds": self.seconds,
                "tuning_seconds": self.tuning_seconds, "when": self.when,
                "tunings": self.tunings}

    @classmethod
    def from_json(cls, d) -> Tuned:
        if not (isinstance(d, dict) and isinstance(d.get("backend"), str)
                and isinstance(d.get("kernel"), (str, type(None)))
                and isinstance(d.get("seconds"), dict)
                and all(isinstance(k, str) and isinstance(v, (int, float))
                        for k, v in d["seconds"].items())
                and isinstance(d.get("tuning_seconds"), (int, float))):
            raise ValueError("an entry is not {backend, kernel, seconds, tuning_seconds}")
        tunings = d.get("tunings", 1)
        if not isinstance(tunings, int) or isinstance(tunings, bool) or tunings < 1:
            raise ValueError("an entry's tunings is not a positive integer")
        return cls(d["backend"], d["kernel"], dict(d["seconds"]), float(d["tuning_seconds"]),
                   str(d.get("when", "")), "cache file", tunings)


@dataclass
class _Store:
    path: Path | None  # None: memory only (scratch())
    machine: dict
    memory: dict = field(default_factory=dict)  # (op, spec, threads) -> Tuned
    disk: dict = field(default_factory=dict)  # signature -> Tuned, as read from the file
    rechecks: dict = field(default_factory=dict)  # (op, spec, threads) -> re-tunings so far
    earlier: dict = field(default_factory=dict)  # (op, spec, threads) -> (Tuned, merge it?)


def _file_for(machine_key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(machine_key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"tuning-{digest[:16]}.json"


def _read(path: Path, machine_key: dict) -> dict[str, Tuned]:
    """The file's entries; {} (and a warning) when it is corrupt or foreign."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # none yet (or a file in the way)
        return {}
    except OSError as exc:
        _fail(f"cannot read the tuning cache {path}: {exc}; tuning in memory only")
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        if data.get("machine") != machine_key:
            _fail(f"ignoring the tuning cache {path}: it was made for {data.get('machine')}, "
                  f"this is {machine_key}")
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise ValueError("no entries")
        return {str(sig): Tuned.from_json(e) for sig, e in entries.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        _fail(f"ignoring the corrupt tuning cache {path}: {exc}")
        return {}


def _write(path: Path, machine_key: dict, entries: dict[str, Tuned]) -> None:
    """Replace the file atomically: a temporary file in the same directory, then os.replace."""
    data = {"format": FORMAT, "machine": machine_key,
            "entries": {sig: e.to_json() for sig, e in sorted(entries.items())}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tuning-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        _fail(f"cannot write the tuning cache {path}: {exc}; tuning in memory only")


_lock = threading.RLock()
_store: _Store | None = None
_scratch: _Store | None = None  # scratch()'s, in force instead of _store
_last: Tuned | None = None  # the latest tuning measured in this process


def _current() -> _Store:
    """The store for the cache file of this machine, (re)loaded when the path changed."""
    global _store
    with _lock:
        if _scratch is not None:
            return _scratch
        key = machine()
        path = _file_for(key)
        if _store is None or _store.path != path or _store.machine != key:
            _store = _Store(path, key, disk=_read(path, key))
        return _store


def reset() -> None:
    """Forget everything in memory (the file stays); the next need reloads it."""
    global _store
    with _lock:
        _store = None


@contextlib.contextmanager
def scratch():
    """Inside the block, tune from scratch into memory only: the cache file is
    neither read nor written (the benchmarks measure what a first call costs)."""
    global _scratch
    with _lock:
        saved, _scratch = _scratch, _Store(None, machine())
    try:
        yield
    finally:
        with _lock:
            _scratch = saved


def last_tuned() -> Tuned | None:
    """The latest tuning measured in this process (not read from the file)."""
    return _last


def lookup(op: str, spec, threads: int, load: bool = True) -> Tuned | None:
    """The tuning of this signature, from memory, else from the file (if `load`)."""
    store = _scratch or _store
    key = (op, spec, threads)
    if store is not None:
        hit = store.memory.get(key)
        if hit is not None:
            return hit
    if not load:
        return None
    store = _current()
    with _lock:
        hit = store.disk.get(signature(op, spec, threads))
        if hit is not None:
            store.memory[key] = hit
        return hit


def forget(op: str, spec, threads: int) -> None:
    """Drop one signature's tuning from memory (it no longer runs here)."""
    with _lock:
        store = _scratch or _store
        if store is not None:
            store.memory.pop((op, spec, threads), None)
            store.disk.pop(signature(op, spec, threads), None)


def watch(op: str, spec, threads: int, tuned: Tuned, seconds: float) -> None:
    """Note that a call of the tuned winner took `seconds`. Looks at the
    median of every tuned.look_calls calls (WATCH_LOOK seconds of them, 3 to
    WATCH_CALLS): when SLOW_LOOKS in a row are above
    tuned.recheck_above (RECHECK_ABOVE times the runner-up's timed seconds),
    forget the tuning, so that the next call times the candidates again;
    RECHECKS times per signature at most, then the winner's calls are no
    longer timed (why: the module docstring).

    The first look is skipped: the calls right after a tuning run beside the
    threads of the spinners it timed last (cpp's gradients of batch1_3x3_56
    in the bench: 7.7, 7.6, 10.1 ms, then 4.3-5.9). Two looks in a row: a
    burst of load from elsewhere (8.6, 8.8, 6.6 ms) rarely spans both."""
    calls = tuned.calls
    calls.append(seconds)
    if len(calls) < tuned.look_calls:
        return
    slow = statistics.median(calls) > tuned.recheck_above
    calls.clear()
    tuned.looks += 1
    tuned.slow_looks = tuned.slow_looks + 1 if slow and tuned.looks > 1 else 0
    if tuned.slow_looks < SLOW_LOOKS:
        return
    key = (op, spec, threads)
    with _lock:
        store = _scratch or _store
        if store is None or store.memory.get(key) is not tuned:  # re-tuned meanwhile
            return
        done = store.rechecks.get(key, 0)
        if done >= RECHECKS:
            tuned.recheck_above = 0.0  # stop timing its calls
            return
        store.rechecks[key] = done + 1
        forget(op, spec, threads)
        store.earlier[key] = (tuned, False)  # the new tuning stands alone


def second_look(op: str, spec, threads: int, tuned: Tuned) -> None:
    """Forget a first tuning after SECOND_LOOK_AFTER seconds of its winner's
    calls, so that the next call tunes again; tune() then ranks the candidates
    by the geometric mean of both tunings' times.

    Why: a tuning is a snapshot under a second long, and this machine's speed
    swings in stretches of seconds. In one bench run cpp's conv2d of lenet_c1
    ran 228-527 us a sample, and the tuning, timing it in a slow stretch,
    picked Numba (1.89x); the watch cannot see a runner-up timed too slow."""
    key = (op, spec, threads)
    tuned.second_look_in = 0
    with _lock:
        store = _scratch or _store
        if store is None or store.memory.get(key) is not tuned:  # concurrent calls
            return
        forget(op, spec, threads)
        store.earlier[key] = (tuned, True)


def rechecks(op: str, spec, threads: int) -> int:
    """How often the signature's tuning was forgotten by watch() in this process."""
    store = _scratch or _store
    return 0 if store is None else store.rechecks.get((op, spec, threads), 0)


def record(op: str, spec, threads: int, tuned: Tuned, save: bool = True) -> None:
    """Remember a tuning in memory and (if `save`) in the file, merged with the
    file's entries as they are now."""
    global _last
    store = _current()
    sig = signature(op, spec, threads)
    with _lock:
        store.memory[(op, spec, threads)] = tuned
        if not save:
            return
        _last = tuned
        store.disk[sig] = tuned
        if store.path is None:
            return
        on_disk = _read(store.path, store.machine)
        on_disk.update(store.disk)
        store.disk = on_disk
        _write(store.path, store.machine, on_disk)


# ------------------------------------------------------------------ timing


def wait_for_idle_threads(limit: float = BLAS_SPIN) -> None:
    """Sleep until this process's other threads have stopped spinning (they used
    under a fifth of a core over the last IDLE_STEP), or `limit` seconds.

    OpenBLAS's threads spin some 0.1 s after a call that woke them, but a
    small product runs on the caller's thread alone. With fixed 0.12 s pauses,
    tuning the tiny conv2d took 168 ms in the bench; waiting for idle threads,
    30-33 ms."""
    clock = time.monotonic
    deadline = clock() + limit
    while clock() < deadline:
        cpu, start = time.process_time(), clock()
        time.sleep(IDLE_STEP)
        if time.process_time() - cpu < 0.2 * (clock() - start):
            return


def measure(candidates, run, spinners=None) -> tuple[int, dict[str, float]]:
    """Time `run(impl)` for each (label, impl) of `candidates`; return the index of
    the fastest and {label: its seconds per call} (see the module docstring).

    spinners: per candidate, whether its threads keep spinning after a call
    (OpenBLAS's, Numba's OpenMP threads). Those are timed after all the others:
    they would take the second core from whatever is timed next."""
    clock = time.perf_counter
    spins = list(spinners) if spinners is not None else [False] * len(candidates)
    first = [math.inf] * len(candidates)
    best = [math.inf] * len(candidates)  # sizes the samples, prunes
    stretches = [[[]] for _ in candidates]  # per candidate: its samples, per stretch of time
    timed = {}  # phase -> the candidates left after pruning

    def rounds():
        """Round numbers: ROUNDS, or more while they are short (SHORT_ROUNDS, SHORT_TIME)."""
        start = clock()
        for r in range(SHORT_ROUNDS):
            if r >= ROUNDS and clock() - start >= SHORT_TIME:
                return
            yield r

    def one_round(alive, r):
        """A sample of each of `alive`, interleaved, a different one first each round."""
        shift = r % len(alive)
        for i in alive[shift:] + alive[:shift]:
            once = min(first[i], best[i])
            inner = max(1, min(MAX_INNER, math.ceil(MIN_SAMPLE / max(once, 1e-9))))
            if once < WAKE_BELOW:  # wakes this candidate's threads, untimed
                run(candidates[i][1])
            start = clock()
            for _ in range(inner):
                run(candidates[i][1])
            sample = (clock() - start) / inner
            best[i] = min(best[i], sample)
            stretches[i][-1].append(sample)

    def seconds(i):
        """The lower of the candidate's medians over its stretches of samples."""
        return min((statistics.median(s) for s in stretches[i] if s), default=math.inf)

    def warm_up(group):  # JIT compiles, first-touch page faults
        for i in group:
            start = clock()
            run(candidates[i][1])
            first[i] = clock() - start

    def timed_rounds(alive):
        """The rounds of `alive`; returns those left after pruning."""
        for r in rounds():
            if not alive:  # every one pruned against the best so far
                break
            one_round(alive, r)
            if r == PRUNE_AFTER - 1:  # against the best of every candidate so far
                fastest = min(best)
                alive = [i for i in alive if best[i] <= PRUNE * fastest]
        return alive

    others = [i for i in range(len(candidates)) if not spins[i]]
    # what ran before may have left spinning threads too (the bench's tuning of
    # pointwise_1x1's gradients, after NumPy's calls: cpp's first sample 2x)
    wait_for_idle_threads()
    warm_up(others)
    timed[False] = timed_rounds(others)
    # the spinners one after the other, each after the previous one's threads
    # stopped spinning (interleaved with NumPy's, Numba's samples of
    # alexnet_c1's gradients took 1.2x their time, and cpp won the tuning)
    timed[True] = []
    for n, i in enumerate(i for i in range(len(candidates)) if spins[i]):
        if n:
            wait_for_idle_threads()
        warm_up([i])
        timed[True] += timed_rounds([i])
    winner = min(range(len(candidates)), key=seconds)
    # A spinner ahead: the others were all timed in one stretch, which one
    # burst of load from elsewhere can spoil (cpp lost 1 in 3 tunings of
    # batch1_3x3_56 so, at 1.6-2x its time). Time those left once more, when
    # the spinner's threads have stopped: a second stretch.
    if spins[winner] and timed[False]:
        wait_for_idle_threads()
        for i in timed[False]:
            stretches[i].append([])
        for r in rounds():
            one_round(timed[False], r)
        winner = min(range(len(candidates)), key=seconds)
    return winner, {label: seconds(i) for i, (label, _) in enumerate(candidates)}


def tune(op: str, spec, threads: int, candidates, run, spinners=None) -> tuple[int, Tuned]:
    """Measure the candidates, record the winner; (its index, the Tuned record).

    candidates: [(label, backend name, kernel or None, impl)]; spinners as for
    measure."""
    start = time.perf_counter()
    winner, seconds = measure([(label, impl) for label, _, _, impl in candidates], run,
                              spinners)
    spent, tunings = time.perf_counter() - start, 1
    with _lock:
        store = _scratch or _store
        earlier, merge = (None, False) if store is None else \
            store.earlier.pop((op, spec, threads), (None, False))
    if earlier is not None:
        tunings += earlier.tunings
        spent += earlier.tuning_seconds
        if merge:
            seconds = {label: math.sqrt(t * earlier.seconds[label])
                       if label in earlier.seconds else t for label, t in seconds.items()}
            winner = min(range(len(candidates)), key=lambda i: seconds[candidates[i][0]])
    label, name, kernel, _ = candidates[winner]
    tuned = Tuned(name, kernel, seconds, spent,
                  datetime.now(timezone.utc).isoformat(timespec="seconds"), tunings=tunings)
    return winner, tuned


# ------------------------------------------------------------- the viewer


class TuningCache:
    """What autotuning remembers on this machine: `entries` (signature -> Tuned),
    `path` (the JSON file), `machine` (what the file is keyed by), `clear()`."""

    def __init__(self):
        store = _current()
        self.path = store.path
        self.machine = dict(store.machine)

    @property
    def entries(self) -> dict[str, Tuned]:
        store = _current()
        with _lock:
            merged = dict(store.disk)
            for (op, spec, threads), tuned in store.memory.items():
                if tuned.seconds:  # not the one-candidate calls, never timed
                    merged.setdefault(signature(op, spec, threads), tuned)
            return dict(sorted(merged.items()))

    def clear(self) -> None:
        """Forget every tuning, in memory and on disk (the file is removed)."""
        store = _current()
        with _lock:
            store.memory.clear()
            store.disk.clear()
            if store.path is None:
                return
            try:
                store.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                _fail(f"cannot remove the tuning cache {store.path}: {exc}")

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"<fastconv.TuningCache {len(self)} entries at {self.path}>"

    def __str__(self) -> str:
        entries = self.entries
        lines = [f"fastconv tuning cache: {self.path}",
                 "  machine: " + ", ".join(f"{k} {v}" for k, v in self.machine.items()),
                 f"  autotune is {'on' if is_enabled() else 'off'}; {len(entries)} "
                 f"signature{'s' if len(entries) != 1 else ''} tuned"]
        for sig, t in entries.items():
            times = ", ".join(f"{label} {_us(s)}" for label, s in
                              sorted(t.seconds.items(), key=lambda kv: kv[1]))
            lines.append(f"  {sig}\n    -> {t.label}: {times}; tuning took "
                         f"{t.tuning_seconds * 1e3:.1f} ms")
        return "\n".join(lines)


def _us(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "dropped"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def tuning_cache() -> TuningCache:
    """The autotuning cache of this machine: print it, read .entries and .path,
    .clear() it. Reading it loads the file (FASTCONV_CACHE_DIR, else the user
    cache directory); nothing is written until a call is tuned."""
    return TuningCache()
