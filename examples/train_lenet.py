"""Train a LeNet-style CNN on scikit-learn's bundled 8x8 digits with fastconv.nn.

    python examples/train_lenet.py                        # auto backend, 10 epochs
    python examples/train_lenet.py --backend numpy --epochs 5 --seed 1
    python examples/train_lenet.py --compare-backends     # time per epoch of each backend

The data ship inside scikit-learn (no download): 1797 images of 8x8 pixels,
split 80/20 into training and test sets (the split is fixed; --seed sets the
initial weights and the batch order). Needs the examples extra:
pip install "fastconv[examples]".

At the end it saves a figure (--figure) of the first layer's filters before
and after training and of one test image's feature maps, as chapter 7 of
Deep Learning from Scratch shows them.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fastconv as fc
from fastconv import nn

# The fastconv functions this model calls; a backend asked for by name runs
# those it implements, numpy the others (see backend_plan).
OPS = ("conv2d", "conv2d_backward", "max_pool2d")


def load_data():
    """(x_train, t_train, x_test, t_test): images (N, 1, 8, 8) float32 in [0, 1], labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, t_train, t_test = train_test_split(
        x, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
    return x_train, t_train, x_test, t_test


def lenet(rng) -> nn.Sequential:
    """LeNet-5's shape scaled to 8x8 inputs: two conv + ReLU + max-pool blocks, two
    fully connected layers. The ReLUs after the convolutions are fused into them."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2, activation="relu", rng=rng),    # (32, 8, 8)
        nn.MaxPool2d(2),                                                # (32, 4, 4)
        nn.Conv2d(32, 64, 3, padding=1, activation="relu", rng=rng),   # (64, 4, 4)
        nn.MaxPool2d(2),                                                # (64, 2, 2)
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 128, rng=rng),
        nn.ReLU(),
        nn.Linear(128, 10, init="xavier", rng=rng),
    )


def backend_plan(name: str, model: nn.Sequential, x) -> tuple[object, dict[str, str]]:
    """The model's backend= setting for `name`, and which backend runs each of OPS.

    "auto" is passed through (fastconv picks per call). A named backend runs
    every function it implements for this model's calls and numpy the rest,
    so a backend still missing its backward kernels can be timed too.
    """
    runs: dict[str, set[str]] = {op: set() for op in OPS}
    setting: dict[str, str] = {}
    for layer in model:  # one explain() per call the model makes, on its real shapes
        probes = {}
        if isinstance(layer, nn.Conv2d):
            args = (layer.stride, layer.padding, layer.dilation, layer.groups)
            mode = {"padding_mode": layer.padding_mode}
            y = np.zeros(fc.explain("conv2d", x, layer.weight, None, *args).out_shape, x.dtype)
            probes["conv2d"] = ((x, layer.weight, layer.bias, *args),
                                dict(mode, activation=layer.activation))
            probes["conv2d_backward"] = ((y, x, layer.weight, *args), mode)
        elif isinstance(layer, nn.MaxPool2d):
            probes["max_pool2d"] = ((x, layer.kernel_size, layer.stride, layer.padding,
                                     layer.dilation, layer.ceil_mode), {"return_indices": True})
        for op, (args, kwargs) in probes.items():
            try:
                plan = fc.explain(op, *args, **kwargs, backend=name)
            except fc.BackendUnavailableError:
                if not fc.backends()[name].available:
                    raise
                setting[op] = "numpy"
                runs[op].add("numpy")
            else:
                runs[op].add(plan.backend)
        with fc.use_backend("numpy"):  # only the shapes matter here
            x = layer.forward(x)
    where = {op: "+".join(sorted(backends)) for op, backends in runs.items()}
    if name == "auto":
        return "auto", where
    return {op: setting.get(op, name) for op in OPS}, where


class _NoBar:
    """What the loop needs of tqdm, when tqdm is missing: nothing shown."""

    def __init__(self, iterable, **_):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix_str(self, _):
        pass

    def close(self):
        pass


def progress(iterable, **kwargs):
    """A tqdm bar, shown only on a terminal (disable=None), or nothing without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, disable=None, leave=False, dynamic_ncols=True, **kwargs)


