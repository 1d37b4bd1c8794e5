"""fastconv.dask: lazy graphs whose results equal the in-memory calls.

Pooling is compared bit for bit on every backend; conv2d bit for bit on the
backends whose per-element sums do not depend on the GEMM's width (cpp), and
on numpy when only batch or channels are chunked and the images are large
enough for one GEMM per image; otherwise within the contract's tolerance
(see README, "Dask", for why).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import fastconv as fc  # noqa: E402
import fastconv.dask as fcd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _works(backend: str) -> str:
    """'' if the in-memory calls run on `backend`, else why not (then its tests skip)."""
    x = np.ones((1, 1, 4, 4), np.float32)
    try:
        fc.conv2d(x, np.ones((1, 1, 2, 2), np.float32), backend=backend)
    except Exception as exc:  # unavailable, or broken in this build
        return f"in-memory conv2d on {backend!r} fails: {type(exc).__name__}: {exc}"[:300]
    return ""


def _backends(*names):
    return [pytest.param(b, marks=pytest.mark.skipif(bool(_works(b)), reason=_works(b) or "-"))
            for b in names]


BACKENDS = _backends("numpy", "cpp")
SWEEP_BACKENDS = _backends("numpy", "cpp", "numba")  # numba: in-process only (JIT per process)
CONV_BITWISE = {"cpp"}  # per-element sums independent of the GEMM's width


def _tolerance(ref):
    scale = 1e-4 if ref.dtype == np.float32 else 1e-10
    return scale * (1 + float(np.abs(ref).max(initial=0)))


def _check(got, ref, bitwise: bool):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if bitwise:
        assert np.array_equal(got, ref, equal_nan=True)
    else:
        assert np.abs(got - ref).max(initial=0) <= _tolerance(ref)


# ------------------------------------------------------- random configurations


def _split(rng, n, most=4):
    """Random chunks for an axis of n (one to `most`)."""
    cuts = sorted(set(rng.integers(1, n, size=rng.integers(0, most)).tolist())) if n > 1 else []
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


def _case(rng, backend, most=4):
    """(op name, in-memory result, lazy result) of a random call valid in memory,
    with up to `most` chunks per axis."""
    while True:
        kind = ("conv2d", "max_pool2d", "avg_pool2d")[rng.integers(3)]
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)),
                 int(rng.integers(4, 28)), int(rng.integers(4, 28)))
        x = rng.standard_normal(shape).astype((np.float32, np.float64)[rng.integers(2)])
        if kind != "conv2d" and rng.random() < 0.3:  # ties, -inf and NaN for pooling's rules
            x[rng.random(shape) < 0.2] = (0.0, -np.inf, np.nan)[rng.integers(3)]
        chunks = tuple(_split(rng, n, most) for n in shape)
        k, s, d = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        if kind == "conv2d":
            c = shape[1]
            groups = int(rng.choice([g for g in (1, 2, c) if c % g == 0]))
            filters = groups * int(rng.integers(1, 3))
            w = rng.standard_normal((filters, c // groups, k, int(rng.integers(1, 4))))
            b = rng.standard_normal(filters) if rng.random() < 0.7 else None
            padding = ("same", "valid", int(rng.integers(0, 3)), ((2, 0), (1, 3)))[rng.integers(4)]
            args = (w.astype(x.dtype), None if b is None else b.astype(x.dtype))
            kwargs = dict(stride=s, padding=padding, dilation=d, groups=groups,
                          padding_mode=("zeros", "reflect", "replicate", "circular")[rng.integers(4)],
                          activation=(None, "relu")[rng.integers(2)], backend=backend)
        elif kind == "max_pool2d":
            args = (k,)
            kwargs = dict(stride=s, padding=int(rng.integers(0, k // 2 + 1)), dilation=d,
                          ceil_mode=bool(rng.integers(2)), return_indices=bool(rng.integers(2)),
                          backend=backend)
        else:
            args = (k,)
            kwargs = dict(stride=s, padding=int(rng.integers(0, k // 2 + 1)),
                          ceil_mode=bool(rng.integers(2)), count_include_pad=bool(rng.integers(2)),
                          divisor_override=(None, 5)[rng.integers(2)], backend=backend)
        unbatched = rng.random() < 0.15
        if unbatched:
            x, chunks = x[0], chunks[1:]
        try:
            ref = getattr(fc, kind)(x, *args, **kwargs)
        except ValueError:  # e.g. kernel larger than the input: try another
            continue
        return kind, ref, getattr(fcd, kind)(da.from_array(x, chunks=chunks), *args, **kwargs)


def _pairs(ref, lazy):
    return zip(ref, lazy) if isinstance(ref, tuple) else [(ref, lazy)]


def _bitwise(kind, backend):
    return kind != "conv2d" or backend in CONV_BITWISE


@pytest.mark.parametrize("backend", SWEEP_BACKENDS)
def test_random_configurations_threaded(backend):
    """A seeded sweep on the threaded scheduler: shapes, chunks and values."""
    rng = np.random.default_rng(9)
    for _ in range(24):
        kind, ref, lazy = _case(rng, backend)
        for r, y in _pairs(ref, lazy):
            assert y.shape == r.shape and y.dtype == r.dtype
            with dask.config.set(scheduler="threads"):
                _check(y.compute(), r, _bitwise(kind, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_and_group_chunks(backend):
    """Batch and group chunks only: bitwise where each output's sum is fixed (cpp);
    numpy's one BLAS product over the batch rounds by its width, within tolerance."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 20, 18)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(padding="same", groups=2, padding_mode="reflect", activation="relu",
              backend=backend)
    y = fcd.conv2d(da.from_array(x, chunks=(2, 2, 20, 18)), w, b, **kw)
    assert y.chunks == ((2, 2, 1), (3, 3), (20,), (18,))
    threads = fc.get_num_threads()
    with dask.config.set(scheduler="threads"):
        _check(y.compute(), fc.conv2d(x, w, b, **kw), _bitwise("conv2d", backend))
    assert fc.get_num_threads() == threads  # the tasks' thread budget was given back


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding, stride", [(((2, 0), (1, 3)), 3), (((5, 0), (0, 0)), 10),
                                             (((4, 4), (3, 3)), 2)])
