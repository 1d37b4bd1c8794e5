"""Pooling (max_pool2d, avg_pool2d and their backward passes) against PyTorch,
direct loops that spell out API.md's rules, and the contract's edge cases."""

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv as fc

# ----------------------------------------------------------------- backends

_X = np.arange(16.0).reshape(1, 1, 4, 4)
_TRIVIAL = {
    "max_pool2d": lambda b: fc.max_pool2d(_X, 2, backend=b),
    "avg_pool2d": lambda b: fc.avg_pool2d(_X, 2, backend=b),
    "max_pool2d_backward": lambda b: fc.max_pool2d_backward(np.ones((1, 1, 2, 2)), _X, 2,
                                                            backend=b),
    "avg_pool2d_backward": lambda b: fc.avg_pool2d_backward(np.ones((1, 1, 2, 2)),
                                                            (1, 1, 4, 4), 2, backend=b),
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


MAX = _backends_for("max_pool2d")
AVG = _backends_for("avg_pool2d")
MAX_BW = _backends_for("max_pool2d_backward")
AVG_BW = _backends_for("avg_pool2d_backward")
max_backends = pytest.mark.parametrize("backend", MAX)
avg_backends = pytest.mark.parametrize("backend", AVG)
max_bw_backends = pytest.mark.parametrize("backend", MAX_BW)
avg_bw_backends = pytest.mark.parametrize("backend", AVG_BW)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------ helpers


def _tt(torch, a):
    """A torch copy of a NumPy array (never shares memory with the test's arrays)."""
    return torch.tensor(np.ascontiguousarray(a))


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_size(size, k, s, p, d, ceil):
    """PyTorch's pooling_output_shape (floor division; ceil by adding s - 1)."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:  # the last window starts in the right padding
        out -= 1
    return out


def _axis_taps(o, k, s, p, d):
    """Input coordinates of window o's taps along one axis, kernel order."""
    return [o * s - p + j * d for j in range(k)]


def _geometry(h, w, kernel, stride, padding, dilation, ceil):
    """(OH, OW), or None when API.md says the call is a ValueError."""
    kh, kw = _as_pair(kernel)
    sh, sw = (kh, kw) if stride is None else _as_pair(stride)
    ph, pw = _as_pair(padding)
    dh, dw = _as_pair(dilation)
    if ph > kh // 2 or pw > kw // 2:
        return None
    sizes = []
    for size, k, s, p, d in ((h, kh, sh, ph, dh), (w, kw, sw, pw, dw)):
        out = _out_size(size, k, s, p, d, ceil)
        if out < 1:
            return None
        for o in range(out):
            if not any(0 <= t < size for t in _axis_taps(o, k, s, p, d)):
                return None
        sizes.append(out)
    return tuple(sizes)


def _oracle_max_pool(x, kernel, stride, padding, dilation, ceil):
    """API.md's max pooling by direct loops over windows: padding never wins, NaN
    wins (the first NaN in row-major window order), else the first maximum."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    kh, kw = _as_pair(kernel)
    sh, sw = (kh, kw) if stride is None else _as_pair(stride)
    ph, pw = _as_pair(padding)
    dh, dw = _as_pair(dilation)
    oh, ow = _geometry(h, w, kernel, stride, padding, dilation, ceil)
    out = np.empty((n, c, oh, ow))
    idx = np.empty((n, c, oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            taps = [(r, q) for r in _axis_taps(i, kh, sh, ph, dh)
                    for q in _axis_taps(j, kw, sw, pw, dw) if 0 <= r < h and 0 <= q < w]
            best = x[:, :, taps[0][0], taps[0][1]].copy()
            best_i = np.full((n, c), taps[0][0] * w + taps[0][1])
            for r, q in taps[1:]:
                v = x[:, :, r, q]
                take = ~np.isnan(best) & (np.isnan(v) | (v > best))
                best = np.where(take, v, best)
                best_i = np.where(take, r * w + q, best_i)
            out[:, :, i, j] = best
            idx[:, :, i, j] = best_i
    return out, idx


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


def _assert_identical(got, ref, dtype):
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.dtype(dtype)
    assert got.shape == ref.shape
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref)  # NaN == NaN here, nothing else is loose


def _tie_data(rng, shape, dtype, kind):
    """Small integers (many ties), with -inf/+inf (kind "inf") and NaN (kind "nan")."""
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    if kind in ("inf", "nan"):
        x[rng.random(shape) < 0.25] = -np.inf
        x[rng.random(shape) < 0.03] = np.inf
    if kind == "nan":
        x[rng.random(shape) < 0.12] = np.nan
    return x.astype(dtype)


def _torch_max(torch, x, kernel, stride, padding, dilation, ceil):
    out, idx = torch.nn.functional.max_pool2d(_tt(torch, x), kernel, stride, padding, dilation,
                                              ceil_mode=ceil, return_indices=True)
    return out.numpy(), idx.numpy()


def _torch_avg(torch, x, kernel, stride, padding, ceil, cip, div):
    return torch.nn.functional.avg_pool2d(_tt(torch, x), kernel, stride, padding, ceil_mode=ceil,
                                          count_include_pad=cip,
                                          divisor_override=div).numpy()


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
def pool_cases(draw, max_dilation=1):
    kernel = _int_or_pair(draw, 1, 4)
    kh, kw = _as_pair(kernel)
    stride = None if draw(st.booleans()) else _int_or_pair(draw, 1, 3)
    if draw(st.booleans()):
        padding = draw(st.integers(0, min(kh, kw) // 2))
    else:
        padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    dilation = _int_or_pair(draw, 1, max_dilation) if max_dilation > 1 else 1
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)),
             draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil=draw(st.booleans()), shape=shape,
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 2**32 - 1)))


# ------------------------------------------------------- hypothesis sweeps


@max_backends
@settings(max_examples=60, deadline=None)
@given(case=pool_cases(max_dilation=3), kind=st.sampled_from(["ties", "inf", "nan"]))
def test_max_pool2d_matches_torch_and_the_tie_and_nan_rules(torch, backend, case, kind):
    k, s, p, d, ceil = (case[key] for key in ("kernel", "stride", "padding", "dilation", "ceil"))
    n, c, h, w = case["shape"]
    x = _tie_data(np.random.default_rng(case["seed"]), case["shape"], case["dtype"], kind)
    x_before = x.copy()
    geom = _geometry(h, w, k, s, p, d, ceil)
    if geom is None:
        with pytest.raises(ValueError):
            fc.max_pool2d(x, k, s, p, d, ceil, True, backend=backend)
        return
    out, idx = fc.max_pool2d(x, k, s, p, d, ceil, True, backend=backend)
    np.testing.assert_array_equal(x, x_before)
    assert out.shape == idx.shape == (n, c, *geom)
    assert idx.dtype == np.int64 and idx.flags.c_contiguous
    ref_out, ref_idx = _torch_max(torch, x, k, s, p, d, ceil)
    _assert_identical(out, ref_out, case["dtype"])
    o_out, o_idx = _oracle_max_pool(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(out, o_out.astype(case["dtype"]))
    np.testing.assert_array_equal(idx, o_idx)
    if kind != "nan":  # PyTorch indexes the *last* NaN; API.md asks for the first
        np.testing.assert_array_equal(idx, ref_idx)
    # without return_indices: the same values
    _assert_identical(fc.max_pool2d(x, k, s, p, d, ceil, backend=backend), ref_out,
                      case["dtype"])


@avg_backends
@settings(max_examples=50, deadline=None)
@given(case=pool_cases(), cip=st.booleans(),
       div=st.one_of(st.none(), st.integers(1, 7)))
def test_avg_pool2d_matches_torch(torch, backend, case, cip, div):
    k, s, p, ceil = (case[key] for key in ("kernel", "stride", "padding", "ceil"))
    n, c, h, w = case["shape"]
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(case["dtype"])
    x_before = x.copy()
    geom = _geometry(h, w, k, s, p, 1, ceil)
    if geom is None:
        with pytest.raises(ValueError):
            fc.avg_pool2d(x, k, s, p, ceil, cip, div, backend=backend)
        return
    out = fc.avg_pool2d(x, k, s, p, ceil, cip, div, backend=backend)
    np.testing.assert_array_equal(x, x_before)
    assert out.shape == (n, c, *geom)
    _assert_close(out, _torch_avg(torch, x, k, s, p, ceil, cip, div), case["dtype"])


@max_bw_backends
@settings(max_examples=40, deadline=None)
@given(case=pool_cases(max_dilation=2), kind=st.sampled_from(["ties", "inf"]))
def test_max_pool2d_backward_matches_autograd(torch, backend, case, kind):
    k, s, p, d, ceil = (case[key] for key in ("kernel", "stride", "padding", "dilation", "ceil"))
    dtype = case["dtype"]
    rng = np.random.default_rng(case["seed"])
    x = _tie_data(rng, case["shape"], dtype, kind)
    if _geometry(*case["shape"][2:], k, s, p, d, ceil) is None:
        return  # the error paths are tested elsewhere
    xt = _tt(torch, x).requires_grad_(True)
    y = torch.nn.functional.max_pool2d(xt, k, s, p, d, ceil_mode=ceil)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    y.backward(_tt(torch, g))
    x_before, g_before = x.copy(), g.copy()
    got = fc.max_pool2d_backward(g, x, k, s, p, d, ceil, backend=backend)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(g, g_before)
    _assert_close(got, xt.grad.numpy(), dtype)


@avg_bw_backends
@settings(max_examples=40, deadline=None)
@given(case=pool_cases(), cip=st.booleans(),
       div=st.one_of(st.none(), st.integers(1, 7)))
def test_avg_pool2d_backward_matches_autograd(torch, backend, case, cip, div):
    k, s, p, ceil = (case[key] for key in ("kernel", "stride", "padding", "ceil"))
    dtype = case["dtype"]
    rng = np.random.default_rng(case["seed"])
    if _geometry(*case["shape"][2:], k, s, p, 1, ceil) is None:
        return
    xt = _tt(torch, rng.standard_normal(case["shape"]).astype(dtype)).requires_grad_(True)
    y = torch.nn.functional.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=cip,
                                       divisor_override=div)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    y.backward(_tt(torch, g))
    got = fc.avg_pool2d_backward(g, case["shape"], k, s, p, ceil, cip, div, backend=backend)
    _assert_close(got, xt.grad.numpy(), dtype)


# ---------------------------------------------------------- explicit cases

# shape, kernel, stride, padding, dilation, ceil_mode
CASES = [
    ((2, 3, 7, 8), 2, None, 0, 1, False),                 # stride=None: stride = kernel
    ((2, 3, 7, 8), (2, 3), None, (1, 1), 1, True),
    ((2, 3, 7, 8), (2, 3), (1, 2), (1, 1), 1, False),
    ((1, 2, 5, 5), 2, 2, 0, 1, True),                     # ceil_mode adds a window
    ((2, 2, 5, 4), 2, 2, 0, 1, True),                     # ... a row of windows only
    ((1, 2, 5, 5), 3, 3, 1, 1, True),                     # last window would start in padding
    ((1, 2, 6, 7), 3, 2, 1, 1, True),
    ((2, 2, 9, 9), 3, 1, 1, 1, False),                    # overlapping windows
    ((1, 3, 4, 4), 4, 1, 2, 1, True),                     # padding = kernel // 2
    ((1, 1, 1, 1), 1, None, 0, 1, False),
    ((1, 1, 3, 10), (1, 4), (1, 3), (0, 2), 1, True),
    ((2, 2, 9, 9), 3, 1, 1, 2, False),                    # dilation (max pooling only)
    ((1, 1, 8, 9), (3, 2), (2, 1), (1, 0), (2, 3), True),
    ((1, 2, 7, 7), 2, 2, 1, (3, 1), True),
]
CASE_IDS = [f"{s}-k{k}-s{st_}-p{p}-d{d}-{'ceil' if c else 'floor'}"
            for s, k, st_, p, d, c in CASES]
AVG_CASES = [case for case in CASES if case[4] == 1]
AVG_IDS = [i for i, case in zip(CASE_IDS, CASES) if case[4] == 1]


@max_backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_max_pool2d_explicit_cases_match_torch(torch, backend, case, dtype):
    shape, k, s, p, d, ceil = case
    x = _tie_data(np.random.default_rng(0), shape, dtype, "inf")
    out, idx = fc.max_pool2d(x, k, s, p, d, ceil, return_indices=True, backend=backend)
    ref_out, ref_idx = _torch_max(torch, x, k, s, p, d, ceil)
    _assert_identical(out, ref_out, dtype)
    _assert_identical(idx, ref_idx, np.int64)
    xr = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    out, idx = fc.max_pool2d(xr, k, s, p, d, ceil, return_indices=True, backend=backend)
    ref_out, ref_idx = _torch_max(torch, xr, k, s, p, d, ceil)
    _assert_identical(out, ref_out, dtype)
    _assert_identical(idx, ref_idx, np.int64)
    for data in (x, xr):  # without indices (other kernels)
        _assert_identical(fc.max_pool2d(data, k, s, p, d, ceil, backend=backend),
                          _torch_max(torch, data, k, s, p, d, ceil)[0], dtype)


@avg_backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cip, div", [(True, None), (False, None), (True, 3), (False, 5)])
@pytest.mark.parametrize("case", AVG_CASES, ids=AVG_IDS)
def test_avg_pool2d_explicit_cases_match_torch(torch, backend, case, cip, div, dtype):
    shape, k, s, p, _, ceil = case
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    out = fc.avg_pool2d(x, k, s, p, ceil, cip, div, backend=backend)
    _assert_close(out, _torch_avg(torch, x, k, s, p, ceil, cip, div), dtype)


@pytest.mark.parametrize("op", ["max", "avg"])
def test_ceil_mode_adds_a_window_and_drops_one_starting_in_the_right_padding(torch, op):
    backends = MAX if op == "max" else AVG
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 5))
    for backend in backends:
        pool = fc.max_pool2d if op == "max" else fc.avg_pool2d
        # H=5, k=2, s=2: floor gives 2 windows, ceil a 3rd starting at 4 (inside)
        assert pool(x, 2, 2, 0, ceil_mode=False, backend=backend).shape == (1, 2, 2, 2)
        assert pool(x, 2, 2, 0, ceil_mode=True, backend=backend).shape == (1, 2, 3, 3)
        # H=5, k=3, s=3, p=1: ceil((5+2-3)/3)+1 = 3, but the 3rd window would start at
        # 3*2-1 = 5 = H, i.e. in the right padding: PyTorch drops it
        got = pool(x, 3, 3, 1, ceil_mode=True, backend=backend)
        assert got.shape == (1, 2, 2, 2)
        ref = (torch.nn.functional.max_pool2d if op == "max" else
               torch.nn.functional.avg_pool2d)(_tt(torch, x), 3, 3, 1, ceil_mode=True)
        _assert_close(got, ref.numpy(), np.float64)


@max_backends
def test_stride_none_means_kernel_size(backend):
    x = np.random.default_rng(4).standard_normal((2, 3, 9, 8))
    for k in (2, 3, (2, 3)):
        a, ia = fc.max_pool2d(x, k, return_indices=True, backend=backend)
        b, ib = fc.max_pool2d(x, k, k, return_indices=True, backend=backend)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ia, ib)
        kh, kw = _as_pair(k)
        assert a.shape == (2, 3, 9 // kh, 8 // kw)
    for backend_avg in AVG:
        np.testing.assert_array_equal(fc.avg_pool2d(x, (2, 3), backend=backend_avg),
                                      fc.avg_pool2d(x, (2, 3), (2, 3), backend=backend_avg))


@max_backends
def test_int_and_pair_arguments_are_equivalent(backend):
    x = np.random.default_rng(5).standard_normal((1, 2, 9, 9))
    a = fc.max_pool2d(x, 3, 2, 1, 2, True, True, backend=backend)
    b = fc.max_pool2d(x, (3, 3), (2, 2), (1, 1), (2, 2), True, True, backend=backend)
    c = fc.max_pool2d(x, [3, 3], [2, 2], [1, 1], [2, 2], True, True, backend=backend)
    d = fc.max_pool2d(x, np.int64(3), np.int32(2), np.int8(1), np.int16(2), True, True,
                      backend=backend)
    for other in (b, c, d):
        np.testing.assert_array_equal(a[0], other[0])
        np.testing.assert_array_equal(a[1], other[1])


# ------------------------------------------------------- ties, NaN, -inf


@max_backends
def test_nan_wins_and_its_index_is_the_first_nan_in_row_major_order(backend):
    x = np.array([1.0, np.nan, 2.0, np.nan, 3.0]).reshape(1, 1, 1, 5)
    out, idx = fc.max_pool2d(x, (1, 5), return_indices=True, backend=backend)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1
    # 2-D window: NaN at (1, 0) and (0, 2); row-major order visits (0, 2) first -> 2
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 0] = x[0, 0, 0, 2] = np.nan
    x[0, 0, 2, 2] = np.inf
    out, idx = fc.max_pool2d(x, 3, return_indices=True, backend=backend)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 2
    # NaN after the maximum still wins; windows without NaN are unaffected
    x = np.array([[5.0, 1.0, 7.0, 2.0], [0.0, np.nan, 7.0, 7.0]]).reshape(1, 1, 2, 4)
    out, idx = fc.max_pool2d(x, 2, return_indices=True, backend=backend)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 5
    assert out[0, 0, 0, 1] == 7.0 and idx[0, 0, 0, 1] == 2  # first of three 7s


@max_backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_pick_the_first_maximum_in_row_major_order(torch, backend, dtype):
    x = np.zeros((2, 2, 5, 6), dtype)
    for k, s, p, d in ((2, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 2), ((2, 3), (1, 2), (1, 1), 1)):
        out, idx = fc.max_pool2d(x, k, s, p, d, return_indices=True, backend=backend)
        _, o_idx = _oracle_max_pool(x, k, s, p, d, False)  # first in-bounds tap
        np.testing.assert_array_equal(idx, o_idx)
        np.testing.assert_array_equal(idx, _torch_max(torch, x, k, s, p, d, False)[1])
        assert not out.any()


@max_backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_minus_inf_windows_index_the_first_in_bounds_element(torch, backend, dtype):
    x = np.full((1, 2, 3, 4), -np.inf, dtype)
    for k, s, p, d in ((3, 1, 1, 1), (2, 1, 1, 1), (3, 2, 1, 2), ((2, 3), 1, (1, 1), 1)):
        out, idx = fc.max_pool2d(x, k, s, p, d, ceil_mode=True, return_indices=True,
                                 backend=backend)
        kh, kw = _as_pair(k)
        sh, sw = _as_pair(s)
        ph, pw = _as_pair(p)
        dh, dw = _as_pair(d)
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                r0 = next(t for t in _axis_taps(i, kh, sh, ph, dh) if t >= 0)
                c0 = next(t for t in _axis_taps(j, kw, sw, pw, dw) if t >= 0)
                assert (idx[:, :, i, j] == r0 * 4 + c0).all(), (k, s, p, d, i, j)
        assert np.isneginf(out).all()
        np.testing.assert_array_equal(idx, _torch_max(torch, x, k, s, p, d, True)[1])


@max_backends
def test_padding_never_wins(backend):
    x = -1.0 - np.random.default_rng(6).random((2, 3, 5, 6))  # all < -1
    out, idx = fc.max_pool2d(x, 3, 1, 1, return_indices=True, backend=backend)
    assert (out < -1).all()
    np.testing.assert_array_equal(idx, _oracle_max_pool(x, 3, 1, 1, 1, False)[1])
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(out, np.take_along_axis(flat, idx.reshape(2, 3, -1), 2)
                                  .reshape(out.shape))


# -------------------------------------------------- dtypes and input forms


PROMOTIONS = [(np.int8, np.float32), (np.int16, np.float32), (np.uint8, np.float32),
              (np.uint16, np.float32), (np.bool_, np.float32), (np.float16, np.float32),
              (np.int32, np.float64), (np.int64, np.float64)]


@pytest.mark.parametrize("in_dtype, out_dtype", PROMOTIONS,
                         ids=[np.dtype(a).name for a, _ in PROMOTIONS])
def test_integer_and_small_inputs_promote_to_float(torch, in_dtype, out_dtype):
    rng = np.random.default_rng(7)
    x = (rng.integers(0, 2, (2, 2, 6, 7)) if in_dtype is np.bool_
         else rng.integers(0, 100, (2, 2, 6, 7))).astype(in_dtype)
    xf = x.astype(out_dtype)
    for backend in MAX:
        out, idx = fc.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True,
                                 backend=backend)
        ref_out, ref_idx = _torch_max(torch, xf, 3, 2, 1, 1, True)
        _assert_identical(out, ref_out, out_dtype)
        _assert_identical(idx, ref_idx, np.int64)
    for backend in AVG:
        out = fc.avg_pool2d(x, 3, 2, 1, True, False, backend=backend)
        _assert_close(out, _torch_avg(torch, xf, 3, 2, 1, True, False, None), out_dtype)


def test_uint8_gives_float32_exactly(torch):
    x = np.array([[[[0, 255], [128, 7]]]], np.uint8)
    for backend in MAX:
        out = fc.max_pool2d(x, 2, backend=backend)
        assert out.dtype == np.float32 and out[0, 0, 0, 0] == 255.0
    for backend in AVG:
        out = fc.avg_pool2d(x, 2, backend=backend)
        assert out.dtype == np.float32 and out[0, 0, 0, 0] == np.float32(390 / 4)


@max_backends
def test_array_likes_are_accepted(backend):
    x = [[[[1, 5, 2], [0, 3, 9], [4, 4, 4]]]]
    out, idx = fc.max_pool2d(x, 2, 1, return_indices=True, backend=backend)
    np.testing.assert_array_equal(out, [[[[5.0, 9.0], [4.0, 9.0]]]])
    np.testing.assert_array_equal(idx, [[[[1, 5], [6, 5]]]])
    assert out.dtype == np.float64  # Python ints are int64


def _strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


LAYOUTS = {
    "transposed": lambda a: np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
    "negative_strides": lambda a: np.ascontiguousarray(a[:, :, ::-1, ::-1])[:, :, ::-1, ::-1],
    "fortran": np.asfortranarray,
    "channels_last": lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
    "strided": _strided,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_inputs(torch, layout, dtype):
    rng = np.random.default_rng(8)
    x = _tie_data(rng, (2, 3, 7, 6), dtype, "inf")
    xl = LAYOUTS[layout](x)
    assert not xl.flags.c_contiguous
    np.testing.assert_array_equal(xl, x)
    before = xl.copy()
    ref_out, ref_idx = _torch_max(torch, x, 3, 2, 1, 1, True)
    for backend in MAX:
        out, idx = fc.max_pool2d(xl, 3, 2, 1, ceil_mode=True, return_indices=True,
                                 backend=backend)
        _assert_identical(out, ref_out, dtype)
        _assert_identical(idx, ref_idx, np.int64)
    g = rng.standard_normal(ref_out.shape).astype(dtype)
    gl = LAYOUTS[layout](g)
    xt = _tt(torch, x).requires_grad_(True)
    torch.nn.functional.max_pool2d(xt, 3, 2, 1, ceil_mode=True).backward(_tt(torch, g))
    for backend in MAX_BW:
        _assert_close(fc.max_pool2d_backward(gl, xl, 3, 2, 1, 1, True, backend=backend),
                      xt.grad.numpy(), dtype)
    xn = rng.standard_normal(x.shape).astype(dtype)
    for backend in AVG:
        _assert_close(fc.avg_pool2d(LAYOUTS[layout](xn), 3, 2, 1, True, False, backend=backend),
                      _torch_avg(torch, xn, 3, 2, 1, True, False, None), dtype)
    xt = _tt(torch, xn).requires_grad_(True)
    torch.nn.functional.avg_pool2d(xt, 3, 2, 1, ceil_mode=True).backward(_tt(torch, g))
    for backend in AVG_BW:
        _assert_close(fc.avg_pool2d_backward(gl, x.shape, 3, 2, 1, True, backend=backend),
                      xt.grad.numpy(), dtype)
    np.testing.assert_array_equal(xl, before)


def test_unbatched_input_gives_unbatched_results(torch):
    rng = np.random.default_rng(9)
    x = _tie_data(rng, (3, 7, 8), np.float64, "inf")
    for backend in MAX:
        out, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend=backend)
        b_out, b_idx = fc.max_pool2d(x[None], 3, 2, 1, return_indices=True, backend=backend)
        assert out.shape == idx.shape == (3, 4, 4)
        np.testing.assert_array_equal(out, b_out[0])
        np.testing.assert_array_equal(idx, b_idx[0])
        ref_out, ref_idx = _torch_max(torch, x, 3, 2, 1, 1, False)
        _assert_identical(out, ref_out, np.float64)
        _assert_identical(idx, ref_idx, np.int64)
    x = rng.standard_normal((3, 7, 8))  # finite data for averages
    for backend in AVG:
        out = fc.avg_pool2d(x, 3, 2, 1, backend=backend)
        assert out.shape == (3, 4, 4)
        np.testing.assert_array_equal(out, fc.avg_pool2d(x[None], 3, 2, 1, backend=backend)[0])
        _assert_close(out, _torch_avg(torch, x, 3, 2, 1, False, True, None), np.float64)
    g = rng.standard_normal((3, 4, 4))
    xt = _tt(torch, x).requires_grad_(True)
    torch.nn.functional.max_pool2d(xt, 3, 2, 1).backward(_tt(torch, g))
    for backend in MAX_BW:
        _assert_close(fc.max_pool2d_backward(g, x, 3, 2, 1, backend=backend), xt.grad.numpy(),
                      np.float64)
    xt = _tt(torch, x).requires_grad_(True)
    torch.nn.functional.avg_pool2d(xt, 3, 2, 1).backward(_tt(torch, g))
    for backend in AVG_BW:
        _assert_close(fc.avg_pool2d_backward(g, (3, 7, 8), 3, 2, 1, backend=backend),
                      xt.grad.numpy(), np.float64)


def test_empty_batch():
    x = np.ones((0, 3, 5, 5), np.float32)
    for backend in MAX:
        out, idx = fc.max_pool2d(x, 2, return_indices=True, backend=backend)
        assert out.shape == idx.shape == (0, 3, 2, 2)
        assert out.dtype == np.float32 and idx.dtype == np.int64
        assert fc.max_pool2d(x, 3, 1, 1, backend=backend).shape == (0, 3, 5, 5)
        with pytest.raises(ValueError, match="kernel_size"):
            fc.max_pool2d(x, 6, backend=backend)  # still validated
    for backend in AVG:
        out = fc.avg_pool2d(x, 2, backend=backend)
        assert out.shape == (0, 3, 2, 2) and out.dtype == np.float32
    for backend in MAX_BW:
        g = fc.max_pool2d_backward(np.ones((0, 3, 2, 2), np.float32), x, 2, backend=backend)
        assert g.shape == (0, 3, 5, 5) and g.dtype == np.float32
    for backend in AVG_BW:
        g = fc.avg_pool2d_backward(np.ones((0, 3, 2, 2)), (0, 3, 5, 5), 2, backend=backend)
        assert g.shape == (0, 3, 5, 5) and g.dtype == np.float64


def test_inputs_are_never_written_to():
    rng = np.random.default_rng(10)
    x = _readonly_copy(_tie_data(rng, (2, 2, 6, 6), np.float64, "nan"))
    g = _readonly_copy(rng.standard_normal((2, 2, 3, 3)))
    xs, gs = x.copy(), g.copy()
    for backend in MAX:
        fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend=backend)
    xf = _readonly_copy(rng.standard_normal((2, 2, 6, 6)))  # finite for averages
    xfs = xf.copy()
    for backend in AVG:
        fc.avg_pool2d(xf, 3, 2, 1, backend=backend)
    np.testing.assert_array_equal(xf, xfs)
    for backend in MAX_BW:
        fc.max_pool2d_backward(g, x, 3, 2, 1, backend=backend)
    for backend in AVG_BW:
        fc.avg_pool2d_backward(g, x.shape, 3, 2, 1, backend=backend)
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(g, gs)


# ------------------------------------------------------------------- out=


@pytest.mark.parametrize("op", ["max", "max_indices", "avg"])
@pytest.mark.parametrize("batched", [True, False])
def test_out_is_filled_and_returned(op, batched):
    x = np.random.default_rng(11).standard_normal((2, 3, 6, 7)).astype(np.float32)
    if not batched:
        x = x[0]
    shape = x.shape[:-2] + (3, 4)
    backends = AVG if op == "avg" else MAX
    for backend in backends:
        kwargs = dict(kernel_size=3, stride=2, padding=1, backend=backend)
        pool = fc.avg_pool2d if op == "avg" else fc.max_pool2d
        if op == "max_indices":
            kwargs["return_indices"] = True
        expected = pool(x, **kwargs)
        out = np.full(shape, np.nan, np.float32)
        got = pool(x, out=out, **kwargs)
        if op == "max_indices":
            got, idx = got
            np.testing.assert_array_equal(idx, expected[1])
            expected = expected[0]
        assert got is out
        np.testing.assert_array_equal(out, expected)


def _out_errors(x, shape, dtype):
    """(description, out) pairs that must each be a ValueError."""
    buf = np.empty(shape[:-2] + (shape[-1], shape[-2]), dtype)
    overlap = np.empty(x.size + int(np.prod(shape)), dtype)
    overlap[:x.size] = x.ravel()
    x_in = overlap[:x.size].reshape(x.shape)
    return x_in, [
        ("shape", np.empty(shape[:-1] + (shape[-1] + 1,), dtype)),
        ("ndim", np.empty((1, *shape), dtype)),
        ("dtype", np.empty(shape, np.float32 if dtype == np.float64 else np.float64)),
        ("non-contiguous", buf.swapaxes(-1, -2)),
        ("fortran", np.asfortranarray(np.empty(shape, dtype))),
        ("overlapping", overlap[x.size - 4:x.size - 4 + int(np.prod(shape))].reshape(shape)),
        ("readonly", _readonly_copy(np.empty(shape, dtype))),
        ("list", np.empty(shape, dtype).tolist()),
    ]


@pytest.mark.parametrize("op", ["max", "avg"])
def test_bad_out_is_a_value_error(op):
    x = np.random.default_rng(12).standard_normal((1, 2, 6, 7))
    shape = (1, 2, 3, 4)  # kernel 3, stride 2, padding 1
    x_in, cases = _out_errors(x, shape, np.float64)
    before = x_in.copy()
    pool = fc.avg_pool2d if op == "avg" else fc.max_pool2d
    for backend in (AVG if op == "avg" else MAX):
        for what, out in cases:
            with pytest.raises(ValueError, match="out"):
                pool(x_in, 3, 2, 1, out=out, backend=backend)
        # x itself as out (same shape and dtype with a 1x1 kernel)
        with pytest.raises(ValueError, match="out"):
            pool(x_in, 1, out=x_in, backend=backend)
    np.testing.assert_array_equal(x_in, before)


# ------------------------------------------------------------- backward


@max_bw_backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, s, p, d, ceil", [
    (3, 1, 1, 1, False),          # overlapping windows, stride < kernel
    (2, 1, 0, 1, True),
    ((3, 2), (2, 1), (1, 1), 1, True),
    (3, 2, 1, 2, True),           # dilation
    (4, 3, 2, 1, True),
])
def test_max_pool2d_backward_with_ties_and_overlap(torch, backend, dtype, k, s, p, d, ceil):
    rng = np.random.default_rng(13)
    x = _tie_data(rng, (2, 3, 8, 9), dtype, "ties")
    xt = _tt(torch, x).requires_grad_(True)
    y = torch.nn.functional.max_pool2d(xt, k, s, p, d, ceil_mode=ceil)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    y.backward(_tt(torch, g))
    _assert_close(fc.max_pool2d_backward(g, x, k, s, p, d, ceil, backend=backend),
                  xt.grad.numpy(), dtype)


@max_bw_backends
def test_max_pool2d_backward_sends_each_gradient_to_the_forward_index(backend):
    """Including NaN windows: the gradient goes where max_pool2d's index points."""
    rng = np.random.default_rng(14)
    x = _tie_data(rng, (2, 2, 7, 7), np.float64, "nan")
    _, idx = _oracle_max_pool(x, 3, 1, 1, 1, False)
    g = rng.standard_normal(idx.shape)
    expected = np.zeros((2, 2, 49))
    for n in range(2):
        for c in range(2):
            np.add.at(expected[n, c], idx[n, c].ravel(), g[n, c].ravel())
    got = fc.max_pool2d_backward(g, x, 3, 1, 1, backend=backend)
    _assert_close(got, expected.reshape(x.shape), np.float64)


@avg_bw_backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, s, p, ceil, cip, div", [
    (3, 2, 1, True, True, None),
    (3, 2, 1, True, False, None),
    (2, 2, 1, True, False, None),
    ((3, 2), (1, 2), (1, 1), False, False, None),
    (3, 1, 1, False, True, 4),
    (3, 3, 1, True, False, 7),
    (2, None, 0, True, True, None),
])
def test_avg_pool2d_backward_explicit_cases(torch, backend, dtype, k, s, p, ceil, cip, div):
    rng = np.random.default_rng(15)
    shape = (2, 3, 7, 8)
    xt = _tt(torch, rng.standard_normal(shape).astype(dtype)).requires_grad_(True)
    y = torch.nn.functional.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=cip,
                                       divisor_override=div)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    y.backward(_tt(torch, g))
    _assert_close(fc.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div, backend=backend),
                  xt.grad.numpy(), dtype)


