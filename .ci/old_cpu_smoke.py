"""Run by .ci/old_cpu under an emulated CPU: fastconv's compiled kernels, end to end.

usage: python old_cpu_smoke.py EXPECTED_ISA_PATH

Checks that the extension picked EXPECTED_ISA_PATH by itself (FASTCONV_ISA must
be unset) and that conv2d (GEMM, direct/depthwise and 1x1 kernels), max/avg
pooling, their gradients and im2col on the cpp backend match the NumPy
reference, with one thread and with several.
"""

import os
import sys

import numpy as np

import fastconv as fc
from fastconv import _cpp

expected = sys.argv[1]
assert "FASTCONV_ISA" not in os.environ, "the path must be picked without FASTCONV_ISA"
features = _cpp.cpu_features()
print(f"cpu features {features}, isa path {_cpp.isa_path()}", flush=True)
assert _cpp.isa_path() == expected, (_cpp.isa_path(), expected)
if expected == "generic":
    assert not any(features.values()), features

rng = np.random.default_rng(0)


def close(a, b, dtype):
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


calls = 0
for threads in (1, 3):
    fc.set_num_threads(threads)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 6, 17, 19)).astype(dtype)
        for wshape, kw in [((8, 6, 3, 3), dict(padding=1)),                   # GEMM
                           ((6, 1, 3, 3), dict(padding="same", groups=6)),    # direct
                           ((5, 6, 1, 1), {}),                                # 1x1
                           ((4, 3, 3, 2), dict(stride=2, dilation=2, groups=2))]:
            w = rng.standard_normal(wshape).astype(dtype)
            b = rng.standard_normal(wshape[0]).astype(dtype)
            y = fc.conv2d(x, w, b, activation="relu", backend="cpp", **kw)
            close(y, fc.conv2d(x, w, b, activation="relu", backend="numpy", **kw), dtype)
            g = rng.standard_normal(y.shape).astype(dtype)
            got = fc.conv2d_backward(g, x, w, backend="cpp", **kw)
            ref = fc.conv2d_backward(g, x, w, backend="numpy", **kw)
            for a, r in zip(got, ref):
                close(a, r, dtype)
            calls += 4
        for k, s in [(2, 2), (3, 1)]:
            y, idx = fc.max_pool2d(x, k, s, return_indices=True, backend="cpp")
            ry, ridx = fc.max_pool2d(x, k, s, return_indices=True, backend="numpy")
            assert np.array_equal(y, ry) and np.array_equal(idx, ridx)
            g = rng.standard_normal(y.shape).astype(dtype)
            close(fc.max_pool2d_backward(g, x, k, s, backend="cpp"),
                  fc.max_pool2d_backward(g, x, k, s, backend="numpy"), dtype)
            close(fc.avg_pool2d(x, k, s, padding=1, backend="cpp"),
                  fc.avg_pool2d(x, k, s, padding=1, backend="numpy"), dtype)
            close(fc.avg_pool2d_backward(g, x.shape, k, s, backend="cpp"),
                  fc.avg_pool2d_backward(g, x.shape, k, s, backend="numpy"), dtype)
            calls += 6
        close(fc.im2col(x, 3, padding=1, backend="cpp"),
              fc.im2col(x, 3, padding=1, backend="numpy"), dtype)
        calls += 2
print(f"ok: {calls} cpp calls on the {_cpp.isa_path()} path matched the NumPy reference")