def test_blocks_whose_windows_lie_in_the_padding(backend, padding, stride):
    """One-row chunks, wide padding, 1x1 kernels: some blocks read no input row at all."""
    x = np.random.default_rng(0).standard_normal((1, 3, 7, 2)).astype(np.float32)
    w, b = np.ones((2, 3, 1, 1), np.float32), np.ones(2, np.float32)
    kw = dict(stride=stride, padding=padding, backend=backend)
    y = fcd.conv2d(da.from_array(x, chunks=(1, 3, 1, 1)), w, b, **kw)
    assert np.array_equal(y.compute(scheduler="sync"), fc.conv2d(x, w, b, **kw))


# ------------------------------------------------------------------ laziness


def _boom(block):
    raise AssertionError("an input block was computed")


def test_building_the_graph_computes_nothing():
    x = da.map_blocks(_boom, da.zeros((4, 3, 33, 40), np.uint8, chunks=(2, 3, 10, 13)),
                      dtype=np.uint8)
    w = da.from_array(np.ones((8, 3, 3, 3)), chunks=4)
    y = fcd.conv2d(x, w, padding="same", stride=2, padding_mode="circular")
    assert (y.shape, y.dtype) == ((4, 8, 17, 20), np.float64)
    assert y.chunks[:2] == ((2, 2), (8,))
    assert sum(y.chunks[2]) == 17 and sum(y.chunks[3]) == 20
    v, i = fcd.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert (v.shape, v.dtype, i.dtype) == ((4, 3, 17, 21), np.float32, np.int64)
    a = fcd.avg_pool2d(fcd.conv2d(x, w, activation="relu"), 2)
    assert (a.shape, a.dtype) == ((4, 8, 15, 19), np.float64)


def test_same_padding_keeps_the_chunks():
    x = da.zeros((6, 2, 40, 50), np.float32, chunks=(3, 2, (13, 13, 14), (25, 25)))
    w = np.zeros((3, 2, 5, 5), np.float32)
    assert fcd.conv2d(x, w, padding="same").chunks == ((3, 3), (3,), (13, 13, 14), (25, 25))
    # stride 2: an output goes with the input chunk that holds its window's centre
    assert fcd.conv2d(x, w, padding="same", stride=2).chunks[2:] == ((6, 7, 7), (12, 13))
    assert fcd.max_pool2d(x, 2).chunks[2:] == ((7, 6, 7), (13, 12))


