"""The Numba backend adapter; the JIT kernels load on first use."""

from __future__ import annotations

from . import Backend


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
