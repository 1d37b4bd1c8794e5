"""fastconv.bench: the limit probes, the statistics, JSON and --compare, the plot, the
argument checks and one layer measured end to end. Nothing here asserts a speed."""

import io
import itertools
import json
import math
import os
import sys

import numpy as np
import pytest

from fastconv import _tuning
from fastconv.bench import limits, ops, report, runner
from fastconv.bench.report import Cell
from fastconv.bench.shapes import CONV_LAYERS, LAYERS, POOL_LAYERS


# ------------------------------------------------------------------ limits


def test_gemm_and_copy_probes_return_positive_rates():
    for dtype in ("float32", "float64"):
        assert limits.gemm_rate(dtype, 64, 1, 1) > 0
    assert limits.copy_rate(1 << 20, 1, 2) > 0
    lim = limits.measure(1, gemm_n=64, gemm_repeat=1, copy_bytes=1 << 20, copy_repeat=1)
    assert set(lim.gemm) == {"float32", "float64"} and min(lim.gemm.values()) > 0
    assert lim.copy > 0
    assert "GFLOP/s" in lim.describe() and "GB/s" in lim.describe()


def test_gemm_probe_runs_without_openblas_pinning_in_a_child():
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    rates, note = limits.gemm_peaks(64, 1, 1, environ=env)
    assert min(rates.values()) > 0
    assert "child process without OPENBLAS_CORETYPE=Haswell" in note
    rates, note = limits.gemm_peaks(64, 1, 1, environ={})
    assert min(rates.values()) > 0 and note == "in this process"


def test_machine_and_versions_name_what_ran():
    m = limits.machine(2)
    assert m["threads"] == 2 and m["cpu"] and m["isa_path"]
    v = limits.versions()
    assert {"fastconv", "python", "numpy"} <= set(v)


# ------------------------------------------------------------- statistics


def test_spread_is_iqr_over_median():
    assert report.spread([1.0]) is None
    assert report.spread([2.0, 2.0, 2.0]) == 0
    assert report.spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 3)


def _cell(layer="tiny", contender="cpp", times=(1e-3, 1.1e-3, 1.2e-3), op="conv2d", **kw):
    return Cell(op, layer, contender, work=1e-3, unit=ops.unit(op), times=list(times), **kw)


def test_noise_figure_is_the_typical_spread_and_names_the_worst_cell():
    quiet = _cell(contender="cpp", times=[1.0, 1.0, 1.0])
    loud = _cell(contender="numpy", times=[1.0, 2.0, 3.0])
    typical, worst = report.noise([quiet, loud, _cell(times=[1.0])])
    assert typical == pytest.approx((0 + 1.0 / 2) / 2)
    assert worst is loud
    assert "numpy" in report.describe_noise([quiet, loud])
    assert "not measured" in report.describe_noise([_cell(times=[1.0])])


def test_table_shows_times_rates_shares_and_ratios():
    cells = [_cell(contender="cpp", times=[1e-3] * 3), _cell(contender="numpy", times=[4e-3] * 3),
             _cell(contender="torch", times=[2e-3] * 3)]
    lim = limits.Limits({"float32": 10.0, "float64": 5.0}, 20.0, 64, 1, 1, "in this process")
    text = report.format_table("conv2d", cells, "float32", lim)
    cpp = next(l for l in text.splitlines() if " cpp " in l)
    assert "1.00 ms" in cpp and "10%" in cpp and "4.00x" in cpp and "2.00x" in cpp


def test_auto_is_rated_by_the_rounds_ratios_to_the_fastest_backend():
    # the machine slows down by half after round 2: auto (running cpp) is 5-7%
    # behind numba in every round, but its median falls among the slow rounds
    numba = _cell(contender="numba", times=[1.0, 1.0, 1.0, 1.5, 1.5])
    cpp = _cell(contender="cpp", times=[1.2] * 5)
    auto = _cell(contender="auto", times=[1.05, 1.05, 1.6, 1.6, 1.6])
    auto.path = "cpp"
    assert report.paired_ratio(auto, numba) == pytest.approx(1.6 / 1.5)
    assert auto.median / numba.median == pytest.approx(1.6)
    text = report.format_auto("conv2d", [cpp, numba, auto])
    assert "auto: within 10% of the fastest on 1 of 1 layers, worst 1.07x on tiny" in text
    slow = _cell(contender="auto", times=[1.2, 1.2, 1.8, 1.8, 1.8])
    assert "within 10% of the fastest on 0 of 1" in report.format_auto("conv2d", [numba, slow])
    # samples that do not pair up (a contender failed mid-run): ratio of medians
    assert report.paired_ratio(_cell(times=[2.0, 2.0]), numba) == pytest.approx(2.0)


