"""The adapter for the compiled extension fastconv._cpp."""

from __future__ import annotations

import numpy as np

from .._threads import get_num_threads
from . import Backend, numpy_ref

# Below this many filters per group conv2d runs the direct kernel (the C++
# kernels' own rule, cpp/direct/direct.h; the extension exports it, and a test
# checks this copy for when it is missing).
DIRECT_BELOW_GROUP_FILTERS = 4


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

    def supports(self, op: str, spec) -> str:
        if op == "max_pool2d" and spec.dtype == np.float32 and spec.h * spec.w >= 2**31:
            return "the cpp max_pool2d keeps float32 window positions in 32 bits"
        return super().supports(op, spec)

    @staticmethod
    def conv2d_kernel(spec) -> str:
        """The C++ kernel conv2d runs: "direct" where a GEMM would be the wrong
        shape (few filters per group, as in depthwise convolution), "1x1" where
        the input already is the GEMM's B matrix, else "gemm" (implicit im2col)."""
        if spec.k // spec.groups < DIRECT_BELOW_GROUP_FILTERS:
            return "direct"
        if spec.pointwise:
            return "1x1"
        return "gemm"

    @staticmethod
    def _zero_padded(spec, x):
        """x and its (top, left) padding for kernels that pad with zeros only:
        other padding modes pad a copy."""
        top, _, left, _ = spec.pads
        if spec.padding_mode == "zeros":
            return x, (top, left)
        return np.ascontiguousarray(numpy_ref.pad(x, spec.pads, spec.padding_mode)), (0, 0)

    def conv2d(self, spec, x, weight, bias, out, kernel=None) -> None:
        """kernel: None for conv2d_kernel(spec)'s choice, else "direct", "gemm" or
        "1x1" (where it applies), as the dispatcher's rules or autotuning pick."""
        x, top_left = self._zero_padded(spec, x)
        self._module.conv2d(x, weight, bias, out, spec.stride, top_left, spec.dilation,
                            spec.groups, spec.activation == "relu", get_num_threads(),
                            kernel or self.conv2d_kernel(spec))

    def conv2d_backward(self, spec, grad_out, x, weight):
        xp, top_left = self._zero_padded(spec, x)
        grad_input = np.empty(xp.shape, spec.dtype)
        grad_weight = np.empty(weight.shape, spec.dtype)
        grad_bias = np.empty(spec.k, spec.dtype)
        self._module.conv2d_backward(grad_out, xp, weight, grad_input, grad_weight, grad_bias,
                                     spec.stride, top_left, spec.dilation, spec.groups,
                                     get_num_threads())
        if xp is not x:  # back through the padding copy
            grad_input = numpy_ref.pad_adjoint(grad_input, spec.pads, spec.padding_mode,
                                               spec.h, spec.w)
        return grad_input, grad_weight, grad_bias

    def im2col(self, spec, x, out) -> None:
        top, _, left, _ = spec.pads
        self._module.im2col(x, out, (spec.kh, spec.kw), spec.stride, (top, left),
                            spec.dilation, (spec.oh, spec.ow), get_num_threads())

    def col2im(self, spec, cols, out) -> None:
        top, _, left, _ = spec.pads
        self._module.col2im(cols, out, (spec.kh, spec.kw), spec.stride, (top, left),
                            spec.dilation, (spec.oh, spec.ow), get_num_threads())

    def max_pool2d(self, spec, x, out, indices) -> None:
        self._module.max_pool2d(x, out, indices, (spec.kh, spec.kw), spec.stride, spec.padding,
                                spec.dilation, get_num_threads())

    def avg_pool2d(self, spec, x, out) -> None:
        self._module.avg_pool2d(x, out, (spec.kh, spec.kw), spec.stride, spec.padding,
                                spec.count_include_pad, spec.divisor_override or 0,
                                get_num_threads())

    def max_pool2d_backward(self, spec, grad_out, x):
        out = np.empty(grad_out.shape, spec.dtype)
        indices = np.empty(grad_out.shape, np.int64)
        self.max_pool2d(spec, x, out, indices)
        grad_input = np.empty(x.shape, spec.dtype)
        self._module.max_pool2d_backward(grad_out, indices, grad_input, get_num_threads())
        return grad_input

    def avg_pool2d_backward(self, spec, grad_out):
        grad_input = np.empty((spec.n, spec.c, spec.h, spec.w), spec.dtype)
        self._module.avg_pool2d_backward(grad_out, grad_input, (spec.kh, spec.kw), spec.stride,
                                         spec.padding, spec.count_include_pad,
                                         spec.divisor_override or 0, get_num_threads())
        return grad_input
