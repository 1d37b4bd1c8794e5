"""Classic image filters on a real photograph with one fastconv.conv2d call.

    python examples/classic_filters.py                      # the cameraman, grey
    python examples/classic_filters.py --image astronaut    # colour: a depthwise convolution
    python examples/classic_filters.py --figure out/filters.png --backend numpy

The photographs ship inside scikit-image (no download). The five filters
(identity, edge detection, sharpen, box blur, Gaussian blur) are stacked as
the five output channels of one convolution; a colour image is filtered per
channel with groups=3. Needs the examples extra: pip install "fastconv[examples]".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import fastconv as fc

IMAGES = ("camera", "astronaut", "coins", "moon", "chelsea", "coffee")


def classic_filters() -> dict[str, np.ndarray]:
    """The kernels by name (cross-correlation, as conv2d computes; all are symmetric anyway)."""
    binomial = np.array([1, 4, 6, 4, 1], np.float32)
    return {
        "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32),
        "edge detection": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32),
        "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
        "box blur (7x7)": np.full((7, 7), 1 / 49, np.float32),
        "Gaussian blur (5x5)": np.outer(binomial, binomial) / 256,
    }


def stack(kernels) -> np.ndarray:
    """Kernels of odd sizes, zero-padded around their centre to one size: (F, 1, k, k).
    Padding a kernel with zeros this way leaves its "same"-padded output unchanged."""
    size = max(k.shape[0] for k in kernels)
    weight = np.zeros((len(kernels), 1, size, size), np.float32)
    for f, k in enumerate(kernels):
        o = (size - k.shape[0]) // 2
        weight[f, 0, o:o + k.shape[0], o:o + k.shape[1]] = k
    return weight


def apply_filters(image, kernels, backend="auto") -> np.ndarray:
    """Every kernel on `image` (H, W) or (H, W, channels): (F, H, W) or (F, H, W, channels).

    One conv2d call: "same" padding with reflected borders, so the output is
    the image's size with no dark frame. A colour image is a depthwise
    convolution: groups = channels, each channel meets all F filters.
    """
    weight = stack(kernels)
    f = len(kernels)
    if image.ndim == 2:
        out = fc.conv2d(image[None], weight, padding="same", padding_mode="reflect",
                        backend=backend)                          # (F, H, W)
        return out
    c = image.shape[2]
    x = image.transpose(2, 0, 1)                                  # a (C, H, W) view, no copy
    out = fc.conv2d(x, np.tile(weight, (c, 1, 1, 1)), padding="same", padding_mode="reflect",
                    groups=c, backend=backend)                    # (C*F, H, W), channel-major
    return out.reshape(c, f, *out.shape[1:]).transpose(1, 2, 3, 0)


def load_image(name: str) -> np.ndarray:
    import skimage.data

    if name not in IMAGES:
        raise ValueError(f"--image must be one of {IMAGES}, got {name!r}")
    return getattr(skimage.data, name)()


def save_figure(path, image, outputs: dict[str, np.ndarray], kernels) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no GUI, no global state (Agg)

    grey = image.ndim == 2
    fig = Figure(figsize=(12, 8.4), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    panels = [("original", image.astype(np.float32), None)]
    panels += [(name, out, kernels[name]) for name, out in outputs.items()]
    for ax, (name, out, kernel) in zip(axes, panels):
        if name == "edge detection":  # signed and small: show the magnitude, stretched
            out = np.abs(out)
            out = out * (255 / max(np.percentile(out, 99.5), 1e-6))
        ax.imshow(np.clip(out, 0, 255).astype(np.uint8), cmap="gray" if grey else None)
        ax.set_title(name)
        ax.set_axis_off()
        if kernel is not None:  # the kernel, small, in the corner
            inset = ax.inset_axes([0.72, 0.72, 0.26, 0.26])
            lim = np.abs(kernel).max()
            inset.imshow(kernel, cmap="coolwarm", vmin=-lim, vmax=lim)
            inset.set_xticks([])
            inset.set_yticks([])
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="camera", choices=IMAGES,
                   help="a photograph shipped with scikit-image (default: %(default)s)")
    p.add_argument("--figure", default="classic_filters.png",
                   help="where to save the figure (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=["auto", *fc.backends()])
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    image = load_image(args.image)
    kernels = classic_filters()
    filtered = apply_filters(image, list(kernels.values()), backend=args.backend)
    outputs = dict(zip(kernels, filtered))
    figure = save_figure(args.figure, image, outputs, kernels)
    print(f"{args.image} {image.shape} through {len(kernels)} filters, figure saved to {figure}")
    return {"image": image, "outputs": outputs, "figure": figure}


if __name__ == "__main__":
    main(sys.argv[1:])
