"""Shared by the benchmark suites: the cases, the contenders, the checked benchmark.

The ops, layers, inputs, contenders and checks are those of `python -m fastconv
bench` (`fastconv.bench.ops`), so the suites and the CLI time the same calls.

Contenders are every fastconv backend implementing the op, the textbook NumPy
code where there is one, and PyTorch (skipped, importorskip-style, when it is
not installed). Each layer is its own benchmark group, so the contenders sit side
by side in pytest-benchmark's report.

With benchmarks disabled (the default test run: pyproject's addopts carry
--benchmark-disable) each case runs once as a smoke test on a stand-in layer of
the same kernel, stride, padding and groups but small sizes; with
--benchmark-only or --benchmark-enable the real table is timed.
"""

import numpy as np
import pytest

from fastconv.bench import ops


def contenders(op):
    names, _ = ops.backends_for(op)
    if op in ops.TEXTBOOK_OPS:
        names.append("textbook")
    return names + ops.torch_contenders(op)


def layers(op):
    """The op's layer table, one benchmark group per layer."""
    return [pytest.param(layer, id=layer.name,
                         marks=pytest.mark.benchmark(group=f"{op} {layer.name}"))
            for layer in ops.table(op)]


def run(benchmark, op, layer, contender, dtype=np.float32):
    """Time one contender on one layer (after a warm-up) and check its result."""
    torch = pytest.importorskip("torch") if contender.startswith("torch") else None
    if benchmark.disabled:
        layer = ops.stand_in(layer)
    a = ops.inputs(op, layer, dtype)
    call = ops.contender_call(op, layer, a, contender, torch)
    call()  # warm-up: JIT compiles, first-touch pages
    result = benchmark(call)
    problem = ops.mismatch(op, contender, result, ops.reference(op, layer, a), layer)
    assert not problem, problem
    work = ops.work(op, layer, np.dtype(dtype).itemsize)
    key = "gflop" if ops.unit(op) == "GFLOP/s" else "gbytes"
    benchmark.extra_info[key] = work
    if benchmark.stats is not None:  # None when disabled
        benchmark.extra_info[ops.unit(op)] = work / benchmark.stats.stats.median
