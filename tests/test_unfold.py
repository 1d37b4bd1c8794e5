"""im2col / col2im: the textbook layout, PyTorch's unfold/fold, adjointness and edge cases."""

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv as fc

# ----------------------------------------------------------------- backends

_X = np.arange(16.0).reshape(1, 1, 4, 4)
_TRIVIAL = {
    "im2col": lambda b: fc.im2col(_X, 2, backend=b),
    "col2im": lambda b: fc.col2im(np.ones((9, 4)), (1, 1, 4, 4), 2, backend=b),
}


def _backends_for(op):
    """Available backends that implement `op` (a trivial call does not raise
    BackendUnavailableError)."""
    names = []
    for name, info in fc.backends().items():
        if not info.available:
            continue
        try:
            _TRIVIAL[op](name)
        except fc.BackendUnavailableError:
            continue
        names.append(name)
    return names


IM2COL = _backends_for("im2col")
COL2IM = _backends_for("col2im")
im2col_backends = pytest.mark.parametrize("backend", IM2COL)
col2im_backends = pytest.mark.parametrize("backend", COL2IM)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------ helpers


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding):
    """(top, bottom, left, right) from the int, pair and pair-of-pairs forms."""
    if isinstance(padding, int):
        return (padding,) * 4
    if isinstance(padding[0], (tuple, list)):
        return (*padding[0], *padding[1])
    return (padding[0], padding[0], padding[1], padding[1])


def _geometry(h, w, kernel, stride, padding, dilation):
    """(OH, OW), or None when the dilated kernel is larger than the padded input."""
    kh, kw = _as_pair(kernel)
    sh, sw = _as_pair(stride)
    dh, dw = _as_pair(dilation)
    top, bottom, left, right = _pads(padding)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if span_h > h + top + bottom or span_w > w + left + right:
        return None
    return (h + top + bottom - span_h) // sh + 1, (w + left + right - span_w) // sw + 1


def _direct_im2col(x, kernel, stride, padding, dilation):
    """The layout of API.md by explicit loops: row (n*OH + oh)*OW + ow,
    column (c*KH + kh)*KW + kw, zero padding."""
    n, c, h, w = x.shape
    kh, kw = _as_pair(kernel)
    sh, sw = _as_pair(stride)
    dh, dw = _as_pair(dilation)
    top, _, left, _ = _pads(padding)
    oh, ow = _geometry(h, w, kernel, stride, padding, dilation)
    cols = np.zeros((n * oh * ow, c * kh * kw))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    for a in range(kh):
                        for e in range(kw):
                            r, q = i * sh - top + a * dh, j * sw - left + e * dw
                            if 0 <= r < h and 0 <= q < w:
                                cols[(b * oh + i) * ow + j, (ch * kh + a) * kw + e] = x[b, ch, r, q]
    return cols


