"""The Numba backend adapter; the JIT kernels load on first use.

Numba is imported only when a numba kernel first runs (or `available()` is
asked), never by `import fastconv`. The kernels live in `_numba_kernels` and
are cached on disk by Numba; `cache_status()` says whether that cache is warm.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading

import numpy as np

from . import Backend

_kernels = None


def _k():
    """The kernels module (imports Numba on first use)."""
    global _kernels, _numba
    if _kernels is None:
        import numba

        from . import _numba_kernels

        _numba, _kernels = numba, _numba_kernels
    return _kernels


_numba = None

# Below this many multiply-adds a call runs on one thread: waking a second one
# costs more than it saves. Pooling and unfolding count elements or taps, which
# are cheaper (vectorized loads and compares), hence the smaller threshold.
_SERIAL_WORK = 1 << 18
_SERIAL_TAPS = 1 << 16


def _nt(work: int, serial: int = _SERIAL_WORK) -> int:
    """The threads for `work`: 1 below `serial`, else fastconv's thread count
    capped by Numba's pool, which Numba is then set to use. For kernels that
    take it as `nt` and enter no parallel region for 1. Call _k() first."""
    if work < serial:
        return 1
    from .._threads import get_num_threads

    n = min(get_num_threads(), _numba.config.NUMBA_NUM_THREADS)
    _numba.set_num_threads(n)
    return n


def _threads(work: int, serial: int = _SERIAL_WORK) -> int:
    """_nt for kernels whose parallel loop runs anyway: Numba is set to 1 too."""
    n = _nt(work, serial)
    if n == 1:
        _numba.set_num_threads(1)
    return n


# ------------------------------------------------------- GEMM blocks


def gemm_rows(n, oh, ow, ckk, nt):
    """Output rows per block of the _numba_kernels GEMM kernels: about 512
    pixels (fewer when the columns of a block would pass 4 MB). Small images
    go whole, several to a block; larger ones are split into equal parts, a
    block count that is a multiple of the threads. Plain Python, so callers
    need no Numba."""
    pixels = max(64, min(512, (4 << 20) // (4 * ckk)))
    if oh * ow <= pixels:
        per = max(1, min(pixels // (oh * ow), -(-n // nt)))
        return oh * per
    parts = -(-oh // max(1, pixels // ow))
    parts = -(-(-(-n * parts // nt) * nt) // n)
    return -(-oh // parts)


# Unit-stride layers with at most this many filters per group run the direct
# kernel (conv2d_few_filters): their GEMM blocks are too thin for BLAS. It
# measured 2.1-2.7x the GEMM path at 6-16 filters (lenet_c1, lenet_c2, 8-16
# filters on 32-64 wide images), 1.2-1.3x at 32, about even at 64.
_FEW_FILTERS = 32


def few_filters(spec) -> bool:
    """Whether conv2d runs conv2d_few_filters (groups < C; depthwise has its own)."""
    return spec.stride == (1, 1) and spec.k // spec.groups <= _FEW_FILTERS \
        and spec.groups < spec.c


def filter_chunk(n, k, nt) -> int:
    """conv2d_few_filters' filters per task: all of them, unless the batch is
    too small to share out evenly (under 8 images per thread); then a
    multiple of 4, so that the tasks are a multiple of the threads."""
    if n >= 8 * nt:
        return k
    parts = nt // math.gcd(n, nt)
    return -(-k // (4 * parts)) * 4


# Unit-stride layers with rows this short unfold whole input rows (conv2d_gemm's
# q = W) when the GEMM's extra columns, W/OW - 1, stay within half.
_WIDE_BELOW = 32


def unfold_width(spec) -> int:
    """conv2d_gemm's q: W when unfolding whole rows pays, else OW."""
    if spec.stride == (1, 1) and spec.ow < spec.w and spec.ow < _WIDE_BELOW \
            and 2 * spec.w <= 3 * spec.ow:
        return spec.w
    return spec.ow


