"""fastconv.conv2d against the contract in docs/API.md.

Oracles: PyTorch's F.conv2d (F.pad for the padding modes and for asymmetric or
TensorFlow-'same' padding), and a slow direct-loop cross-correlation written
here that needs no torch. Every backend that implements conv2d is tested.
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc

# ----------------------------------------------------------------- helpers


def _backends_for(op: str) -> list[str]:
    """Backends on which a trivial `op` call runs (not BackendUnavailableError)."""
    x = np.zeros((1, 1, 1, 1), np.float32)
    w = np.zeros((1, 1, 1, 1), np.float32)
    trivial = {
        "conv2d": lambda name: fc.conv2d(x, w, backend=name),
        "conv2d_backward": lambda name: fc.conv2d_backward(x, x, w, backend=name),
    }[op]
    names = []
    for name in fc.backends():
        try:
            trivial(name)
        except fc.BackendUnavailableError:
            continue
        names.append(name)
    return names


BACKENDS = _backends_for("conv2d")
# The numba backend runs conv2d by direct loops at unit stride when filters per
# group are few (most shapes here) and by GEMM otherwise; "numba:gemm" runs
# its GEMM kernel on every shape. Tests parametrized with these through the
# `backend` fixture (indirect=True) run both.
VARIANTS = BACKENDS + (["numba:gemm"] if "numba" in BACKENDS else [])


@pytest.fixture
def backend(request):
    """The backend name to call for request.param, one of VARIANTS, with its
    kernel pinned while the test runs (all examples of a hypothesis test)."""
    if request.param != "numba:gemm":
        yield request.param
        return
    from fastconv.backends import numba_backend

    before = numba_backend._FEW_FILTERS
    numba_backend._FEW_FILTERS = -1
    try:
        yield "numba"
    finally:
        numba_backend._FEW_FILTERS = before


DTYPES = [np.float32, np.float64]
MODES = ["zeros", "reflect", "replicate", "circular"]


def assert_close(got, ref, dtype=None):
    """API.md's tolerance: max abs error <= tol * (1 + max |ref|), tol by dtype."""
    got = np.asarray(got)
    ref = np.asarray(ref, np.float64)
    dtype = np.dtype(got.dtype if dtype is None else dtype)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if ref.size == 0:
        return
    tol = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}[dtype]
    scale = 1.0 + np.abs(ref).max()
    err = np.abs(got.astype(np.float64) - ref).max()
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol:g} * {scale:.3g}"


def _pair(v):
    return (v, v) if isinstance(v, numbers.Integral) else tuple(v)


def resolve_pads(padding, h, w, kh, kw, stride=1, dilation=1):
    """(top, bottom, left, right) for every padding form, written from API.md."""
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        assert padding == "same"
        pads = []
        for size, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
            out = math.ceil(size / s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, numbers.Integral):
        return (padding,) * 4
    if isinstance(padding[0], (tuple, list)):
        return (*padding[0], *padding[1])
    return (padding[0], padding[0], padding[1], padding[1])


def out_size(size, before, after, k, s, d):
    """API.md: OH = floor((H + top + bottom - dh*(KH-1) - 1) / sh) + 1."""
    return (size + before + after - d * (k - 1) - 1) // s + 1


_NP_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def direct_conv2d(x, w, b=None, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1,
                  mode="zeros", activation=None):
    """Cross-correlation by explicit loops over filters and output pixels, float64.

    x is (N, C, H, W); np.pad gives PyTorch's padding modes (edge = replicate,
    wrap = circular). Tiny shapes only.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=_NP_PAD[mode])
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    n, c, hp, wp = xp.shape
    k, cg, kh, kw = w.shape
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, k, oh, ow))
    kg = k // groups
    for f in range(k):
        g = f // kg
        for i in range(oh):
            for j in range(ow):
                acc = np.zeros(n)
                for ci in range(cg):
                    for a in range(kh):
                        for bb in range(kw):
                            acc += xp[:, g * cg + ci, i * sh + a * dh, j * sw + bb * dw] * w[f, ci, a, bb]
                out[:, f, i, j] = acc
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    if activation == "relu":
        out = np.maximum(out, 0)
    return out


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # tiny problems: threads only add overhead
    return torch


def torch_conv2d(x, w, b=None, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1,
                 mode="zeros", activation=None):
    """PyTorch's answer in float64 for batched x, padding applied with F.pad."""
    torch = _torch()
    F = torch.nn.functional

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float64, copy=True))

    xt = t(x)
    top, bottom, left, right = pads
    if any(pads):
        if mode == "zeros":
            xt = F.pad(xt, (left, right, top, bottom))
        else:
            xt = F.pad(xt, (left, right, top, bottom), mode=mode)
    y = F.conv2d(xt, t(w), None if b is None else t(b), stride=_pair(stride),
                 dilation=_pair(dilation), groups=groups)
    if activation == "relu":
        y = torch.relu(y)
    return y.numpy()


def _check_result(got, ref, dtype):
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype
    assert got.flags.c_contiguous
    assert_close(got, ref, dtype)


# -------------------------------------------------------- the backends list


def test_backends_for_includes_the_reference():
    assert "numpy" in BACKENDS
    assert set(BACKENDS) <= set(fc.backends())
    assert all(fc.backends()[name].available for name in BACKENDS)


# ----------------------------------------------------------- textbook cases

