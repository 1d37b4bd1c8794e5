"""Backend registry, selection, explain(), use_backend, FASTCONV_BACKEND and threads."""

import os
import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch

X = np.arange(16.0).reshape(1, 1, 4, 4)
W = np.ones((1, 1, 3, 3))


def test_backends_lists_all_three_in_auto_order():
    infos = fc.backends()
    assert list(infos) == ["cpp", "numba", "numpy"]
    for name, info in infos.items():
        assert info.name == name
        assert isinstance(info.available, bool)
        assert (info.reason == "") == info.available
    assert infos["numpy"].available


def test_auto_runs_a_backend_that_implements_the_op():
    plan = fc.explain("conv2d", X, W)
    assert plan.backend in fc.backends()
    assert fc.backends()[plan.backend].available
    # what explain names is what runs: asking for it by name gives the same result
    np.testing.assert_array_equal(fc.conv2d(X, W), fc.conv2d(X, W, backend=plan.backend))


def test_explain_says_why_and_resolves_the_call():
    plan = fc.explain("conv2d", X, W, stride=2, padding="same")
    text = str(plan)
    assert plan.op == "conv2d" and plan.out_shape == (1, 1, 2, 2)
    assert plan.backend in text and "(1, 1, 2, 2)" in text
    # TensorFlow's 'same' rule for stride 2 on H=4, KH=3: total 1, the odd pixel at the bottom
    assert plan.spec.pads == (0, 1, 0, 1)
    for name, why in plan.rejected:
        assert name in text and why in text


def test_explain_covers_every_op_and_rejects_unknown_ops():
    x = np.ones((1, 2, 6, 6))
    assert fc.explain("max_pool2d", x, 2).out_shape == (1, 2, 3, 3)
    assert fc.explain("avg_pool2d", x, 3, 1).out_shape == (1, 2, 4, 4)
    assert fc.explain("im2col", x, 3).out_shape == (16, 18)
    assert fc.explain("col2im", np.ones((16, 18)), (1, 2, 6, 6), 3).out_shape == (1, 2, 6, 6)
    with pytest.raises(ValueError, match="op must be one of"):
        fc.explain("conv3d", x, W)
    with pytest.raises(ValueError, match="channel mismatch"):
        fc.explain("conv2d", x, W)  # explain validates exactly as the call does


def test_unknown_backend_name_is_an_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        fc.conv2d(X, W, backend="cuda")
    with pytest.raises(ValueError, match="use_backend"):
        with fc.use_backend("cuda"):
            pass


def test_unavailable_backend_by_name_says_why():
    unavailable = [n for n, b in fc.backends().items() if not b.available]
    if not unavailable:
        pytest.skip("every backend is available here")
    name = unavailable[0]
    with pytest.raises(fc.BackendUnavailableError, match=name) as info:
        fc.conv2d(X, W, backend=name)
    assert fc.backends()[name].reason in str(info.value)


def test_backend_without_the_op_is_an_error_by_name_and_skipped_by_auto(monkeypatch):
    from fastconv import _dispatch

    numpy_impl = _dispatch._REGISTRY["numpy"]
    monkeypatch.delattr(numpy_impl, "max_pool2d")
    with pytest.raises(fc.BackendUnavailableError, match="does not implement max_pool2d"):
        fc.max_pool2d(X, 2, backend="numpy")


def test_use_backend_sets_the_default_and_restores_it():
    assert fc.explain("conv2d", X, W).requested == "auto"
    with fc.use_backend("numpy"):
        plan = fc.explain("conv2d", X, W)
        assert plan.backend == "numpy" and plan.requested == "numpy"
    assert fc.explain("conv2d", X, W).requested == "auto"


def test_use_backend_is_per_thread():
    seen = {}
    inside = threading.Event()
    done = threading.Event()

    def other():
        inside.wait()
        seen["other"] = fc.explain("conv2d", X, W).requested
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with fc.use_backend("numpy"):
        inside.set()
        done.wait()
    t.join()
    assert seen["other"] == "auto"


def test_env_var_sets_the_default(monkeypatch):
    monkeypatch.setenv("FASTCONV_BACKEND", "numpy")
    assert fc.explain("conv2d", X, W).requested == "numpy"
    assert fc.explain("conv2d", X, W, backend="numpy").backend == "numpy"
    monkeypatch.setenv("FASTCONV_BACKEND", "gpu")
    with pytest.raises(ValueError, match="FASTCONV_BACKEND"):
        fc.conv2d(X, W)


