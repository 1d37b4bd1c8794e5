"""The C++ backend's own promises: every kernel on every SIMD path the CPU has,
results independent of the thread count, safe concurrent calls, `out=` without
large allocations. (The per-function test modules compare it with PyTorch and
the reference through the public API.)"""

import concurrent.futures
import contextlib
import multiprocessing
import os
import tracemalloc
import warnings

import numpy as np
import pytest

import fastconv as fc
from test_conv2d import assert_close

_cpp = pytest.importorskip("fastconv._cpp")
from fastconv.backends.cpp_backend import CppBackend  # noqa: E402

ALL_PATHS = ["generic", "avx2", "avx512"]
# The paths this CPU runs: every test below runs on each of them.
PATHS = ALL_PATHS[:ALL_PATHS.index(_cpp.best_isa_path()) + 1]


@pytest.fixture(params=PATHS)
def isa(request):
    before = _cpp.isa_path()
    assert _cpp.set_isa_path(request.param)
    try:
        yield request.param
    finally:
        assert _cpp.set_isa_path(before)


def test_paths_switch_and_the_cpu_refuses_what_it_lacks():
    start = _cpp.isa_path()
    assert _cpp.set_isa_path("generic") and _cpp.isa_path() == "generic"
    for missing in ALL_PATHS[len(PATHS):] + ["sse9"]:
        assert not _cpp.set_isa_path(missing)
        assert _cpp.isa_path() == "generic"
    assert _cpp.set_isa_path(_cpp.best_isa_path()) and _cpp.isa_path() == _cpp.best_isa_path()
    assert _cpp.set_isa_path(start)


# (x shape, weight shape, stride, padding, dilation, groups): each C++ kernel
# and its edges (odd sizes, image-crossing GEMM tiles, strides 1, 2 and 3).
CONV_CASES = [
    ((2, 3, 11, 9), (7, 3, 3, 3), 1, 1, 1, 1),
    ((3, 5, 13, 7), (13, 5, 2, 4), (2, 1), ((1, 0), (2, 1)), (1, 2), 1),
    ((1, 16, 9, 10), (20, 8, 3, 3), 3, 2, 2, 2),
    ((2, 6, 12, 12), (6, 1, 5, 5), 1, 2, 1, 6),     # depthwise
    ((2, 4, 15, 16), (8, 1, 3, 3), 2, 1, (2, 1), 4),  # depthwise, multiplier 2
    ((1, 3, 9, 70), (3, 1, 3, 3), 1, 1, 1, 3),       # depthwise, rows for whole vectors
    ((1, 2, 11, 67), (4, 1, 3, 5), (1, 3), (1, 2), (1, 2), 2),
    ((1, 2, 8, 61), (2, 2, 3, 3), 2, 1, 1, 1),       # few filters: direct, stride 2
    ((2, 8, 7, 9), (12, 8, 1, 1), 1, 0, 1, 1),       # 1x1
    ((1, 8, 5, 6), (8, 4, 1, 1), 1, 0, 1, 2),        # grouped 1x1
    ((2, 300, 6, 5), (7, 300, 1, 1), 1, 0, 1, 1),    # depth past one KC block
    ((1, 8, 5, 5), (100, 8, 1, 1), 1, 0, 1, 1),      # 1x1: rows split between threads
    ((1, 6, 3, 300), (20, 3, 1, 1), 1, 0, 1, 2),     # 1x1: columns in several blocks
    # stride 1, rows of whole vectors: GEMM panels read the input in place,
    # mixed with packed ones at the padding and past the row ends
    ((3, 6, 12, 12), (16, 6, 5, 5), 1, 0, 1, 1),     # lenet_c2: rows of 8
    ((2, 3, 10, 40), (7, 3, 3, 3), 1, 1, 1, 1),      # rows of 40, padded edges
    ((2, 2, 13, 36), (5, 2, 3, 3), 1, 2, 2, 1),      # dilation 2, rows of 32
    ((1, 4, 9, 27), (8, 2, 3, 4), 1, (1, 2), 1, 2),  # groups, rows of 26
    ((1, 2, 6, 139), (3, 2, 3, 3), 4, 0, 1, 1),      # stride 4: packed by whole vectors
    # padded: run on a zero-padded copy, every panel inside one row in place
    ((1, 3, 11, 37), (4, 3, 3, 5), (2, 1), ((2, 0), (1, 3)), 1, 1),
    # the phased layout (phase planes of a padded copy, every panel in place):
    # chosen for wide taps at stride 2 and for rows of 20; a batch in chunks
    ((2, 3, 30, 30), (8, 3, 7, 7), 2, 3, 1, 1),
    ((2, 5, 20, 20), (7, 5, 3, 3), 1, 1, 1, 1),
    ((3, 64, 120, 120), (6, 64, 3, 3), 1, 1, 1, 1),
    # the GEMMs above have under 1024 columns (AVX2 reads the weights
    # unpacked); these over it pack them, in place and packed inputs
    ((2, 4, 24, 24), (13, 4, 3, 3), 1, 1, 1, 1),
    ((2, 3, 30, 41), (9, 3, 3, 2), (1, 2), (1, 0), 1, 1),
]


