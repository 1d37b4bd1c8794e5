"""One thread budget: set_num_threads governs the C++ kernels, Numba and BLAS, and
calls made at once from Python threads share it, with correct results."""

import concurrent.futures
import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch, _threads


@pytest.fixture
def budget():
    """Set the budget for one test, restored after."""
    before = fc.get_num_threads()
    yield fc.set_num_threads
    fc.set_num_threads(before)


def _available(name):
    return fc.backends()[name].available


def test_shares_split_the_budget_and_never_start_more_than_it():
    """acquire/release as concurrent calls do it: helper threads (share - 1 per call)
    never exceed budget - 1, and a lone call gets everything."""
    before = fc.get_num_threads()
    fc.set_num_threads(4)
    try:
        assert _threads.running() == (0, 0)
        shares = []
        for _ in range(6):  # six calls start one after another and overlap
            shares.append(_threads.acquire())
            _threads._local.share = 0  # as if each ran on its own thread
            assert sum(s - 1 for s in shares) <= 4 - 1
        assert shares == [4, 1, 1, 1, 1, 1]
        for s in shares:
            _threads.release(s)
        assert _threads.running() == (0, 0)
        first = _threads.acquire()
        _threads._local.share = 0
        second = _threads.acquire()
        _threads._local.share = 0
        assert (first, second) == (4, 1)
        _threads.release(first)
        third = _threads.acquire()  # two running: half the budget, what is free
        _threads._local.share = 0
        assert third == 2
        _threads.release(second)
        _threads.release(third)
        assert _threads.running() == (0, 0)
    finally:
        fc.set_num_threads(before)


def test_inside_a_call_get_num_threads_is_the_share(monkeypatch, budget):
    budget(3)
    numpy_impl = _dispatch._REGISTRY["numpy"]
    real = numpy_impl.max_pool2d
    seen = []

    def spy(spec, x, out, indices):
        seen.append((fc.get_num_threads(), _threads.running()))
        return real(spec, x, out, indices)

    monkeypatch.setattr(numpy_impl, "max_pool2d", spy)
    fc.max_pool2d(np.ones((1, 1, 4, 4)), 2, backend="numpy")
    assert seen == [(3, (1, 3))]
    assert fc.get_num_threads() == 3 and _threads.running() == (0, 0)


def test_concurrent_calls_each_take_a_share(monkeypatch, budget):
    """Calls held inside a backend at once: the first alone has the budget, the
    others share what is left, at least one thread each (their own)."""
    budget(4)
    numpy_impl = _dispatch._REGISTRY["numpy"]
    real = numpy_impl.max_pool2d
    inside = threading.Barrier(3, timeout=60)
    seen = []
    lock = threading.Lock()

    def spy(spec, x, out, indices):
        with lock:
            seen.append(fc.get_num_threads())
        inside.wait()  # all three are inside at once
        return real(spec, x, out, indices)

    x = np.arange(32.0).reshape(2, 1, 4, 4)
    real_pool = lambda a: a.reshape(2, 1, 2, 2, 2, 2).max(axis=(3, 5))
    monkeypatch.setattr(numpy_impl, "max_pool2d", spy)

    def call(_):
        return fc.max_pool2d(x, 2, backend="numpy")

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(call, range(3)))
    for r in results:
        np.testing.assert_array_equal(r, real_pool(x))
    assert len(seen) == 3 and sum(s - 1 for s in seen) <= 4 - 1 and min(seen) >= 1
    assert _threads.running() == (0, 0)


def test_cpp_kernels_get_the_share(monkeypatch, budget):
    if not _available("cpp"):
        pytest.skip("no cpp extension")
    cpp = _dispatch._REGISTRY["cpp"]
    real = cpp.module
    seen = []

    class Spy:
        def __getattr__(self, name):
            fn = getattr(real, name)

            def call(*args):
                seen.append((name, args[-2] if name == "conv2d" else args[-1]))
                return fn(*args)

            return call

    monkeypatch.setattr(cpp, "_module", Spy())
    budget(3)
    x = np.ones((1, 4, 16, 16), np.float32)
    fc.conv2d(x, np.ones((8, 4, 3, 3), np.float32), backend="cpp")
    fc.max_pool2d(x, 2, backend="cpp")
    assert seen == [("conv2d", 3), ("max_pool2d", 3)]


def test_numba_gets_the_share(budget):
    if not _available("numba"):
        pytest.skip("numba is not installed")
    import numba

    budget(1)
    x = np.ones((4, 64, 64, 64), np.float32)  # enough work for more than one thread
    fc.max_pool2d(x, 2, backend="numba")
    assert numba.get_num_threads() == 1  # the calling thread's Numba setting
    budget(2)
    fc.max_pool2d(x, 2, backend="numba")
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)


def test_blas_follows_the_share_during_a_call_and_is_restored(monkeypatch, budget):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    numpy_impl = _dispatch._REGISTRY["numpy"]
    real = numpy_impl.conv2d
    seen = []

    def blas_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"}

    def spy(spec, x, weight, bias, out):
        seen.append(blas_threads())
        return real(spec, x, weight, bias, out)

    monkeypatch.setattr(numpy_impl, "conv2d", spy)
    before = blas_threads()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS")
    with threadpoolctl.threadpool_limits(3, user_api="blas"):
        budget(1)
        caller = blas_threads()
        x, w = np.ones((1, 2, 8, 8)), np.ones((3, 2, 3, 3))
        fc.conv2d(x, w, backend="numpy")
        assert set(seen[-1].values()) == {1}  # the call's share
        assert blas_threads() == caller  # the caller's setting is back
        budget(2)
        fc.conv2d(x, w, backend="numpy")
        assert set(seen[-1].values()) == {2}
        assert blas_threads() == caller
        fc.max_pool2d(x, 2, backend="numpy")  # no BLAS: left alone
        assert blas_threads() == caller
    assert blas_threads() == before


def test_concurrent_calls_from_a_thread_pool_are_correct(budget):
    """Every backend and op at once from a pool of Python threads: the results
    match the serial ones."""
    budget(2)
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((2, 6, 18, 18)).astype(np.float32) for _ in range(6)]
    w = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    dw = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 8, 18, 18)).astype(np.float32)
    names = [n for n, b in fc.backends().items() if b.available] + ["auto"]

    def work(i):
        x = xs[i % len(xs)]
        b = names[i % len(names)]
        return (fc.conv2d(x, w, padding=1, activation="relu", backend=b),
                fc.conv2d(x, dw, groups=6, stride=2, backend=b),
                *fc.conv2d_backward(g, x, w, padding=1, backend=b),
                fc.max_pool2d(x, 3, 2, 1, backend=b),
                fc.avg_pool2d(x, 2, backend=b),
                fc.im2col(x, 3, padding=1, backend=b))

    jobs = range(3 * len(names))
    serial = [work(i) for i in jobs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            for want, got in zip(serial, pool.map(work, jobs)):
                for a, b in zip(want, got):
                    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * (1 + np.abs(a).max()))
    assert _threads.running() == (0, 0)


def test_a_call_that_fails_gives_its_share_back(monkeypatch, budget):
    budget(2)
    with pytest.raises(ValueError):
        fc.conv2d(np.ones((1, 2, 4, 4)), np.ones((1, 3, 3, 3)))

    def boom(*args):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(_dispatch._REGISTRY["numpy"], "max_pool2d", boom)
    with pytest.raises(RuntimeError, match="kernel failed"):
        fc.max_pool2d(np.ones((1, 1, 4, 4)), 2, backend="numpy")
    assert _threads.running() == (0, 0) and fc.get_num_threads() == 2
