"""max/avg pooling on the pooling cases: every backend, PyTorch NCHW and channels_last."""

import numpy as np
import pytest
from _support import assert_close, backends_for, torch

import fastconv as fc
from fastconv.bench.shapes import POOL_LAYERS

ONES = np.ones((1, 1, 2, 2), np.float32)
OPS = ("max_pool2d", "avg_pool2d")


def _contenders(op):
    names = backends_for(lambda b: getattr(fc, op)(ONES, 2, backend=b))
    return names + (["torch", "torch_channels_last"] if torch is not None else [])


def _call(op, contender, layer, x):
    kw = dict(kernel_size=layer.kernel, stride=layer.stride, padding=layer.padding)
    if contender.startswith("torch"):
        tx = torch.from_numpy(x)
        if contender == "torch_channels_last":
            tx = tx.contiguous(memory_format=torch.channels_last)
        fn = getattr(torch.nn.functional, op)

        def run():
            with torch.no_grad():
                return fn(tx, **kw)

        return run
    return lambda: getattr(fc, op)(x, backend=contender, **kw)


@pytest.mark.parametrize("op,contender", [(op, c) for op in OPS for c in _contenders(op)])
@pytest.mark.parametrize("layer", POOL_LAYERS, ids=lambda l: l.name)
def test_pool(benchmark, layer, op, contender):
    benchmark.group = f"{op} {layer.name}"
    x = np.random.default_rng(0).standard_normal(layer.x_shape, dtype=np.float32)
    call = _call(op, contender, layer, x)
    call()
    result = benchmark(call)
    reference = getattr(fc, op)(x, layer.kernel, layer.stride, layer.padding, backend="numpy")
    assert_close(result, reference)
    benchmark.extra_info["gbytes"] = x.nbytes / 1e9