def _conv_case(case, dtype, seed=0):
    xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _kernels_for(x, w, kw):
    """Every C++ conv2d kernel that can run this call, and both layouts of the GEMM's."""
    spec = fc.explain("conv2d", x, w, **kw).spec
    pointwise = (spec.kh, spec.kw, spec.stride, spec.pads) == (1, 1, (1, 1), (0, 0, 0, 0))
    return ["gemm", "gemm-runs", "gemm-phased", "direct"] + (["1x1"] if pointwise else [])


def _cpp_conv2d(x, w, b, kw, kernel, threads, relu=False):
    spec = fc.explain("conv2d", x, w, b, **kw).spec
    out = np.empty(spec.out_shape, spec.dtype)
    top, _, left, _ = spec.pads
    _cpp.conv2d(x, w, b, out, spec.stride, (top, left), spec.dilation, spec.groups, relu,
                threads, kernel)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_every_conv2d_kernel_matches_the_reference(isa, case, dtype):
    x, w, b, kw = _conv_case(case, dtype)
    for relu in (False, True):
        ref = fc.conv2d(x, w, b, **kw, activation="relu" if relu else None, backend="numpy")
        for kernel in _kernels_for(x, w, kw):
            got = _cpp_conv2d(x, w, b, kw, kernel, threads=2, relu=relu)
            assert_close(got, ref)


def test_the_adapter_and_the_extension_share_the_direct_kernel_rule():
    from fastconv.backends.cpp_backend import DIRECT_BELOW_GROUP_FILTERS

    assert DIRECT_BELOW_GROUP_FILTERS == _cpp.DIRECT_BELOW_GROUP_FILTERS


def test_auto_picks_the_kernel_by_shape():
    def kernel(xs, ws, **kw):
        spec = fc.explain("conv2d", np.zeros(xs, np.float32), np.zeros(ws, np.float32), **kw).spec
        return CppBackend.conv2d_kernel(spec)

    assert kernel((1, 32, 8, 8), (32, 1, 3, 3), padding=1, groups=32) == "direct"
    assert kernel((1, 32, 8, 8), (64, 32, 1, 1)) == "1x1"
    assert kernel((1, 32, 8, 8), (64, 32, 1, 1), stride=2) == "gemm"
    assert kernel((1, 32, 8, 8), (64, 32, 3, 3), padding=1) == "gemm"


