"""fastconv: fast 2-D convolution and pooling on NumPy arrays.

    import fastconv as fc
    y = fc.conv2d(x, w, b, stride=1, padding="same", activation="relu")
    y = fc.max_pool2d(y, 2)

Three backends share one contract: "cpp" (compiled kernels), "numba" (JIT) and
"numpy" (the reference). backend="auto" picks one per call by measured rules, or
by timing the first call of each signature (fc.autotune(True)); fc.explain() says
which and why.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from ._api import (Conv2dGrads, avg_pool2d, avg_pool2d_backward, col2im, conv2d,
                   conv2d_backward, explain, im2col, max_pool2d, max_pool2d_backward)
from ._dispatch import BackendInfo, BackendUnavailableError, backends, use_backend
from ._threads import get_num_threads, set_num_threads
from ._tuning import autotune, tuning_cache

try:
    __version__ = _version("fastconv")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BackendInfo", "BackendUnavailableError", "Conv2dGrads", "autotune", "avg_pool2d",
    "avg_pool2d_backward", "backends", "col2im", "conv2d", "conv2d_backward", "explain",
    "get_num_threads", "im2col", "max_pool2d", "max_pool2d_backward", "set_num_threads",
    "tuning_cache", "use_backend",
]


def __getattr__(name):
    """fastconv.nn and fastconv.dask load on first use (neither imports Dask itself)."""
    if name in ("nn", "dask"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