def _textbook_im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Deep Learning from Scratch, ch. 7 (common/util.py), verbatim in substance."""
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def _coverage(h, w, kernel, stride, padding, dilation):
    """How many (window, tap) pairs read each input pixel, by direct loops."""
    kh, kw = _as_pair(kernel)
    sh, sw = _as_pair(stride)
    dh, dw = _as_pair(dilation)
    top, _, left, _ = _pads(padding)
    oh, ow = _geometry(h, w, kernel, stride, padding, dilation)
    count = np.zeros((h, w), np.int64)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for e in range(kw):
                    r, q = i * sh - top + a * dh, j * sw - left + e * dw
                    if 0 <= r < h and 0 <= q < w:
                        count[r, q] += 1
    return count


def _tol(dtype, ref):
    ref = np.asarray(ref)
    scale = 1 + (float(np.abs(ref).max()) if ref.size else 0.0)
    return (1e-4 if np.dtype(dtype) == np.float32 else 1e-10) * scale


def _assert_close(got, ref, dtype):
    ref = np.asarray(ref)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.dtype(dtype)
    assert got.shape == ref.shape
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, rtol=0, atol=_tol(dtype, ref))


def _torch_unfold(torch, x, kernel, stride, padding, dilation):
    """F.unfold's (N, C*KH*KW, L) rearranged to (N*L, C*KH*KW); asymmetric padding
    done with np.pad first."""
    top, bottom, left, right = _pads(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    u = torch.nn.functional.unfold(torch.tensor(xp), kernel, dilation=dilation, padding=0,
                                   stride=stride)
    n, ckk, length = u.shape
    return u.transpose(1, 2).reshape(n * length, ckk).numpy()


def _torch_fold(torch, cols, shape, kernel, stride, padding, dilation):
    """F.fold into the padded image, then cropped."""
    n, c, h, w = shape
    top, bottom, left, right = _pads(padding)
    ckk = cols.shape[1]
    t = torch.tensor(np.ascontiguousarray(cols)).reshape(n, -1, ckk).transpose(1, 2)
    folded = torch.nn.functional.fold(t, (h + top + bottom, w + left + right), kernel,
                                      dilation=dilation, padding=0, stride=stride).numpy()
    return folded[:, :, top:top + h, left:left + w]


def _readonly_copy(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


# --------------------------------------------------------------- strategies


def _int_or_pair(draw, lo, hi):
    if draw(st.booleans()):
        return draw(st.integers(lo, hi))
    return (draw(st.integers(lo, hi)), draw(st.integers(lo, hi)))


@st.composite
def unfold_cases(draw):
    kernel = _int_or_pair(draw, 1, 4)
    stride = _int_or_pair(draw, 1, 3)
    dilation = _int_or_pair(draw, 1, 3)
    form = draw(st.sampled_from(["int", "pair", "pairs"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
    elif form == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    else:
        padding = ((draw(st.integers(0, 3)), draw(st.integers(0, 3))),
                   (draw(st.integers(0, 3)), draw(st.integers(0, 3))))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)),
             draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    return dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation, shape=shape,
                seed=draw(st.integers(0, 2**32 - 1)))


def _args(case):
    return case["kernel"], case["stride"], case["padding"], case["dilation"]


# ------------------------------------------------------------------ layout


@im2col_backends
def test_textbook_layout_on_a_tiny_example(backend):
    x = np.arange(18.0).reshape(1, 2, 3, 3)
    # rows: windows (oh, ow) in row-major order; columns: channel 0's 2x2 patch, then channel 1's
    expected = np.array([
        [0, 1, 3, 4, 9, 10, 12, 13],
        [1, 2, 4, 5, 10, 11, 13, 14],
        [3, 4, 6, 7, 12, 13, 15, 16],
        [4, 5, 7, 8, 13, 14, 16, 17],
    ], np.float64)
    got = fc.im2col(x, 2, backend=backend)
    assert got.dtype == np.float64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


@im2col_backends
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (3, 1, 1, 1),
    ((2, 3), (1, 2), (1, 0), 1),
    (2, 2, ((0, 1), (2, 1)), (1, 2)),
    ((3, 2), 1, ((2, 0), (0, 1)), (2, 1)),
    (1, 1, 0, 1),
])
def test_layout_matches_direct_loops(backend, kernel, stride, padding, dilation):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6))
    got = fc.im2col(x, kernel, stride, padding, dilation, backend=backend)
    np.testing.assert_array_equal(got, _direct_im2col(x, kernel, stride, padding, dilation))


@im2col_backends
@pytest.mark.parametrize("k, stride, pad", [(3, 1, 1), (2, 2, 0), (5, 1, 2), (3, 2, 1)])
def test_matches_the_textbook_im2col(backend, k, stride, pad):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 7))
    got = fc.im2col(x, k, stride, pad, backend=backend)
    np.testing.assert_array_equal(got, _textbook_im2col(x, k, k, stride, pad))


# ------------------------------------------------------- hypothesis sweeps


@im2col_backends
@settings(max_examples=50, deadline=None)
@given(case=unfold_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_im2col_matches_torch_unfold(torch, backend, case, dtype):
    n, c, h, w = case["shape"]
    x = np.random.default_rng(case["seed"]).standard_normal(case["shape"]).astype(dtype)
    before = x.copy()
    geom = _geometry(h, w, *_args(case))
    if geom is None:
        with pytest.raises(ValueError, match="kernel"):
            fc.im2col(x, *_args(case), backend=backend)
        return
    got = fc.im2col(x, *_args(case), backend=backend)
    kh, kw = _as_pair(case["kernel"])
    assert got.shape == (n * geom[0] * geom[1], c * kh * kw)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _torch_unfold(torch, x, *_args(case)))
    np.testing.assert_array_equal(x, before)


@col2im_backends
@settings(max_examples=50, deadline=None)
@given(case=unfold_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_col2im_matches_torch_fold(torch, backend, case, dtype):
    n, c, h, w = case["shape"]
    geom = _geometry(h, w, *_args(case))
    kh, kw = _as_pair(case["kernel"])
    if geom is None:
        with pytest.raises(ValueError, match="kernel"):
            fc.col2im(np.zeros((n, c * kh * kw)), case["shape"], *_args(case), backend=backend)
        return
    rng = np.random.default_rng(case["seed"])
    cols = rng.standard_normal((n * geom[0] * geom[1], c * kh * kw)).astype(dtype)
    before = cols.copy()
    got = fc.col2im(cols, case["shape"], *_args(case), backend=backend)
    _assert_close(got, _torch_fold(torch, cols, case["shape"], *_args(case)), dtype)
    np.testing.assert_array_equal(cols, before)


@pytest.mark.parametrize("im_backend", IM2COL)
@pytest.mark.parametrize("col_backend", COL2IM)
@settings(max_examples=50, deadline=None)
@given(case=unfold_cases())
def test_col2im_is_the_adjoint_of_im2col(im_backend, col_backend, case):
    n, c, h, w = case["shape"]
    geom = _geometry(h, w, *_args(case))
    if geom is None:
        return
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    cx = fc.im2col(x, *_args(case), backend=im_backend)
    cols = rng.standard_normal(cx.shape)
    xc = fc.col2im(cols, case["shape"], *_args(case), backend=col_backend)
    lhs, rhs = np.vdot(cx, cols), np.vdot(x, xc)
    scale = np.abs(cx).sum() * np.abs(cols).max() + 1
    assert abs(lhs - rhs) <= 1e-10 * scale, (lhs, rhs)


@pytest.mark.parametrize("im_backend", IM2COL)
@pytest.mark.parametrize("col_backend", COL2IM)
@settings(max_examples=40, deadline=None)
@given(case=unfold_cases())
def test_col2im_of_im2col_counts_the_covering_windows(im_backend, col_backend, case):
    n, c, h, w = case["shape"]
    if _geometry(h, w, *_args(case)) is None:
        return
    x = np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    back = fc.col2im(fc.im2col(x, *_args(case), backend=im_backend), case["shape"],
                     *_args(case), backend=col_backend)
    count = _coverage(h, w, *_args(case))
    np.testing.assert_allclose(back, x * count, rtol=0, atol=1e-12 * (1 + count.max()))


@im2col_backends
@settings(max_examples=30, deadline=None)
@given(case=unfold_cases(), k=st.integers(1, 3))
def test_conv2d_is_im2col_times_the_weight_matrix(backend, case, k):
    n, c, h, w = case["shape"]
    geom = _geometry(h, w, *_args(case))
    if geom is None:
        return
    kh, kw = _as_pair(case["kernel"])
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    weight = rng.standard_normal((k, c, kh, kw))
    cols = fc.im2col(x, *_args(case), backend=backend)
    via_cols = (cols @ weight.reshape(k, -1).T).reshape(n, *geom, k).transpose(0, 3, 1, 2)
    kernel, stride, padding, dilation = _args(case)
    conv = fc.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation)
    _assert_close(conv, via_cols, np.float64)


# ---------------------------------------------------------- explicit cases


@im2col_backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (3, 1, 1, 1), ((2, 3), (2, 1), (1, 2), 1), (3, 2, ((0, 2), (1, 0)), (2, 1)),
    (2, (1, 3), 0, (3, 2)), (4, 1, 2, 1),
])
def test_im2col_and_col2im_explicit_cases_match_torch(torch, backend, dtype, kernel, stride,
                                                      padding, dilation):
    rng = np.random.default_rng(2)
    shape = (2, 3, 7, 8)
    x = rng.standard_normal(shape).astype(dtype)
    cols = fc.im2col(x, kernel, stride, padding, dilation, backend=backend)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, _torch_unfold(torch, x, kernel, stride, padding,
                                                      dilation))
    g = rng.standard_normal(cols.shape).astype(dtype)
    for col_backend in COL2IM:
        _assert_close(fc.col2im(g, shape, kernel, stride, padding, dilation, backend=col_backend),
                      _torch_fold(torch, g, shape, kernel, stride, padding, dilation), dtype)


PROMOTIONS = [(np.int8, np.float32), (np.uint8, np.float32), (np.int16, np.float32),
              (np.bool_, np.float32), (np.float16, np.float32), (np.int32, np.float64),
              (np.int64, np.float64)]


@pytest.mark.parametrize("in_dtype, out_dtype", PROMOTIONS,
                         ids=[np.dtype(a).name for a, _ in PROMOTIONS])
def test_dtype_promotion(in_dtype, out_dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2 if in_dtype is np.bool_ else 100, (1, 2, 5, 5)).astype(in_dtype)
    expected = _direct_im2col(x.astype(np.float64), 3, 1, 1, 1).astype(out_dtype)
    for backend in IM2COL:
        got = fc.im2col(x, 3, 1, 1, backend=backend)
        assert got.dtype == out_dtype
        np.testing.assert_array_equal(got, expected)
    cols = rng.integers(0, 2 if in_dtype is np.bool_ else 100, (25, 18)).astype(in_dtype)
    for backend in COL2IM:
        got = fc.col2im(cols, (1, 2, 5, 5), 3, 1, 1, backend=backend)
        assert got.dtype == out_dtype
        # adjointness with integer data is exact in float64 for these sizes
        probe = rng.integers(0, 5, (1, 2, 5, 5)).astype(np.float64)
        assert np.vdot(got.astype(np.float64), probe) == np.vdot(
            cols.astype(np.float64), _direct_im2col(probe, 3, 1, 1, 1))


def _strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


LAYOUTS = {
    "transposed": lambda a: np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2),
    "negative_strides": lambda a: np.ascontiguousarray(a[..., ::-1, ::-1])[..., ::-1, ::-1],
    "fortran": np.asfortranarray,
    "strided": _strided,
}


@pytest.mark.parametrize("layout", list(LAYOUTS) + ["channels_last"])
def test_non_contiguous_inputs(layout):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 7))
    if layout == "channels_last":
        xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    else:
        xl = LAYOUTS[layout](x)
    assert not xl.flags.c_contiguous
    np.testing.assert_array_equal(xl, x)
    before = xl.copy()
    args = ((3, 2), (2, 1), ((1, 0), (1, 1)), (1, 2))
    expected = _direct_im2col(x, *args)
    for backend in IM2COL:
        np.testing.assert_array_equal(fc.im2col(xl, *args, backend=backend), expected)
    np.testing.assert_array_equal(xl, before)
    if layout == "channels_last":
        return
    cols = rng.standard_normal(expected.shape)
    cl = LAYOUTS[layout](cols)
    assert not cl.flags.c_contiguous
    for backend in COL2IM:
        _assert_close(fc.col2im(cl, x.shape, *args, backend=backend),
                      fc.col2im(cols, x.shape, *args, backend=backend), np.float64)
        # and the adjoint of the direct loop
        probe = rng.standard_normal(x.shape)
        got = fc.col2im(cl, x.shape, *args, backend=backend)
        assert abs(np.vdot(got, probe) - np.vdot(cols, _direct_im2col(probe, *args))) < 1e-9


def test_array_likes_are_accepted():
    x = np.arange(18).reshape(1, 2, 3, 3)
    for backend in IM2COL:
        got = fc.im2col(x.tolist(), 2, backend=backend)
        np.testing.assert_array_equal(got, _direct_im2col(x, 2, 1, 0, 1))
    for backend in COL2IM:
        got = fc.col2im(np.ones((4, 8)).tolist(), [1, 2, 3, 3], 2, backend=backend)
        np.testing.assert_array_equal(got[0, 0], _coverage(3, 3, 2, 1, 0, 1))


def test_int_pair_and_pairs_forms_are_equivalent():
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6))
    for backend in IM2COL:
        a = fc.im2col(x, 3, 2, 1, 2, backend=backend)
        for form in (((3, 3), (2, 2), (1, 1), (2, 2)), ([3, 3], [2, 2], ((1, 1), (1, 1)), [2, 2]),
                     (np.int64(3), np.int32(2), [[1, 1], [1, 1]], np.int8(2))):
            np.testing.assert_array_equal(fc.im2col(x, *form, backend=backend), a)


def test_empty_batch():
    for backend in IM2COL:
        got = fc.im2col(np.zeros((0, 3, 5, 5), np.float32), 3, 1, 1, backend=backend)
        assert got.shape == (0, 27) and got.dtype == np.float32
        with pytest.raises(ValueError, match="kernel"):
            fc.im2col(np.zeros((0, 3, 5, 5)), 6, backend=backend)
    for backend in COL2IM:
        got = fc.col2im(np.zeros((0, 27)), (0, 3, 5, 5), 3, 1, 1, backend=backend)
        assert got.shape == (0, 3, 5, 5) and got.dtype == np.float64
        with pytest.raises(ValueError, match="cols"):
            fc.col2im(np.zeros((1, 27)), (0, 3, 5, 5), 3, 1, 1, backend=backend)


def test_inputs_are_never_written_and_results_are_fresh():
    rng = np.random.default_rng(6)
    x = _readonly_copy(rng.standard_normal((2, 2, 5, 5)))
    cols = _readonly_copy(rng.standard_normal((32, 8)))
    cols1 = _readonly_copy(rng.standard_normal((50, 2)))  # 1x1 kernel
    xs, cs, cs1 = x.copy(), cols.copy(), cols1.copy()
    for backend in IM2COL:
        # a 1x1 kernel with unit stride is the input reordered: still a new array
        got = fc.im2col(x, 1, backend=backend)
        assert got.flags.c_contiguous and got.flags.writeable
        assert not np.may_share_memory(got, x)
        got[...] = 0
        fc.im2col(x, 3, 1, 1, backend=backend)
    for backend in COL2IM:
        got = fc.col2im(cols, (2, 2, 5, 5), 2, backend=backend)
        assert got.flags.c_contiguous and not np.may_share_memory(got, cols)
        one = fc.col2im(cols1, (2, 2, 5, 5), 1, 1, 0, backend=backend)
        assert one.flags.c_contiguous and not np.may_share_memory(one, cols1)
        np.testing.assert_array_equal(one, cs1.reshape(2, 5, 5, 2).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(cols, cs)
    np.testing.assert_array_equal(cols1, cs1)


# ------------------------------------------------------------ error paths

_x = np.zeros((1, 2, 5, 5))

IM2COL_ERRORS = [
    ("3-D", dict(x=np.zeros((2, 5, 5)), kernel_size=2), ValueError, r"\bx\b"),
    ("2-D", dict(x=np.zeros((5, 5)), kernel_size=2), ValueError, r"\bx\b"),
    ("5-D", dict(x=np.zeros((1, 1, 1, 5, 5)), kernel_size=2), ValueError, r"\bx\b"),
    ("C0", dict(x=np.zeros((1, 0, 5, 5)), kernel_size=2), ValueError, r"\bx\b"),
    ("H0", dict(x=np.zeros((1, 2, 0, 5)), kernel_size=2), ValueError, r"\bx\b"),
    ("W0", dict(x=np.zeros((1, 2, 5, 0)), kernel_size=2), ValueError, r"\bx\b"),
    ("kernel>padded", dict(x=_x, kernel_size=6), ValueError, "kernel"),
    ("kernel>padded-pairs", dict(x=_x, kernel_size=(7, 1), padding=((1, 0), (0, 0))),
     ValueError, "kernel"),
    ("dilated>padded", dict(x=_x, kernel_size=3, dilation=3), ValueError, "kernel"),
    ("kernel0", dict(x=_x, kernel_size=0), ValueError, "kernel_size"),
    ("kernel-neg", dict(x=_x, kernel_size=(2, -1)), ValueError, "kernel_size"),
    ("stride0", dict(x=_x, kernel_size=2, stride=0), ValueError, "stride"),
    ("dilation0", dict(x=_x, kernel_size=2, dilation=(1, 0)), ValueError, "dilation"),
    ("padding-neg", dict(x=_x, kernel_size=2, padding=-1), ValueError, "padding"),
    ("padding-pairs-neg", dict(x=_x, kernel_size=2, padding=((0, -1), (0, 0))), ValueError,
     "padding"),
    ("kernel-float", dict(x=_x, kernel_size=2.0), TypeError, "kernel_size"),
    ("kernel-bool", dict(x=_x, kernel_size=True), TypeError, "kernel_size"),
    ("stride-float", dict(x=_x, kernel_size=2, stride=(1, 1.0)), TypeError, "stride"),
    ("stride-bool", dict(x=_x, kernel_size=2, stride=True), TypeError, "stride"),
    ("dilation-float", dict(x=_x, kernel_size=2, dilation=2.0), TypeError, "dilation"),
    ("padding-float", dict(x=_x, kernel_size=2, padding=1.0), TypeError, "padding"),
    ("padding-bool", dict(x=_x, kernel_size=2, padding=((0, True), (0, 0))), TypeError,
     "padding"),
    ("complex", dict(x=np.zeros((1, 1, 4, 4), np.complex128), kernel_size=2), TypeError,
     "complex128"),
    ("object", dict(x=np.zeros((1, 1, 4, 4), object), kernel_size=2), TypeError, "object"),
    ("str", dict(x=np.full((1, 1, 4, 4), "a"), kernel_size=2), TypeError, re.escape("<U1")),
]


@im2col_backends
@pytest.mark.parametrize("name, kwargs, exc, match", IM2COL_ERRORS,
                         ids=[e[0] for e in IM2COL_ERRORS])
def test_im2col_errors(backend, name, kwargs, exc, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x")
    with pytest.raises(exc, match=match):
        fc.im2col(x, backend=backend, **kwargs)


COL2IM_ERRORS = [
    # (id, cols shape, input_shape, kwargs, exception, match)
    ("cols-rows", (15, 8), (1, 2, 5, 5), dict(kernel_size=2), ValueError, "cols"),
    ("cols-columns", (16, 9), (1, 2, 5, 5), dict(kernel_size=2), ValueError, "cols"),
    ("cols-transposed", (8, 16), (1, 2, 5, 5), dict(kernel_size=2), ValueError, "cols"),
    ("cols-3-D", (1, 16, 8), (1, 2, 5, 5), dict(kernel_size=2), ValueError, "cols"),
    ("cols-1-D", (128,), (1, 2, 5, 5), dict(kernel_size=2), ValueError, "cols"),
    ("shape-3", (16, 8), (2, 5, 5), dict(kernel_size=2), ValueError, "input_shape"),
    ("shape-C0", (16, 0), (1, 0, 5, 5), dict(kernel_size=2), ValueError, "input_shape"),
    ("shape-neg", (16, 8), (1, 2, -5, 5), dict(kernel_size=2), ValueError, "input_shape"),
    ("shape-float", (16, 8), (1, 2, 5.0, 5), dict(kernel_size=2), TypeError, "input_shape"),
    ("kernel>padded", (1, 12), (1, 2, 5, 5), dict(kernel_size=6), ValueError, "kernel"),
    ("kernel0", (16, 8), (1, 2, 5, 5), dict(kernel_size=0), ValueError, "kernel_size"),
    ("stride0", (16, 8), (1, 2, 5, 5), dict(kernel_size=2, stride=0), ValueError, "stride"),
    ("stride-float", (16, 8), (1, 2, 5, 5), dict(kernel_size=2, stride=1.0), TypeError,
     "stride"),
    ("padding-neg", (16, 8), (1, 2, 5, 5), dict(kernel_size=2, padding=(0, -1)), ValueError,
     "padding"),
]


@col2im_backends
@pytest.mark.parametrize("name, cols_shape, input_shape, kwargs, exc, match", COL2IM_ERRORS,
                         ids=[e[0] for e in COL2IM_ERRORS])
def test_col2im_errors(backend, name, cols_shape, input_shape, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fc.col2im(np.zeros(cols_shape), input_shape, backend=backend, **kwargs)


@col2im_backends
def test_col2im_bad_dtypes(backend):
    for dtype, name in ((np.complex64, "complex64"), (object, "object")):
        with pytest.raises(TypeError, match=name):
            fc.col2im(np.zeros((16, 8), dtype), (1, 2, 5, 5), 2, backend=backend)
