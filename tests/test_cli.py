"""python -m fastconv info / bench, end to end in a fresh process. Lean: the tiny
layer and the smallest pooling case, one round; nothing here asserts a speed."""

import json
import subprocess
import sys

import pytest

import fastconv as fc


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, timeout=300, env=env)


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


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """One run over every op (tiny and pool_lenet), saved with --json (and --plot)."""
    path = tmp_path_factory.mktemp("bench") / "run.json"
    plot = ["--plot", str(path.with_suffix(".png"))] if _has_matplotlib() else []
    r = _cli("bench", "tiny", "pool_lenet", "--op", "all", "--repeat", "2", "--no-torch",
             "--json", str(path), *plot)
    return r, path


def test_bench_runs_every_op_checks_results_and_reports_the_machine(saved_run):
    r, _ = saved_run
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for op in ("conv2d", "conv2d_backward", "im2col", "max_pool2d", "max_pool2d_backward",
               "avg_pool2d", "avg_pool2d_backward"):
        assert f"\n{op}, float32: time per call" in out
    assert "GFLOP/s" in out and "GB/s" in out and "problems" not in out
    assert "machine: " in out and "ISA path" in out and "versions: " in out
    assert "allocator: glibc" in out or "allocator: not glibc" in out
    assert "limits (measured in this run" in out and "copy" in out
    assert "noise (spread of the repeats" in out
    assert "\r" not in r.stderr  # no progress line when piped
    # auto's contenders: what they ran, and how they fare against the fastest backend
    assert out.count(": auto against the fastest backend of each layer") == 7
    assert "autotuned: within 10% of the fastest on " in out and " ran cpp" in out


def test_bench_json_compare_round_trip(saved_run, tmp_path):
    _, old = saved_run
    data = json.loads(old.read_text())
    assert data["format"] == "fastconv-bench/1" and data["limits"]["copy"] > 0
    assert {c["op"] for c in data["results"]} == {
        "conv2d", "conv2d_backward", "im2col", "max_pool2d", "max_pool2d_backward",
        "avg_pool2d", "avg_pool2d_backward"}
    assert all(len(c["times"]) == 2 for c in data["results"])
    tuned = [c for c in data["results"] if c["contender"] == "autotuned"]
    assert len(tuned) == 7 and all(c["path"] and c["first"] > 0 for c in tuned)
    new = tmp_path / "new.json"
    r = _cli("bench", "tiny", "--repeat", "2", "--no-torch", "--compare", str(old),
             "--json", str(new))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "compared with the run of " in r.stdout
    rows = [l for l in r.stdout.splitlines() if l.startswith("conv2d ") and "tiny" in l]
    assert len(rows) == len(fc.backends()) + 3  # every backend, auto, autotuned, the textbook
    assert "beyond the noise" in r.stdout
    assert json.loads(new.read_text())["settings"]["ops"] == ["conv2d"]


def test_bench_plot_writes_a_png(saved_run):
    pytest.importorskip("matplotlib")
    r, path = saved_run
    assert f"wrote {path.with_suffix('.png')}" in r.stdout
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_matplotlib_says_which_extra(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from fastconv.__main__ import main; "
            f"sys.exit(main(['bench', 'tiny', '--plot', {str(tmp_path / 'x.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "pip install 'fastconv[plot]'" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["vgg_c1"], "unknown layer 'vgg_c1'"),
    (["--op", "conv3d"], "unknown op 'conv3d'"),
    (["--op", "max_pool2d", "tiny"], "convolution layers, not layers of max_pool2d"),
    (["--compare", "/nonexistent/old.json"], "--compare"),
    (["--repeat", "0"], "expected a positive integer"),
])
def test_bench_rejects_bad_arguments_clearly(args, message, capsys):
    # in this process: every check fails before anything is measured or changed
    from fastconv.__main__ import main

    try:
        code = main(["bench", *args, "--no-torch"])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
