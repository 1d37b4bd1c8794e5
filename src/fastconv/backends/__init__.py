"""Backends: objects with a name, an availability check and one method per op.

Each op method takes the validated spec from fastconv._params and read-only,
C-contiguous arrays of the compute dtype, and writes into the `out` arrays it
is handed. Backends never re-check arguments.
"""

from __future__ import annotations

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
