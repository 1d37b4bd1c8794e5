"""Backend registry, selection, explain(), use_backend, FASTCONV_BACKEND and threads."""

import threading

import numpy as np
import pytest

import fastconv as fc

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
