"""conv2d forward on the layer table: every backend, the textbook im2col, PyTorch."""

import numpy as np
import pytest
from _support import assert_close, backends_for, torch

import fastconv as fc
from fastconv.bench import textbook
from fastconv.bench.shapes import CONV_LAYERS

ONES = np.ones((1, 1, 2, 2), np.float32)
CONTENDERS = [*backends_for(lambda b: fc.conv2d(ONES, ONES, backend=b)), "textbook"]
if torch is not None:
    CONTENDERS.append("torch")


def _call(contender, layer, x, w):
    kw = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
    if contender == "textbook":
        return lambda: textbook.grouped_conv2d(x, w, None, layer.stride, layer.padding,
                                               layer.groups)
    if contender == "torch":
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)

        def run():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, **kw)

        return run
    return lambda: fc.conv2d(x, w, backend=contender, **kw)


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("layer", CONV_LAYERS, ids=lambda l: l.name)
def test_conv2d(benchmark, layer, contender):
    benchmark.group = f"conv2d {layer.name}"
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape, dtype=np.float32)
    w = rng.standard_normal(layer.weight_shape, dtype=np.float32)
    call = _call(contender, layer, x, w)
    call()  # warm-up: JIT compiles, first-touch pages
    result = benchmark(call)
    reference = fc.conv2d(x, w, stride=layer.stride, padding=layer.padding,
                          groups=layer.groups, backend="numpy")
    assert_close(result, reference)
    benchmark.extra_info["gflops"] = layer.flops / 1e9