TEXTBOOK_X = [[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]]
TEXTBOOK_W = [[2, 0, 1], [0, 1, 2], [1, 0, 2]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_textbook_example(backend):
    x = np.array(TEXTBOOK_X, np.float64)[None, None]
    w = np.array(TEXTBOOK_W, np.float64)[None, None]
    got = fc.conv2d(x, w, backend=backend)
    assert got.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(got[0, 0], [[15, 16], [6, 15]])
    # with a bias of 3 (Deep Learning from Scratch, fig. 7-7)
    got = fc.conv2d(x, w, np.array([3.0]), backend=backend)
    np.testing.assert_array_equal(got[0, 0], [[18, 19], [9, 18]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_textbook_example_padding_1(backend):
    x = np.array(TEXTBOOK_X, np.float64)
    w = np.array(TEXTBOOK_W, np.float64)
    xp = np.zeros((6, 6))
    xp[1:5, 1:5] = x
    expected = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            s = 0.0
            for a in range(3):
                for b in range(3):
                    s += xp[i + a, j + b] * w[a, b]
            expected[i, j] = s
    assert expected[1:3, 1:3].tolist() == [[15, 16], [6, 15]]  # the valid part
    got = fc.conv2d(x[None], w[None, None], padding=1, backend=backend)  # unbatched
    assert got.shape == (1, 4, 4)
    np.testing.assert_array_equal(got[0], expected)
    # integer input (Python ints -> int64) promotes to float64
    got = fc.conv2d([[TEXTBOOK_X]], [[TEXTBOOK_W]], padding=1, backend=backend)
    assert got.dtype == np.float64 and got.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(got[0, 0], expected)


@settings(max_examples=100, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 5), kw=st.integers(1, 5),
       sh=st.integers(1, 4), sw=st.integers(1, 4), dh=st.integers(1, 3), dw=st.integers(1, 3),
       pads=st.tuples(*[st.integers(0, 4)] * 4), batched=st.booleans())
def test_output_size_formula(h, w, kh, kw, sh, sw, dh, dw, pads, batched):
    top, bottom, left, right = pads
    assume(h + top + bottom >= dh * (kh - 1) + 1 and w + left + right >= dw * (kw - 1) + 1)
    x = np.ones((2, h, w) if not batched else (1, 2, h, w), np.float32)
    wt = np.ones((3, 2, kh, kw), np.float32)
    got = fc.conv2d(x, wt, stride=(sh, sw), padding=((top, bottom), (left, right)),
                    dilation=(dh, dw), backend="numpy")  # sizes are the front end's
    oh = out_size(h, top, bottom, kh, sh, dh)
    ow = out_size(w, left, right, kw, sw, dw)
    assert got.shape == ((1, 3, oh, ow) if batched else (3, oh, ow))
    # 'same' gives ceil(H / stride) for any stride, kernel and dilation
    same = fc.conv2d(x, wt, stride=(sh, sw), padding="same", dilation=(dh, dw), backend="numpy")
    assert same.shape[-2:] == (-(-h // sh), -(-w // sw))
    # and 'valid' is no padding
    if h >= dh * (kh - 1) + 1 and w >= dw * (kw - 1) + 1:
        valid = fc.conv2d(x, wt, stride=(sh, sw), padding="valid", dilation=(dh, dw),
                          backend="numpy")
        assert valid.shape[-2:] == (out_size(h, 0, 0, kh, sh, dh), out_size(w, 0, 0, kw, sw, dw))


# ------------------------------------------------------------ classic filters


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_kernel_returns_the_input(backend, mode, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    ident = np.zeros((3, 3), dtype)
    ident[1, 1] = 1
    # one identity filter per channel, full (groups=1) and depthwise (groups=C)
    full = np.zeros((3, 3, 3, 3), dtype)
    for c in range(3):
        full[c, c] = ident
    got = fc.conv2d(x, full, padding=1, padding_mode=mode, backend=backend)
    np.testing.assert_array_equal(got, x)
    got = fc.conv2d(x, np.broadcast_to(ident, (3, 1, 3, 3)), padding=1, groups=3,
                    padding_mode=mode, backend=backend)
    np.testing.assert_array_equal(got, x)
    got = fc.conv2d(x, np.eye(3, dtype=dtype)[:, :, None, None], backend=backend)  # 1x1
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corner_kernel_shifts_so_it_is_cross_correlation(backend):
    """A kernel with a single 1 at (0, 0) and padding 1 moves the image down-right."""
    x = np.arange(30.0).reshape(1, 1, 5, 6)
    k = np.zeros((1, 1, 3, 3))
    k[0, 0, 0, 0] = 1
    got = fc.conv2d(x, k, padding=1, backend=backend)
    expected = np.zeros((5, 6))
    expected[1:, 1:] = x[0, 0, :-1, :-1]
    np.testing.assert_array_equal(got[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_box_blur_keeps_a_constant_image_constant(backend, dtype):
    x = np.full((1, 1, 6, 7), 2.5, dtype)
    box = np.full((1, 1, 3, 3), 1 / 9, dtype)
    got = fc.conv2d(x, box, padding="valid", backend=backend)
    assert_close(got, np.full((1, 1, 4, 5), 2.5))
    got = fc.conv2d(x, box, padding=1, backend=backend)  # zero padding
    assert_close(got[0, 0, 1:-1, 1:-1], np.full((4, 5), 2.5))
    # the border sees zeros: edges 6/9, corners 4/9 of the value
    assert_close(got[0, 0, 0, 1:-1], np.full(5, 2.5 * 6 / 9))
    assert_close(got[0, 0, [0, 0, -1, -1], [0, -1, 0, -1]], np.full(4, 2.5 * 4 / 9))
    for mode in ("replicate", "reflect", "circular"):
        got = fc.conv2d(x, box, padding=1, padding_mode=mode, backend=backend)
        assert_close(got, np.full((1, 1, 6, 7), 2.5))
    got = fc.conv2d(x, box, padding="same", padding_mode="replicate", backend=backend)
    assert_close(got, np.full((1, 1, 6, 7), 2.5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_laplacian_vanishes_on_constant_and_linear_images(backend, dtype):
    lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype)[None, None]
    const = np.full((2, 1, 5, 6), -1.75, dtype)
    assert_close(fc.conv2d(const, lap, backend=backend), np.zeros((2, 1, 3, 4)))
    for mode in ("replicate", "reflect", "circular"):
        got = fc.conv2d(const, lap, padding=1, padding_mode=mode, backend=backend)
        assert_close(got, np.zeros((2, 1, 5, 6)))
    i, j = np.mgrid[0:5, 0:6]
    ramp = (0.3 * i - 0.2 * j + 1).astype(dtype)[None, None]
    assert_close(fc.conv2d(ramp, lap, backend=backend), np.zeros((1, 1, 3, 4)))
    # but it does not vanish on a non-constant image: centre pixel of a spike is -4
    spike = np.zeros((1, 1, 3, 3), dtype)
    spike[0, 0, 1, 1] = 1
    assert_close(fc.conv2d(spike, lap, backend=backend), np.full((1, 1, 1, 1), -4.0))


# -------------------------------------------------- torch oracle, parametrised

# (id, x shape, weight shape, keyword arguments)
CASES = [
    ("3x3", (2, 3, 7, 9), (4, 3, 3, 3), {}),
    ("odd-sizes-pad1", (1, 3, 11, 13), (5, 3, 3, 5), dict(padding=1)),
    ("pad-pair", (2, 2, 5, 7), (3, 2, 2, 3), dict(padding=(2, 1))),
    ("pad-list", (1, 2, 5, 6), (2, 2, 3, 3), dict(padding=[0, 2])),
    ("stride2", (2, 2, 9, 8), (3, 2, 3, 3), dict(stride=2, padding=1)),
    ("stride-pair", (1, 2, 10, 11), (2, 2, 2, 3), dict(stride=(3, 2))),
    ("stride-leftover", (1, 2, 8, 8), (2, 2, 3, 3), dict(stride=3)),
    ("stride-over-kernel", (1, 1, 10, 9), (2, 1, 2, 2), dict(stride=4)),
    ("dilation2", (1, 2, 10, 9), (3, 2, 3, 3), dict(dilation=2, padding=2)),
    ("dilation-stride", (2, 3, 12, 11), (2, 3, 3, 2), dict(dilation=(2, 3), stride=(2, 1),
                                                          padding=(1, 2))),
    ("groups2", (2, 4, 8, 7), (6, 2, 3, 3), dict(groups=2, padding=1)),
    ("groups3-K9", (1, 6, 7, 7), (9, 2, 3, 1), dict(groups=3)),
    ("depthwise", (2, 5, 8, 9), (5, 1, 3, 3), dict(groups=5, padding=1)),
    ("depthwise-x2", (1, 4, 7, 6), (8, 1, 3, 3), dict(groups=4, padding=1, stride=2)),
    ("asym-pad", (1, 2, 6, 7), (3, 2, 3, 3), dict(padding=((0, 2), (1, 0)))),
    ("asym-pad-stride", (2, 2, 9, 6), (2, 2, 4, 2), dict(padding=((3, 1), (0, 2)), stride=(2, 3))),
    ("valid", (1, 3, 8, 8), (2, 3, 5, 4), dict(padding="valid")),
    ("same-s1", (2, 3, 7, 8), (4, 3, 3, 5), dict(padding="same")),
    ("same-s1-even", (1, 2, 7, 8), (2, 2, 4, 2), dict(padding="same")),
    ("same-s1-dil", (1, 2, 7, 9), (2, 2, 2, 3), dict(padding="same", dilation=(3, 2))),
    ("same-s2", (1, 2, 9, 10), (3, 2, 3, 3), dict(padding="same", stride=2)),
    ("same-s2-even", (1, 2, 8, 7), (3, 2, 2, 4), dict(padding="same", stride=2)),
    ("same-s3", (1, 2, 10, 11), (2, 2, 4, 3), dict(padding="same", stride=3)),
    ("same-s3-dil", (1, 2, 11, 8), (2, 2, 3, 2), dict(padding="same", stride=(3, 2),
                                                      dilation=(2, 3))),
    ("same-s3-no-pad-needed", (1, 1, 9, 9), (1, 1, 1, 1), dict(padding="same", stride=3)),
    ("same-groups", (2, 4, 6, 5), (4, 2, 3, 3), dict(padding="same", groups=2, stride=2)),
    ("1x1", (2, 8, 5, 6), (3, 8, 1, 1), {}),
    ("1x1-stride2", (2, 4, 7, 6), (3, 4, 1, 1), dict(stride=2)),
    ("kernel-is-input", (2, 3, 5, 4), (2, 3, 5, 4), {}),
    ("one-row", (1, 2, 1, 9), (2, 2, 1, 3), {}),
    ("one-pixel-padded", (1, 2, 1, 1), (3, 2, 3, 3), dict(padding=1)),
    ("large-image", (2, 3, 20, 19), (4, 3, 3, 3), dict(padding=1)),
    ("large-image-groups", (1, 4, 18, 18), (6, 2, 3, 3), dict(groups=2, padding=2, dilation=2)),
    ("reflect", (1, 2, 5, 6), (2, 2, 3, 3), dict(padding=((4, 2), (5, 1)), padding_mode="reflect")),
    ("reflect-same-s2", (2, 2, 7, 6), (3, 2, 3, 4), dict(padding="same", stride=2,
                                                         padding_mode="reflect")),
    ("replicate", (1, 2, 4, 5), (2, 2, 3, 2), dict(padding=((7, 3), (2, 9)),
                                                   padding_mode="replicate")),
    ("replicate-dil", (2, 2, 6, 5), (2, 1, 3, 3), dict(padding=3, dilation=2, groups=2,
                                                       padding_mode="replicate")),
    ("circular", (1, 2, 5, 6), (2, 2, 3, 3), dict(padding=((5, 0), (6, 3)), padding_mode="circular")),
    ("circular-stride", (2, 3, 6, 7), (3, 1, 3, 3), dict(padding=(2, 3), stride=(2, 3), groups=3,
                                                         padding_mode="circular")),
    ("circular-large", (1, 2, 17, 16), (3, 2, 3, 3), dict(padding=(1, 1), padding_mode="circular")),
    ("modes-zero-pad", (1, 2, 5, 5), (2, 2, 3, 3), dict(padding=0, padding_mode="reflect")),
    # sizes past the blocking of a packed GEMM: depth C/groups*KH*KW > 256, K > 120
    # filters, more than 512 output pixels, and all at once
    ("deep", (1, 40, 9, 10), (7, 40, 3, 3), dict(padding=(0, 1))),
    ("many-filters", (1, 3, 8, 9), (130, 3, 3, 3), dict(padding=1)),
    ("many-pixels", (2, 2, 27, 25), (5, 2, 3, 3), dict(padding=1)),
    ("many-pixels-stride", (1, 3, 49, 47), (4, 3, 3, 3), dict(stride=2, padding="same")),
    ("all-blocks", (2, 30, 24, 23), (125, 30, 3, 3), dict(padding="same")),
    ("all-blocks-groups", (1, 64, 20, 27), (130, 32, 3, 3), dict(groups=2, padding=1,
                                                                 padding_mode="reflect")),
]

EXTRAS = {
    "plain": {},
    "bias": dict(bias=True),
    "relu": dict(activation="relu"),
    "bias-relu": dict(bias=True, activation="relu"),
}


def _case_call(xs, ws, kwargs, dtype, rng, bias=False):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    kwargs = dict(kwargs)
    pads = resolve_pads(kwargs.get("padding", 0), xs[2], xs[3], ws[2], ws[3],
                        kwargs.get("stride", 1), kwargs.get("dilation", 1))
    ref_kwargs = dict(stride=kwargs.get("stride", 1), pads=pads,
                      dilation=kwargs.get("dilation", 1), groups=kwargs.get("groups", 1),
                      mode=kwargs.get("padding_mode", "zeros"))
    return x, w, b, kwargs, ref_kwargs


# every case runs plain and with bias + relu; these also with bias only and relu only
ALL_EXTRAS = {"3x3", "stride-leftover", "dilation-stride", "groups3-K9", "depthwise-x2",
              "asym-pad-stride", "same-s3-dil", "1x1", "large-image", "reflect", "circular-stride",
              "deep", "all-blocks-groups"}
assert ALL_EXTRAS <= {c[0] for c in CASES}
TORCH_CASES = [pytest.param(case, extra, id=f"{case[0]}-{extra}")
               for case in CASES for extra in EXTRAS
               if extra in ("plain", "bias-relu") or case[0] in ALL_EXTRAS]


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("case, extra", TORCH_CASES)
def test_matches_torch(case, extra, backend):
    _, xs, ws, kwargs = case
    extra = EXTRAS[extra]
    act = extra.get("activation")
    for dtype in DTYPES:
        rng = np.random.default_rng(len(xs) + sum(xs) + 7 * sum(ws))
        x, w, b, kw, ref_kwargs = _case_call(xs, ws, kwargs, dtype, rng, extra.get("bias"))
        ref = torch_conv2d(x, w, b, activation=act, **ref_kwargs)
        before = [a.copy() for a in (x, w, b) if a is not None]
        got = fc.conv2d(x, w, b, activation=act, backend=backend, **kw)
        _check_result(got, ref, dtype)
        for a, copy in zip([a for a in (x, w, b) if a is not None], before):
            np.testing.assert_array_equal(a, copy)
        if act == "relu":
            assert (got >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride", [1, 2, 3, (1, 3), (3, 2)])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 3), (4, 5), (5, 2)])
def test_same_padding_is_tensorflow_rule(kernel, stride, backend):
    """'same': OH = ceil(H/sh), odd padding pixel at the bottom/right, for any stride."""
    rng = np.random.default_rng(7)
    for (h, w), dtype in zip(((7, 8), (9, 6), (5, 5), (6, 7)), DTYPES * 2):
        x = rng.standard_normal((2, 2, h, w)).astype(dtype)
        wt = rng.standard_normal((3, 2, *kernel)).astype(dtype)
        sh, sw = _pair(stride)
        got = fc.conv2d(x, wt, stride=stride, padding="same", backend=backend)
        assert got.shape == (2, 3, -(-h // sh), -(-w // sw))
        pads = resolve_pads("same", h, w, *kernel, stride)
        assert pads[1] - pads[0] in (0, 1) and pads[3] - pads[2] in (0, 1)
        _check_result(got, torch_conv2d(x, wt, stride=stride, pads=pads), dtype)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("kernel", [(3, 3), (5, 1), (3, 5)])
@pytest.mark.parametrize("dilation", [1, 2, (1, 3)])
def test_same_stride_1_agrees_with_torch_same(kernel, dilation, backend):
    """For stride 1 and odd kernels PyTorch's own padding='same' is the same rule."""
    torch = _torch()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, *kernel))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                                     dilation=dilation).numpy()
    _check_result(fc.conv2d(x, w, padding="same", dilation=dilation, backend=backend), ref,
                  np.float64)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_padding_modes_at_their_limits(mode, backend):
    """reflect: padding up to size - 1; circular: up to size; others: anything."""
    rng = np.random.default_rng(11)
    h, w = 4, 5
    limit = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(mode, (h + 3, w + 4))
    x = rng.standard_normal((2, 2, h, w))
    wt = rng.standard_normal((3, 2, 3, 2))
    for padding in (((limit[0], 0), (0, limit[1])), ((0, limit[0]), (limit[1], limit[1])),
                    (limit[0], limit[1]), ((1, limit[0]), (limit[1], 1))):
        pads = resolve_pads(padding, h, w, 3, 2)
        ref = direct_conv2d(x, wt, pads=pads, mode=mode)
        got = fc.conv2d(x, wt, padding=padding, padding_mode=mode, backend=backend)
        _check_result(got, ref, np.float64)
        ref = torch_conv2d(x, wt, pads=pads, mode=mode)
        _check_result(got, ref, np.float64)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_nan_and_inf_propagate_like_torch(activation, backend):
    """A NaN or inf input poisons exactly the outputs whose window holds it, relu included."""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 2, 7, 8))
    x[0, 1, 3, 4] = np.nan
    x[1, 0, 0, 7] = np.inf
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    for dtype in DTYPES:
        ref = torch_conv2d(x, w, b, pads=(1, 1, 1, 1), activation=activation)
        got = fc.conv2d(x.astype(dtype), w.astype(dtype), b.astype(dtype), padding=1,
                        activation=activation, backend=backend)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        assert np.isnan(got[0, :, 2:5, 3:6]).all() and np.isnan(got).sum() >= 27
        finite = np.isfinite(ref)
        _check_result(np.where(finite, got, 0), np.where(finite, ref, 0), dtype)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
def test_results_do_not_depend_on_the_thread_count(backend):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((3, 6, 19, 21)).astype(np.float32)
    w = rng.standard_normal((14, 3, 3, 3)).astype(np.float32)  # 7 filters per group
    ref = torch_conv2d(x, w, pads=(1, 1, 1, 1), groups=2)
    before = fc.get_num_threads()
    try:
        for threads in (1, 2, 3, 5):
            fc.set_num_threads(threads)
            got = fc.conv2d(x, w, padding=1, groups=2, backend=backend)
            _check_result(got, ref, np.float32)
    finally:
        fc.set_num_threads(before)
    assert fc.get_num_threads() == before


# ------------------------------------------------------------- hypothesis


@st.composite
def conv_configs(draw, max_size=9):
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 2))
    kg = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    n = draw(st.sampled_from([1, 1, 2, 3, 0]))
    mode = draw(st.sampled_from(MODES))
    form = draw(st.sampled_from(["int", "pair", "pairs", "valid", "same"]))
    cap = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(mode, (4, 4))
    ph = st.integers(0, min(cap[0], 4))
    pw = st.integers(0, min(cap[1], 4))
    if form == "int":
        p = draw(st.integers(0, min(cap[0], cap[1], 4)))
        padding = p
    elif form == "pair":
        padding = (draw(ph), draw(pw))
    elif form == "pairs":
        padding = ((draw(ph), draw(ph)), (draw(pw), draw(pw)))
    else:
        padding = form
    stride = draw(st.sampled_from([(sh, sw), sh]))
    dilation = draw(st.sampled_from([(dh, dw), dh]))
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    pads = resolve_pads(padding, h, w, kh, kw, stride, dilation)
    # make the kernel fit: grow the image (never below the padding-mode limits)
    h = max(h, dh * (kh - 1) + 1 - pads[0] - pads[1])
    w = max(w, dw * (kw - 1) + 1 - pads[2] - pads[3])
    pads = resolve_pads(padding, h, w, kh, kw, stride, dilation)
    if mode == "reflect":
        assume(max(pads[:2]) < h and max(pads[2:]) < w)
    if mode == "circular":
        assume(max(pads[:2]) <= h and max(pads[2:]) <= w)
    return dict(xs=(n, groups * cg, h, w), ws=(groups * kg, cg, kh, kw), stride=stride,
                padding=padding, dilation=dilation, groups=groups, mode=mode, pads=pads,
                bias=draw(st.booleans()), activation=draw(st.sampled_from([None, "relu"])),
                dtype=draw(st.sampled_from(DTYPES)), batched=draw(st.booleans()) or n != 1)


def _run_config(cfg, backend, seed, oracle):
    rng = np.random.default_rng(seed)
    dtype = cfg["dtype"]
    x = rng.standard_normal(cfg["xs"]).astype(dtype)
    w = rng.standard_normal(cfg["ws"]).astype(dtype)
    b = rng.standard_normal(cfg["ws"][0]).astype(dtype) if cfg["bias"] else None
    ref = oracle(x, w, b, stride=cfg["stride"], pads=cfg["pads"], dilation=cfg["dilation"],
                 groups=cfg["groups"], mode=cfg["mode"], activation=cfg["activation"])
    xin = x if cfg["batched"] else x[0]
    got = fc.conv2d(xin, w, b, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"],
                    padding_mode=cfg["mode"], activation=cfg["activation"], backend=backend)
    _check_result(got, ref if cfg["batched"] else ref[0], dtype)
    top, bottom, left, right = cfg["pads"]
    (sh, sw), (dh, dw) = _pair(cfg["stride"]), _pair(cfg["dilation"])
    kh, kw = cfg["ws"][2:]
    assert got.shape[-2:] == (out_size(cfg["xs"][2], top, bottom, kh, sh, dh),
                              out_size(cfg["xs"][3], left, right, kw, sw, dw))


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@settings(max_examples=60, deadline=None)
@given(cfg=conv_configs(), seed=st.integers(0, 2**32 - 1))
def test_random_configs_match_torch(backend, cfg, seed):
    _run_config(cfg, backend, seed, torch_conv2d)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@settings(max_examples=30, deadline=None)
@given(cfg=conv_configs(max_size=6), seed=st.integers(0, 2**32 - 1))
def test_random_configs_match_direct_loops(backend, cfg, seed):
    _run_config(cfg, backend, seed, direct_conv2d)


@pytest.mark.slow
@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@settings(max_examples=1000, deadline=None)
@given(cfg=conv_configs(max_size=24), seed=st.integers(0, 2**32 - 1))
def test_random_configs_match_torch_sweep(backend, cfg, seed):
    _run_config(cfg, backend, seed, torch_conv2d)


# ------------------------------------------------------------------ dtypes

FLOAT32_DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float32]
FLOAT64_DTYPES = [np.int32, np.uint32, np.int64, np.uint64, np.float64]


def _small_values(dtype, shape, rng):
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 4, shape).astype(dtype)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-3, 4, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT32_DTYPES + FLOAT64_DTYPES)
def test_dtype_promotion_of_the_input(dtype, backend):
    rng = np.random.default_rng(5)
    x = _small_values(dtype, (2, 2, 6, 5), rng)
    expected = np.float32 if dtype in FLOAT32_DTYPES else np.float64
    for w in (_small_values(dtype, (3, 2, 3, 3), rng),
              rng.integers(0, 3, (3, 2, 3, 3)).astype(np.uint8)):
        got = fc.conv2d(x, w, padding=1, backend=backend)
        assert got.dtype == expected == np.result_type(x, w, np.float32)
        ref = direct_conv2d(x.astype(np.float64), w.astype(np.float64), pads=(1, 1, 1, 1))
        _check_result(got, ref, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("xd, wd, bd, expected", [
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, None, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.float32, np.float32, np.int64, np.float64),
    (np.float32, np.float32, np.int16, np.float32),
    (np.int64, np.float32, None, np.float64),
    (np.float16, np.int8, np.float16, np.float32),
    (np.uint8, np.bool_, np.uint8, np.float32),
    (np.int32, np.int8, None, np.float64),
])
def test_dtype_promotion_mixed(xd, wd, bd, expected, backend):
    rng = np.random.default_rng(6)
    x = _small_values(xd, (1, 2, 5, 5), rng)
    w = _small_values(wd, (2, 2, 2, 3), rng)
    b = None if bd is None else _small_values(bd, (2,), rng)
    got = fc.conv2d(x, w, b, backend=backend)
    assert got.dtype == expected
    _check_result(got, direct_conv2d(x, w, b), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_array_likes(backend):
    x = [[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]]  # (C=1, H=2, W=3) unbatched, nested lists
    w = [[[[1.0, -1.0]]], [[[0.5, 2.0]]]]  # (K=2, 1, 1, 2)
    got = fc.conv2d(x, w, (0.25, -0.5), backend=backend)
    assert got.shape == (2, 2, 2) and got.dtype == np.float64 and got.flags.c_contiguous
    ref = direct_conv2d(np.array(x)[None], np.array(w), np.array([0.25, -0.5]))[0]
    assert_close(got, ref)
    # NumPy integer scalars are accepted for stride, padding, dilation and groups
    xs = np.arange(36.0).reshape(1, 2, 3, 6)
    ws = np.ones((2, 1, 2, 2))
    got = fc.conv2d(xs, ws, stride=np.int64(2), padding=(np.int32(1), np.uint8(0)),
                    dilation=np.int16(1), groups=np.int64(2), backend=backend)
    _check_result(got, direct_conv2d(xs, ws, stride=2, pads=(1, 1, 0, 0), groups=2),
                  np.float64)


# ------------------------------------------------------ memory layouts


def _layouts(rng):
    """(name, x, w, b): non-contiguous views of every kind, all (2, 3, 7, 6) / (4, 3, 3, 2)."""
    def x_base():
        return rng.standard_normal((2, 3, 7, 6))

    def w_base():
        return rng.standard_normal((4, 3, 3, 2))

    x = x_base()
    yield "transposed-HW", np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), \
        np.ascontiguousarray(w_base().transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0), \
        rng.standard_normal(4)
    yield "negative-strides", x_base()[:, ::-1, ::-1, ::-1], w_base()[::-1, :, ::-1, ::-1], \
        rng.standard_normal(8)[::-2]
    yield "fortran", np.asfortranarray(x_base()), np.asfortranarray(w_base()), \
        rng.standard_normal(4)
    yield "channels-last", np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), \
        np.ascontiguousarray(w_base().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), \
        rng.standard_normal(4)
    yield "strided-slices", rng.standard_normal((4, 6, 14, 18))[::2, 1::2, ::2, 2::3], \
        rng.standard_normal((8, 3, 6, 2))[::2, :, ::2], rng.standard_normal((4, 3))[:, 1]
    yield "broadcast-weight", x_base(), np.broadcast_to(rng.standard_normal((1, 3, 3, 2)),
                                                       (4, 3, 3, 2)), np.broadcast_to(0.5, (4,))
    ro = x_base()
    ro.flags.writeable = False
    yield "read-only", ro, w_base(), rng.standard_normal(4)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", range(7))