def test_importing_fastconv_does_not_import_dask():
    code = ("import sys, fastconv, fastconv.dask; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_weights_enter_the_graph_once():
    w = np.random.default_rng(0).standard_normal((64, 8, 3, 3)).astype(np.float32)
    b = np.zeros(64, np.float32)
    x = da.zeros((8, 8, 64, 64), np.float32, chunks=(2, 8, 16, 16))
    y = fcd.conv2d(x, w, b, padding=1)
    graph = y.__dask_graph__()
    tasks = [k for k in graph if isinstance(k, tuple) and k[0] == y.name]
    assert len(tasks) == 4 * 4 * 4
    deps = graph.get_all_dependencies()
    weight_keys = set.intersection(*(set(deps[k]) for k in tasks)) - set(graph.layers[y.name])
    weight_keys = {k for k in weight_keys if not isinstance(k, tuple)}
    assert len(weight_keys) == 2  # weight and bias, one key each, shared by every task
    # and the weights are not copied into the 64 tasks
    assert len(pickle.dumps({k: graph[k] for k in tasks})) < w.nbytes


@pytest.mark.parametrize("bad", [
    dict(groups=2), dict(padding=-1), dict(stride=0), dict(padding="full"),
    dict(padding_mode="mirror"), dict(weight=np.zeros((2, 3, 40, 1))),
    dict(bias=np.zeros(3)), dict(x=np.zeros((3, 4))), dict(x=np.zeros((3, 4, 5), complex)),
])
def test_errors_are_those_of_the_in_memory_call(bad):
    bad = dict(bad)
    x = bad.pop("x", np.zeros((2, 3, 9, 9), np.float32))
    w = bad.pop("weight", np.zeros((4, 3, 3, 3), np.float32))
    errors = []
    for fn, arg in ((fc.conv2d, x), (fcd.conv2d, da.from_array(x, chunks=2))):
        with pytest.raises((ValueError, TypeError)) as info:
            fn(arg, w, **bad)
        errors.append((info.type, str(info.value)))
    assert errors[0] == errors[1]


def test_pool_errors_are_those_of_the_in_memory_call():
    x = np.zeros((1, 2, 5, 5))
    for kwargs in (dict(kernel_size=4, padding=3), dict(kernel_size=2, stride=0),
                   dict(kernel_size=9), dict(kernel_size=3, ceil_mode=1)):
        errors = []
        for fn, arg in ((fc.max_pool2d, x), (fcd.max_pool2d, da.from_array(x, chunks=2))):
            with pytest.raises((ValueError, TypeError)) as info:
                fn(arg, **kwargs)
            errors.append((info.type, str(info.value)))
        assert errors[0] == errors[1]


def test_empty_batch():
    x = da.zeros((0, 2, 8, 8), np.float32)
    assert fcd.conv2d(x, np.ones((3, 2, 3, 3))).compute().shape == (0, 3, 6, 6)
    v, i = fcd.max_pool2d(x, 2, return_indices=True)
    assert v.compute().shape == i.compute().shape == (0, 2, 4, 4)


def test_task_threads_rule_in_process():
    """Under the local threaded scheduler: cores shared by its pool of threads."""
    from dask.system import CPU_COUNT

    cores = len(os.sched_getaffinity(0))
    assert fcd._task_threads() == max(1, min(fc.get_num_threads(), cores // CPU_COUNT))
    with dask.config.set(num_workers=1):
        assert fcd._task_threads() == max(1, min(fc.get_num_threads(), cores))


# ------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, for the whole module."""
    with dask.config.set({"distributed.worker.daemon": False,
                          "distributed.admin.system-monitor.gil.enabled": False}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, worker_dashboard_address=None,
                                           silence_logs=50)
        with cluster, distributed.Client(cluster) as c:
            yield c


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_configurations_on_a_cluster(client, backend):
    rng = np.random.default_rng(17)
    cases = [_case(rng, backend, most=2) for _ in range(8)]
    lazies = [y for _, ref, lazy in cases for _, y in _pairs(ref, lazy)]
    results = iter(client.compute(lazies, sync=True))
    for kind, ref, lazy in cases:
        for r, _ in _pairs(ref, lazy):
            _check(next(results), r, _bitwise(kind, backend))


def test_workers_share_the_cores(client):
    """Two workers x one thread on this machine: fastconv gets cores // 2 threads each."""
    cores = len(os.sched_getaffinity(0))
    got = client.submit(fcd._task_threads, pure=False).result()
    assert got == max(1, min(fc.get_num_threads(), cores // 2))


def _slow(block):
    time.sleep(0.15)
    return block


def test_a_worker_killed_mid_computation(client):
    """Kill the worker holding results halfway: the answer is still complete and right."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    slow = da.from_array(x, chunks=(2, 3, 16, 16)).map_blocks(_slow, dtype=x.dtype)
    y = fcd.max_pool2d(fcd.conv2d(slow, w, padding=1, activation="relu", backend="numpy"),
                       2, backend="numpy")
    future = client.compute(y)
    victim = None
    while victim is None:  # until some worker holds a finished piece of the graph
        assert not future.done()
        for addr, keys in client.has_what().items():
            if any(isinstance(k, tuple) and "fastconv" in str(k[0]) for k in keys):
                victim = addr
        time.sleep(0.05)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    result = future.result()
    ref = fc.max_pool2d(fc.conv2d(x, w, padding=1, activation="relu", backend="numpy"), 2,
                        backend="numpy")
    assert result.shape == ref.shape
    assert np.abs(result - ref).max() <= _tolerance(ref)
    client.wait_for_workers(2)  # the nanny restarted it, for the tests after this one


# ------------------------------------------------------------- the example


@pytest.mark.slow
def test_example_pipeline_runs_tiny(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "dask_pipeline.py"), "--images", "8",
         "--size", "32", "--workers", "2", "--memory-limit", "1GiB", "--dir", str(tmp_path),
         "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "images/s" in out.stdout and "matches the one-process result" in out.stdout
