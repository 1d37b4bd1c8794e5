"""The NumPy reference's GEMM formulation agrees with a direct loop."""

import numpy as np
import pytest

import fastconv as fc
from fastconv.backends import numpy_ref


def direct_conv2d(x, w, stride, pads, dilation, groups):
    """Cross-correlation by explicit loops over output pixels (tiny shapes only)."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, hp, wp = xp.shape
    k, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, k, oh, ow))
    kg = k // groups
    for f in range(k):
        g = f // kg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, f, i, j] = np.einsum("nchw,chw->n", patch, w[f])
    return out


CASES = [
    # x shape, weight shape, stride, padding, dilation, groups
    ((2, 4, 19, 17), (6, 2, 3, 3), (1, 1), ((1, 2), (0, 1)), (1, 1), 2),
    ((1, 3, 20, 23), (4, 3, 5, 3), (2, 1), ((2, 2), (1, 1)), (1, 2), 1),
    ((3, 4, 18, 18), (8, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (2, 2), 4),
    ((2, 8, 17, 16), (5, 8, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),  # input is the matrix
]


@pytest.mark.parametrize("case", CASES)
def test_gemm_formulation_matches_direct_loops(case):
    xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    pads = (*padding[0], *padding[1])
    expected = direct_conv2d(x, w, stride, pads, dilation, groups) + b[:, None, None]
    got = fc.conv2d(x, w, b, stride, padding, dilation, groups, backend="numpy")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * (1 + np.abs(expected).max()))
    relu = fc.conv2d(x, w, b, stride, padding, dilation, groups, activation="relu",
                     backend="numpy")
    np.testing.assert_allclose(relu, np.maximum(expected, 0), rtol=0, atol=1e-10 * (1 + np.abs(expected).max()))


def test_1x1_unit_stride_reads_the_input_in_place():
    x = np.random.default_rng(2).standard_normal((2, 8, 16, 16))
    spec, x4, _, _ = fc._params.conv2d(x, np.ones((3, 8, 1, 1)), None, 1, 0, 1, 1,
                                      "zeros", None)
    assert np.shares_memory(numpy_ref.unfold(x4, spec), x4)
