"""One thread budget for everything a call runs: the C++ kernels (their own thread pool), Numba's
threads and the BLAS that NumPy and Numba call.

The rule, for the budget B (set_num_threads, else FASTCONV_NUM_THREADS, else the
CPUs this process may run on):

- Every public call takes a share of B when it starts and gives it back when it
  ends: share = max(1, min(B // active, B - taken)), where `active` counts the
  calls running now (this one included) and `taken` the threads they hold. One
  call alone gets all of B; calls made at once from a pool of Python threads
  split it (B // k each for k of them), and never get less than one thread,
  the calling thread itself: fastconv starts no thread beyond the budget. A
  call's share is fixed when it starts, so a call that started alone keeps B
  until it ends, and the next ones get what is left.
- Inside a call, get_num_threads() is the call's share: the C++ kernels and
  Numba run that many threads.
- BLAS libraries (NumPy's, which Numba's kernels call too, and SciPy's) have one thread
  count per process, set through threadpoolctl: while calls that use BLAS run,
  it is at most the smallest share among them (lowered, never raised, while
  any runs), and the caller's setting comes back when the last one ends.
  Outside fastconv calls BLAS keeps whatever the caller set.
"""

from __future__ import annotations

import os
import sys
import threading

from ._params import _int

_lock = threading.Lock()
_num_threads: int | None = None
_active = 0  # calls running now
_taken = 0  # threads they hold


class _Local(threading.local):
    share = 0  # the running call's share on this thread, 0 outside calls


_local = _Local()


def _default() -> int:
    env = os.environ.get("FASTCONV_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"FASTCONV_NUM_THREADS must be a positive integer, got {env!r}")
        return value
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Set fastconv's thread budget (n >= 1): the threads of the C++ kernels, of
    Numba and of the BLAS they call, shared by the calls that run at once."""
    global _num_threads
    n = _int(n, "n", 1)
    with _lock:
        _num_threads = n


def budget() -> int:
    """The thread budget: set_num_threads's, else FASTCONV_NUM_THREADS, else the
    CPUs this process may run on."""
    global _num_threads
    n = _num_threads
    if n is None:
        with _lock:
            if _num_threads is None:
                _num_threads = _default()
            n = _num_threads
    return n


def get_num_threads() -> int:
    """The number of threads the compiled and JIT kernels use.

    Outside a call, the budget (set_num_threads, else FASTCONV_NUM_THREADS,
    else the CPUs this process may run on); inside one, that call's share of it.
    """
    return _local.share or budget()


def acquire() -> int:
    """Take the starting call's share of the budget (see the module docstring) and
    return it; 0 for a call nested in another on the same thread, which runs
    with the outer call's share. Pair with release()."""
    global _active, _taken
    local = _local
    if local.share:
        return 0
    total = _num_threads or budget()
    _lock.acquire()
    _active += 1
    share = total // _active
    if share > total - _taken:
        share = total - _taken
    if share < 1:
        share = 1
    _taken += share
    _lock.release()
    local.share = share
    return share


def release(share: int) -> None:
    """Give back what acquire() returned."""
    global _active, _taken
    if share:
        _local.share = 0
        _lock.acquire()
        _active -= 1
        _taken -= share
        _lock.release()


def running() -> tuple[int, int]:
    """(calls running now, threads they hold)."""
    with _lock:
        return _active, _taken


# ------------------------------------------------------------------ BLAS


class _BlasLimit:
    """BLAS thread counts while calls that use BLAS run (threadpoolctl).

    The libraries are found on first use, and again once SciPy's BLAS (which
    Numba loads at start-up) has been loaded after that."""

    def __init__(self):
        self._lock = threading.Lock()
        self._libs = None  # threadpoolctl LibControllers of user_api "blas"
        self._with_scipy = False
        self._users = 0
        self._limit = 0
        self._saved = ()
        self.reason = ""  # why BLAS is left alone, "" when it is limited

    def libs(self) -> list:
        with_scipy = "scipy.linalg.cython_blas" in sys.modules
        if self._libs is None or (with_scipy and not self._with_scipy):
            try:
                from threadpoolctl import ThreadpoolController

                self._libs = ThreadpoolController().select(user_api="blas").lib_controllers
                self.reason = "" if self._libs else "threadpoolctl finds no BLAS library"
            except Exception as exc:  # not installed, or an unknown platform
                self._libs = []
                self.reason = f"threadpoolctl is unavailable: {exc}"
            self._with_scipy = with_scipy
        return self._libs

    def enter(self, share: int) -> None:
        with self._lock:
            libs = self.libs() if self._users == 0 else self._libs
            if self._users == 0:
                self._saved = tuple((lib, lib.get_num_threads()) for lib in libs)
                for lib, now in self._saved:
                    if now != share:
                        lib.set_num_threads(share)
                self._limit = share
            elif share < self._limit:
                for lib in libs:
                    if lib.get_num_threads() > share:
                        lib.set_num_threads(share)
                self._limit = share
            self._users += 1

    def exit(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for lib, before in self._saved:
                    if lib.get_num_threads() != before:
                        lib.set_num_threads(before)
                self._saved = ()

    def threads(self) -> dict[str, int]:
        """{library path: its thread count now}."""
        with self._lock:
            return {lib.filepath: lib.get_num_threads() for lib in self.libs()}


blas = _BlasLimit()
