"""The adapter for the compiled extension fastconv._cpp."""

from __future__ import annotations

import numpy as np

from . import Backend


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