def test_any_memory_layout(layout, dtype, backend):
    name, x, w, b = list(_layouts(np.random.default_rng(layout)))[layout]
    assert x.shape == (2, 3, 7, 6) and w.shape == (4, 3, 3, 2) and b.shape == (4,), name
    if name not in ("fortran", "read-only", "broadcast-weight"):
        assert not x.flags.c_contiguous or not w.flags.c_contiguous, name
    x, w, b = x.astype(dtype, copy=False), w.astype(dtype, copy=False), b.astype(dtype, copy=False)
    copies = [np.array(a, copy=True) for a in (x, w, b)]
    for kwargs in (dict(padding=1), dict(stride=2, padding="same", padding_mode="reflect"),
                   dict(padding=((0, 2), (1, 1)), dilation=(2, 1), padding_mode="circular")):
        ref = direct_conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), b,
                            stride=kwargs.get("stride", 1), dilation=kwargs.get("dilation", 1),
                            pads=resolve_pads(kwargs["padding"], 7, 6, 3, 2,
                                              kwargs.get("stride", 1), kwargs.get("dilation", 1)),
                            mode=kwargs.get("padding_mode", "zeros"), activation="relu")
        got = fc.conv2d(x, w, b, activation="relu", backend=backend, **kwargs)
        _check_result(got, ref, dtype)
        got = fc.conv2d(x[1], w, b, activation="relu", backend=backend, **kwargs)  # unbatched view
        _check_result(got, ref[1], dtype)
    for a, copy in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, copy)