def test_the_gemm_layouts_sum_alike_and_the_rule_picks_by_shape(isa):
    def layout(xs, ws, stride, padding):
        x, w, _, kw = _conv_case((xs, ws, stride, padding, 1, 1), np.float32)
        spec = fc.explain("conv2d", x, w, **kw).spec
        got = {k: _cpp_conv2d(x, w, None, kw, k, threads=2) for k in ("gemm-runs", "gemm-phased")}
        # the same products summed in the same order, whichever way B is read
        assert got["gemm-runs"].tobytes() == got["gemm-phased"].tobytes()
        return _cpp.conv2d_gemm_input((spec.h, spec.w), spec.n, spec.c, spec.k,
                                      (spec.kh, spec.kw), spec.stride, (padding, padding),
                                      spec.dilation, 1, (spec.oh, spec.ow), "float32")

    stem = layout((2, 3, 64, 64), (16, 3, 7, 7), 2, 3)
    rows_of_28 = layout((2, 8, 28, 28), (16, 8, 3, 3), 1, 1)
    rows_of_32 = layout((2, 8, 32, 32), (16, 8, 3, 3), 1, 1)
    downsample = layout((2, 8, 28, 28), (16, 8, 3, 3), 2, 1)
    if _cpp.isa_path() == "generic":  # no in-place micro-kernel: the runs layout only
        assert {stem["layout"], rows_of_28["layout"]} == {"runs"}
        return
    assert stem["layout"] == rows_of_28["layout"] == "phased"
    assert rows_of_32["layout"] == downsample["layout"] == "runs"
    # the phased copy: per image 3 channels of 2 x 2 phase planes of 35 x 35
    # (a 70 x 70 padded image), and a few zeros past it; 32 columns per output row
    assert 2 * 3 * 4 * 35 * 35 <= stem["copy_elements"] < 2 * 3 * 4 * 35 * 35 + 3 * 35
    assert stem["columns"] == 2 * 32 * 35
    assert downsample["copy_elements"] == 0
    with pytest.raises(ValueError, match="groups"):
        _cpp.conv2d_gemm_input((8, 8), 1, 3, 4, (3, 3), (1, 1), (0, 0), (1, 1), 0, (6, 6),
                               "float32")


@contextlib.contextmanager
def _num_threads(n):
    before = fc.get_num_threads()
    fc.set_num_threads(n)
    try:
        yield
    finally:
        fc.set_num_threads(before)


def _thread_counts_agree(run):
    results = [run(threads) for threads in (1, 2, 3, 5)]
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_is_bitwise_independent_of_threads(isa, case):
    x, w, b, kw = _conv_case(case, np.float32, seed=1)
    for kernel in _kernels_for(x, w, kw):
        _thread_counts_agree(lambda t: [_cpp_conv2d(x, w, b, kw, kernel, t)])


