"""What only the numba backend has: lazy import, its thread count, BLAS kept
single-threaded inside its threads, the on-disk kernel cache and its report.
Results of every op are tested with the other backends, per function family."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc

numba = pytest.importorskip("numba")
if not fc.backends()["numba"].available:
    pytest.skip(f"numba backend unavailable: {fc.backends()['numba'].reason}",
                allow_module_level=True)

from fastconv.backends import numba_backend  # noqa: E402

STATUS = re.compile(r"^(warm|partly warm|cold): (\d+) of (\d+) kernels compiled for this CPU "
                    r"\((\d+) signatures\) in \S")


def _python(code, env=None, timeout=600):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------ lazy import


def test_importing_fastconv_does_not_import_numba():
    out = _python("import sys, numpy as np, fastconv as fc\n"
                  "x = np.ones((1, 1, 4, 4))\n"
                  "fc.conv2d(x, np.ones((1, 1, 2, 2)), backend='numpy')\n"
                  "fc.max_pool2d(x, 2, backend='numpy')\n"
                  "print('numba' in sys.modules,\n"
                  "      'fastconv.backends._numba_kernels' in sys.modules)")
    assert out.split() == ["False", "False"]


# ------------------------------------------------------------------ threads


@pytest.fixture
def threads():
    before = fc.get_num_threads()
    yield
    fc.set_num_threads(before)


def test_numba_threads_follow_fastconv_threads(threads):
    x, w = _data((2, 16, 48, 48)), _data((16, 16, 3, 3), 1)  # large enough to go parallel
    results = {}
    for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
        fc.set_num_threads(n)
        results[n] = (fc.conv2d(x, w, padding=1, backend="numba"),
                      fc.max_pool2d(x, 3, 1, 1, return_indices=True, backend="numba"))
        assert numba.get_num_threads() == n
    ref = fc.conv2d(x, w, padding=1, backend="numpy")
    for conv, (pooled, idx) in results.values():
        np.testing.assert_allclose(conv, ref, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(pooled, results[1][1][0])
        np.testing.assert_array_equal(idx, results[1][1][1])


def test_small_calls_run_on_one_thread(threads, monkeypatch):
    # serially: conv2d calls the parallel kernels' serial bodies, max_pool2d gets nt == 1
    fc.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    k, seen = numba_backend._k(), []
    for name in ("conv2d_gemm", "_conv2d_blocks", "conv2d_depthwise", "_depthwise_planes",
                 "conv2d_few_filters", "_few_filter_tasks", "max_pool2d"):
        kernel = getattr(k, name)
        monkeypatch.setattr(k, name, lambda *a, kernel=kernel, name=name: (
            seen.append((name, a[12] if name == "max_pool2d" else None)), kernel(*a))[1])
    x = np.ones((1, 2, 8, 8))
    fc.conv2d(x, np.ones((2, 2, 3, 3)), stride=2, backend="numba")
    fc.conv2d(x, np.ones((2, 1, 3, 3)), groups=2, backend="numba")
    fc.conv2d(x, np.ones((2, 2, 3, 3)), backend="numba")
    fc.max_pool2d(x, 2, backend="numba")
    assert seen == [("_conv2d_blocks", None), ("_depthwise_planes", None),
                    ("_few_filter_tasks", None), ("max_pool2d", 1)]


def test_more_threads_than_numba_has_are_capped(threads):
    fc.set_num_threads(numba.config.NUMBA_NUM_THREADS + 3)
    x = _data((2, 16, 48, 48))
    np.testing.assert_array_equal(fc.max_pool2d(x, 3, 1, 1, backend="numba"),
                                  fc.max_pool2d(x, 3, 1, 1, backend="numpy"))
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS


def test_blas_is_single_threaded_only_while_the_conv_kernels_run(threads):
    pin = numba_backend._blas()
    if not pin.single:
        pytest.skip("NumPy's BLAS thread count is not settable: the GEMM kernel runs on one "
                    "Numba thread")
    before = pin._get()
    with pin:
        assert pin._get() == 1
        with pin:  # nested and concurrent users share one pin
            assert pin._get() == 1
        assert pin._get() == 1
    assert pin._get() == before
    fc.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    fc.conv2d(_data((2, 8, 32, 32)), _data((8, 8, 3, 3)), stride=2, backend="numba")  # GEMM
    assert pin._get() == before


def test_the_gemm_is_numpys_blas():
    blas = numba_backend._blas()
    assert blas.reason == "" and set(blas.gemm) == {np.dtype(np.float32), np.dtype(np.float64)}
    assert all(isinstance(a, int) and a for a in blas.gemm.values())


def test_without_a_pinnable_blas_the_gemm_kernel_runs_on_one_thread(monkeypatch):
    class Unpinned(numba_backend._Blas):
        def __init__(self):
            super().__init__()
            self._get = self._set = None

    monkeypatch.setattr(numba_backend, "_blas_found", Unpinned())
    x, w = _data((2, 8, 32, 32)), _data((8, 8, 3, 3), 1)
    for stride in (1, 2):  # the GEMM kernel at stride 2
        np.testing.assert_allclose(fc.conv2d(x, w, stride=stride, padding=1, backend="numba"),
                                   fc.conv2d(x, w, stride=stride, padding=1, backend="numpy"),
                                   rtol=1e-5, atol=1e-4)
    g = _data((2, 8, 32, 32), 2)
    for got, ref in zip(fc.conv2d_backward(g, x, w, padding=1, backend="numba"),
                        fc.conv2d_backward(g, x, w, padding=1, backend="numpy")):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


def test_without_numpys_gemm_conv_is_declined_and_auto_moves_on():
    backend = numba_backend.NumbaBackend()
    backend._gemm_reason = "NumPy's BLAS has no cblas_sgemm/cblas_dgemm: test"
    spec = fc.explain("conv2d", np.ones((1, 2, 4, 4)), np.ones((1, 2, 3, 3))).spec
    strided = fc.explain("conv2d", np.ones((1, 2, 4, 4)), np.ones((1, 2, 3, 3)), stride=2).spec
    assert "cblas" in backend.supports("conv2d", strided)
    assert "cblas" in backend.supports("conv2d_backward", spec)
    assert backend.supports("conv2d", spec) == ""  # few filters at stride 1: direct loops
    assert backend.supports("max_pool2d", spec) == ""
    depthwise = fc.explain("conv2d", np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3)), groups=2).spec
    assert backend.supports("conv2d", depthwise) == ""  # no GEMM there


def test_conv_runs_without_scipy():
    # The GEMM is NumPy's BLAS, called by address: SciPy (Numba's np.dot) is not needed
    out = _python("import sys; sys.modules['scipy'] = None  # as if not installed\n"
                  "import numpy as np, fastconv as fc\n"
                  "x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))\n"
                  "w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))\n"
                  "g = np.random.default_rng(2).standard_normal((2, 4, 6, 6))\n"
                  "for dtype in (np.float32, np.float64):\n"
                  "    a, b, c = x.astype(dtype), w.astype(dtype), g.astype(dtype)\n"
                  "    y = (fc.conv2d(a, b, stride=2, backend='numba')\n"
                  "         - fc.conv2d(a, b, stride=2, backend='numpy'))\n"
                  "    d = [p - q for p, q in zip(fc.conv2d_backward(c, a, b, backend='numba'),\n"
                  "                               fc.conv2d_backward(c, a, b, backend='numpy'))]\n"
                  "    print(max(abs(v).max() for v in [y, *d]) < 1e-4)\n"
                  "print('scipy.linalg' in sys.modules)")
    assert out.split() == ["True", "True", "False"]


# ---------------------------------------------------------------- kernels


@pytest.fixture
def gemm_only(monkeypatch):
    """conv2d by the GEMM kernel on every shape, not by direct loops on few filters."""
    monkeypatch.setattr(numba_backend, "_FEW_FILTERS", -1)


@pytest.mark.parametrize("n", [1, 3])
def test_padding_wider_than_the_output_row(gemm_only, n):
    # A tap can lie left of the input for every output column (here 2 columns
    # of padding for a 1-wide output): its zeros must stay in its own row of
    # the unfolded block (a regression: they spilled into the next one).
    x, w = _data((n, 2, 2, 1)), _data((1, 2, 1, 3), 1)
    kw = dict(padding=((0, 0), (2, 2)), dilation=(1, 2))
    np.testing.assert_allclose(fc.conv2d(x, w, backend="numba", **kw),
                               fc.conv2d(x, w, backend="numpy", **kw), rtol=1e-5, atol=1e-6)
    g = _data((n, 1, 2, 1), 2)
    for got, ref in zip(fc.conv2d_backward(g, x, w, backend="numba", **kw),
                        fc.conv2d_backward(g, x, w, backend="numpy", **kw)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("pads", [((1, 1), (1, 1)), ((2, 0), (0, 2)), ((0, 2), (2, 0))])
def test_unfolded_blocks_of_any_height_match(gemm_only, monkeypatch, rows, pads):
    # Blocks of a few output rows straddle images and start or end in the
    # padding; with unit strides and OW == W rows are gathered as runs.
    monkeypatch.setattr(numba_backend, "gemm_rows", lambda *args: rows)
    x, w = _data((3, 2, 4, 5)), _data((2, 2, 3, 3), 1)
    kw = dict(padding=pads)
    np.testing.assert_allclose(fc.conv2d(x, w, backend="numba", **kw),
                               fc.conv2d(x, w, backend="numpy", **kw), rtol=1e-5, atol=1e-5)
    g = _data(fc.conv2d(x, w, **kw).shape, 2)
    for got, ref in zip(fc.conv2d_backward(g, x, w, backend="numba", **kw),
                        fc.conv2d_backward(g, x, w, backend="numpy", **kw)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("layer", [
    dict(h=6, w=(3, 2, 3, 3)),  # valid padding: OW < W, unfolded whole rows when wide
    dict(h=5, w=(3, 2, 2, 3), padding=((0, 1), (2, 0)), dilation=(2, 1)),
    dict(h=4, w=(3, 2, 1, 1)),  # pointwise: blocks of one image read x itself
    dict(h=6, w=(4, 1, 3, 3), groups=2, stride=(1, 2)),
])
def test_conv_blocks_of_any_rows_and_width_match(gemm_only, monkeypatch, wide, rows, layer):
    # Blocks split images (rows < OH = 4), hold whole ones (4, 8) or straddle
    # them (5); with q = W the GEMM computes columns the epilogue drops.
    monkeypatch.setattr(numba_backend, "gemm_rows", lambda *args: rows)
    monkeypatch.setattr(numba_backend, "_WIDE_BELOW", 32 if wide else 0)
    kw = dict(layer)
    w = _data(kw.pop("w"), 1)
    x = _data((3, w.shape[1] * kw.get("groups", 1), kw.pop("h"), 7))
    b = _data((w.shape[0],), 2)
    for bias, act in ((None, None), (b, "relu")):
        ref = fc.conv2d(x, w, bias, activation=act, backend="numpy", **kw)
        assert ref.shape[2] == 4
        np.testing.assert_allclose(fc.conv2d(x, w, bias, activation=act, backend="numba", **kw),
                                   ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_filter_kernel_shares_filters_of_small_batches(threads, dtype):
    # One image: tasks are chunks of filters (here 11 per group, so chunks and
    # the kernel's passes of four cross a group's end); every thread count
    # gives the same bits, as each output is summed by one task in one order.
    x = _data((1, 6, 13, 17)).astype(dtype)
    w = _data((22, 3, 3, 2), 1).astype(dtype)
    b = _data((22,), 2).astype(dtype)
    kw = dict(padding=(2, 1), dilation=(2, 1), groups=2, activation="relu")
    assert numba_backend.few_filters(fc.explain("conv2d", x, w, b, **kw).spec)
    assert numba_backend.filter_chunk(1, 22, 2) == 12  # 2 tasks, of 12 and 10 filters
    assert numba_backend.filter_chunk(3, 22, 2) == 12  # 6 tasks
    assert numba_backend.filter_chunk(16, 22, 2) == 22
    ref = fc.conv2d(x, w, b, backend="numpy", **kw)
    results = []
    for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS}):
        fc.set_num_threads(n)
        results.append(fc.conv2d(x, w, b, backend="numba", **kw))
        np.testing.assert_allclose(results[-1], ref, rtol=1e-5, atol=1e-5)
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


# ------------------------------------------------------------------ cache


def test_cache_status_is_one_line_and_counts_the_kernels_run():
    fc.max_pool2d(_data((1, 1, 4, 4)), 2, backend="numba")
    status = numba_backend.cache_status()
    assert "\n" not in status
    m = STATUS.match(status)
    assert m, status
    state, warm, total, signatures = m.group(1), *map(int, m.groups()[1:])
    assert total == len(numba_backend._k().KERNELS) and 0 <= warm <= total
    assert signatures >= warm
    assert state == ("warm" if warm == total else "cold" if warm == 0 else "partly warm")
    kernel = numba_backend._k().max_pool2d
    if os.access(kernel._cache.cache_path, os.W_OK):
        assert warm >= 1


def test_info_reports_the_numba_cache(capsys):
    from fastconv.__main__ import main

    assert main(["info"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("numba cache: ")]
    assert len(line) == 1 and STATUS.match(line[0][len("numba cache: "):]), line


_FRESH = """
import json, numpy as np, fastconv as fc
from fastconv.backends import numba_backend
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 8, 16, 16)).astype(np.float32)
w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
conv = fc.conv2d(x, w, padding=1, backend="numba")
pooled, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numba")
k = numba_backend._k()
misses = sum(sum(d.stats.cache_misses.values()) for d in (k.conv2d_gemm, k.max_pool2d))
ok = (np.abs(conv - fc.conv2d(x, w, padding=1, backend="numpy")).max() < 1e-4
      and (pooled == fc.max_pool2d(x, 3, 2, 1, backend="numpy")).all()
      and (idx == fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numpy")[1]).all())
print(json.dumps({"ok": bool(ok), "misses": misses}))
"""


def test_a_fresh_process_loads_the_cached_kernels_and_is_correct():
    # Compile (or load) both kernels here with the calls _FRESH makes, then a
    # new process must find them in the cache: no compilation, same results.
    exec(compile(_FRESH.replace("print(", "("), "<fresh>", "exec"), {})
    k = numba_backend._k()
    if not all(os.access(d._cache.cache_path, os.W_OK) for d in (k.conv2d_gemm, k.max_pool2d)):
        pytest.skip("the numba cache directory is not writable")
    result = json.loads(_python(_FRESH).strip().splitlines()[-1])
    assert result == {"ok": True, "misses": 0}


@pytest.mark.slow
def test_an_empty_cache_dir_goes_from_cold_to_warm(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    status = "from fastconv.backends.numba_backend import cache_status; print(cache_status())"
    assert _python(status, env).startswith("cold: 0 of ")
    _python("import numpy as np, fastconv as fc\n"
            "x = np.ones((1, 2, 6, 6), np.float32); w = np.ones((2, 2, 3, 3), np.float32)\n"
            "fc.conv2d(x, w, backend='numba'); fc.conv2d(x, w[:, :1], groups=2, backend='numba')\n"
            "fc.conv2d_backward(np.ones((1, 2, 4, 4), np.float32), x, w, backend='numba')\n"
            "fc.col2im(fc.im2col(x, 3, backend='numba'), x.shape, 3, backend='numba')\n"
            "g = np.ones((1, 2, 3, 3), np.float32)\n"
            "fc.max_pool2d_backward(g, x, 2, backend='numba')\n"
            "fc.avg_pool2d_backward(g, x.shape, 2, backend='numba')\n"
            "fc.max_pool2d(x, 2, backend='numba'); fc.avg_pool2d(x, 2, backend='numba')\n", env)
    assert _python(status, env).startswith("warm: ")


# ------------------------------------------------------- pooling's checks


def test_the_empty_window_check_matches_every_window_tap_by_tap():
    # _params._pool_spec checks only the windows starting in the padding (in
    # integers, for small calls' sake); here every window is checked tap by tap.
    from fastconv import _params

    for size, k, s, d, ceil_mode in np.ndindex(9, 7, 5, 5, 2):
        size, k, s, d = size + 1, k + 1, s + 1, d + 1
        for p in range(k // 2 + 1):
            out = _params._pool_out_size(size, k, s, p, d, bool(ceil_mode))
            if out < 1:
                continue
            taps = (np.arange(out) * s - p)[:, None] + d * np.arange(k)
            empty = not ((taps >= 0) & (taps < size)).any(axis=1).all()
            args = ("max", "max_pool2d", (1, 1, size, 1), True, (k, 1), (s, 1), (p, 0),
                    (d, 1), bool(ceil_mode), True, None, False, np.dtype(np.float32))
            if empty:
                with pytest.raises(ValueError, match="holds no input element"):
                    _params._pool_spec(*args)
            else:
                assert _params._pool_spec(*args).oh == out
