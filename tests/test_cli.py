"""python -m fastconv info / bench."""

import subprocess
import sys

import pytest

import fastconv as fc


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, timeout=300)


def test_info_lists_version_backends_features_threads():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    assert f"fastconv {fc.__version__}" in r.stdout
    for name, b in fc.backends().items():
        assert name in r.stdout
        if not b.available:
            assert b.reason in r.stdout
    assert f"threads: {fc.get_num_threads()}" in r.stdout
    if fc.backends()["cpp"].available:
        assert "isa path:" in r.stdout and "cpu features detected:" in r.stdout


def test_bench_runs_chosen_layers_and_checks_results():
    r = _cli("bench", "tiny", "lenet_c2", "--repeat", "1", "--no-torch")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(l.startswith("tiny") for l in lines)
    assert any(l.startswith("lenet_c2") for l in lines)
    assert "GFLOP/s" in r.stdout and "problems" not in r.stdout


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_bench_pooling(op):
    r = _cli("bench", "--op", op, "pool_lenet", "--repeat", "1", "--no-torch")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "GB/s" in r.stdout and "pool_lenet" in r.stdout


def test_bench_rejects_unknown_layers():
    r = _cli("bench", "vgg_c1", "--no-torch")
    assert r.returncode == 2
    assert "vgg_c1" in r.stdout