def test_threads_default_set_and_env(monkeypatch):
    from fastconv import _threads

    monkeypatch.setattr(_threads, "_num_threads", None)  # restored after the test
    monkeypatch.delenv("FASTCONV_NUM_THREADS", raising=False)
    assert fc.get_num_threads() >= 1
    fc.set_num_threads(3)
    assert fc.get_num_threads() == 3
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n must be >= 1"):
            fc.set_num_threads(bad)
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="n must be an integer"):
            fc.set_num_threads(bad)
    _threads._num_threads = None
    monkeypatch.setenv("FASTCONV_NUM_THREADS", "5")
    assert fc.get_num_threads() == 5
    _threads._num_threads = None
    monkeypatch.setenv("FASTCONV_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="FASTCONV_NUM_THREADS"):
        fc.get_num_threads()


def test_backends_get_a_frozen_spec_and_readonly_contiguous_arrays(monkeypatch):
    from fastconv import _dispatch

    numpy_impl = _dispatch._REGISTRY["numpy"]
    real = numpy_impl.conv2d
    seen = {}

    def spy(spec, x, weight, bias, out):
        for name, a in (("x", x), ("weight", weight), ("bias", bias)):
            assert a.flags.c_contiguous and not a.flags.writeable, name
            assert a.dtype == spec.dtype, name
        with pytest.raises(AttributeError):
            spec.groups = 2
        seen["spec"] = spec
        return real(spec, x, weight, bias, out)

    monkeypatch.setattr(numpy_impl, "conv2d", spy)
    x = np.asfortranarray(np.ones((2, 3, 5, 5), np.int16))[:, :, ::-1]  # int16 -> float32
    fc.conv2d(x, np.ones((4, 3, 3, 3), np.float32), np.ones(4, np.uint8), backend="numpy")
    assert seen["spec"].dtype == np.float32 and seen["spec"].out_shape == (2, 4, 3, 3)


# ------------------------------------------------------------ auto's rules


def _first_available(order):
    return next(n for n in order if fc.backends()[n].available)


@pytest.mark.parametrize("case", [
    # (x shape, weight shape, kwargs, rule)
    ((1, 1, 8, 8), (1, 1, 3, 3), {}, "tiny"),
    ((2, 32, 28, 28), (32, 1, 3, 3), {"groups": 32, "padding": 1}, "depthwise, stride 1"),
    ((2, 16, 20, 20), (32, 1, 3, 3), {"groups": 16}, "depthwise, stride 1"),
    ((2, 32, 28, 28), (32, 1, 3, 3), {"groups": 32, "stride": 2}, "depthwise, strided"),
    ((2, 128, 7, 7), (16, 128, 3, 3), {"padding": 1}, "gemm"),  # deep, few columns
    ((8, 128, 7, 7), (16, 128, 3, 3), {"padding": 1}, "gemm"),  # 392 columns
    ((2, 16, 20, 20), (2, 16, 3, 3), {"padding": 1}, "gemm"),  # few filters: cpp's direct
    ((2, 32, 20, 20), (64, 32, 1, 1), {}, "gemm"),  # cpp's 1x1 kernel
    ((2, 32, 20, 20), (64, 32, 3, 3), {"padding": 1}, "gemm"),
])
def test_auto_follows_the_measured_rules(case):
    from fastconv import _rules
    from fastconv.backends.cpp_backend import CppBackend

    xs, ws, kwargs, name = case
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    plan = fc.explain("conv2d", x, w, **kwargs)
    rule = _rules.auto("conv2d", plan.spec)
    assert rule.name == name and f"rule {name!r}" in str(plan)
    assert plan.backend == _first_available(rule.order)
    if plan.backend == "cpp":
        assert plan.kernel == (rule.kernel or CppBackend.conv2d_kernel(plan.spec))
    # what explain names is what runs, and it is right
    want = fc.conv2d(x, w, backend="numpy", **kwargs)
    np.testing.assert_allclose(fc.conv2d(x, w, **kwargs), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [
    # (x shape, weight shape, kwargs, rule)
    ((1, 1, 8, 8), (1, 1, 3, 3), {}, "tiny"),
    ((2, 32, 28, 28), (32, 1, 3, 3), {"groups": 32, "padding": 1}, "depthwise gradients"),
    ((2, 32, 20, 20), (64, 32, 1, 1), {}, "1x1 gradients"),
    ((2, 3, 40, 40), (16, 3, 7, 7), {"stride": 2, "padding": 3}, "strided gradients"),
    ((2, 32, 20, 20), (64, 32, 1, 1), {"stride": 2}, "strided gradients"),
    ((2, 32, 20, 20), (64, 32, 3, 3), {"padding": 1}, "gradients"),
    ((1, 64, 14, 14), (64, 64, 3, 3), {"padding": 1}, "gradients"),
])
def test_auto_follows_the_measured_gradient_rules(case):
    from fastconv import _rules

    xs, ws, kwargs, name = case
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    g = rng.standard_normal(fc.conv2d(x, w, backend="numpy", **kwargs).shape)
    plan = fc.explain("conv2d_backward", g, x, w, **kwargs)
    rule = _rules.auto("conv2d_backward", plan.spec)
    assert rule.name == name and f"rule {name!r}" in str(plan)
    assert plan.backend == _first_available(rule.order)
    for got, want in zip(fc.conv2d_backward(g, x, w, **kwargs),
                         fc.conv2d_backward(g, x, w, backend="numpy", **kwargs)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_every_op_has_a_rule_and_a_result_like_numpy():
    from fastconv import _rules

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 12, 12))
    for op, args in [("conv2d_backward", (np.ones((2, 6, 10, 10)), x, np.ones((6, 4, 3, 3)))),
                     ("im2col", (x, 3)), ("col2im", (np.ones((200, 36)), x.shape, 3)),
                     ("max_pool2d", (x, 2)), ("avg_pool2d", (x, 3, 2, 1)),
                     ("max_pool2d_backward", (np.ones((2, 4, 6, 6)), x, 2)),
                     ("avg_pool2d_backward", (np.ones((2, 4, 6, 6)), x.shape, 2))]:
        plan = fc.explain(op, *args)
        rule = _rules.auto(op, plan.spec)
        assert plan.backend == _first_available(rule.order), op
        got = getattr(fc, op)(*args)
        want = getattr(fc, op)(*args, backend="numpy")
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


