"""Layers, a loss and optimisers to train small CNNs on fastconv, in the textbook's style.

    import numpy as np
    from fastconv import nn

    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10, init="xavier", rng=rng))
    loss_fn, opt = nn.SoftmaxCrossEntropy(), nn.Adam(lr=1e-3)

    loss = loss_fn.forward(model.forward(x), labels)   # x (N, 1, 8, 8)
    model.backward(loss_fn.backward())
    opt.update(model.params, model.grads)
    model.save("model.npz")                            # model.load("model.npz")

Conv2d and the pooling layers call fastconv's functions with the layer's
`backend=` (or, per function, a dict such as {"conv2d_backward": "numpy"}).
"""

from . import init
from .layers import (AvgPool2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, ReLU, Sequential,
                     SoftmaxCrossEntropy)
from .optim import SGD, Adam, Momentum, Optimizer

__all__ = ["Adam", "AvgPool2d", "Conv2d", "Flatten", "Layer", "Linear", "MaxPool2d", "Momentum",
           "Optimizer", "ReLU", "SGD", "Sequential", "SoftmaxCrossEntropy", "init"]
