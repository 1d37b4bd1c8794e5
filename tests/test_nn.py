"""fastconv.nn: layers against central finite differences, optimisers against
hand-computed steps and torch.optim, state_dict round trips, and training.

Finite differences run in float64 on small, random inputs (away from the kinks
of ReLU and max pooling with probability one).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import nn

# ----------------------------------------------------------------- helpers


def _runs_everything(name: str) -> bool:
    """Whether backend `name` runs every fastconv function nn calls (on a trivial call)."""
    x = np.zeros((1, 1, 2, 2))
    w = np.zeros((1, 1, 1, 1))
    calls = (lambda: fc.conv2d(x, w, backend=name),
             lambda: fc.conv2d_backward(x, x, w, backend=name),
             lambda: fc.max_pool2d(x, 2, return_indices=True, backend=name),
             lambda: fc.avg_pool2d(x, 2, backend=name),
             lambda: fc.avg_pool2d_backward(x[..., :1, :1], x.shape, 2, backend=name))
    try:
        for call in calls:
            call()
    except fc.BackendUnavailableError:
        return False
    return True


BACKENDS = ["auto"] + [name for name in fc.backends() if _runs_everything(name)]


def numerical_grad(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of a (in place)."""
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def assert_grad_close(got, want, rtol=1e-6, atol=1e-8):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def small_net(rng, backend="auto", dtype=np.float64):
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=2, padding_mode="reflect",
                  activation="relu", rng=rng, dtype=dtype),
        nn.AvgPool2d(2, count_include_pad=False),
        nn.Flatten(),
        nn.Linear(16, 6, rng=rng, dtype=dtype),
        nn.ReLU(),
        nn.Linear(6, 3, init="xavier", rng=rng, dtype=dtype),
        backend=backend)


# ------------------------------------------------- gradients of a whole net


@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_network_matches_finite_differences(backend):
    rng = np.random.default_rng(0)
    model = small_net(rng, backend)
    for p in model.params.values():  # nonzero biases, so their gradients are exercised
        p += 0.1 * rng.standard_normal(p.shape)
    loss_fn = nn.SoftmaxCrossEntropy()
    x = rng.standard_normal((3, 2, 8, 8))
    t = np.array([0, 2, 1])

    def loss():
        return loss_fn.forward(model.forward(x), t)

    loss()
    dx = model.backward(loss_fn.backward())
    grads = model.grads
    assert set(grads) == set(model.params) == {
        "0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias", "8.weight", "8.bias"}
    for key, param in model.params.items():
        assert_grad_close(grads[key], numerical_grad(loss, param))
    assert_grad_close(dx, numerical_grad(loss, x))


# ------------------------------------------------------ each layer's backward

LAYERS = {
    "conv": lambda rng: nn.Conv2d(3, 4, 3, rng=rng, dtype=np.float64),
    "conv_stride_pad": lambda rng: nn.Conv2d(3, 2, (3, 2), stride=2, padding=((1, 0), (2, 1)),
                                             rng=rng, dtype=np.float64),
    "conv_same_dilated": lambda rng: nn.Conv2d(3, 3, 3, padding="same", dilation=2, groups=3,
                                               rng=rng, dtype=np.float64),
    "conv_circular_nobias": lambda rng: nn.Conv2d(3, 2, 3, padding=1, bias=False,
                                                  padding_mode="circular", rng=rng,
                                                  dtype=np.float64),
    "conv_relu": lambda rng: nn.Conv2d(3, 4, 3, padding=1, activation="relu", rng=rng,
                                       dtype=np.float64),
    "maxpool": lambda rng: nn.MaxPool2d(2),
    "maxpool_overlap": lambda rng: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    "maxpool_dilated": lambda rng: nn.MaxPool2d(2, stride=1, dilation=2),
    "avgpool": lambda rng: nn.AvgPool2d(2),
    "avgpool_options": lambda rng: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                                count_include_pad=False),
    "relu": lambda rng: nn.ReLU(),
    "flatten": lambda rng: nn.Flatten(),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_backward_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    layer = LAYERS[name](rng)
    for p in layer.params.values():
        p += 0.1 * rng.standard_normal(p.shape)
    x = rng.standard_normal((2, 3, 7, 6))
    r = rng.standard_normal(layer.forward(x).shape)  # loss = <layer(x), r>

    def loss():
        return float((layer.forward(x) * r).sum())

    loss()
    dx = layer.backward(r)
    assert dx.shape == x.shape
    assert_grad_close(dx, numerical_grad(loss, x))
    for key, param in layer.params.items():
        assert_grad_close(layer.grads[key], numerical_grad(loss, param))


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(2)
    layer = nn.Linear(5, 4, rng=rng, dtype=np.float64)
    layer.params["bias"] += rng.standard_normal(4)
    x = rng.standard_normal((3, 5))
    r = rng.standard_normal((3, 4))

    def loss():
        return float((layer.forward(x) * r).sum())

    loss()
    assert_grad_close(layer.backward(r), numerical_grad(loss, x))
    for key in ("weight", "bias"):
        assert_grad_close(layer.grads[key], numerical_grad(loss, layer.params[key]))