@avg_bw_backends
@pytest.mark.parametrize("k, s, p, ceil, cip, div", [
    (3, 2, 1, True, False, None), (2, 1, 1, False, True, None), ((3, 2), 2, (1, 0), True, True, 5),
])
def test_avg_pool2d_backward_finite_differences(backend, k, s, p, ceil, cip, div):
    rng = np.random.default_rng(16)
    shape = (1, 2, 5, 6)
    x = rng.standard_normal(shape)
    y0 = fc.avg_pool2d(x, k, s, p, ceil, cip, div)
    g = rng.standard_normal(y0.shape)
    grad = fc.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div, backend=backend)
    assert grad.shape == shape and grad.dtype == np.float64
    eps = 1e-3
    fd = np.empty(shape)
    for i in np.ndindex(shape):
        e = np.zeros(shape)
        e[i] = eps
        plus = fc.avg_pool2d(x + e, k, s, p, ceil, cip, div)
        minus = fc.avg_pool2d(x - e, k, s, p, ceil, cip, div)
        fd[i] = np.sum(g * (plus - minus)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-8 * (1 + np.abs(fd).max()))
    assert np.abs(fd).max() > 0.1  # the check is not vacuous


def test_backward_dtypes():
    x32 = np.random.default_rng(17).standard_normal((1, 1, 4, 4)).astype(np.float32)
    g32 = np.ones((1, 1, 2, 2), np.float32)
    for backend in MAX_BW:
        assert fc.max_pool2d_backward(g32, x32, 2, backend=backend).dtype == np.float32
        assert fc.max_pool2d_backward(g32.astype(np.float64), x32, 2,
                                      backend=backend).dtype == np.float64
        got = fc.max_pool2d_backward(np.ones((1, 1, 2, 2), np.int32), x32, 2, backend=backend)
        assert got.dtype == np.float64 and got.sum() == 4.0
    for backend in AVG_BW:
        assert fc.avg_pool2d_backward(g32, (1, 1, 4, 4), 2, backend=backend).dtype == np.float32
        got = fc.avg_pool2d_backward(np.ones((1, 1, 2, 2), np.int64), (1, 1, 4, 4), 2,
                                     backend=backend)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, np.full((1, 1, 4, 4), 0.25))
        got = fc.avg_pool2d_backward(np.ones((1, 1, 2, 2), np.uint8), (1, 1, 4, 4), 2,
                                     backend=backend)
        assert got.dtype == np.float32


