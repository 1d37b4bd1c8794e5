"""The thread budget of the compiled and JIT kernels."""

from __future__ import annotations

import os
import threading

from ._params import _int

_lock = threading.Lock()
_num_threads: int | None = None


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
    """Set the number of threads the compiled and JIT kernels use (n >= 1)."""
    global _num_threads
    n = _int(n, "n", 1)
    with _lock:
        _num_threads = n


def get_num_threads() -> int:
    """The number of threads the compiled and JIT kernels use.

    Defaults to FASTCONV_NUM_THREADS, else the CPUs this process may run on.
    """
    global _num_threads
    with _lock:
        if _num_threads is None:
            _num_threads = _default()
        return _num_threads