def test_rules_fall_through_to_an_available_backend(monkeypatch):
    from fastconv import _rules

    numba_impl = _dispatch._REGISTRY["numba"]
    monkeypatch.setattr(numba_impl, "available", lambda: (False, "pretend it is missing"))
    x = np.ones((2, 8, 16, 16), np.float32)
    plan = fc.explain("conv2d", x, np.ones((8, 1, 3, 3), np.float32), groups=8, padding=1)
    rule = _rules.auto("conv2d", plan.spec)
    assert plan.backend == _first_available([n for n in rule.order if n != "numba"])
    if rule.order[0] == "numba":
        assert ("numba", "pretend it is missing") in plan.rejected


@pytest.mark.parametrize("kernel", ["direct", "gemm", "1x1"])
def test_cpp_kernel_override(kernel):
    if not fc.backends()["cpp"].available:
        pytest.skip("no cpp extension")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 9, 9))
    w = rng.standard_normal((6, 8, 1, 1))
    b = rng.standard_normal(6)
    out = np.empty((2, 6, 9, 9))
    pinned = _dispatch._with_kernel(_dispatch._REGISTRY["cpp"], kernel)
    assert pinned.name == "cpp" and pinned is _dispatch._with_kernel(pinned.impl, kernel)
    from fastconv import _params

    spec, x4, w4, b4 = _params.conv2d(x, w, b, 1, 0, 1, 1, "zeros", "relu")
    pinned.conv2d(spec, x4, w4, b4, out)
    np.testing.assert_allclose(out, fc.conv2d(x, w, b, activation="relu", backend="numpy"),
                               rtol=1e-12, atol=1e-12)


def test_explain_shows_cost_memory_copies_and_rejections():
    x = np.asfortranarray(np.ones((4, 16, 20, 20), np.float64))  # a layout copy
    w = np.ones((32, 16, 3, 3), np.int16)  # a dtype copy (-> float64)
    plan = fc.explain("conv2d", x, w, padding="same", padding_mode="reflect")
    text = str(plan)
    assert plan.spec.pads == (1, 1, 1, 1) and plan.out_shape == (4, 32, 20, 20)
    assert plan.flops == 2 * 4 * 32 * 16 * 9 * 20 * 20
    assert f"{plan.flops / 1e9:.4g} GFLOP" in text
    assert "reflect pad copy" in text and plan.workspace_bytes > 4 * 16 * 22 * 22 * 8 - 1
    assert "x: copied (layout: not C-contiguous" in text
    assert "weight: copied (dtype int16 -> float64" in text
    assert f"threads: up to {fc.get_num_threads()}" in text
    assert "autotune: off" in text and plan.threads == fc.get_num_threads()
    for name, why in plan.rejected:
        assert name in text and why in text
    if plan.backend == "cpp":
        assert plan.kernel in ("gemm", "direct", "1x1") and f"kernel {plan.kernel!r}" in text
        assert "packed weights" in text  # the GEMM's packed A
    numpy_plan = fc.explain("conv2d", x, w, padding=1, backend="numpy")
    assert numpy_plan.kernel is None and "unfolded batch" in str(numpy_plan)
    assert dict(numpy_plan.workspace)["unfolded batch"] == 4 * 16 * 9 * 20 * 20 * 8


