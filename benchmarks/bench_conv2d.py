"""conv2d forward and backward on the layer table: every backend, the textbook im2col, PyTorch."""

import pytest
from _support import contenders, layers, run


@pytest.mark.parametrize("contender", contenders("conv2d"))
@pytest.mark.parametrize("layer", layers("conv2d"))
def test_conv2d(benchmark, layer, contender):
    run(benchmark, "conv2d", layer, contender)


@pytest.mark.parametrize("contender", contenders("conv2d_backward"))
@pytest.mark.parametrize("layer", layers("conv2d_backward"))
def test_conv2d_backward(benchmark, layer, contender):
    run(benchmark, "conv2d_backward", layer, contender)