def test_auto_is_rated_by_its_interleaved_ratio_to_the_backend_it_ran():
    numba = _cell(contender="numba", times=[1.0, 1.0, 1.5])
    cpp = _cell(contender="cpp", times=[1.2, 1.3, 1.5])  # 1.2, 1.3 and 1.0 numba's
    auto = _cell(contender="auto", times=[1.5, 1.5, 2.25], path="cpp/gemm", against="cpp",
                 ab=[1.01, 1.03, 0.99])
    by = {c.contender: c for c in (numba, cpp, auto)}
    assert report.auto_ratio(auto, cpp, by) == pytest.approx(1.01)
    assert report.auto_ratio(auto, numba, by) == pytest.approx(1.01 * 1.2)
    auto.ab = []  # not interleaved: its own rounds' ratios
    assert report.auto_ratio(auto, numba, by) == pytest.approx(1.5)
    assert "worst 1.01x" in report.format_auto("conv2d", [
        cpp, _cell(contender="auto", times=[9.0] * 3, path="cpp", against="cpp", ab=[1.01])])
    tuned = _cell(contender="autotuned", times=[1.2] * 3, path="cpp", against="cpp", ab=[1.0],
                  first=0.5, tuning=1.5, tunings=2)
    row = report.format_auto("conv2d", [cpp, tuned]).splitlines()[3]
    assert row.endswith("500.00 ms    1.500 s (2)")


def test_interleave_alternates_the_calls_and_which_goes_first():
    calls = []
    fake = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    ratios = runner.interleave(fake["a"], "cpp", fake["b"], 2, 0.0)
    assert "".join(calls) == "abab" + "baba" and len(ratios) == 2 and all(r > 0 for r in ratios)


# ------------------------------------------------------- JSON and compare


def test_json_round_trip_and_compare_flags_slowdowns_beyond_the_noise(tmp_path):
    header = {"date": "2026-01-01T00:00:00+00:00", "settings": {"dtype": "float32"}}
    old = [_cell(contender="cpp", times=[1.00, 1.01, 1.02]),
           _cell(contender="numpy", times=[1.00, 1.01, 1.02]),
           _cell(contender="numba", times=[1.0, 1.5, 2.0])]
    path = tmp_path / "old.json"
    report.save(path, header, old)
    loaded_header, loaded = report.load(path)
    assert loaded == old and loaded_header["date"] == header["date"]
    assert json.loads(path.read_text())["results"][0]["median"] == pytest.approx(1.01)

    new = [_cell(contender="cpp", times=[2.0, 2.02, 2.04]),     # twice as slow, quiet
           _cell(contender="numpy", times=[1.01, 1.02, 1.03]),  # within the noise
           _cell(contender="numba", times=[1.5, 2.0, 2.5])]     # slower, but noisy
    text = report.compare(loaded_header, loaded, header, new)
    lines = {l.split()[2]: l for l in text.splitlines() if l.startswith("conv2d")}
    assert "SLOWER" in lines["cpp"] and "0.50x" in lines["cpp"]
    assert "SLOWER" not in lines["numpy"] and "SLOWER" not in lines["numba"]
    assert "1 slower, 0 faster" in text


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"benchmarks": []}')
    with pytest.raises(ValueError, match="not a `python -m fastconv bench --json` file"):
        report.load(path)