# conv2d_backward's paths: images small enough for per-chunk units (grad weight
# by the direct kernel at stride 1 along rows, by GEMM otherwise) and large ones
BACKWARD_CASES = CONV_CASES + [
    ((9, 6, 12, 12), (16, 6, 5, 5), 1, 0, 1, 1),     # lenet_c2, chunks of unequal size
    ((3, 5, 10, 21), (9, 5, 3, 3), (2, 1), 1, (1, 2), 1),  # row tails, stride 2 down
    ((2, 64, 20, 20), (16, 64, 3, 3), 1, 1, 1, 1),   # an image past the chunk budget
    ((1, 48, 22, 22), (8, 24, 3, 3), 1, 0, 2, 2),    # the same, grouped and dilated
    ((1, 64, 24, 24), (8, 64, 3, 3), 2, 1, 1, 1),    # large, stride 2: unfold + GEMM
    ((2, 32, 30, 30), (32, 1, 3, 3), 1, 1, 1, 32),   # large depthwise: input grad direct
    ((1, 18, 20, 20), (18, 6, 3, 3), 1, 1, 1, 3),    # grad weight in filter slices across groups
    ((1, 3, 67, 67), (8, 3, 11, 11), 4, 2, 1, 1),    # an image in pieces of rows that overlap
    ((2, 16, 30, 30), (8, 16, 7, 7), 1, 0, 1, 1),    # the same at stride 1, "valid"
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_conv2d_backward_matches_the_reference(isa, case, dtype):
    x, w, _, kw = _conv_case(case, dtype, seed=4)
    g = np.random.default_rng(5).standard_normal(fc.explain("conv2d", x, w, **kw).out_shape)
    g = g.astype(dtype)
    got = fc.conv2d_backward(g, x, w, **kw, backend="cpp")
    ref = fc.conv2d_backward(g, x, w, **kw, backend="numpy")
    for a, b in zip(got, ref):
        assert_close(a, b)


def test_weight_gradient_ignores_inputs_outside_a_taps_windows(isa):
    """The direct kernel reads whole vectors past the row's end; an inf there
    must not leak into the taps whose windows never reach it."""
    x = np.ones((1, 1, 4, 13), np.float32)
    x[..., -1] = np.inf  # only the last tap along the row sees the last column
    w = np.ones((1, 1, 1, 3), np.float32)
    g = np.ones((1, 1, 4, 11), np.float32)
    gw = fc.conv2d_backward(g, x, w, backend="cpp").weight
    np.testing.assert_array_equal(gw[..., :2], 44.0)
    assert np.isinf(gw[..., 2]).all()


@pytest.mark.parametrize("case", CONV_CASES[:5] + BACKWARD_CASES[-9:])
def test_conv2d_backward_is_bitwise_independent_of_threads(case):
    x, w, _, kw = _conv_case(case, np.float32, seed=2)
    g = np.random.default_rng(3).standard_normal(fc.explain("conv2d", x, w, **kw).out_shape)
    g = g.astype(np.float32)

    def run(threads):
        with _num_threads(threads):
            return list(fc.conv2d_backward(g, x, w, **kw, backend="cpp"))

    _thread_counts_agree(run)


POOL_CASES = [
    ((2, 3, 17, 16), 3, 2, 1, 1, False),
    ((1, 2, 9, 11), (2, 3), (1, 2), (1, 1), (2, 1), True),
    ((3, 4, 8, 8), 2, None, 0, 1, False),
    ((1, 1, 20, 7), (4, 2), 3, (2, 1), 1, True),
    # rows wide enough for the vector paths of both dtypes, with odd tails
    ((1, 3, 9, 75), 3, 2, 1, 1, False),
    ((2, 2, 6, 41), (2, 3), 1, (0, 1), (1, 2), False),
    ((1, 2, 7, 58), (3, 2), (2, 3), 1, 1, True),
    # 2x2 at stride 2: whole vectors and a tail; with ceil_mode a window past the edge
    ((2, 3, 10, 38), 2, 2, 0, 1, False),
    ((1, 2, 9, 37), 2, 2, 0, 1, True),
    # 65 planes: units of several planes, the last one short
    ((5, 13, 9, 10), 2, 2, 0, 1, False),
    ((5, 13, 9, 10), 3, 1, 1, 1, False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_is_identical_to_the_reference_on_every_path(isa, case, dtype):
    shape, k, stride, padding, dilation, ceil_mode = case
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, shape).astype(dtype)  # many ties
    x.flat[rng.integers(0, x.size, 5)] = np.nan
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
    got, gi = fc.max_pool2d(x, k, dilation=dilation, return_indices=True, **kw, backend="cpp")
    ref, ri = fc.max_pool2d(x, k, dilation=dilation, return_indices=True, **kw, backend="numpy")
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(gi, ri)
    values = fc.max_pool2d(x, k, dilation=dilation, **kw, backend="cpp")  # no indices: own paths
    np.testing.assert_array_equal(values, ref)
    for include in (True, False):
        for divisor in (None, 5):
            opts = dict(kw, count_include_pad=include, divisor_override=divisor)
            np.testing.assert_array_equal(fc.avg_pool2d(x, k, **opts, backend="cpp"),
                                          fc.avg_pool2d(x, k, **opts, backend="numpy"))


@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_is_bitwise_independent_of_threads(case):
    shape, k, stride, padding, dilation, ceil_mode = case
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)

    def run(threads):
        with _num_threads(threads):
            return [*fc.max_pool2d(x, k, dilation=dilation, return_indices=True, **kw,
                                   backend="cpp"),
                    fc.avg_pool2d(x, k, **kw, backend="cpp")]

    _thread_counts_agree(run)


def test_concurrent_calls_from_python_threads_are_correct():
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((2, 8, 20, 20)).astype(np.float32) for _ in range(8)]
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expected = [fc.conv2d(x, w, padding=1, backend="cpp") for x in xs]
    expected_pool = [fc.max_pool2d(x, 3, 2, 1, backend="cpp") for x in xs]

    def work(i):
        return (fc.conv2d(xs[i], w, padding=1, backend="cpp"),
                fc.max_pool2d(xs[i], 3, 2, 1, backend="cpp"))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for i, (conv, pooled) in enumerate(pool.map(work, range(len(xs)))):
                assert conv.tobytes() == expected[i].tobytes()
                assert pooled.tobytes() == expected_pool[i].tobytes()


