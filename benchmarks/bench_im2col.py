"""im2col on the convolution layers: every backend, the textbook loop, PyTorch's unfold
(its own layout, (N, C*KH*KW, OH*OW); the check transposes it)."""

import pytest
from _support import contenders, layers, run


@pytest.mark.parametrize("contender", contenders("im2col"))
@pytest.mark.parametrize("layer", layers("im2col"))
def test_im2col(benchmark, layer, contender):
    run(benchmark, "im2col", layer, contender)