# ------------------------------------------------------------ error paths

_x = np.zeros((1, 2, 6, 6))
_tiny = np.zeros((1, 1, 2, 2))

POOL_ERRORS = [
    # (id, kwargs, exception, match)
    ("padding>k//2", dict(x=_x, kernel_size=3, padding=2), ValueError, "padding"),
    ("padding-pair>k//2", dict(x=_x, kernel_size=3, padding=(0, 2)), ValueError, "padding"),
    ("padding>k//2-rect", dict(x=_x, kernel_size=(4, 1), padding=1), ValueError, "padding"),
    ("out<1", dict(x=_tiny, kernel_size=3), ValueError, "kernel_size"),
    ("out<1-stride", dict(x=_tiny, kernel_size=(1, 3), stride=2), ValueError, "kernel_size"),
    ("kernel0", dict(x=_x, kernel_size=0), ValueError, "kernel_size"),
    ("kernel-neg", dict(x=_x, kernel_size=(2, -1)), ValueError, "kernel_size"),
    ("stride0", dict(x=_x, kernel_size=2, stride=0), ValueError, "stride"),
    ("stride-neg", dict(x=_x, kernel_size=2, stride=(1, -2)), ValueError, "stride"),
    ("padding-neg", dict(x=_x, kernel_size=2, padding=-1), ValueError, "padding"),
    ("kernel-float", dict(x=_x, kernel_size=2.0), TypeError, "kernel_size"),
    ("kernel-bool", dict(x=_x, kernel_size=True), TypeError, "kernel_size"),
    ("kernel-triple", dict(x=_x, kernel_size=(2, 2, 2)), TypeError, "kernel_size"),
    ("stride-float", dict(x=_x, kernel_size=2, stride=1.5), TypeError, "stride"),
    ("stride-bool", dict(x=_x, kernel_size=2, stride=(1, True)), TypeError, "stride"),
    ("padding-float", dict(x=_x, kernel_size=2, padding=0.0), TypeError, "padding"),
    ("padding-bool", dict(x=_x, kernel_size=2, padding=False), TypeError, "padding"),
    ("ndim2", dict(x=np.zeros((6, 6)), kernel_size=2), ValueError, r"\bx\b"),
    ("ndim5", dict(x=np.zeros((1, 1, 1, 6, 6)), kernel_size=2), ValueError, r"\bx\b"),
    ("C0", dict(x=np.zeros((1, 0, 6, 6)), kernel_size=2), ValueError, r"\bx\b"),
    ("H0", dict(x=np.zeros((1, 2, 0, 6)), kernel_size=2), ValueError, r"\bx\b"),
    ("W0", dict(x=np.zeros((1, 2, 6, 0)), kernel_size=2), ValueError, r"\bx\b"),
    ("unbatched-C0", dict(x=np.zeros((0, 6, 6)), kernel_size=2), ValueError, r"\bx\b"),
    ("complex64", dict(x=np.zeros((1, 1, 4, 4), np.complex64), kernel_size=2), TypeError,
     "complex64"),
    ("complex128", dict(x=np.zeros((1, 1, 4, 4), np.complex128), kernel_size=2), TypeError,
     "complex128"),
    ("object", dict(x=np.zeros((1, 1, 4, 4), object), kernel_size=2), TypeError, "object"),
    ("datetime", dict(x=np.zeros((1, 1, 4, 4), "datetime64[s]"), kernel_size=2), TypeError,
     "datetime64"),
    ("str", dict(x=np.full((1, 1, 4, 4), "a"), kernel_size=2), TypeError, re.escape("<U1")),
]
MAX_ONLY_ERRORS = [
    # the dilated window (taps -1 and 2 along H=2 and W=2) holds no input element
    ("empty-dilated-window", dict(x=_tiny, kernel_size=2, stride=1, padding=1, dilation=3),
     ValueError, "dilation"),
    ("empty-dilated-window-W", dict(x=np.zeros((1, 1, 6, 2)), kernel_size=2, stride=1,
                                    padding=1, dilation=(1, 3)), ValueError, "dilation"),
    ("dilation0", dict(x=_x, kernel_size=2, dilation=0), ValueError, "dilation"),
    ("dilation-float", dict(x=_x, kernel_size=2, dilation=1.0), TypeError, "dilation"),
    ("dilation-bool", dict(x=_x, kernel_size=2, dilation=True), TypeError, "dilation"),
]
AVG_ONLY_ERRORS = [
    ("divisor0", dict(x=_x, kernel_size=2, divisor_override=0), ValueError, "divisor_override"),
    ("divisor-neg", dict(x=_x, kernel_size=2, divisor_override=-3), ValueError,
     "divisor_override"),
    ("divisor-float", dict(x=_x, kernel_size=2, divisor_override=2.0), TypeError,
     "divisor_override"),
    ("divisor-bool", dict(x=_x, kernel_size=2, divisor_override=True), TypeError,
     "divisor_override"),
]