def backward_rows(rows, kh, dh, sh):
    """_numba_kernels.conv2d_gemm_backward's block rows: at least (KH-1)*dh // sh,
    so blocks two apart never add into the same input row."""
    return max(rows, (kh - 1) * dh // sh)


# ------------------------------------------------------------------ BLAS

# NumPy's BLAS by symbol: (sgemm, dgemm, 64-bit integers, thread count get, set).
# NumPy's wheels carry scipy-openblas (ILP64); other builds link a plain one.
_CBLAS = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", True,
     "scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", False,
     "scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("cblas_sgemm64_", "cblas_dgemm64_", True,
     "openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("cblas_sgemm", "cblas_dgemm", False, "openblas_get_num_threads", "openblas_set_num_threads"),
    ("cblas_sgemm", "cblas_dgemm", False, "MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),
)


def _numpy_blas_handles():
    """ctypes handles in which NumPy's BLAS symbols may be found: NumPy's
    extension module (dlsym searches the libraries it links), then the BLAS
    libraries threadpoolctl finds in NumPy's directories."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    yield ctypes.CDLL(core._multiarray_umath.__file__)
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        if os.path.basename(os.path.dirname(lib.filepath)).startswith("numpy"):
            yield ctypes.CDLL(lib.filepath)


class _Blas:
    """NumPy's own BLAS, which the GEMM kernels call by address (cblas_?gemm),
    and its thread count, held at 1 while Numba's threads call it.

    `reason` is '' when a GEMM was found. `single` is False when the thread
    count cannot be set; the caller then runs the GEMM kernels on one Numba
    thread and lets BLAS run its own.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved = None
        self.gemm = {}  # dtype -> function address
        self.ilp64 = False
        self._get = self._set = None
        self.reason = "NumPy's BLAS has no cblas_sgemm/cblas_dgemm the numba backend knows"
        try:
            self._find()
        except Exception as exc:  # no dlsym (an unknown platform), an unloadable library
            self.reason = f"NumPy's BLAS could not be found: {exc}"

    def _find(self):
        for handle in _numpy_blas_handles():
            for sgemm, dgemm, ilp64, get, set_ in _CBLAS:
                s, d = getattr(handle, sgemm, None), getattr(handle, dgemm, None)
                if s is None or d is None:
                    continue
                self.gemm = {np.dtype(np.float32): ctypes.cast(s, ctypes.c_void_p).value,
                             np.dtype(np.float64): ctypes.cast(d, ctypes.c_void_p).value}
                self.ilp64 = ilp64
                self.reason = ""
                if hasattr(handle, get) and hasattr(handle, set_):
                    self._get, self._set = getattr(handle, get), getattr(handle, set_)
                    self._set.argtypes = [ctypes.c_int]
                    return
            if self.gemm:
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


_blas_found = None
_blas_lock = threading.Lock()


def _blas() -> _Blas:
    global _blas_found
    if _blas_found is None:
        with _blas_lock:
            if _blas_found is None:
                _blas_found = _Blas()
    return _blas_found


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
        if op == "conv2d_backward" or (op == "conv2d" and spec.groups != spec.c
                                       and not few_filters(spec)):
            if self._gemm_reason is None:
                self._gemm_reason = _blas().reason
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
        k = _kernels or _k()
        top, _, left, _ = spec.pads
        if spec.padding_mode != "zeros":  # pad a copy; the kernels pad with zeros only
            from . import numpy_ref

            x = _readonly(np.ascontiguousarray(numpy_ref.pad(x, spec.pads, spec.padding_mode)))
            top = left = 0
        args = (self._bias(bias, spec.dtype), bias is not None, spec.activation == "relu", out)
        (sh, sw), (dh, dw) = spec.stride, spec.dilation
        if spec.c == spec.groups:
            nt = _nt(spec.flops // 2)
            if nt == 1:  # the serial body itself: no parallel function's entry (1-2 us)
                k._depthwise_planes(x, weight, *args, sh, sw, top, left, dh, dw,
                                    np.zeros(1, np.int64))
            else:
                k.conv2d_depthwise(x, weight, *args, sh, sw, top, left, dh, dw, nt)
            return
        if few_filters(spec):
            nt = _nt(spec.flops // 2)
            kchunk = filter_chunk(spec.n, spec.k, nt)
            if nt == 1:
                k._few_filter_tasks(x, weight, *args, top, left, dh, dw, kchunk,
                                    np.zeros(1, np.int64))
            else:
                k.conv2d_few_filters(x, weight, *args, top, left, dh, dw, kchunk, nt)
            return
        blas = _blas()
        # Without a settable BLAS thread count, BLAS runs its own threads: it owns the cores.
        nt = _nt(spec.flops // 2) if blas.single else 1
        w2 = weight.reshape(spec.k, -1)
        q = unfold_width(spec) if spec.padding_mode == "zeros" else spec.ow
        rows = gemm_rows(spec.n, spec.oh, q, w2.shape[1] * spec.groups, nt)
        call = (x, w2, *args, spec.kh, spec.kw, sh, sw, top, left, dh, dw, spec.groups, rows,
                q)
        if nt == 1:  # BLAS may thread (it will not on small products)
            k._conv2d_blocks(*call, blas.gemm[spec.dtype], blas.ilp64, np.zeros(1, np.int64))
        else:
            with blas:
                k.conv2d_gemm(*call, nt, blas.gemm[spec.dtype], blas.ilp64)

    def conv2d_backward(self, spec, grad_out, x, weight):
        """-> (grad_input, grad_weight, grad_bias); grad_bias by NumPy, as the reference."""
        from . import numpy_ref

        k = _k()
        top, bottom, left, right = spec.pads
        if spec.padding_mode != "zeros":  # gradient of a padded copy, then pad's adjoint
            x = _readonly(np.ascontiguousarray(numpy_ref.pad(x, spec.pads, spec.padding_mode)))
            top = bottom = left = right = 0
        n, c, h, w = x.shape
        blas = _blas()
        nt = _threads(spec.flops) if blas.single else _threads(0)
        w2 = weight.reshape(spec.k, -1)
        rows = gemm_rows(spec.n, spec.oh, spec.ow, w2.shape[1] * spec.groups, nt)
        rows = backward_rows(rows, spec.kh, spec.dilation[0], spec.stride[0])
        gi = np.zeros((n, c, h + top + bottom, w + left + right), spec.dtype)
        gw = np.zeros((nt, *w2.shape), spec.dtype)
        with blas:
            k.conv2d_gemm_backward(x, w2, grad_out, gi, gw, spec.kh, spec.kw, *spec.stride,
                                   top, left, *spec.dilation, spec.groups, rows, nt,
                                   blas.gemm[spec.dtype], blas.ilp64)
        if spec.padding_mode != "zeros":
            gi = numpy_ref.pad_adjoint(gi, spec.pads, spec.padding_mode, spec.h, spec.w)
        else:
            gi = gi[:, :, top:top + spec.h, left:left + spec.w]
        return gi, gw.sum(axis=0).reshape(weight.shape), grad_out.sum(axis=(0, 2, 3))

    def im2col(self, spec, x, out) -> None:
        _k()
        _threads(out.size, _SERIAL_TAPS)
        top, _, left, _ = spec.pads
        _k().im2col(x, out, spec.kh, spec.kw, *spec.stride, top, left, *spec.dilation,
                    spec.oh, spec.ow)

    def col2im(self, spec, cols, out) -> None:
        _k()
        _threads(cols.size, _SERIAL_TAPS)
        top, _, left, _ = spec.pads
        _k().col2im(cols, out, spec.kh, spec.kw, *spec.stride, top, left, *spec.dilation,
                    spec.oh, spec.ow)

    def max_pool2d(self, spec, x, out, indices) -> None:
        _kernels or _k()
        nt = _nt(out.size * spec.kh * spec.kw, _SERIAL_TAPS)
        want = indices is not None
        if not want:
            indices = self._no_indices()
        _k().max_pool2d(x, out, indices, want, spec.kh, spec.kw, *spec.stride,
                        *spec.padding, *spec.dilation, nt)

    def avg_pool2d(self, spec, x, out) -> None:
        _k()
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
        _k()
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