@pytest.mark.parametrize("labels", ["indices", "one_hot", "soft"])
def test_softmax_cross_entropy_matches_finite_differences(labels):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5)) * 3
    t = np.array([0, 4, 2, 2])
    if labels == "one_hot":
        t = np.eye(5)[t]
    elif labels == "soft":
        t = rng.dirichlet(np.ones(5), size=4)
    loss_fn = nn.SoftmaxCrossEntropy()

    def loss():
        return loss_fn.forward(x, t)

    value = loss()
    assert value > 0
    np.testing.assert_allclose(loss_fn.y.sum(axis=1), 1)
    assert_grad_close(loss_fn.backward(2.0), 2.0 * numerical_grad(loss, x))


def test_softmax_cross_entropy_is_stable_and_matches_the_formula():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    loss = nn.SoftmaxCrossEntropy().forward(x, np.array([0, 1]))
    want = (0.0 + (np.log(np.exp([1, 2, 3]).sum()) - 2)) / 2
    assert np.isfinite(loss)
    assert loss == pytest.approx(want)


def test_max_pool_backward_equals_fastconv_max_pool2d_backward():
    """The scatter from saved indices gives fc.max_pool2d_backward's result,
    ties and overlapping windows included."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float32)  # many ties
    args = (3, 2, 1, 1, True)
    layer = nn.MaxPool2d(*args)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    got = layer.backward(dout)
    want = fc.max_pool2d_backward(dout, x, *args, backend="numpy")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_unbatched_images_go_through_conv_and_pool_layers():
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.MaxPool2d(2),
                          nn.AvgPool2d(2))
    x = rng.standard_normal((2, 8, 8)).astype(np.float32)
    out = model.forward(x)
    assert out.shape == (3, 2, 2)
    dx = model.backward(np.ones_like(out))
    assert dx.shape == x.shape
    batched = model.forward(x[None])
    np.testing.assert_allclose(out, batched[0])


# ------------------------------------------------------------------ dtypes


def test_float32_by_default_and_float64_on_request():
    rng = np.random.default_rng(6)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), nn.Flatten(), nn.Linear(8, 2, rng=rng))
    assert all(p.dtype == np.float32 for p in model.params.values())
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    out = model.forward(x)
    assert out.dtype == np.float32
    model.backward(np.ones_like(out))
    assert all(g.dtype == np.float32 for g in model.grads.values())

    model.astype(np.float64)
    assert all(p.dtype == np.float64 for p in model.params.values())
    assert model.forward(x.astype(np.float64)).dtype == np.float64
    assert nn.Conv2d(1, 2, 3, dtype="float64").weight.dtype == np.float64


# ----------------------------------------------------------------- backends


def test_backend_passes_through_to_every_fastconv_call(monkeypatch):
    seen = []

    def spy(name):
        real = getattr(fc, name)

        def call(*args, backend, **kwargs):
            seen.append((name, backend))
            return real(*args, backend="numpy", **kwargs)

        monkeypatch.setattr(fc, name, call)

    for name in ("conv2d", "conv2d_backward", "max_pool2d", "avg_pool2d",
                 "avg_pool2d_backward"):
        spy(name)
    rng = np.random.default_rng(7)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, rng=rng), nn.MaxPool2d(2),
                          nn.AvgPool2d(2), backend="numba")
    out = model.forward(np.ones((1, 1, 8, 8)))
    model.backward(np.ones_like(out))
    assert sorted(seen) == sorted([("conv2d", "numba"), ("max_pool2d", "numba"),
                                   ("avg_pool2d", "numba"), ("avg_pool2d_backward", "numba"),
                                   ("conv2d_backward", "numba")])

    seen.clear()
    model[0].backend = {"conv2d_backward": "cpp"}  # one layer, one function
    model[0].backward(np.ones((1, 2, 8, 8)))
    model[0].forward(np.ones((1, 1, 8, 8)))
    assert seen == [("conv2d_backward", "cpp"), ("conv2d", "auto")]


@pytest.mark.parametrize("backend, error", [
    ("gpu", ValueError), (3, TypeError), ({"conv3d": "numpy"}, ValueError),
    ({"conv2d": "gpu"}, ValueError)])
def test_bad_backend_is_rejected_when_set(backend, error):
    with pytest.raises(error, match="backend"):
        nn.Conv2d(1, 1, 1, backend=backend)
    with pytest.raises(error, match="backend"):
        nn.Sequential(nn.ReLU(), backend=backend)


# ------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("make, error, match", [
    (lambda: nn.Conv2d(0, 4, 3), ValueError, "in_channels"),
    (lambda: nn.Conv2d(2.0, 4, 3), TypeError, "in_channels"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "groups"),
    (lambda: nn.Conv2d(2, 4, 0), ValueError, "kernel_size"),
    (lambda: nn.Conv2d(2, 4, 3, stride=0), ValueError, "stride"),
    (lambda: nn.Conv2d(2, 4, 3, padding="full"), ValueError, "padding"),
    (lambda: nn.Conv2d(2, 4, 3, padding=-1), ValueError, "padding"),
    (lambda: nn.Conv2d(2, 4, 3, padding_mode="wrap"), ValueError, "padding_mode"),
    (lambda: nn.Conv2d(2, 4, 3, activation="tanh"), ValueError, "activation"),
    (lambda: nn.Conv2d(2, 4, 3, dtype=np.int32), TypeError, "dtype"),
    (lambda: nn.Conv2d(2, 4, 3, bias=1), TypeError, "bias"),
    (lambda: nn.Conv2d(2, 4, 3, init="lecun"), ValueError, "init"),
    (lambda: nn.Conv2d(2, 4, 3, rng="seed"), TypeError, "rng"),
    (lambda: nn.MaxPool2d(2, padding=2), ValueError, "padding"),
    (lambda: nn.MaxPool2d(0), ValueError, "kernel_size"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: nn.Linear(0, 3), ValueError, "in_features"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "layer 1"),
    (lambda: nn.Sequential(nn.SoftmaxCrossEntropy()), TypeError, "loss"),
    (lambda: nn.SGD(lr=0), ValueError, "lr"),
    (lambda: nn.SGD(lr="0.1"), TypeError, "lr"),
    (lambda: nn.Momentum(momentum=1.0), ValueError, "momentum"),
    (lambda: nn.Adam(beta2=-0.1), ValueError, "beta2"),
    (lambda: nn.Adam(eps=float("nan")), ValueError, "eps"),
])
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"Linear\(4, 2\) needs x of shape \(N, 4\).*Flatten"):
        nn.Linear(4, 2).forward(np.ones((2, 1, 2, 2)))
    with pytest.raises(ValueError, match="channel"):
        nn.Conv2d(3, 2, 3).forward(np.ones((1, 2, 5, 5)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Conv2d(3, 2, 3).backward(np.ones((1, 2, 3, 3)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.MaxPool2d(2).backward(np.ones((1, 1, 1, 1)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.SoftmaxCrossEntropy().backward()
    pool = nn.MaxPool2d(2)
    pool.forward(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="dout has shape"):
        pool.backward(np.ones((1, 1, 3, 3)))
    loss = nn.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        loss.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="integers"):
        loss.forward(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        loss.forward(np.zeros((2, 3)), np.array([0, 1, 2]))


# --------------------------------------------------------------- optimisers


def _toy_problem(seed=8):
    rng = np.random.default_rng(seed)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    grads_seq = [{k: rng.standard_normal(v.shape) for k, v in params.items()}
                 for _ in range(5)]
    return params, grads_seq


def test_sgd_and_momentum_steps_by_hand():
    params, grads_seq = _toy_problem()
    p0 = {k: v.copy() for k, v in params.items()}
    g1, g2 = grads_seq[:2]
    opt = nn.SGD(lr=0.1)
    opt.update(params, g1)
    for k in params:
        np.testing.assert_allclose(params[k], p0[k] - 0.1 * g1[k])

    params = {k: v.copy() for k, v in p0.items()}
    opt = nn.Momentum(lr=0.1, momentum=0.9)
    opt.update(params, g1)
    opt.update(params, g2)
    for k in params:  # the textbook's v = 0.9 v - lr g; p += v
        v1 = -0.1 * g1[k]
        v2 = 0.9 * v1 - 0.1 * g2[k]
        np.testing.assert_allclose(params[k], p0[k] + v1 + v2)


def test_adam_first_steps_by_hand():
    params, grads_seq = _toy_problem()
    p0 = {k: v.copy() for k, v in params.items()}
    g1, g2 = grads_seq[:2]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    opt = nn.Adam(lr=lr)
    opt.update(params, g1)
    for k in params:  # step 1 after bias correction: lr * g / (|g| + eps), about lr * sign(g)
        np.testing.assert_allclose(params[k], p0[k] - lr * g1[k] / (np.abs(g1[k]) + eps))
    p1 = {k: v.copy() for k, v in params.items()}
    opt.update(params, g2)
    for k in params:
        m = (1 - b1) * (b1 * g1[k] + g2[k])
        v = (1 - b2) * (b2 * g1[k] ** 2 + g2[k] ** 2)
        m_hat, v_hat = m / (1 - b1 ** 2), v / (1 - b2 ** 2)
        np.testing.assert_allclose(params[k], p1[k] - lr * m_hat / (np.sqrt(v_hat) + eps))


def test_weight_decay_adds_to_the_gradient():
    params, grads_seq = _toy_problem()
    p0 = {k: v.copy() for k, v in params.items()}
    nn.SGD(lr=0.1, weight_decay=0.01).update(params, grads_seq[0])
    for k in params:
        np.testing.assert_allclose(params[k], p0[k] - 0.1 * (grads_seq[0][k] + 0.01 * p0[k]))


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Adam"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_optimisers_match_torch_optim(name, weight_decay):
    torch = pytest.importorskip("torch")
    params, grads_seq = _toy_problem()
    tparams = [torch.tensor(v.copy(), requires_grad=True) for v in params.values()]
    ours, theirs = {
        "SGD": (nn.SGD(lr=0.1, weight_decay=weight_decay),
                torch.optim.SGD(tparams, lr=0.1, weight_decay=weight_decay)),
        "Momentum": (nn.Momentum(lr=0.1, momentum=0.8, weight_decay=weight_decay),
                     torch.optim.SGD(tparams, lr=0.1, momentum=0.8, weight_decay=weight_decay)),
        "Adam": (nn.Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=weight_decay),
                 torch.optim.Adam(tparams, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                  weight_decay=weight_decay)),
    }[name]
    for grads in grads_seq:
        ours.update(params, grads)
        for tp, g in zip(tparams, grads.values()):
            tp.grad = torch.tensor(g)
        theirs.step()
    for p, tp in zip(params.values(), tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_optimiser_updates_float32_parameters_in_place():
    rng = np.random.default_rng(9)
    layer = nn.Linear(3, 2, rng=rng)
    weight = layer.weight
    layer.forward(np.ones((1, 3), np.float32))
    layer.backward(np.ones((1, 2), np.float32))
    nn.Adam().update(layer.params, layer.grads)
    assert layer.weight is weight and weight.dtype == np.float32


def test_optimiser_rejects_mismatched_gradients():
    params = {"w": np.zeros(3)}
    with pytest.raises(KeyError, match="no gradient"):
        nn.SGD().update(params, {})
    with pytest.raises(ValueError, match="shape"):
        nn.SGD().update(params, {"w": np.zeros(4)})
    opt = nn.Adam()
    opt.update(params, {"w": np.ones(3)})
    with pytest.raises(ValueError, match="new optimiser"):
        opt.update({"w": np.zeros(5)}, {"w": np.ones(5)})


# -------------------------------------------------------------------- init


def test_init_is_seedable_and_has_the_advertised_scale():
    a = nn.Conv2d(8, 16, 3, rng=0).weight
    b = nn.Conv2d(8, 16, 3, rng=np.random.default_rng(0)).weight
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Conv2d(8, 16, 3, rng=1).weight)

    rng = np.random.default_rng(10)
    he = nn.init.he_normal((256, 64, 3, 3), rng)
    assert he.std() == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.02)
    xavier = nn.init.xavier_normal((300, 500), rng)
    assert xavier.std() == pytest.approx(np.sqrt(2 / 800), rel=0.02)
    fixed = nn.Linear(400, 300, init=0.01, rng=rng).weight  # the textbook's weight_init_std
    assert fixed.std() == pytest.approx(0.01, rel=0.02)
    assert np.all(nn.Linear(4, 3).bias == 0)


def test_reset_parameters_draws_the_same_model_from_the_same_seed():
    a = small_net(0).reset_parameters(42)
    b = small_net(1).reset_parameters(42)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])


# --------------------------------------------------------------- state_dict


def test_state_dict_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(11)
    model = small_net(rng, dtype=np.float32)
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    model.params["0.bias"][:] = 0.5
    model.save(tmp_path / "model.npz")

    state = model.state_dict()
    assert state.keys() == model.params.keys()
    assert all(s is not p for s, p in zip(state.values(), model.params.values()))

    other = small_net(np.random.default_rng(12), dtype=np.float32)
    assert not np.array_equal(other.forward(x), model.forward(x))
    weight = other.params["0.weight"]
    assert other.load(tmp_path / "model.npz") is other
    assert other.params["0.weight"] is weight  # loaded in place: optimisers keep their arrays
    np.testing.assert_array_equal(other.forward(x), model.forward(x))
    with np.load(tmp_path / "model.npz") as data:
        assert sorted(data.files) == sorted(state)


def test_load_state_dict_checks_names_and_shapes_and_casts():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    state = model.state_dict()
    with pytest.raises(KeyError, match=r"missing keys \['2.bias'\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "2.bias"})
    with pytest.raises(KeyError, match=r"unexpected keys \['3.weight'\]"):
        model.load_state_dict({**state, "3.weight": np.zeros(1)})
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(3, 2\)"):
        model.load_state_dict({**state, "0.weight": np.zeros((3, 2))})
    model.load_state_dict({"0.bias": np.array([1.0, 2.0])}, strict=False)
    assert model.params["0.bias"].dtype == np.float32
    np.testing.assert_array_equal(model.params["0.bias"], [1, 2])


# ----------------------------------------------------------------- training


def _bars(rng, n):
    """Images (n, 1, 6, 6) with a horizontal (label 0) or vertical (label 1) bar, noisy."""
    labels = rng.integers(0, 2, n)
    x = 0.1 * rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    where = rng.integers(0, 6, n)
    for i in range(n):
        if labels[i]:
            x[i, 0, :, where[i]] += 1
        else:
            x[i, 0, where[i], :] += 1
    return x, labels


@pytest.mark.parametrize("optimiser", [nn.SGD(lr=0.1), nn.Momentum(lr=0.05), nn.Adam(lr=0.01)],
                         ids=["SGD", "Momentum", "Adam"])
def test_training_a_tiny_net_decreases_the_loss(optimiser):
    rng = np.random.default_rng(13)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, activation="relu", rng=rng),
                          nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(36, 2, init="xavier", rng=rng))
    loss_fn = nn.SoftmaxCrossEntropy()
    x, t = _bars(rng, 64)
    losses = []
    for _ in range(40):
        losses.append(loss_fn.forward(model.forward(x), t))
        model.backward(loss_fn.backward())
        optimiser.update(model.params, model.grads)
    assert losses[-1] < 0.5 * losses[0]
    test_x, test_t = _bars(rng, 64)
    assert (model.forward(test_x).argmax(axis=1) == test_t).mean() >= 0.9
