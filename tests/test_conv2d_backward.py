"""fastconv.conv2d_backward against the contract in docs/API.md.

Oracles: PyTorch's autograd through F.pad + F.conv2d, central finite
differences of a direct-loop forward written here (no torch), the adjoint
identities <conv(x, w), G> = <x, grad_x> = <w, grad_w>, and hand-derived
fold-back of the padding modes. Every backend that implements the op is tested.
"""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc

# ----------------------------------------------------------------- helpers


# The shared oracles and helpers live with the forward tests.
from test_conv2d import (DTYPES, MODES, _backends_for, _pair, assert_close,  # noqa: E402
                         direct_conv2d, out_size, resolve_pads)

BACKENDS = _backends_for("conv2d_backward")


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # tiny problems: threads only add overhead
    return torch


def torch_grads(g, x, w, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1, mode="zeros"):
    """Autograd's (grad_x, grad_w, grad_b) in float64 for batched x."""
    torch = _torch()
    F = torch.nn.functional

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float64, copy=True))

    xt = t(x).requires_grad_(True)
    wt = t(w).requires_grad_(True)
    bt = torch.zeros(w.shape[0], dtype=torch.float64, requires_grad=True)
    xp = xt
    top, bottom, left, right = pads
    if any(pads):
        if mode == "zeros":
            xp = F.pad(xt, (left, right, top, bottom))
        else:
            xp = F.pad(xt, (left, right, top, bottom), mode=mode)
    y = F.conv2d(xp, wt, bt, stride=_pair(stride), dilation=_pair(dilation), groups=groups)
    assert tuple(y.shape) == np.shape(g)
    y.backward(t(g))
    return tuple(np.zeros(a.shape) if a.grad is None else a.grad.numpy() for a in (xt, wt, bt))


def _check_grads(grads, ref, dtype, x_shape, w_shape):
    assert isinstance(grads, fc.Conv2dGrads) and isinstance(grads, tuple)
    assert grads._fields == ("input", "weight", "bias")
    for got, shape in zip(grads, (x_shape, w_shape, (w_shape[0],))):
        assert isinstance(got, np.ndarray)
        assert got.dtype == dtype
        assert got.shape == tuple(shape)
        assert got.flags.c_contiguous
    for got, r in zip(grads, ref):
        assert_close(got, r, dtype)


def _opts(kwargs, xs, ws):
    """Reference keyword arguments (resolved pads) for a conv2d-style call."""
    stride, dilation = kwargs.get("stride", 1), kwargs.get("dilation", 1)
    pads = resolve_pads(kwargs.get("padding", 0), xs[-2], xs[-1], ws[2], ws[3], stride, dilation)
    return dict(stride=stride, pads=pads, dilation=dilation, groups=kwargs.get("groups", 1),
                mode=kwargs.get("padding_mode", "zeros"))


def _out_shape(xs, ws, opts):
    top, bottom, left, right = opts["pads"]
    (sh, sw), (dh, dw) = _pair(opts["stride"]), _pair(opts["dilation"])
    return (xs[0], ws[0], out_size(xs[2], top, bottom, ws[2], sh, dh),
            out_size(xs[3], left, right, ws[3], sw, dw))


def test_backends_for_includes_the_reference():
    assert "numpy" in BACKENDS
    assert all(fc.backends()[name].available for name in BACKENDS)


# ------------------------------------------------ torch autograd, parametrised

