"""The examples run and do what they say (short versions; they need the examples extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def needs_example_deps():
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    pytest.importorskip("skimage")


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_lenet_learns_in_two_epochs(tmp_path, capsys, needs_example_deps):
    train_lenet = load_example("train_lenet")
    figure, saved = tmp_path / "figs" / "lenet.png", tmp_path / "lenet.npz"
    # one thread: this net's products are tiny, and threads only cost on a busy machine
    results = train_lenet.main(["--epochs", "2", "--seed", "0", "--threads", "1",
                                "--figure", str(figure), "--save", str(saved)])
    assert results["test_accuracy"] > 0.8
    assert len(results["epoch_times"]) == 2
    assert _is_png(figure)
    out = capsys.readouterr().out
    assert "s/epoch" in out and "test accuracy" in out

    # the saved model reloads into a fresh LeNet and scores the same
    _, _, x_test, t_test = train_lenet.load_data()
    model = train_lenet.lenet(np.random.default_rng(1)).load(saved)
    assert train_lenet.accuracy(model, x_test, t_test) == pytest.approx(results["test_accuracy"])


def test_train_lenet_runs_a_named_backend_and_numpy_for_what_it_lacks(needs_example_deps):
    train_lenet = load_example("train_lenet")
    from fastconv import nn

    model = train_lenet.lenet(np.random.default_rng(0))
    x = np.zeros((2, 1, 8, 8), np.float32)
    setting, runs = train_lenet.backend_plan("numpy", model, x)
    assert setting == {op: "numpy" for op in train_lenet.OPS}
    assert runs == {op: "numpy" for op in train_lenet.OPS}
    setting, runs = train_lenet.backend_plan("auto", model, x)
    assert setting == "auto" and set(runs) == set(train_lenet.OPS)
    assert isinstance(model[0], nn.Conv2d)


@pytest.mark.slow
def test_train_lenet_reaches_97_percent(tmp_path, needs_example_deps):
    results = load_example("train_lenet").main(["--quiet", "--figure", str(tmp_path / "f.png")])
    assert results["test_accuracy"] >= 0.97


@pytest.mark.parametrize("image", ["camera", "astronaut"])
def test_classic_filters(tmp_path, image, needs_example_deps):
    classic_filters = load_example("classic_filters")
    figure = tmp_path / "filters.png"
    results = classic_filters.main(["--image", image, "--figure", str(figure)])
    assert _is_png(figure)
    photo, outputs = results["image"], results["outputs"]
    assert list(outputs) == list(classic_filters.classic_filters())
    for out in outputs.values():
        assert out.shape == photo.shape and out.dtype == np.float32
    np.testing.assert_array_equal(outputs["identity"], photo)

    def roughness(a):  # mean absolute difference of horizontal neighbours
        return np.abs(np.diff(a.astype(np.float64), axis=1)).mean()

    for blur in ("box blur (7x7)", "Gaussian blur (5x5)"):
        assert roughness(outputs[blur]) < 0.7 * roughness(photo)
        assert outputs[blur].mean() == pytest.approx(photo.mean(), rel=0.01)
    assert roughness(outputs["sharpen"]) > roughness(photo)
    flat = classic_filters.apply_filters(np.full((9, 9), 7, np.uint8),
                                         list(classic_filters.classic_filters().values()))
    np.testing.assert_allclose(flat[1], 0, atol=1e-5)  # edge detection: zero on flat regions