def test_calls_that_find_the_thread_pool_busy_run_alone_and_correct():
    # A budget of 8 gives 4 concurrent calls 2 threads each: one gets the pool's
    # workers, the others find it busy and run on their calling thread.
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((4, 8, 24, 24)).astype(np.float32) for _ in range(8)]
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    g = rng.standard_normal((4, 16, 24, 24)).astype(np.float32)
    small = rng.standard_normal((8, 6, 12, 12)).astype(np.float32)  # per-chunk backward
    w_small = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    g_small = rng.standard_normal((8, 16, 8, 8)).astype(np.float32)

    def work(x):  # forward on a padded copy, both backward paths, each with scratch memory
        return (fc.conv2d(x, w, padding=1, backend="cpp"),
                *fc.conv2d_backward(g, x, w, padding=1, backend="cpp"),
                *fc.conv2d_backward(g_small, small + x[0, 0, 0, 0], w_small, backend="cpp"))

    expected = [work(x) for x in xs]
    before = fc.get_num_threads()
    fc.set_num_threads(8)
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for _ in range(3):
                for got, want in zip(pool.map(work, xs), expected):
                    for a, b in zip(got, want):
                        assert a.tobytes() == b.tobytes()
    finally:
        fc.set_num_threads(before)


@pytest.mark.parametrize("units", [2, 5])
def test_the_thread_pool_never_returns_before_every_unit_is_done(units):
    # A stress test of the pool's hand-off: the caller once read a job's free
    # seats after posting it, and when a spinning worker took the seat first it
    # ran the job alone and returned while the worker was still inside (it hit
    # about 1 call in 10^5 and then crashed on a dead stack frame).
    assert _cpp.check_thread_pool(300_000, 2, units) == 0


def _conv_with_two_threads(x, w):
    fc.set_num_threads(2)
    return fc.conv2d(x, w, padding=1, backend="cpp")


def test_a_forked_child_runs_threaded_kernels():
    # The pool's workers do not survive fork(): the child must start its own
    # instead of waiting for threads it does not have.
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 8, 40, 40)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expected = _conv_with_two_threads(x, w)  # the parent's pool is up now
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        with multiprocessing.get_context("fork").Pool(1) as child:
            got = child.apply_async(_conv_with_two_threads, (x, w)).get(timeout=60)
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "avg_pool2d"])
def test_out_makes_repeated_calls_free_of_large_numpy_allocations(op):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    call = {
        "conv2d": lambda out: fc.conv2d(x, w, padding=1, out=out, backend="cpp"),
        "max_pool2d": lambda out: fc.max_pool2d(x, 2, out=out, backend="cpp"),
        "avg_pool2d": lambda out: fc.avg_pool2d(x, 2, out=out, backend="cpp"),
    }[op]
    out = call(None)
    call(out)
    tracemalloc.start()
    try:
        for _ in range(3):
            assert call(out) is out
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes // 8, f"{peak} bytes allocated for a {out.nbytes}-byte result"


