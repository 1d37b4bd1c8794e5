"""max/avg pooling and their gradients on the pooling cases: every backend, PyTorch
NCHW (`torch`) and channels_last (`torch_cl`)."""

import pytest
from _support import contenders, layers, run


@pytest.mark.parametrize("contender", contenders("max_pool2d"))
@pytest.mark.parametrize("layer", layers("max_pool2d"))
def test_max_pool2d(benchmark, layer, contender):
    run(benchmark, "max_pool2d", layer, contender)


@pytest.mark.parametrize("contender", contenders("avg_pool2d"))
@pytest.mark.parametrize("layer", layers("avg_pool2d"))
def test_avg_pool2d(benchmark, layer, contender):
    run(benchmark, "avg_pool2d", layer, contender)


@pytest.mark.parametrize("contender", contenders("max_pool2d_backward"))
@pytest.mark.parametrize("layer", layers("max_pool2d_backward"))
def test_max_pool2d_backward(benchmark, layer, contender):
    run(benchmark, "max_pool2d_backward", layer, contender)


@pytest.mark.parametrize("contender", contenders("avg_pool2d_backward"))
@pytest.mark.parametrize("layer", layers("avg_pool2d_backward"))
def test_avg_pool2d_backward(benchmark, layer, contender):
    run(benchmark, "avg_pool2d_backward", layer, contender)
