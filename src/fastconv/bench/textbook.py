"""The textbook convolution (Deep Learning from Scratch, ch. 7), as a baseline.

Pad, gather patches into an (N*OH*OW, C*KH*KW) matrix, one matmul. The NumPy
reference backend must be at least as fast as this on every benchmark layer.
"""

from __future__ import annotations

import numpy as np


def im2col(x, kh, kw, stride=1, pad=0):
    n, c, h, w = x.shape
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((n, c, kh, kw, oh, ow), x.dtype)
    for y in range(kh):
        y_max = y + stride * oh
        for x_ in range(kw):
            x_max = x_ + stride * ow
            col[:, :, y, x_, :, :] = img[:, :, y:y_max:stride, x_:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


def conv2d(x, weight, bias=None, stride=1, pad=0):
    """Ungrouped convolution as the book writes it; groups are run one by one."""
    n, _, h, w = x.shape
    k, _, kh, kw = weight.shape
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    col = im2col(x, kh, kw, stride, pad)
    out = col @ weight.reshape(k, -1).T
    if bias is not None:
        out += bias
    return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


def grouped_conv2d(x, weight, bias=None, stride=1, pad=0, groups=1):
    """The book has no groups: a loop over them, the way a reader would add it."""
    if groups == 1:
        return conv2d(x, weight, bias, stride, pad)
    cg, kg = x.shape[1] // groups, weight.shape[0] // groups
    parts = [conv2d(x[:, g * cg:(g + 1) * cg], weight[g * kg:(g + 1) * kg],
                    None if bias is None else bias[g * kg:(g + 1) * kg], stride, pad)
             for g in range(groups)]
    return np.concatenate(parts, axis=1)