CASES = [
    ("3x3", (2, 3, 7, 9), (4, 3, 3, 3), {}),
    ("odd-sizes-pad1", (1, 3, 11, 13), (5, 3, 3, 5), dict(padding=1)),
    ("pad-pair", (2, 2, 5, 7), (3, 2, 2, 3), dict(padding=(2, 1))),
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
    ("same-s1-even", (1, 2, 7, 8), (2, 2, 4, 2), dict(padding="same")),
    ("same-s2", (1, 2, 9, 10), (3, 2, 3, 3), dict(padding="same", stride=2)),
    ("same-s3-dil", (1, 2, 11, 8), (2, 2, 3, 2), dict(padding="same", stride=(3, 2),
                                                      dilation=(2, 3))),
    ("1x1", (2, 8, 5, 6), (3, 8, 1, 1), {}),
    ("1x1-stride2", (2, 4, 7, 6), (3, 4, 1, 1), dict(stride=2)),
    ("kernel-is-input", (2, 3, 5, 4), (2, 3, 5, 4), {}),
    ("one-pixel-padded", (1, 2, 1, 1), (3, 2, 3, 3), dict(padding=1)),
    ("large-image", (2, 3, 20, 19), (4, 3, 3, 3), dict(padding=1)),
    ("reflect", (1, 2, 5, 6), (2, 2, 3, 3), dict(padding=((4, 2), (5, 1)), padding_mode="reflect")),
    ("reflect-same-s2", (2, 2, 7, 6), (3, 2, 3, 4), dict(padding="same", stride=2,
                                                         padding_mode="reflect")),
    ("replicate", (1, 2, 4, 5), (2, 2, 3, 2), dict(padding=((7, 3), (2, 9)),
                                                   padding_mode="replicate")),
    ("replicate-dil-groups", (2, 2, 6, 5), (2, 1, 3, 3), dict(padding=3, dilation=2, groups=2,
                                                              padding_mode="replicate")),
    ("circular", (1, 2, 5, 6), (2, 2, 3, 3), dict(padding=((5, 0), (6, 3)), padding_mode="circular")),
    ("circular-stride-groups", (2, 3, 6, 7), (3, 1, 3, 3), dict(padding=(2, 3), stride=(2, 3),
                                                                groups=3, padding_mode="circular")),
    ("circular-large", (1, 2, 17, 16), (3, 2, 3, 3), dict(padding=(1, 1), padding_mode="circular")),
    # sizes past the blocking of a packed GEMM (depth > 256, K > 120, > 512 pixels)
    ("deep", (1, 40, 9, 10), (7, 40, 3, 3), dict(padding=(0, 1))),
    ("all-blocks-groups", (2, 64, 20, 27), (130, 32, 3, 3), dict(groups=2, padding=1,
                                                                 padding_mode="reflect")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_autograd(case, backend):
    _, xs, ws, kwargs = case
    opts = _opts(kwargs, xs, ws)
    gs = _out_shape(xs, ws, opts)
    for dtype in DTYPES:
        rng = np.random.default_rng(sum(xs) + 7 * sum(ws))
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        g = rng.standard_normal(gs).astype(dtype)
        saved = [a.copy() for a in (g, x, w)]
        grads = fc.conv2d_backward(g, x, w, backend=backend, **kwargs)
        _check_grads(grads, torch_grads(g, x, w, **opts), dtype, xs, ws)
        for a, s in zip((g, x, w), saved):
            np.testing.assert_array_equal(a, s)
        # unbatched: the first image alone
        grads = fc.conv2d_backward(g[0], x[0], w, backend=backend, **kwargs)
        ref = torch_grads(g[:1], x[:1], w, **opts)
        _check_grads(grads, (ref[0][0], ref[1], ref[2]), dtype, xs[1:], ws)


# ------------------------------------------------------------- hypothesis


@st.composite
def conv_configs(draw, max_size=9):
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 2))
    kg = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    n = draw(st.sampled_from([1, 1, 2, 3, 0]))
    mode = draw(st.sampled_from(MODES))
    form = draw(st.sampled_from(["int", "pair", "pairs", "valid", "same"]))
    cap = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(mode, (4, 4))
    ph = st.integers(0, min(cap[0], 4))
    pw = st.integers(0, min(cap[1], 4))
    if form == "int":
        padding = draw(st.integers(0, min(cap[0], cap[1], 4)))
    elif form == "pair":
        padding = (draw(ph), draw(pw))
    elif form == "pairs":
        padding = ((draw(ph), draw(ph)), (draw(pw), draw(pw)))
    else:
        padding = form
    stride = draw(st.sampled_from([(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                                   draw(st.integers(1, 3))]))
    dilation = draw(st.sampled_from([(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                                     draw(st.integers(1, 3))]))
    (dh, dw) = _pair(dilation)
    pads = resolve_pads(padding, h, w, kh, kw, stride, dilation)
    # make the kernel fit: grow the image (never below the padding-mode limits)
    h = max(h, dh * (kh - 1) + 1 - pads[0] - pads[1])
    w = max(w, dw * (kw - 1) + 1 - pads[2] - pads[3])
    pads = resolve_pads(padding, h, w, kh, kw, stride, dilation)
    if mode == "reflect":
        assume(max(pads[:2]) < h and max(pads[2:]) < w)
    if mode == "circular":
        assume(max(pads[:2]) <= h and max(pads[2:]) <= w)
    return dict(xs=(n, groups * cg, h, w), ws=(groups * kg, cg, kh, kw),
                kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                            padding_mode=mode),
                dtype=draw(st.sampled_from(DTYPES)), batched=draw(st.booleans()) or n != 1)


def _random_problem(cfg, seed):
    rng = np.random.default_rng(seed)
    opts = _opts(cfg["kwargs"], cfg["xs"], cfg["ws"])
    x = rng.standard_normal(cfg["xs"]).astype(cfg["dtype"])
    w = rng.standard_normal(cfg["ws"]).astype(cfg["dtype"])
    g = rng.standard_normal(_out_shape(cfg["xs"], cfg["ws"], opts)).astype(cfg["dtype"])
    return x, w, g, opts


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=50, deadline=None)
@given(cfg=conv_configs(), seed=st.integers(0, 2**32 - 1))
def test_random_configs_match_torch_autograd(backend, cfg, seed):
    x, w, g, opts = _random_problem(cfg, seed)
    ref = torch_grads(g, x, w, **opts)
    if cfg["batched"]:
        grads = fc.conv2d_backward(g, x, w, backend=backend, **cfg["kwargs"])
        _check_grads(grads, ref, cfg["dtype"], x.shape, w.shape)
    else:
        grads = fc.conv2d_backward(g[0], x[0], w, backend=backend, **cfg["kwargs"])
        _check_grads(grads, (ref[0][0], ref[1], ref[2]), cfg["dtype"], x.shape[1:], w.shape)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=1000, deadline=None)
