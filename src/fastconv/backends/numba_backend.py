"""The Numba backend adapter; the JIT kernels load on first use.

Numba is imported only when a numba kernel first runs (or `available()` is
asked), never by `import fastconv`. The kernels live in `_numba_kernels` and
are cached on disk by Numba; `cache_status()` says whether that cache is warm.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from . import Backend

_kernels = None


def _k():
    """The kernels module (imports Numba on first use)."""
    global _kernels
    if _kernels is None:
        from . import _numba_kernels

        _kernels = _numba_kernels
    return _kernels


# Below this many multiply-adds a call runs on one thread: waking a second one
# costs more than it saves. Pooling and unfolding count elements or taps, which
# are cheaper (vectorized loads and compares), hence the smaller threshold.
_SERIAL_WORK = 1 << 18
_SERIAL_TAPS = 1 << 16


def _threads(work: int, serial: int = _SERIAL_WORK) -> int:
    """Make Numba use fastconv's thread count (capped by Numba's pool, and 1
    for work below `serial`); return it."""
    import numba

    from .._threads import get_num_threads

    n = 1 if work < serial else min(get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    return n


# ------------------------------------------------------- GEMM blocks


def gemm_rows(n, oh, ow, ckk, nt):
    """Output rows per block of _numba_kernels.conv2d_gemm: about 512 pixels
    (fewer when the columns of a block would pass 4 MB), whole images when
    they are smaller, and a block count that is a multiple of the threads.
    Blocks may straddle images. Plain Python, so callers need no Numba."""
    pixels = max(64, min(512, (4 << 20) // (4 * ckk)))
    total = n * oh
    if oh * ow <= pixels:
        per = max(1, min(pixels // (oh * ow), -(-n // nt)))
        return oh * per
    rows = max(1, pixels // ow)
    blocks = -(-total // rows)
    blocks = -(-blocks // nt) * nt
    return -(-total // blocks)


def backward_rows(rows, kh, dh, sh):
    """_numba_kernels.conv2d_gemm_backward's block rows: at least (KH-1)*dh // sh,
    so blocks two apart never add into the same input row."""
    return max(rows, (kh - 1) * dh // sh)


# --------------------------------------------------------- BLAS threads


class _BlasPin:
    """Keeps the BLAS behind Numba's np.dot (SciPy's) single-threaded while the
    conv kernels run, so Numba's threads own the cores; restores it after.

    Finds the library through SciPy's cython_blas and knows OpenBLAS (plain or
    scipy_ prefixed) and MKL. When none is found, `single` is False and the
    caller runs the GEMM kernel on one Numba thread instead.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved = None
        self._get = self._set = None
        try:
            self._find()
        except Exception:  # no SciPy BLAS, no dladdr (not Linux), an unknown BLAS
            self._get = self._set = None

    def _find(self):
        import scipy.linalg.cython_blas as cython_blas

        handle = ctypes.CDLL(cython_blas.__file__)
        sgemm = None
        for name in ("scipy_sgemm_", "sgemm_", "sgemm"):
            sgemm = getattr(handle, name, None)
            if sgemm is not None:
                break

        class DlInfo(ctypes.Structure):
            _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                        ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

        info = DlInfo()
        if sgemm is None or not ctypes.CDLL(None).dladdr(ctypes.cast(sgemm, ctypes.c_void_p),
                                                          ctypes.byref(info)):
            return
        lib = ctypes.CDLL(os.fsdecode(info.fname))
        for get, set_ in (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                          ("openblas_get_num_threads", "openblas_set_num_threads"),
                          ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads")):
            if hasattr(lib, get) and hasattr(lib, set_):
                self._get, self._set = getattr(lib, get), getattr(lib, set_)
                self._set.argtypes = [ctypes.c_int]
                return

    @property
    def single(self) -> bool:
        return self._set is not None

    def __enter__(self):
        if self._set is not None:
            with self._lock:
                if self._users == 0:
                    self._saved = self._get()
                    if self._saved != 1:
                        self._set(1)
                self._users += 1
        return self

    def __exit__(self, *exc):
        if self._set is not None:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._saved != 1:
                    self._set(self._saved)


_blas = None
_blas_lock = threading.Lock()


def _blas_pin() -> _BlasPin:
    global _blas
    with _blas_lock:
        if _blas is None:
            _blas = _BlasPin()
    return _blas


def _has_scipy_blas() -> str:
    """'' if SciPy's BLAS (which Numba's np.dot calls) imports, else why not."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except Exception as exc:
        return f"Numba's np.dot needs SciPy's BLAS, which failed to import: {exc}"
    return ""


# ------------------------------------------------------------ cache status


def cache_status() -> str:
    """One line: whether Numba's on-disk cache holds this machine's compiled kernels.

    Counts, per kernel, the signatures in its cache index (under
    NUMBA_CACHE_DIR if set, else next to the kernels' source) compiled for
    this CPU from the current source; "warm" when every kernel has one.
    Imports Numba.
    """
    try:
        import numba  # noqa: F401
    except Exception as exc:
        return f"numba is not importable: {exc}"
    try:
        k = _k()
        from numba.core.registry import cpu_target

        magic = cpu_target.target_context.codegen().magic_tuple()
        warm = signatures = 0
        where = ""
        for kernel in k.KERNELS:
            cache = kernel._cache  # numba's FunctionCache of a cache=True dispatcher
            where = cache.cache_path
            # {(signature, cpu magic, code hashes): data file}, {} if stale or absent
            keys = [key for key in cache._cache_file._load_index() if key[1] == magic]
            signatures += len(keys)
            warm += bool(keys)
    except Exception as exc:  # Numba's private cache layout changed
        return f"unknown ({type(exc).__name__}: {exc})"
    state = "warm" if warm == len(k.KERNELS) else "cold" if warm == 0 else "partly warm"
    return (f"{state}: {warm} of {len(k.KERNELS)} kernels compiled for this CPU "
            f"({signatures} signatures) in {where}")


# ----------------------------------------------------------------- backend


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class NumbaBackend(Backend):
    """Numba JIT kernels; importing Numba is deferred until first asked."""

    name = "numba"

    def __init__(self):
        self._checked = None
        self._gemm_reason = None
        self._no_bias = {}
        self._indices_placeholder = None

    def available(self) -> tuple[bool, str]:
        if self._checked is None:
            try:
                import numba  # noqa: F401
            except Exception as exc:  # ImportError, or a broken llvmlite
                self._checked = (False, f"numba is not importable: {exc}")
            else:
                self._checked = (True, "")
        return self._checked

    def supports(self, op: str, spec) -> str:
        if why := super().supports(op, spec):
            return why
        if op in ("conv2d", "conv2d_backward"):
            if self._gemm_reason is None:
                self._gemm_reason = _has_scipy_blas()
            if self._gemm_reason:
                return f"the numba backend's {op}: {self._gemm_reason}"
        return ""

    def _bias(self, bias, dtype):
        """bias, or a read-only zero placeholder of the dtype (one kernel signature)."""
        if bias is not None:
            return bias
        if dtype not in self._no_bias:
            self._no_bias[dtype] = _readonly(np.zeros(1, dtype))
        return self._no_bias[dtype]

    # ---------------------------------------------------------- ops

    def conv2d(self, spec, x, weight, bias, out) -> None:
        k = _k()
        nt = _threads(spec.flops // 2)
        top, _, left, _ = spec.pads
        if spec.padding_mode != "zeros":  # pad a copy; the kernels pad with zeros only
            from . import numpy_ref

            x = _readonly(np.ascontiguousarray(numpy_ref.pad(x, spec.pads, spec.padding_mode)))
            top = left = 0
        args = (self._bias(bias, spec.dtype), bias is not None, spec.activation == "relu", out)
        (sh, sw), (dh, dw) = spec.stride, spec.dilation
        if spec.c == spec.groups:
            k.conv2d_depthwise(x, weight, *args, sh, sw, top, left, dh, dw, nt)
            return
        w2 = weight.reshape(spec.k, -1)
        blas = _blas_pin()
        if not blas.single:
            nt = 1  # BLAS runs its own threads: it owns the cores
        rows = gemm_rows(spec.n, spec.oh, spec.ow, w2.shape[1] * spec.groups, nt)
        with blas:
            k.conv2d_gemm(x, w2, *args, spec.kh, spec.kw, sh, sw, top, left, dh, dw,
                          spec.groups, rows, nt)

    def conv2d_backward(self, spec, grad_out, x, weight):
        """-> (grad_input, grad_weight, grad_bias); grad_bias by NumPy, as the reference."""
        from . import numpy_ref

        k = _k()
        top, bottom, left, right = spec.pads
        if spec.padding_mode != "zeros":  # gradient of a padded copy, then pad's adjoint
            x = _readonly(np.ascontiguousarray(numpy_ref.pad(x, spec.pads, spec.padding_mode)))
            top = bottom = left = right = 0
        n, c, h, w = x.shape
        nt = _threads(spec.flops)
        blas = _blas_pin()
        if not blas.single:
            nt = 1  # BLAS runs its own threads: it owns the cores
        w2 = weight.reshape(spec.k, -1)
        rows = gemm_rows(spec.n, spec.oh, spec.ow, w2.shape[1] * spec.groups, nt)
        rows = backward_rows(rows, spec.kh, spec.dilation[0], spec.stride[0])
        gi = np.zeros((n, c, h + top + bottom, w + left + right), spec.dtype)
        gw = np.zeros((nt, *w2.shape), spec.dtype)
        with blas:
            k.conv2d_gemm_backward(x, w2, grad_out, gi, gw, spec.kh, spec.kw, *spec.stride,
                                   top, left, *spec.dilation, spec.groups, rows, nt)
        if spec.padding_mode != "zeros":
            gi = numpy_ref.pad_adjoint(gi, spec.pads, spec.padding_mode, spec.h, spec.w)
        else:
            gi = gi[:, :, top:top + spec.h, left:left + spec.w]
        return gi, gw.sum(axis=0).reshape(weight.shape), grad_out.sum(axis=(0, 2, 3))

    def im2col(self, spec, x, out) -> None:
        _threads(out.size, _SERIAL_TAPS)
        top, _, left, _ = spec.pads
        _k().im2col(x, out, spec.kh, spec.kw, *spec.stride, top, left, *spec.dilation,
                    spec.oh, spec.ow)

    def col2im(self, spec, cols, out) -> None:
        _threads(cols.size, _SERIAL_TAPS)
        top, _, left, _ = spec.pads
        _k().col2im(cols, out, spec.kh, spec.kw, *spec.stride, top, left, *spec.dilation,
                    spec.oh, spec.ow)

    def max_pool2d(self, spec, x, out, indices) -> None:
        nt = _threads(out.size * spec.kh * spec.kw, _SERIAL_TAPS)
        want = indices is not None
        if not want:
            indices = self._no_indices()
        _k().max_pool2d(x, out, indices, want, spec.kh, spec.kw, *spec.stride,
                        *spec.padding, *spec.dilation, nt)

    def avg_pool2d(self, spec, x, out) -> None:
        _threads(out.size * spec.kh * spec.kw, _SERIAL_TAPS)
        _k().avg_pool2d(x, out, spec.kh, spec.kw, *spec.stride, *spec.padding,
                        spec.count_include_pad, spec.divisor_override or 0)

    def max_pool2d_backward(self, spec, grad_out, x):
        out = np.empty(grad_out.shape, spec.dtype)
        indices = np.empty(grad_out.shape, np.int64)
        self.max_pool2d(spec, x, out, indices)
        grad = np.empty(x.shape, spec.dtype)
        _threads(x.size, _SERIAL_TAPS)
        _k().max_pool2d_backward(grad_out, indices, grad)
        return grad

    def avg_pool2d_backward(self, spec, grad_out):
        _threads(grad_out.size * spec.kh * spec.kw, _SERIAL_TAPS)
        grad = np.empty((spec.n, spec.c, spec.h, spec.w), spec.dtype)
        _k().avg_pool2d_backward(grad_out, grad, spec.kh, spec.kw, *spec.stride, *spec.padding,
                                 spec.count_include_pad, spec.divisor_override or 0)
        return grad

    def _no_indices(self):
        """An int64 placeholder for max_pool2d without indices (one kernel signature)."""
        if self._indices_placeholder is None:
            self._indices_placeholder = np.zeros((1, 1, 1, 1), np.int64)
        return self._indices_placeholder
