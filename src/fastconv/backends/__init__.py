"""Backends: objects with a name, an availability check and one method per op.

Each op method takes the validated spec from fastconv._params and read-only,
C-contiguous arrays of the compute dtype, and writes into the `out` arrays it
is handed. Backends never re-check arguments.
"""

from __future__ import annotations

import numpy as np

OPS = ("conv2d", "conv2d_backward", "max_pool2d", "avg_pool2d", "im2col", "col2im",
       "max_pool2d_backward", "avg_pool2d_backward")


class Backend:
    """Base class: `name`, `available()` -> (bool, reason), `supports(op, spec)`."""

    name = ""

    def available(self) -> tuple[bool, str]:
        return True, ""

    def supports(self, op: str, spec) -> str:
        """'' if this backend runs `op` for `spec`, else why not."""
        if not callable(getattr(self, op, None)):
            return f"the {self.name} backend does not implement {op} yet"
        return ""


class NumpyBackend(Backend):
    """The pure-NumPy reference, always available."""

    name = "numpy"

    def __init__(self):
        from . import numpy_ref

        for op in OPS:
            setattr(self, op, getattr(numpy_ref, op))


class CppBackend(Backend):
    """The compiled extension fastconv._cpp."""

    name = "cpp"

    def __init__(self):
        self._module = None
        self._reason = ""
        try:
            from .. import _cpp
        except ImportError as exc:
            self._reason = f"fastconv._cpp failed to import: {exc}"
        else:
            self._module = _cpp

    @property
    def module(self):
        return self._module

    def available(self) -> tuple[bool, str]:
        return self._module is not None, self._reason

    def conv2d(self, spec, x, weight, bias, out) -> None:
        from . import numpy_ref
        from .._threads import get_num_threads

        top, _, left, _ = spec.pads
        if spec.padding_mode != "zeros":  # pad a copy; the kernel pads with zeros only
            x = np.ascontiguousarray(numpy_ref.pad(x, spec.pads, spec.padding_mode))
            top = left = 0
        self._module.conv2d(x, weight, bias, out, spec.stride, (top, left), spec.dilation,
                            spec.groups, spec.activation == "relu", get_num_threads())


class NumbaBackend(Backend):
    """Numba JIT kernels; importing Numba is deferred until first asked."""

    name = "numba"

    def __init__(self):
        self._checked = None

    def available(self) -> tuple[bool, str]:
        if self._checked is None:
            try:
                import numba  # noqa: F401
            except Exception as exc:  # ImportError, or a broken llvmlite
                self._checked = (False, f"numba is not importable: {exc}")
            else:
                self._checked = (True, "")
        return self._checked