@given(cfg=conv_configs(max_size=24), seed=st.integers(0, 2**32 - 1))
def test_random_configs_match_torch_autograd_sweep(backend, cfg, seed):
    x, w, g, opts = _random_problem(cfg, seed)
    grads = fc.conv2d_backward(g, x, w, backend=backend, **cfg["kwargs"])
    _check_grads(grads, torch_grads(g, x, w, **opts), cfg["dtype"], x.shape, w.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(cfg=conv_configs(), seed=st.integers(0, 2**32 - 1))
def test_adjoint_identities(backend, cfg, seed):
    """conv is linear in x and in w, so <conv(x, w), G> = <x, grad_x> = <w, grad_w>."""
    cfg = dict(cfg, dtype=np.float64)
    x, w, g, opts = _random_problem(cfg, seed)
    y = fc.conv2d(x, w, backend=backend, **cfg["kwargs"])
    grads = fc.conv2d_backward(g, x, w, backend=backend, **cfg["kwargs"])
    loss = float(np.sum(y * g))
    scale = 1 + np.abs(y).sum() * np.abs(g).max(initial=0)
    assert abs(loss - float(np.sum(x * grads.input))) <= 1e-10 * scale
    assert abs(loss - float(np.sum(w * grads.weight))) <= 1e-10 * scale
    assert_close(grads.bias, g.sum(axis=(0, 2, 3)))


# ------------------------------------------------ finite differences (no torch)

FD_CASES = [
    ("zeros", (1, 2, 4, 5), (2, 2, 2, 3), {}),
    ("stride-leftover", (1, 1, 7, 6), (2, 1, 2, 2), dict(stride=3)),
    ("dilation", (1, 2, 5, 5), (1, 2, 2, 2), dict(dilation=2, padding=1)),
    ("groups", (2, 4, 3, 4), (4, 2, 2, 2), dict(groups=2, padding=((1, 0), (0, 1)))),
    ("depthwise-same-s2", (1, 3, 4, 4), (3, 1, 3, 3), dict(groups=3, padding="same", stride=2)),
    ("reflect", (1, 1, 4, 5), (2, 1, 3, 3), dict(padding=((3, 1), (2, 4)), padding_mode="reflect")),
    ("replicate", (1, 2, 3, 3), (1, 2, 2, 3), dict(padding=((3, 2), (1, 4)),
                                                   padding_mode="replicate")),
    ("circular", (1, 1, 4, 3), (2, 1, 3, 2), dict(padding=((4, 1), (3, 0)), stride=(2, 1),
                                                  padding_mode="circular")),
    ("unbatched", (2, 3, 5), (2, 2, 3, 2), dict(padding=(1, 0), dilation=(1, 2))),
]


def _central_differences(loss, a, eps=0.5):
    """d loss / d a by central differences (exact up to rounding: loss is linear in a)."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = loss()
        a[i] = old - eps
        down = loss()
        a[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_finite_differences(case, backend):
    _, xs, ws, kwargs = case
    batched = len(xs) == 4
    xs4 = xs if batched else (1, *xs)
    opts = _opts(kwargs, xs4, ws)
    rng = np.random.default_rng(len(case[0]))
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    gs = _out_shape(xs4, ws, opts)
    g = rng.standard_normal(gs if batched else gs[1:])

    def loss():
        y = direct_conv2d(x if batched else x[None], w, b, **opts)
        return float(np.sum((y if batched else y[0]) * g))

    expected = [_central_differences(loss, a) for a in (x, w, b)]
    grads = fc.conv2d_backward(g, x, w, backend=backend, **kwargs)
    _check_grads(grads, expected, np.float64, xs, ws)


# ---------------------------------------------- hand-derived special cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_and_columns_the_kernel_never_touches_get_zero(backend):
    """H=8, KH=3, stride 3: rows 0-5 are read, rows 6 and 7 never; W likewise."""
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 2, 8, 7))
    w = rng.standard_normal((3, 2, 3, 2))
    g = rng.standard_normal((2, 3, 2, 2))  # OW = (7 - 2) // 3 + 1 = 2: columns 0-1, 3-4
    grads = fc.conv2d_backward(g, x, w, stride=3, backend=backend)
    assert grads.input.shape == (2, 2, 8, 7)
    np.testing.assert_array_equal(grads.input[:, :, 6:, :], 0)
    np.testing.assert_array_equal(grads.input[:, :, :, [2, 5, 6]], 0)
    assert np.all(grads.input[:, :, :6, [0, 1, 3, 4]] != 0)
    # dilation 2 with kernel 2 and stride 4: only rows/columns 0, 2, 4, 6 are read
    grads = fc.conv2d_backward(rng.standard_normal((2, 3, 2, 2)), x, w[:, :, :2], stride=4,
                               dilation=2, backend=backend)
    np.testing.assert_array_equal(grads.input[:, :, [1, 3, 5, 7], :], 0)
    np.testing.assert_array_equal(grads.input[:, :, :, [1, 3, 5]], 0)
    assert np.all(grads.input[:, :, ::2][:, :, :, ::2] != 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode, expected", [
    ("zeros", [1, 1, 1]),        # [0, a, b, c, 0]
    ("reflect", [1, 3, 1]),      # [b, a, b, c, b]
    ("replicate", [2, 1, 2]),    # [a, a, b, c, c]
    ("circular", [2, 1, 2]),     # [c, a, b, c, a]
])
def test_padding_modes_fold_gradients_back(mode, expected, backend):
    """A 1x1 identity kernel over [a, b, c] padded by one on each side, G = ones."""
    x = np.array([[[[0.5, -1.0, 2.0]]]])
    grads = fc.conv2d_backward(np.ones((1, 1, 1, 5)), x, np.ones((1, 1, 1, 1)),
                               padding=((0, 0), (1, 1)), padding_mode=mode, backend=backend)
    np.testing.assert_array_equal(grads.input[0, 0, 0], expected)
    # G = ones: grad_w is the sum of the padded row, each pixel counted as often as it appears
    np.testing.assert_array_equal(grads.weight.ravel(), [np.dot(expected, x.ravel())])
    np.testing.assert_array_equal(grads.bias, [5.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["replicate", "circular"])
def test_single_pixel_receives_every_tap(mode, backend):
    """A 1x1 image padded by 2 (replicate) or by 1 (circular allows pad <= size = 1):
    every tap of every output reads the one pixel, so its gradient collects them all."""
    pad = 2 if mode == "replicate" else 1
    rng = np.random.default_rng(21)
    w = rng.standard_normal((2, 3, 3, 3))
    x = rng.standard_normal((1, 3, 1, 1))
    oh = 1 + 2 * pad - 2
    grads = fc.conv2d_backward(np.ones((1, 2, oh, oh)), x, w, padding=pad, padding_mode=mode,
                               backend=backend)
    assert_close(grads.input[0, :, 0, 0], oh * oh * w.sum(axis=(0, 2, 3)))
    assert_close(grads.weight, np.broadcast_to(oh * oh * x[0, :, :, :], w.shape))
    assert_close(grads.bias, [oh * oh] * 2)


# ------------------------------------------ unbatched, empty, dtypes, layouts


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype, backend):
    x = np.zeros((0, 4, 7, 6), dtype)
    w = np.ones((6, 2, 3, 3), dtype)
    grads = fc.conv2d_backward(np.zeros((0, 6, 4, 3), dtype), x, w, stride=2, padding="same",
                               groups=2, padding_mode="reflect", backend=backend)
    assert grads.input.shape == (0, 4, 7, 6)
    assert grads.weight.shape == (6, 2, 3, 3) and grads.bias.shape == (6,)
    for a in grads:
        assert a.dtype == dtype and a.flags.c_contiguous
    np.testing.assert_array_equal(grads.weight, 0)
    np.testing.assert_array_equal(grads.bias, 0)


FLOAT32_DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float32]
FLOAT64_DTYPES = [np.int32, np.int64, np.uint32, np.float64]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT32_DTYPES + FLOAT64_DTYPES)
def test_dtype_promotion(dtype, backend):
    rng = np.random.default_rng(22)

    def values(shape):
        if np.dtype(dtype) == np.bool_:
            return rng.integers(0, 2, shape).astype(bool)
        if np.dtype(dtype).kind in "ui":
            return rng.integers(0, 4, shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    x, w, g = values((2, 2, 5, 6)), values((3, 2, 3, 2)), values((2, 3, 5, 5))
    expected = np.float32 if dtype in FLOAT32_DTYPES else np.float64
    grads = fc.conv2d_backward(g, x, w, padding=(1, 0), backend=backend)
    ref = _ref_grads_no_torch(g, x, w, pads=(1, 1, 0, 0))
    _check_grads(grads, ref, expected, x.shape, w.shape)
    # mixed: one float64 argument makes everything float64
    grads = fc.conv2d_backward(g.astype(np.float64), x, w, padding=(1, 0), backend=backend)
    _check_grads(grads, ref, np.float64, x.shape, w.shape)


def _ref_grads_no_torch(g, x, w, pads):
    """Gradients of sum(conv(x, w) * g) for zero padding, stride 1, by direct loops:
    grad_x[n, c, i, j] = sum g[n, k, p, q] w[k, c, i + t - p, j + l - q] over valid taps."""
    g, x, w = (np.asarray(a, np.float64) for a in (g, x, w))
    top, _, left, _ = pads
    n, k, oh, ow = g.shape
    _, c, kh, kw = w.shape
    gx = np.zeros(x.shape)
    gw = np.zeros(w.shape)
    for p in range(oh):
        for q in range(ow):
            for a in range(kh):
                for b in range(kw):
                    i, j = p + a - top, q + b - left
                    if 0 <= i < x.shape[2] and 0 <= j < x.shape[3]:
                        gx[:, :, i, j] += g[:, :, p, q] @ w[:, :, a, b]
                        gw[:, :, a, b] += g[:, :, p, q].T @ x[:, :, i, j]
    return gx, gw, g.sum(axis=(0, 2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_memory_layout_and_inputs_untouched(backend):
    rng = np.random.default_rng(23)
    x = np.ascontiguousarray(rng.standard_normal((2, 7, 6, 3))).transpose(0, 3, 1, 2)  # NHWC
    w = rng.standard_normal((4, 3, 3, 2))[::-1, :, ::-1, ::-1]
    g = np.asfortranarray(rng.standard_normal((2, 4, 5, 5)))
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or g.flags.c_contiguous)
    saved = [a.copy() for a in (g, x, w)]
    ref = torch_grads(g, x, w)
    grads = fc.conv2d_backward(g, x, w, backend=backend)
    _check_grads(grads, ref, np.float64, x.shape, w.shape)
    for a, s in zip((g, x, w), saved):
        np.testing.assert_array_equal(a, s)
    for a in grads:
        for src in (g, x, w):
            assert not np.shares_memory(a, src)
    # read-only and strided-slice views, float32, with padding modes
    x32 = rng.standard_normal((4, 3, 14, 12)).astype(np.float32)[::2, :, ::2, ::2]
    x32.flags.writeable = False
    w32 = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    g32 = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)[:, :, :, ::3]
    ref = torch_grads(g32, x32, w32, pads=(0, 0, 0, 0), stride=(1, 2))
    grads = fc.conv2d_backward(g32, x32, w32, stride=(1, 2), backend=backend)
    _check_grads(grads, ref, np.float32, x32.shape, w32.shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_array_likes(backend):
    x = [[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]]  # unbatched (1, 2, 3), nested lists
    w = [[[[1.0, -1.0]]]]
    g = [[[1.0, 2.0], [0.5, -1.0]]]
    grads = fc.conv2d_backward(g, x, w, backend=backend)
    # y[i, j] = x[i, j] - x[i, j+1]  =>  grad_x[i] = [g0, g1 - g0, -g1]
    np.testing.assert_array_equal(grads.input, [[[1.0, 1.0, -2.0], [0.5, -1.5, 1.0]]])
    # grad_w = [sum g*x[:, :2], sum g*x[:, 1:]]
    np.testing.assert_array_equal(grads.weight, [[[[1 + 4 + 0 + 1, 2 + 1 - 0.5 - 3]]]])
    np.testing.assert_array_equal(grads.bias, [2.5])


# -------------------------------------------------------------- error paths


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(backend):
    x = np.zeros((2, 4, 6, 6))
    w = np.zeros((6, 2, 3, 3))
    g = np.zeros((2, 6, 4, 4))
    fc.conv2d_backward(g, x, w, groups=2, backend=backend)  # the valid call
    with pytest.raises(ValueError, match=r"grad_out.*\(2, 6, 4, 4\)"):
        fc.conv2d_backward(np.zeros((2, 6, 4, 5)), x, w, groups=2, backend=backend)
    with pytest.raises(ValueError, match="grad_out"):
        fc.conv2d_backward(g, x, w, groups=2, padding=1, backend=backend)
    with pytest.raises(ValueError, match="grad_out"):
        fc.conv2d_backward(g, x[0], w, groups=2, backend=backend)  # batched grad, unbatched x
    with pytest.raises(ValueError, match="grad_out"):
        fc.conv2d_backward(g[0], x, w, groups=2, backend=backend)
    with pytest.raises(TypeError, match="complex128"):
        fc.conv2d_backward(g.astype(complex), x, w, groups=2, backend=backend)
    with pytest.raises(TypeError, match="object"):
        fc.conv2d_backward(g, x.astype(object), w, groups=2, backend=backend)
    with pytest.raises(ValueError, match="channel"):
        fc.conv2d_backward(g, x, w, backend=backend)
    with pytest.raises(ValueError, match="groups"):
        fc.conv2d_backward(g, x, w, groups=3, backend=backend)
    with pytest.raises(ValueError, match="stride"):
        fc.conv2d_backward(g, x, w, groups=2, stride=0, backend=backend)
    with pytest.raises(TypeError, match="padding"):
        fc.conv2d_backward(g, x, w, groups=2, padding=0.0, backend=backend)
    with pytest.raises(ValueError, match="padding_mode"):
        fc.conv2d_backward(g, x, w, groups=2, padding_mode="mirror", backend=backend)
    with pytest.raises(ValueError, match="reflect"):
        fc.conv2d_backward(np.zeros((2, 6, 16, 4)), x, w, groups=2, padding=(6, 0),
                           padding_mode="reflect", backend=backend)
    with pytest.raises(ValueError, match="kernel"):
        fc.conv2d_backward(np.zeros((2, 6, 1, 1)), x, np.zeros((6, 2, 7, 7)), groups=2,
                           backend=backend)
    with pytest.raises(ValueError, match="weight"):
        fc.conv2d_backward(g, x, np.zeros((6, 2, 0, 3)), groups=2, backend=backend)