def test_bad_direct_calls_raise_instead_of_crashing():
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    good = dict(stride=(1, 1), pad_top_left=(0, 0), dilation=(1, 1), groups=1, relu=False,
                threads=1)
    with pytest.raises(ValueError, match="out has the wrong shape"):
        _cpp.conv2d(x, w, None, np.zeros((2, 3, 3, 3), np.float32), **good)
    with pytest.raises(ValueError, match="groups"):
        _cpp.conv2d(x, w, None, np.zeros((1, 3, 3, 3), np.float32), **{**good, "groups": 2})
    with pytest.raises(ValueError, match="1x1"):
        _cpp.conv2d(x, w, None, np.zeros((1, 3, 3, 3), np.float32), **good, kernel="1x1")
    with pytest.raises(TypeError):  # no silent conversion of a float64 array
        _cpp.conv2d(x.astype(np.float64), w, None, np.zeros((1, 3, 3, 3), np.float32), **good)
    g = np.zeros((1, 2, 2, 2), np.float32)
    for stray in (99, 25, -1):  # past the 5x5 plane, or negative, among good ones
        idx = np.zeros(g.shape, np.int64)
        idx[0, 1, 1, 0] = stray
        with pytest.raises(ValueError, match="outside its input plane"):
            _cpp.max_pool2d_backward(g, idx, np.zeros((1, 2, 5, 5), np.float32), 2)


def _backward_plan(n, c, h, w, k, kernel, stride=1, pad=0, dtype="float32", threads=2):
    oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    return _cpp.conv2d_backward_plan((h, w), n, c, k, (kernel, kernel), (stride, stride),
                                     (pad, pad), (1, 1), 1, (oh, ow), dtype, threads)


def test_backward_plan_names_the_path_conv2d_backward_takes():
    # alexnet_c1: an image's im2col matrix is 2 x 363 x 3025 floats, far over
    # L2: pieces of the output rows whose im2col and gradient fit 384 KB
    plan = _backward_plan(8, 3, 227, 227, 96, 11, stride=4)
    assert plan["piece_images"] == 1 and plan["piece_rows"] == (384 << 10) // (363 * 55 * 4 * 2)
    assert not plan["direct_weight"] and plan["weight_units"] == 8 and plan["threads"] == 2
    # lenet_c2: whole images (16 per piece of 192 KB), grad weight direct
    plan = _backward_plan(64, 6, 12, 12, 16, 5)
    assert plan["piece_images"] == (192 << 10) // (150 * 64 * 4 * 2) and plan["direct_weight"]
    # resnet_3x3_56: same padding, the input gradient as a convolution of the batch
    plan = _backward_plan(8, 64, 56, 56, 64, 3, pad=1)
    assert plan["piece_images"] == 0 and plan["direct_weight"] and plan["weight_units"] == 8
    # pointwise_1x1: GEMMs over im2col chunks of at most 8 MB, 8 tiles of
    # grad weight (no slices); float64 halves the images per chunk
    for dtype, item in (("float32", 4), ("float64", 8)):
        plan = _backward_plan(16, 256, 28, 28, 512, 1, dtype=dtype)
        assert plan["piece_images"] == 0 and not plan["direct_weight"]
        assert plan["chunk"] == (8 << 20) // (256 * 784 * item) and plan["slices"] == 1
    assert _backward_plan(0, 3, 8, 8, 4, 3)["weight_units"] == 0


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
def test_extra_memory_of_a_call_does_not_grow_with_the_batch():
    from fastconv.bench.memory import peak_extra_bytes

    small = peak_extra_bytes("resnet_stem", 1, "cpp", use_out=True)
    large = peak_extra_bytes("resnet_stem", 16, "cpp", use_out=True)
    assert large["output"] == 16 * small["output"]
    # the workspace: packed weights, the input copy of a chunk of images and
    # edge tiles (the GEMM's phased layout), kept for the next call: a few MB
    # at most on the first call, about nothing more on a repeated one
    for call in ("first", "extra"):
        assert large[call] < 8 << 20
        assert large[call] < small[call] + (1 << 20)
    assert large["extra"] < 1 << 20
    without_out = peak_extra_bytes("resnet_stem", 16, "cpp", use_out=False)
    assert without_out["extra"] >= large["output"]