@max_backends
@pytest.mark.parametrize("name, kwargs, exc, match", POOL_ERRORS + MAX_ONLY_ERRORS,
                         ids=[e[0] for e in POOL_ERRORS + MAX_ONLY_ERRORS])
def test_max_pool2d_errors(backend, name, kwargs, exc, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x")
    with pytest.raises(exc, match=match):
        fc.max_pool2d(x, backend=backend, **kwargs)
    with pytest.raises(exc, match=match):
        fc.max_pool2d(x, return_indices=True, backend=backend, **kwargs)


@avg_backends
@pytest.mark.parametrize("name, kwargs, exc, match", POOL_ERRORS + AVG_ONLY_ERRORS,
                         ids=[e[0] for e in POOL_ERRORS + AVG_ONLY_ERRORS])
def test_avg_pool2d_errors(backend, name, kwargs, exc, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x")
    with pytest.raises(exc, match=match):
        fc.avg_pool2d(x, backend=backend, **kwargs)


@max_bw_backends
@pytest.mark.parametrize("name, kwargs, exc, match", POOL_ERRORS + MAX_ONLY_ERRORS,
                         ids=[e[0] for e in POOL_ERRORS + MAX_ONLY_ERRORS])
def test_max_pool2d_backward_errors(backend, name, kwargs, exc, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x")
    g = np.zeros((1, 1, 1, 1))  # the argument errors come before grad_out's shape
    with pytest.raises(exc, match=match):
        fc.max_pool2d_backward(g, x, backend=backend, **kwargs)


# the argument errors, not those of x itself (avg_pool2d_backward takes its shape)
_ARG_ERRORS_AVG = [e for e in POOL_ERRORS + AVG_ONLY_ERRORS if e[1]["x"] is _x or e[1]["x"] is _tiny]


@avg_bw_backends
@pytest.mark.parametrize("name, kwargs, exc, match", _ARG_ERRORS_AVG,
                         ids=[e[0] for e in _ARG_ERRORS_AVG])
def test_avg_pool2d_backward_errors(backend, name, kwargs, exc, match):
    kwargs = dict(kwargs)
    shape = kwargs.pop("x").shape
    with pytest.raises(exc, match=match):
        fc.avg_pool2d_backward(np.zeros((1, 1, 1, 1)), shape, backend=backend, **kwargs)


@pytest.mark.parametrize("g_shape", [(1, 2, 3, 2), (1, 2, 2, 3), (2, 3, 3), (1, 2, 3, 3, 1),
                                     (2, 2, 3, 3)])
def test_backward_grad_out_of_the_wrong_shape(g_shape):
    x = np.zeros((1, 2, 6, 6))  # forward result (1, 2, 3, 3)
    for backend in MAX_BW:
        with pytest.raises(ValueError, match="grad_out"):
            fc.max_pool2d_backward(np.zeros(g_shape), x, 2, backend=backend)
    for backend in AVG_BW:
        with pytest.raises(ValueError, match="grad_out"):
            fc.avg_pool2d_backward(np.zeros(g_shape), x.shape, 2, backend=backend)


def test_backward_bad_dtypes_and_input_shape():
    for backend in MAX_BW:
        with pytest.raises(TypeError, match="complex128"):
            fc.max_pool2d_backward(np.zeros((1, 1, 2, 2), complex), np.zeros((1, 1, 4, 4)), 2,
                                   backend=backend)
    for backend in AVG_BW:
        with pytest.raises(TypeError, match="complex64"):
            fc.avg_pool2d_backward(np.zeros((1, 1, 2, 2), np.complex64), (1, 1, 4, 4), 2,
                                   backend=backend)
        for shape in [(1, 4), (1, 1, 1, 4, 4), (1, 0, 4, 4), (1, 1, -4, 4)]:
            with pytest.raises(ValueError, match="input_shape"):
                fc.avg_pool2d_backward(np.zeros((1, 1, 2, 2)), shape, 2, backend=backend)
        with pytest.raises(TypeError, match="input_shape"):
            fc.avg_pool2d_backward(np.zeros((1, 1, 2, 2)), (1, 1, 4.0, 4), 2, backend=backend)


# ------------------------------------------------------------- slow sweep


@pytest.mark.slow
@max_backends
def test_max_and_avg_pool2d_exhaustive_small_sweep(torch, backend):
    """Every kernel/stride/padding/dilation/ceil_mode combination on small planes."""
    rng = np.random.default_rng(18)
    for h, w in ((1, 1), (2, 3), (4, 4), (5, 7)):
        x = _tie_data(rng, (1, 2, h, w), np.float64, "inf")
        xf = rng.standard_normal((1, 2, h, w))
        for k in (1, 2, 3, (1, 3), (3, 2)):
            kh, kw = _as_pair(k)
            for s in (None, 1, 2, (3, 1)):
                for p in {(0, 0), (kh // 2, kw // 2), (0, kw // 2)}:
                    for d in (1, 2, (1, 3)):
                        for ceil in (False, True):
                            if _geometry(h, w, k, s, p, d, ceil) is None:
                                with pytest.raises(ValueError):
                                    fc.max_pool2d(x, k, s, p, d, ceil, backend=backend)
                                continue
                            out, idx = fc.max_pool2d(x, k, s, p, d, ceil, True, backend=backend)
                            ref_out, ref_idx = _torch_max(torch, x, k, s, p, d, ceil)
                            np.testing.assert_array_equal(out, ref_out)
                            np.testing.assert_array_equal(idx, ref_idx)
                            if d == 1:
                                for avg_backend in AVG:
                                    for cip in (True, False):
                                        _assert_close(
                                            fc.avg_pool2d(xf, k, s, p, ceil, cip,
                                                          backend=avg_backend),
                                            _torch_avg(torch, xf, k, s, p, ceil, cip, None),
                                            np.float64)