# ------------------------------------------------------------------- plot


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from fastconv.bench import plot

    cells = [_cell(layer=l, contender=c, times=[t, t, t])
             for l in ("lenet_c1", "tiny") for c, t in (("cpp", 1e-3), ("numpy", 2e-3))]
    cells.append(_cell(layer="pool_lenet", op="max_pool2d", times=[1e-4]))
    header = {"date": "2026-01-01T00:00:00+00:00", "settings": {"dtype": "float32",
                                                               "threads": 2},
              "machine": {"cpu": "test cpu"}, "limits": {"gemm": {"float32": 10.0},
                                                         "copy": 20.0}}
    path = tmp_path / "bench.png"
    plot.plot(path, header, cells)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -------------------------------------------------------------- arguments


def test_plan_picks_layers_per_op():
    chosen, backends, notes = runner.plan(None, [], None)
    assert list(chosen) == ["conv2d"] and chosen["conv2d"] == list(CONV_LAYERS)
    assert backends is None and notes == []
    chosen, _, notes = runner.plan(["all"], ["tiny"], ["numpy"])
    assert list(chosen) == ["conv2d", "conv2d_backward", "im2col"]
    assert all(layers == [LAYERS["tiny"]] for layers in chosen.values())
    assert len(notes) == 4 and all("left out" in n for n in notes)
    # a layer written after --op or --backends (both take several values)
    chosen, backends, _ = runner.plan(["max_pool2d", "pool_lenet"], [], ["cpp", "tiny"])
    assert chosen == {"max_pool2d": [LAYERS["pool_lenet"]]} and backends == ["cpp"]


@pytest.mark.parametrize("ops_, layers, backends, message", [
    (None, ["vgg_c1"], None, "unknown layer 'vgg_c1'; convolution layers: lenet_c1"),
    (["conv3d"], [], None, "unknown op 'conv3d'; choose from conv2d, conv2d_backward"),
    (None, [], ["cuda"], "unknown backend 'cuda'"),
    (["conv2d"], ["pool_lenet"], None, "pooling cases, not layers of conv2d"),
])
def test_plan_rejects_unknown_names_clearly(ops_, layers, backends, message):
    with pytest.raises(runner.UsageError, match=message.replace("(", r"\(")):
        runner.plan(ops_, layers, backends)


# --------------------------------------------------------------- progress


def test_progress_is_quiet_when_piped():
    stream = io.StringIO()
    p = runner.Progress(3, stream)
    p.describe("conv2d tiny")
    p.tick()
    p.close()
    assert stream.getvalue() == ""