# ------------------------------------------- unbatched, empty batch, results


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_input_gives_unbatched_output(dtype, backend):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 7, 5)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    for kwargs, pads in ((dict(), (0, 0, 0, 0)),
                         (dict(padding="same", stride=2), resolve_pads("same", 7, 5, 3, 2, 2)),
                         (dict(padding=(2, 1), padding_mode="reflect"), (2, 2, 1, 1))):
        got = fc.conv2d(x, w, b, groups=2, backend=backend, **kwargs)
        ref = direct_conv2d(x[None], w, b, stride=kwargs.get("stride", 1), pads=pads, groups=2,
                            mode=kwargs.get("padding_mode", "zeros"))
        assert got.ndim == 3
        _check_result(got, ref[0], dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype, backend):
    x = np.zeros((0, 4, 7, 6), dtype)
    w = np.ones((6, 2, 3, 3), dtype)
    b = np.ones(6, dtype)
    got = fc.conv2d(x, w, b, groups=2, backend=backend)
    assert got.shape == (0, 6, 5, 4) and got.dtype == dtype and got.flags.c_contiguous
    got = fc.conv2d(x, w, stride=2, padding="same", groups=2, padding_mode="reflect",
                    activation="relu", backend=backend)
    assert got.shape == (0, 6, 4, 3)
    out = np.empty((0, 6, 7, 6), dtype)
    assert fc.conv2d(x, w, b, padding=1, groups=2, out=out, backend=backend) is out
    got = fc.conv2d(np.zeros((0, 4, 7, 6), np.int16), w.astype(np.int8), groups=2,
                    backend=backend)
    assert got.shape == (0, 6, 5, 4) and got.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_result_is_new_and_c_contiguous(backend):
    """Even when the input itself is the GEMM operand (1x1 kernel, unit stride)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 5, 6))
    for w in (np.eye(4)[:, :, None, None], rng.standard_normal((3, 4, 1, 1)),
              rng.standard_normal((4, 1, 1, 1))):
        groups = 4 if w.shape[1] == 1 else 1
        got = fc.conv2d(x, w, groups=groups, backend=backend)
        assert got.flags.c_contiguous
        assert not np.shares_memory(got, x) and not np.shares_memory(got, w)
        _check_result(got, direct_conv2d(x, w, groups=groups), np.float64)
        got[...] = 0  # writing the result leaves the input alone
        assert np.abs(x).sum() > 0
    got = fc.conv2d(x[0], np.eye(4)[:, :, None, None], backend=backend)
    assert got.flags.c_contiguous and not np.shares_memory(got, x)
    np.testing.assert_array_equal(got, x[0])


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_inputs_are_never_written(backend):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    saved = [a.copy() for a in (x, w, b)]
    for kwargs in (dict(), dict(activation="relu"), dict(padding=2, padding_mode="reflect"),
                   dict(padding="same", stride=3, padding_mode="circular", activation="relu"),
                   dict(padding=1, out=np.empty((2, 4, 6, 6), np.float32))):
        fc.conv2d(x, w, b, groups=2, backend=backend, **kwargs)
        fc.conv2d(x[0], w, b, groups=2, backend=backend,
                  **{k: v for k, v in kwargs.items() if k != "out"})
        for a, s in zip((x, w, b), saved):
            np.testing.assert_array_equal(a, s)
    # the 1x1 fast path reads the input in place; relu must not clip it
    w1 = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    x_before = x.copy()
    fc.conv2d(x, w1, activation="relu", backend=backend)
    np.testing.assert_array_equal(x, x_before)


# --------------------------------------------------------------------- out=


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_is_written_and_returned(dtype, backend):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    for kwargs, shape, pads in ((dict(), (2, 6, 5, 4), (0, 0, 0, 0)),
                                (dict(padding=1, activation="relu"), (2, 6, 7, 6), (1, 1, 1, 1)),
                                (dict(padding="same", stride=2, padding_mode="replicate"),
                                 (2, 6, 4, 3), resolve_pads("same", 7, 6, 3, 3, 2))):
        out = np.full(shape, np.nan, dtype)
        got = fc.conv2d(x, w, b, groups=2, out=out, backend=backend, **kwargs)
        assert got is out
        ref = direct_conv2d(x, w, b, stride=kwargs.get("stride", 1), pads=pads, groups=2,
                            mode=kwargs.get("padding_mode", "zeros"),
                            activation=kwargs.get("activation"))
        _check_result(out, ref, dtype)
        # reusing the same buffer for another call overwrites it
        got = fc.conv2d(2 * x, w, None, groups=2, out=out, backend=backend, **kwargs)
        assert got is out
        ref = direct_conv2d(2 * x, w, None, stride=kwargs.get("stride", 1), pads=pads, groups=2,
                            mode=kwargs.get("padding_mode", "zeros"),
                            activation=kwargs.get("activation"))
        _check_result(out, ref, dtype)
    # unbatched
    out = np.full((6, 5, 4), np.nan, dtype)
    assert fc.conv2d(x[1], w, b, groups=2, out=out, backend=backend) is out
    _check_result(out, direct_conv2d(x[1:], w, b, groups=2)[0], dtype)
    # integer input: out must have the promoted dtype
    out = np.full((2, 6, 5, 4), np.nan, np.float32)
    xi = rng.integers(-3, 4, (2, 4, 7, 6)).astype(np.int16)
    assert fc.conv2d(xi, w.astype(np.float32), groups=2, out=out, backend=backend) is out
    _check_result(out, direct_conv2d(xi, w.astype(np.float32), groups=2), np.float32)


def _bad_outs(x, w, b, dtype):
    """(why, out) pairs that conv2d(x, w, b) (result (2, 3, 4, 3), dtype) must reject."""
    other = np.float64 if dtype == np.float32 else np.float32
    yield "shape", np.empty((2, 3, 4, 4), dtype)
    yield "unbatched-shape", np.empty((3, 4, 3), dtype)
    yield "extra-dim", np.empty((1, 2, 3, 4, 3), dtype)
    yield "dtype", np.empty((2, 3, 4, 3), other)
    yield "int-dtype", np.empty((2, 3, 4, 3), np.int32)
    yield "transposed", np.empty((3, 4, 3, 2), dtype).transpose(3, 0, 1, 2)
    yield "fortran", np.asfortranarray(np.empty((2, 3, 4, 3), dtype))
    yield "strided", np.empty((2, 3, 4, 6), dtype)[..., ::2]
    yield "negative-stride", np.empty((2, 3, 4, 3), dtype)[::-1]
    ro = np.empty((2, 3, 4, 3), dtype)
    ro.flags.writeable = False
    yield "read-only", ro
    yield "list", np.empty((2, 3, 4, 3), dtype).tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_out_is_a_value_error(dtype, backend):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 2, 6, 5)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    for why, out in _bad_outs(x, w, None, dtype):
        snapshot = np.array(out, copy=True)
        with pytest.raises(ValueError, match="out"):
            fc.conv2d(x, w, out=out, backend=backend)
        np.testing.assert_array_equal(np.asarray(out), snapshot, err_msg=why)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_overlapping_an_input_is_a_value_error(backend):
    rng = np.random.default_rng(14)
    # x and out in one buffer: out is the tail of x's memory, partly overlapping it
    buf = rng.standard_normal(2 * 2 * 6 * 5 + 40)
    x = buf[:120].reshape(2, 2, 6, 5)
    out = buf[100:136].reshape(2, 3, 2, 3)
    w = rng.standard_normal((3, 2, 5, 3))
    x_before = x.copy()
    with pytest.raises(ValueError, match="out"):
        fc.conv2d(x, w, out=out, backend=backend)
    np.testing.assert_array_equal(x, x_before)
    # out is the input itself (1x1 kernel, K == C keeps the shape)
    x = rng.standard_normal((2, 3, 4, 5))
    x_before = x.copy()
    with pytest.raises(ValueError, match="out"):
        fc.conv2d(x, np.eye(3)[:, :, None, None], out=x, backend=backend)
    np.testing.assert_array_equal(x, x_before)
    # out overlapping the weight, or the bias
    buf = rng.standard_normal(200)
    w = buf[:54].reshape(3, 2, 3, 3)
    out = buf[50:50 + 2 * 3 * 4 * 3].reshape(2, 3, 4, 3)
    with pytest.raises(ValueError, match="out"):
        fc.conv2d(rng.standard_normal((2, 2, 6, 5)), w, out=out, backend=backend)
    buf = rng.standard_normal(100)
    b = buf[:3]
    out = buf[2:2 + 72].reshape(2, 3, 4, 3)
    with pytest.raises(ValueError, match="out"):
        fc.conv2d(rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), b,
                  out=out, backend=backend)
    # a separate buffer of the same layout is fine
    out = np.empty((2, 3, 4, 3))
    assert fc.conv2d(rng.standard_normal((2, 2, 6, 5)), w, out=out, backend=backend) is out


# -------------------------------------------------------------- error paths

X = np.zeros((2, 4, 6, 6), np.float32)
W = np.zeros((6, 2, 3, 3), np.float32)


def _err(exc, match, x=X, w=W, b=None, **kwargs):
    kwargs.setdefault("groups", 2)
    return pytest.param(exc, match, x, w, b, kwargs)


ERRORS = {
    "channel-mismatch": _err(ValueError, r"channel.*\(2, 3, 6, 6\).*\(6, 2, 3, 3\)",
                             x=np.zeros((2, 3, 6, 6)), groups=1),
    "channel-mismatch-groups": _err(ValueError, "channel", groups=1),
    "groups-not-dividing-C": _err(ValueError, r"groups.*C=4", w=np.zeros((6, 1, 3, 3)), groups=3),
    "groups-not-dividing-K": _err(ValueError, r"groups.*K=5", w=np.zeros((5, 2, 3, 3))),
    "groups-zero": _err(ValueError, "groups", groups=0),
    "groups-negative": _err(ValueError, "groups", groups=-2),
    "groups-float": _err(TypeError, "groups", groups=2.0),
    "groups-bool": _err(TypeError, "groups", w=np.zeros((6, 4, 3, 3)), groups=True),
    "bias-long": _err(ValueError, r"bias.*\(7,\)", b=np.zeros(7)),
    "bias-2d": _err(ValueError, "bias", b=np.zeros((1, 6))),
    "bias-scalar": _err(ValueError, "bias", b=np.float32(1)),
    "kernel-too-large": _err(ValueError, r"kernel.*\(2, 4, 6, 6\)", w=np.zeros((6, 2, 7, 3))),
    "kernel-too-large-W": _err(ValueError, "kernel", w=np.zeros((6, 2, 1, 9)), padding=(0, 1)),
    "kernel-too-large-dilated": _err(ValueError, "kernel", dilation=3),
    "kernel-too-large-asym": _err(ValueError, "kernel", w=np.zeros((6, 2, 3, 9)),
                                  padding=((0, 0), (0, 2))),
    "stride-zero": _err(ValueError, "stride", stride=0),
    "stride-negative": _err(ValueError, "stride", stride=-1),
    "stride-pair-zero": _err(ValueError, "stride", stride=(1, 0)),
    "dilation-zero": _err(ValueError, "dilation", dilation=0),
    "dilation-pair-negative": _err(ValueError, "dilation", dilation=(-1, 1)),
    "padding-negative": _err(ValueError, "padding", padding=-1),
    "padding-pair-negative": _err(ValueError, "padding", padding=(0, -1)),
    "padding-pairs-negative": _err(ValueError, "padding", padding=((1, -1), (0, 0))),
    "stride-float": _err(TypeError, "stride", stride=1.0),
    "stride-float-pair": _err(TypeError, "stride", stride=(1, 2.0)),
    "stride-np-float": _err(TypeError, "stride", stride=np.float64(2)),
    "stride-bool": _err(TypeError, "stride", stride=True),
    "stride-np-bool": _err(TypeError, "stride", stride=np.bool_(True)),
    "dilation-float": _err(TypeError, "dilation", dilation=1.5),
    "dilation-bool": _err(TypeError, "dilation", dilation=(True, 1)),
    "padding-float": _err(TypeError, "padding", padding=1.0),
    "padding-float-pair": _err(TypeError, "padding", padding=(0.5, 1)),
    "padding-float-pairs": _err(TypeError, "padding", padding=((0, 1.0), (0, 0))),
    "padding-bool": _err(TypeError, "padding", padding=False),
    "padding-bool-pairs": _err(TypeError, "padding", padding=((0, 0), (True, 0))),
    "padding-three": _err((TypeError, ValueError), "padding", padding=(1, 1, 1)),
    "padding-none": _err((TypeError, ValueError), "padding", padding=None),
    "padding-SAME": _err(ValueError, "padding", padding="SAME"),
    "padding-full": _err(ValueError, "padding", padding="full"),
    "padding-empty-string": _err(ValueError, "padding", padding=""),
    "padding_mode-constant": _err(ValueError, "padding_mode", padding_mode="constant"),
    "padding_mode-zero": _err(ValueError, "padding_mode", padding_mode="zero"),
    "padding_mode-None": _err(ValueError, "padding_mode", padding_mode=None),
    "activation-sigmoid": _err(ValueError, "activation", activation="sigmoid"),
    "activation-ReLU": _err(ValueError, "activation", activation="ReLU"),
    "activation-True": _err(ValueError, "activation", activation=True),
    "zero-C": _err(ValueError, r"\bx\b.*zero", x=np.zeros((2, 0, 6, 6)), w=np.zeros((6, 0, 3, 3)),
                   groups=1),
    "zero-H": _err(ValueError, r"\bx\b.*zero", x=np.zeros((2, 4, 0, 6)), padding=2),
    "zero-W": _err(ValueError, r"\bx\b.*zero", x=np.zeros((4, 6, 0)), padding=2),
    "zero-K": _err(ValueError, r"weight.*zero", w=np.zeros((0, 2, 3, 3))),
    "zero-KH": _err(ValueError, r"weight.*zero", w=np.zeros((6, 2, 0, 3))),
    "zero-KW": _err(ValueError, r"weight.*zero", w=np.zeros((6, 2, 3, 0))),
    "x-2d": _err(ValueError, r"\bx\b.*\(6, 6\)", x=np.zeros((6, 6))),
    "x-5d": _err(ValueError, r"\bx\b", x=np.zeros((1, 2, 4, 6, 6))),
    "x-scalar": _err(ValueError, r"\bx\b", x=np.float64(1.0)),
    "weight-3d": _err(ValueError, "weight", w=np.zeros((2, 3, 3))),
    "weight-5d": _err(ValueError, "weight", w=np.zeros((1, 6, 2, 3, 3))),
    "reflect-pad-equal-H": _err(ValueError, "reflect", padding=((6, 0), (0, 0)),
                                padding_mode="reflect"),
    "reflect-pad-equal-W": _err(ValueError, "reflect", padding=((0, 0), (0, 6)),
                                padding_mode="reflect"),
    "reflect-same-1-pixel": _err(ValueError, "reflect", x=np.zeros((1, 4, 1, 6)), padding="same",
                                 padding_mode="reflect"),
    "circular-pad-over-W": _err(ValueError, "circular", padding=(0, 7), padding_mode="circular"),
    "backend-name": _err(ValueError, "backend", backend="torch"),
    "ragged-x": _err((TypeError, ValueError), r"\bx\b", x=[[[[1.0, 2.0], [3.0]]]],
                     w=np.zeros((1, 1, 1, 1)), groups=1),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exc, match, x, w, b, kwargs", list(ERRORS.values()), ids=list(ERRORS))
def test_bad_arguments(exc, match, x, w, b, kwargs, backend):
    kwargs = {"backend": backend, **kwargs}
    with pytest.raises(exc, match=match):
        fc.conv2d(x, w, b, **kwargs)


BAD_DTYPES = [np.complex64, np.complex128, object, "U3", "S3", "datetime64[s]", "timedelta64[ms]"]
if np.dtype(np.longdouble) != np.dtype(np.float64):
    BAD_DTYPES.append(np.longdouble)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arg", ["x", "weight", "bias"])
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
def test_unsupported_dtypes_are_type_errors(dtype, arg, backend):
    arrays = dict(x=np.zeros((1, 2, 4, 4)), weight=np.zeros((3, 2, 3, 3)), bias=np.zeros(3))
    arrays[arg] = np.zeros(arrays[arg].shape, dtype)
    with pytest.raises(TypeError, match=re.escape(str(np.dtype(dtype)))) as info:
        fc.conv2d(arrays["x"], arrays["weight"], arrays["bias"], backend=backend)
    assert arg in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_boundary_arguments_are_accepted(backend):
    """The limits just inside each error above work (so the errors are not spurious)."""
    x = np.ones((1, 2, 4, 5))
    w = np.ones((2, 2, 3, 3))
    assert fc.conv2d(x, w, padding=((3, 0), (0, 4)), padding_mode="reflect",
                     backend=backend).shape == (1, 2, 5, 7)
    assert fc.conv2d(x, w, padding=((4, 4), (5, 5)), padding_mode="circular",
                     backend=backend).shape == (1, 2, 10, 13)
    assert fc.conv2d(x, np.ones((2, 2, 4, 5)), backend=backend).shape == (1, 2, 1, 1)
    assert fc.conv2d(x, np.ones((2, 2, 5, 7)), padding=(1, 1), backend=backend).shape == (1, 2, 2, 1)
    assert fc.conv2d(x, np.ones((2, 2, 2, 2)), dilation=(3, 4), backend=backend).shape == (1, 2, 1, 1)
    # 3x3 of ones over all-ones, 2 channels: every valid output is 18
    np.testing.assert_array_equal(fc.conv2d(x, w, backend=backend), np.full((1, 2, 2, 3), 18.0))


def test_a_repeated_call_is_validated_like_the_first():
    # Repeated calls reuse the first one's checked spec (keyed by shapes, dtypes
    # and options): what differs must still be checked and converted.
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    w = np.ones((4, 3, 3, 3), np.float32)
    first = fc.conv2d(x, w, padding=1, backend="numpy")
    again = fc.conv2d(np.asfortranarray(x), w, padding=1, backend="numpy")
    np.testing.assert_array_equal(again, first)
    assert fc.conv2d(x.astype(np.float64), w, padding=1).dtype == np.float64
    assert fc.conv2d(x[0], w, padding=1).shape == (4, 6, 6)
    for bad, error in ((dict(padding=1.0), TypeError), (dict(stride=True), TypeError),
                       (dict(groups=2), ValueError), (dict(padding_mode=["zeros"]), ValueError)):
        with pytest.raises(error):
            fc.conv2d(x, w, **{"padding": 1, **bad})
    with pytest.raises(ValueError, match="channel mismatch"):
        fc.conv2d(x[:, :2], w, padding=1)