def accuracy(model, x, t, batch_size=512) -> float:
    correct = sum(int((model.forward(x[i:i + batch_size]).argmax(axis=1)
                       == t[i:i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    return correct / len(x)


def train(data, *, backend="auto", epochs=10, batch_size=32, lr=2e-3, seed=0,
          quiet=False, label=""):
    """Train a fresh LeNet; returns (model, initial first-layer weights, results dict)."""
    x_train, t_train, x_test, t_test = data
    rng = np.random.default_rng(seed)
    model = lenet(rng)
    setting, runs = backend_plan(backend, model, x_train[:2])
    model.backend = setting
    initial_filters = model[0].weight.copy()
    loss_fn, optimizer = nn.SoftmaxCrossEntropy(), nn.Adam(lr=lr)
    say = (lambda *a: None) if quiet else print
    say(f"{label}backend {backend}: " + ", ".join(f"{op} on {b}" for op, b in runs.items()))

    epoch_times, history = [], []
    for epoch in range(1, epochs + 1):
        # cosine learning-rate decay: big steps first, small ones to settle
        optimizer.lr = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
        order = rng.permutation(len(x_train))
        steps = range(0, len(order), batch_size)
        bar = progress(steps, desc=f"{label}epoch {epoch}/{epochs}", unit="batch")
        start = time.perf_counter()
        total_loss = correct = seen = 0
        for i in bar:
            batch = order[i:i + batch_size]
            x, t = x_train[batch], t_train[batch]
            scores = model.forward(x)
            loss = loss_fn.forward(scores, t)
            model.backward(loss_fn.backward())
            optimizer.update(model.params, model.grads)
            total_loss += loss * len(batch)
            correct += int((scores.argmax(axis=1) == t).sum())
            seen += len(batch)
            bar.set_postfix_str(f"loss {total_loss / seen:.4f}, acc {correct / seen:.1%}")
        bar.close()
        epoch_times.append(time.perf_counter() - start)
        test_acc = accuracy(model, x_test, t_test)
        history.append((total_loss / seen, correct / seen, test_acc))
        say(f"{label}epoch {epoch:2d}/{epochs}  loss {total_loss / seen:.4f}  "
            f"train acc {correct / seen:6.2%}  test acc {test_acc:6.2%}  "
            f"{epoch_times[-1]:.2f} s")
    results = {"backend": backend, "runs": runs, "epoch_times": epoch_times,
               "history": history, "test_accuracy": history[-1][2] if history else
               accuracy(model, x_test, t_test)}
    return model, initial_filters, results


def save_figure(path, model, initial_filters, image, label) -> Path:
    """The textbook's CNN visualisation: conv1's filters before and after training,
    and the feature maps (conv1 + ReLU) of one image."""
    from matplotlib.figure import Figure  # no pyplot: no GUI, no global state (Agg)

    conv1 = model[0]
    maps = conv1.forward(image[None])[0]
    panels = [("conv1 filters at initialisation", initial_filters[:, 0], "gray_r"),
              ("conv1 filters after training", conv1.weight[:, 0], "gray_r"),
              ("the image's feature maps (conv1 + ReLU)", maps, "viridis")]
    fig = Figure(figsize=(13, 7), layout="constrained")
    subs = fig.subfigures(2, 2).ravel()  # the image, then one panel per subfigure
    ax = subs[0].subplots()
    ax.imshow(image[0], cmap="gray_r", interpolation="nearest")
    ax.set_title(f"test image (label {label})")
    ax.set_axis_off()
    for sub, (title, planes, cmap) in zip(subs[[2, 3, 1]], panels):
        sub.suptitle(title)
        cols = min(8, len(planes))
        axes = sub.subplots(-(-len(planes) // cols), cols, squeeze=False).ravel()
        for ax in axes:
            ax.set_axis_off()
        for ax, plane in zip(axes, planes):
            ax.imshow(plane, cmap=cmap, interpolation="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="auto", choices=["auto", *fc.backends()],
                   help="fastconv backend (default: auto); a named backend runs what it "
                        "implements, numpy the rest")
    p.add_argument("--compare-backends", action="store_true",
                   help="train once per available backend and print the time per epoch of each")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3,
                   help="Adam's initial learning rate, decayed along a cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", default="lenet_digits.png",
                   help="where to save the filters and feature maps (default: %(default)s)")
    p.add_argument("--save", metavar="PATH.npz", help="save the trained model's parameters")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for fastconv's kernels and NumPy's BLAS (default: each "
                        "library's own; 1 is fastest for this tiny net on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="print only the final result")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        p.error("--epochs, --batch-size and --threads must be >= 1")
    return args


def _summary(results) -> str:
    times = results["epoch_times"]
    rest = times[1:] or times
    return (f"{results['backend']:>6}: {statistics.median(rest):6.3f} s/epoch "
            f"(first epoch {times[0]:.3f} s), test accuracy {results['test_accuracy']:.2%}  "
            f"[" + ", ".join(f"{op} on {b}" for op, b in results["runs"].items()) + "]")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is None:
        return _main(args)
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    before = fc.get_num_threads()
    fc.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads, user_api="blas"):
            return _main(args)
    finally:
        fc.set_num_threads(before)


def _main(args) -> dict:
    data = load_data()
    options = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                   quiet=args.quiet)
    if args.compare_backends:
        names = [name for name, info in fc.backends().items() if info.available]
        runs = {}
        for name in names:
            model, initial, runs[name] = train(data, backend=name, label=f"[{name}] ", **options)
        print("time per epoch (median after the first, which includes any JIT compilation):")
        for results in runs.values():
            print(_summary(results))
        results = dict(runs[names[0]], compared=runs)
    else:
        model, initial, results = train(data, backend=args.backend, **options)
        print(_summary(results))
    x_test, t_test = data[2], data[3]
    results["figure"] = save_figure(args.figure, model, initial, x_test[0], t_test[0])
    print(f"figure saved to {results['figure']}")
    if args.save:
        model.save(args.save)
        print(f"model saved to {args.save}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
