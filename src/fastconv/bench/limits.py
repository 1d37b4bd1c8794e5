"""What this machine can do at most, measured in the run that uses it, and what it is.

Two limits, each the best of a few repeats, measured at the start of a run and
again at its end; the run rates against the higher of the two (`higher`):

- GEMM peak: GFLOP/s of a large square NumPy matmul (OpenBLAS, or whichever
  BLAS NumPy links) in float32 and float64, on the benchmark's thread count.
  When NumPy's OpenBLAS is pinned to a core type by ``OPENBLAS_CORETYPE`` /
  ``OPENBLAS_L2_SIZE``, the probe runs in a child process without them (as
  ``env -u`` would), so the peak is the hardware's and not the pinned kernels'.
- Copy bandwidth: GB/s (bytes read + bytes written) of a large array copy,
  split over the same threads, far larger than the last-level cache.

Convolution is compared with the first, memory-bound ops (pooling, im2col) with
the second.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from .. import _tuning

# OpenBLAS variables that pin its kernels; the GEMM probe runs without them.
PINNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass
class Limits:
    gemm: dict[str, float]  # dtype name -> GFLOP/s
    copy: float  # GB/s, read + write
    gemm_n: int
    copy_bytes: int
    threads: int
    note: str  # how the GEMM probe ran

    def describe(self) -> str:
        gemm = ", ".join(f"{dt} {r:.1f}" for dt, r in self.gemm.items())
        return (f"limits (measured in this run, {self.threads} threads, best of repeats): "
                f"GEMM peak {gemm} GFLOP/s ({self.gemm_n}x{self.gemm_n} NumPy matmul; "
                f"{self.note}); copy {self.copy:.1f} GB/s (read + write, "
                f"{self.copy_bytes >> 20} MB arrays)")

    def to_dict(self) -> dict:
        return asdict(self)


def _blas_limits(threads: int):
    """A context manager holding NumPy's BLAS to `threads` (threadpoolctl, when there)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


def gemm_rate(dtype, n: int, repeat: int, threads: int) -> float:
    """GFLOP/s of the best of `repeat` (n, n) @ (n, n) products, after one untimed."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    with _blas_limits(threads):
        np.matmul(a, b, out=c)
        best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(max(1, repeat)))
    return 2 * n**3 / best / 1e9


def copy_rate(nbytes: int, repeat: int, threads: int) -> float:
    """GB/s (read + write) of the best of `repeat` copies of `nbytes`, split over `threads`."""
    src = np.ones(max(1, nbytes // 8))
    dst = np.empty_like(src)
    parts = [slice(c[0], c[-1] + 1) for c in np.array_split(np.arange(src.size), threads)
             if c.size]
    with ThreadPoolExecutor(len(parts)) as pool:  # NumPy copies without the GIL

        def run():
            list(pool.map(lambda s: np.copyto(dst[s], src[s]), parts))

        run()  # first touch of dst
        best = min(_timed(run) for _ in range(max(1, repeat)))
    return 2 * src.nbytes / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_CHILD = ("import json, sys; from fastconv.bench.limits import gemm_rate; "
          "n, r, t = map(int, sys.argv[1:4]); "
          "print(json.dumps({d: gemm_rate(d, n, r, t) for d in ('float32', 'float64')}))")


def gemm_peaks(n: int, repeat: int, threads: int, environ=None) -> tuple[dict[str, float], str]:
    """({"float32": GFLOP/s, "float64": GFLOP/s}, how they were measured)."""
    environ = os.environ if environ is None else environ
    pinned = {k: environ[k] for k in PINNING_VARS if k in environ}
    if not pinned:
        return ({d: gemm_rate(d, n, repeat, threads) for d in ("float32", "float64")},
                "in this process")
    env = {k: v for k, v in environ.items() if k not in PINNING_VARS}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(repeat), str(threads)],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"GEMM probe failed: {done.stderr.strip()[-500:]}")
    shown = " ".join(f"{k}={v}" for k, v in pinned.items())
    return (json.loads(done.stdout),
            f"in a child process without {shown}, which pin NumPy's OpenBLAS in this one")


def measure(threads: int, gemm_n: int = 2048, gemm_repeat: int = 4,
            copy_bytes: int = 256 << 20, copy_repeat: int = 5) -> Limits:
    gemm, note = gemm_peaks(gemm_n, gemm_repeat, threads)
    return Limits(gemm, copy_rate(copy_bytes, copy_repeat, threads), gemm_n, copy_bytes,
                  threads, note)


def higher(first: Limits, second: Limits) -> Limits:
    """Each limit at the higher of two measurements (at a run's start and end): a
    probe that met a slow spell of a shared machine would make every share of it
    look better than it is."""
    gemm = {dt: max(r, second.gemm.get(dt, 0.0)) for dt, r in first.gemm.items()}
    note = first.note if first.note == second.note else f"{first.note}; {second.note}"
    return Limits(gemm, max(first.copy, second.copy), first.gemm_n, first.copy_bytes,
                  first.threads, f"{note}; the higher of the run's start and end")


# ---------------------------------------------------------------- the machine


def isa_path() -> str:
    """The SIMD path of the compiled kernels, or why there is none."""
    try:
        from fastconv import _cpp
    except ImportError as exc:
        return f"none (cpp extension not loaded: {exc})"
    return _cpp.isa_path()


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine(threads: int) -> dict:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return {"cpu": _tuning.cpu_model(), "arch": platform.machine(), "cpus": cpus,
            "isa_path": isa_path(), "threads": threads, "system": platform.platform()}


def versions(torch=None) -> dict:
    import fastconv as fc

    out = {"fastconv": fc.__version__, "python": platform.python_version(),
           "numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        # NumPy's own BLAS: other libraries (SciPy, PyTorch) may load their own copies
        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"
                and os.path.basename(os.path.dirname(i["filepath"])).startswith("numpy")]
        if blas:
            out["blas"] = f"{blas[0]['internal_api']} {blas[0]['version']} " \
                          f"({blas[0].get('architecture') or '?'} kernels)"
    except ImportError:
        pass
    try:
        from fastconv import _cpp

        build = _cpp.build_info()
        out["cpp"] = f"{build['compiler']} {build['flags'].strip()}".strip()
    except ImportError:
        pass
    try:
        import numba

        out["numba"] = numba.__version__
    except ImportError:
        pass
    if torch is not None:
        out["torch"] = torch.__version__
        try:
            out["torch"] += f" ({torch.backends.cpu.get_cpu_capability()})"
        except AttributeError:
            pass
    return out