def test_progress_falls_back_to_a_plain_line_without_tqdm(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm fails
    stream = Tty()
    p = runner.Progress(2, stream)
    p.describe("conv2d tiny")
    p.tick()
    p.close()
    assert "\r[1/2] conv2d tiny" in stream.getvalue()


# ------------------------------------------------------------- measuring


@pytest.mark.parametrize("op", ops.OPS)
def test_measure_layer_times_every_contender_and_checks_it(op):
    layer = ops.stand_in(ops.table(op)[-1])
    names = ops.backends_for(op)[0] + list(ops.AUTO)
    suite = runner.Suite(2, 0.0, 64, 1, 1 << 20, 1, settle=0.0)
    ticks = []
    cells, notes = runner.measure_layer(op, layer, np.float32, names, None, suite,
                                        lambda: ticks.append(1))
    assert [c.contender for c in cells] == names + (["textbook"] if op in
                                                    ops.TEXTBOOK_OPS else [])
    assert all(len(c.times) == 2 and not c.error for c in cells), cells
    for c in cells:  # auto contenders also timed against the backend they ran
        assert (c.against, len(c.ab)) == ((c.path.split("/")[0], 2) if c.path else ("", 0))
    assert all(r > 0 for c in cells for r in c.ab)
    tuned = cells[names.index("autotuned")]  # every op has candidates to time here
    assert tuned.tunings >= 1 and tuned.tuning > 0
    assert len(ticks) == 4 and notes == []


def test_measure_layer_notes_an_autotuned_pick_that_changed(monkeypatch):
    monkeypatch.setattr(_tuning, "WATCH_FROM", 0.0)  # every winner watched
    picks = itertools.chain(["numpy"], itertools.repeat("cpp"))

    def measure(candidates, run, spinners=None):  # numpy first, then cpp, each 1 ns
        labels = [label for label, _ in candidates]
        return labels.index(next(picks)), dict.fromkeys(labels, 1e-9)

    monkeypatch.setattr(_tuning, "measure", measure)
    layer = ops.stand_in(ops.table("max_pool2d")[-1])
    suite = runner.Suite((1 + _tuning.SLOW_LOOKS) * _tuning.WATCH_CALLS + 1, 0.0, 64, 1,
                         1 << 20, 1, settle=0.0)
    cells, notes = runner.measure_layer("max_pool2d", layer, np.float32,
                                        ["cpp", "numpy", "autotuned"], None, suite)
    assert cells[-1].path == "cpp" and not cells[-1].error
    assert notes == [f"max_pool2d {layer.name}: autotuned ran numpy at first, then cpp, "
                     "tuned again (its calls ran slower than the runner-up had)"]


def test_measure_layer_notes_a_pick_changed_by_the_second_look(monkeypatch):
    # first tuning: numpy 1 s a call, cpp 2 s; the second, a second later: cpp 0.1 s
    timings = iter([{"numpy": 1.0, "cpp": 2.0}, {"numpy": 1.0, "cpp": 0.1}])

    def measure(candidates, run, spinners=None):
        labels = [label for label, _ in candidates]
        seconds = dict.fromkeys(labels, math.inf) | next(timings)
        return min(range(len(labels)), key=lambda i: seconds[labels[i]]), seconds

    monkeypatch.setattr(_tuning, "measure", measure)
    layer = ops.stand_in(ops.table("max_pool2d")[-1])
    suite = runner.Suite(2, 0.0, 64, 1, 1 << 20, 1, settle=0.0)
    cells, notes = runner.measure_layer("max_pool2d", layer, np.float32,
                                        ["cpp", "numpy", "autotuned"], None, suite)
    assert (cells[-1].path, cells[-1].tunings) == ("cpp", 2)
    assert notes == [f"max_pool2d {layer.name}: autotuned ran numpy at first, then cpp, "
                     "tuned again (its second look)"]


def test_an_autotuned_pick_changed_during_its_interleaved_timing_is_timed_again(monkeypatch):
    monkeypatch.setattr(_tuning, "WATCH_FROM", 0.0)
    picks = itertools.chain(["numpy"], itertools.repeat("cpp"))

    def measure(candidates, run, spinners=None):
        labels = [label for label, _ in candidates]
        return labels.index(next(picks)), dict.fromkeys(labels, 1e-9)

    monkeypatch.setattr(_tuning, "measure", measure)
    against = []
    interleave = runner.interleave

    def recording(call, name, base, samples, sample_time):
        against.append(base)
        return interleave(call, name, base, samples, sample_time)

    monkeypatch.setattr(runner, "interleave", recording)
    layer = ops.stand_in(ops.table("max_pool2d")[-1])
    rounds = _tuning.SLOW_LOOKS * _tuning.WATCH_CALLS  # the re-tune falls after the rounds
    suite = runner.Suite(rounds, 0.0, 64, 1, 1 << 20, 1, settle=0.0)
    cells, notes = runner.measure_layer("max_pool2d", layer, np.float32,
                                        ["cpp", "numpy", "autotuned"], None, suite)
    by = {c.contender: c for c in cells}
    assert len(against) == 2 and against[0] is not against[1]  # numpy's calls, then cpp's
    tuned = by["autotuned"]
    assert (tuned.path, tuned.against, len(tuned.ab)) == ("cpp", "cpp", rounds)
    assert len(notes) == 1 and "ran numpy at first, then cpp" in notes[0]


def test_rounds_alternate_the_contenders_order(monkeypatch):
    calls = []
    fake = {name: (lambda name=name: calls.append(name) or np.zeros(1)) for name in "abc"}
    monkeypatch.setattr(ops, "contenders", lambda *args, **kw: fake)
    monkeypatch.setattr(ops, "reference", lambda *args: None)
    monkeypatch.setattr(ops, "mismatch", lambda *args: "")
    layer = ops.stand_in(ops.table("max_pool2d")[-1])
    suite = runner.Suite(3, 0.0, 64, 1, 1 << 20, 1, settle=0.0)
    cells, _ = runner.measure_layer("max_pool2d", layer, np.float32, ["a", "b", "c"], None,
                                    suite)
    assert all(len(c.times) == 3 for c in cells)
    rounds = [n for i, n in enumerate(calls) if i >= 9]  # after 3 checks of 3 calls each
    assert "".join(rounds) == "abccbaabc"


def test_stand_ins_keep_kernel_stride_padding_and_groups_kind():
    for layer in CONV_LAYERS:
        small = ops.stand_in(layer)
        assert (small.kh, small.kw, small.stride, small.padding) == \
               (layer.kh, layer.kw, layer.stride, layer.padding)
        assert (small.groups == small.c) == (layer.groups == layer.c)
        assert min(small.out_hw) >= 1 and small.flops <= layer.flops
    for layer in POOL_LAYERS:
        small = ops.stand_in(layer)
        assert (small.kernel, small.stride, small.padding) == \
               (layer.kernel, layer.stride, layer.padding)


def test_a_wrong_result_is_reported():
    layer = ops.stand_in(LAYERS["tiny"])
    a = ops.inputs("conv2d", layer, np.float32)
    ref = ops.reference("conv2d", layer, a)
    assert ops.mismatch("conv2d", "cpp", ref, ref, layer) == ""
    assert "differs from numpy" in ops.mismatch("conv2d", "cpp", ref + 1, ref, layer)
    assert "shape" in ops.mismatch("conv2d", "cpp", ref[:, :, :1], ref, layer)


def test_limits_are_measured_at_start_and_end_and_the_higher_rates_the_tables(
        monkeypatch, capsys, tmp_path):
    import fastconv as fc
    from fastconv.__main__ import main

    probes = iter([limits.Limits({"float32": 10.0, "float64": 5.0}, 20.0, 64, 1, 1, "here"),
                   limits.Limits({"float32": 30.0, "float64": 4.0}, 25.0, 64, 1, 1, "here")])
    monkeypatch.setattr(limits, "measure", lambda *a: next(probes))
    monkeypatch.setattr(runner, "measure_layer", lambda op, layer, *a, **k: (
        [Cell(op, layer.name, "numpy", 0.02, "GFLOP/s", [1e-3, 1e-3])], []))
    path = tmp_path / "run.json"
    assert main(["bench", "lenet_c1", "--no-torch", "--backends", "numpy",
                 "--threads", str(fc.get_num_threads()), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "GEMM peak float32 10.0" in out and "limits at the end: " in out
    header, _ = report.load(path)
    assert header["limits"]["gemm"] == {"float32": 30.0, "float64": 5.0}
    assert header["limits"]["copy"] == 25.0
    # 0.02 GFLOP in 1 ms: 20 GFLOP/s, two thirds of the higher peak
    assert " 67%" in out.split("limits at the end")[1]


def test_ctrl_c_prints_the_layers_that_finished(monkeypatch, capsys, tmp_path):
    import fastconv as fc
    from fastconv.__main__ import main

    measured = []

    def measure_layer(op, layer, *args, **kwargs):
        if measured:
            raise KeyboardInterrupt
        measured.append(layer.name)
        return [Cell(op, layer.name, "numpy", 1e-3, "GFLOP/s", [1e-3, 1e-3])], []

    monkeypatch.setattr(runner, "measure_layer", measure_layer)
    monkeypatch.setattr(limits, "measure", lambda *a: limits.Limits(
        {"float32": 10.0, "float64": 5.0}, 20.0, 64, 1, 1, "in this process"))
    path = tmp_path / "partial.json"
    code = main(["bench", "lenet_c1", "lenet_c2", "--no-torch", "--backends", "numpy",
                 "--threads", str(fc.get_num_threads()), "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 130
    assert "interrupted: showing the layers that finished" in out
    assert "lenet_c1" in out and "lenet_c2" not in out.split("interrupted")[1]
    header, cells = report.load(path)
    assert header["interrupted"] and [c.layer for c in cells] == ["lenet_c1"]
