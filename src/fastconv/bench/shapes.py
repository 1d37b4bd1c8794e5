"""The benchmark layer table: one list, used by the CLI and the pytest-benchmark suites."""

from __future__ import annotations

from typing import NamedTuple


class ConvLayer(NamedTuple):
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: int
    padding: int
    groups: int

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.k, self.c // self.groups, self.kh, self.kw)

    @property
    def out_hw(self):
        return ((self.h + 2 * self.padding - self.kh) // self.stride + 1,
                (self.w + 2 * self.padding - self.kw) // self.stride + 1)

    @property
    def flops(self) -> int:
        """2*N*K*(C/groups)*KH*KW*OH*OW."""
        oh, ow = self.out_hw
        return 2 * self.n * self.k * (self.c // self.groups) * self.kh * self.kw * oh * ow


class PoolLayer(NamedTuple):
    name: str
    n: int
    c: int
    h: int
    w: int
    kernel: int
    stride: int
    padding: int

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)


def _conv(name, *sizes):
    return ConvLayer(name, *sizes)


CONV_LAYERS: tuple[ConvLayer, ...] = (
    #      name             N    C    H    W    K  KH KW  s  p  groups
    _conv("lenet_c1",      64,   1,  28,  28,   6, 5, 5, 1, 0, 1),
    _conv("lenet_c2",      64,   6,  12,  12,  16, 5, 5, 1, 0, 1),
    _conv("alexnet_c1",     8,   3, 227, 227,  96, 11, 11, 4, 0, 1),
    _conv("resnet_stem",    8,   3, 224, 224,  64, 7, 7, 2, 3, 1),
    _conv("resnet_3x3_56",  8,  64,  56,  56,  64, 3, 3, 1, 1, 1),
    _conv("resnet_3x3_28",  8, 128,  28,  28, 128, 3, 3, 1, 1, 1),
    _conv("resnet_3x3_14",  8, 256,  14,  14, 256, 3, 3, 1, 1, 1),
    _conv("resnet_3x3_7",   8, 512,   7,   7, 512, 3, 3, 1, 1, 1),
    _conv("pointwise_1x1",  8, 256,  28,  28, 512, 1, 1, 1, 0, 1),
    _conv("depthwise_3x3",  8, 128,  56,  56, 128, 3, 3, 1, 1, 128),
    _conv("batch1_3x3_56",  1,  64,  56,  56,  64, 3, 3, 1, 1, 1),
    _conv("tiny",           1,   1,   8,   8,   1, 3, 3, 1, 1, 1),
)

POOL_LAYERS: tuple[PoolLayer, ...] = (
    #         name           N   C    H    W   k  s  p
    PoolLayer("pool_112_k3s2", 8, 64, 112, 112, 3, 2, 1),
    PoolLayer("pool_56_k2s2",  8, 64,  56,  56, 2, 2, 0),
    PoolLayer("pool_lenet",   64,  6,  24,  24, 2, 2, 0),
)

# The quick suite (the CLI's default) skips nothing but repeats less; see bench.runner.
LAYERS = {layer.name: layer for layer in (*CONV_LAYERS, *POOL_LAYERS)}