def test_explain_predicts_the_cpp_gemm_blocking():
    if not fc.backends()["cpp"].available:
        pytest.skip("no cpp extension")
    from fastconv import _rules

    x, w = np.ones((8, 64, 56, 56), np.float32), np.ones((64, 64, 3, 3), np.float32)
    plan = fc.explain("conv2d", x, w, padding=1, backend="cpp")
    mr, nr = _rules._micro_tile(np.float32)
    ws = dict(plan.workspace)
    # packed weights, C*KH*KW deep: every panel of MR filters (many columns)
    assert ws["packed weights"] == -(-64 // mr) * mr * 64 * 9 * 4
    # with few columns, on AVX2 only a last panel of fewer than MR (64 = 10*6 + 4)
    from fastconv import _cpp

    few = fc.explain("conv2d", x[:1, :, :8, :8], w, padding=1, backend="cpp")
    panels = -(-64 // mr) if _cpp.isa_path() == "generic" else 1
    assert dict(few.workspace)["packed weights"] == panels * mr * 64 * 9 * 4
    # per thread: a B block of KC = 256 rows and the columns of one work unit
    # (NC = 1024 / 4 = 256 columns at most, fewer to give every thread a unit)
    # plus an MR x NR tile per column panel and MR filters
    t, cols = plan.threads, 8 * 56 * 56
    units = -(-max(-(-cols // 256), t) // t) * t
    block_cols = -(-(-(-cols // units)) // nr) * nr
    (blocks, size), = [(k, v) for k, v in ws.items() if k.startswith("B blocks")]
    assert f"KC 256 x {block_cols} columns" in blocks
    assert size == t * (256 * block_cols + block_cols // nr * -(-64 // mr) * mr * nr) * 4


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
@pytest.mark.parametrize("layer, batch", [("alexnet_c1", 2),      # in pieces of rows
                                          ("resnet_3x3_28", 1),   # as a conv, direct grad weight
                                          ("pointwise_1x1", 1)])  # as a conv, im2col chunks
def test_explain_predicts_the_cpp_backward_workspace(layer, batch):
    if not fc.backends()["cpp"].available:
        pytest.skip("no cpp extension")
    from fastconv.bench.memory import peak_extra_bytes

    # one thread: with two, which buffers a thread touches depends on the units
    # it claims (1-2 MB apart from run to run)
    got = peak_extra_bytes(layer, batch, "cpp", False, op="conv2d_backward", threads=1)
    measured = got["first"] - got["output"]  # the first call allocates the scratch
    # allocations, of which some may stay untouched (and the kernel counts
    # resident pages in per-CPU batches): an upper bound, not far above
    assert measured - (256 << 10) <= got["predicted"] <= 1.25 * measured + (512 << 10)


_G = np.ones((2, 3, 4, 4))
_X8 = np.ones((2, 3, 8, 8))
EXPLAINED_CALLS = {
    "conv2d": ((_X8, np.ones((4, 3, 3, 3))), {}),
    "conv2d_backward": ((np.ones((2, 4, 6, 6)), _X8, np.ones((4, 3, 3, 3))), {}),
    "im2col": ((_X8, 3), {}),
    "col2im": ((np.ones((72, 27)), (2, 3, 8, 8), 3), {}),
    "max_pool2d": ((_X8, 2), {}),
    "avg_pool2d": ((_X8, 2), {}),
    "max_pool2d_backward": ((_G, _X8, 2), {}),
    "avg_pool2d_backward": ((_G, _X8.shape, 2), {}),
}


@pytest.mark.parametrize("backend", ["auto", "cpp", "numba", "numpy"])
@pytest.mark.parametrize("op", sorted(EXPLAINED_CALLS))
def test_explain_plans_every_op_on_every_backend(op, backend):
    if not fc.backends()[backend if backend != "auto" else "numpy"].available:
        pytest.skip(f"{backend} is not available here")
    args, kw = EXPLAINED_CALLS[op]
    try:
        plan = fc.explain(op, *args, backend=backend, **kw)
    except fc.BackendUnavailableError:
        pytest.skip(f"{backend} does not run {op}")
    assert plan.op == op and plan.path.split("/")[0] in fc.backends()
    assert plan.workspace_bytes >= 0 and str(plan)
