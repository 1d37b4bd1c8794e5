"""Autotuning: the first call of a signature times the candidates and remembers the
winner, in a JSON cache file that survives processes, corruption and concurrency."""

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch, _params, _tuning

rng = np.random.default_rng(8)
X = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Autotuning on, the cache in tmp_path, quick timing; all restored after."""
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_tuning, "_enabled", True)
    monkeypatch.setattr(_tuning, "ROUNDS", 2)
    monkeypatch.setattr(_tuning, "MAX_INNER", 2)
    _tuning.reset()
    yield tmp_path
    _tuning.reset()


@pytest.fixture
def tunes(monkeypatch):
    """The signatures measured (not found in the cache) during the test; its
    .spinning, per tuning, {label: whether it was timed as a spinner}."""

    class Seen(list):
        spinning: list

    seen = Seen()
    real = _tuning.tune

    def spy(op, spec, threads, candidates, run, spinners=None):
        seen.append((op, spec, threads, [c[0] for c in candidates]))
        spinning.append(dict(zip((c[0] for c in candidates), spinners)))
        return real(op, spec, threads, candidates, run, spinners)

    spinning = seen.spinning = []
    monkeypatch.setattr(_tuning, "tune", spy)
    return seen


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * (1 + np.abs(b).max()))


def test_first_call_tunes_then_the_winner_runs(tuning, tunes):
    want = fc.conv2d(X, W, padding=1, backend="numpy")
    _close(fc.conv2d(X, W, padding=1), want)
    assert len(tunes) == 1
    op, spec, threads, labels = tunes[0]
    assert op == "conv2d" and threads == fc.get_num_threads()
    # every available backend is a candidate, and cpp's kernels apart
    assert "numpy" in labels and "cpp/gemm" in labels and "cpp/direct" in labels
    _close(fc.conv2d(X, W, padding=1), want)
    assert len(tunes) == 1  # remembered
    (sig, entry), = fc.tuning_cache().entries.items()
    assert sig == _tuning.signature("conv2d", spec, threads)
    assert entry.label in labels and set(entry.seconds) == set(labels)
    assert entry.seconds[entry.label] == min(entry.seconds.values())
    assert entry.tuning_seconds > 0


def test_the_tuned_call_writes_out_and_returns_correct_results(tuning):
    out = np.full((2, 4, 10, 10), np.nan, np.float32)
    got = fc.conv2d(X, W, padding=1, activation="relu", out=out)
    assert got is out
    _close(out, fc.conv2d(X, W, padding=1, activation="relu", backend="numpy"))
    grads = fc.conv2d_backward(np.ones((2, 4, 8, 8), np.float32), X, W)
    for g, r in zip(grads, fc.conv2d_backward(np.ones((2, 4, 8, 8), np.float32), X, W,
                                              backend="numpy")):
        _close(g, r)
    pooled, where = fc.max_pool2d(X, 2, return_indices=True)
    ref, ref_where = fc.max_pool2d(X, 2, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(pooled, ref)
    np.testing.assert_array_equal(where, ref_where)


def test_signature_has_shapes_options_dtype_and_threads(tuning, tunes):
    fc.conv2d(X, W)
    fc.conv2d(X, W, padding=1)
    fc.conv2d(X.astype(np.float64), W)
    fc.conv2d(X[:1], W)
    before = fc.get_num_threads()
    try:
        fc.set_num_threads(1 if before > 1 else 2)
        fc.conv2d(X, W)
    finally:
        fc.set_num_threads(before)
    fc.conv2d(X, W)  # the first one again
    assert len(tunes) == 5
    assert len({(op, spec, threads) for op, spec, threads, _ in tunes}) == 5
    assert len(fc.tuning_cache()) == 5


def test_spinners_are_blas_callers_and_numba(tuning, tunes):
    # Numba's OpenMP threads spin after any op; NumPy's BLAS only in the convolutions
    fc.max_pool2d(np.ones((2, 3, 8, 8)), 2)
    fc.conv2d(X, W)
    pool, conv = tunes.spinning
    assert pool == {"cpp": False, "numba": True, "numpy": False}
    assert {label: spins for label, spins in conv.items() if not label.startswith("cpp")} \
        == {"numba": True, "numpy": True}
    assert not any(spins for label, spins in conv.items() if label.startswith("cpp"))


def test_named_backends_are_not_tuned(tuning, tunes):
    fc.conv2d(X, W, backend="numpy")
    with fc.use_backend("cpp"):
        fc.conv2d(X, W)
    assert tunes == [] and len(fc.tuning_cache()) == 0


def test_the_file_is_json_keyed_by_machine_and_reloaded(tuning, tunes):
    fc.conv2d(X, W)
    cache = fc.tuning_cache()
    assert cache.path.parent == tuning and cache.path.exists()
    data = json.loads(cache.path.read_text())
    assert data["format"] == _tuning.FORMAT
    assert set(data["machine"]) >= {"cpu", "isa_path", "fastconv"}
    assert data["machine"]["fastconv"] == fc.__version__
    (sig, entry), = data["entries"].items()
    assert f"threads={fc.get_num_threads()}" in sig and "dtype=float32" in sig
    assert entry["backend"] in fc.backends()
    assert not [p for p in tuning.iterdir() if p != cache.path]  # no temporary files left

    _tuning.reset()  # as a new process: loaded lazily, the tuning is reused
    fc.conv2d(X, W)
    assert len(tunes) == 1
    plan = fc.explain("conv2d", X, W)
    assert plan.tuned is not None and plan.tuned.source == "cache file"


def test_a_new_process_reuses_the_file(tuning):
    code = textwrap.dedent("""
        import numpy as np, fastconv as fc
        from fastconv import _tuning
        calls = []
        real = _tuning.tune
        _tuning.tune = lambda *a: calls.append(1) or real(*a)
        fc.autotune(True)
        x = np.ones((1, 2, 9, 9), np.float32); w = np.ones((3, 2, 3, 3), np.float32)
        assert fc.conv2d(x, w).shape == (1, 3, 7, 7)
        print(len(calls), len(fc.tuning_cache()))
    """)
    env = {**__import__("os").environ, "FASTCONV_CACHE_DIR": str(tuning)}
    run = lambda: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()
    assert run() == ["1", "1"]  # tuned, written
    assert run() == ["0", "1"]  # read back: nothing to time


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "other"}',
                                     json.dumps({"format": _tuning.FORMAT, "machine": None,
                                                 "entries": {}}),
                                     "\x00\xff garbage"])
def test_a_corrupt_or_foreign_file_is_ignored_with_a_warning(tuning, tunes, content):
    path = _tuning._file_for(_tuning.machine())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.warns(_tuning.TuningCacheWarning, match="tuning cache"):
        got = fc.conv2d(X, W)
    _close(got, fc.conv2d(X, W, backend="numpy"))
    assert len(tunes) == 1
    # the next write replaced it with a good file
    assert json.loads(path.read_text())["format"] == _tuning.FORMAT


def test_a_corrupt_entry_is_ignored_with_a_warning(tuning):
    path = _tuning._file_for(_tuning.machine())
    path.write_text(json.dumps({"format": _tuning.FORMAT, "machine": _tuning.machine(),
                                "entries": {"conv2d(...)": {"backend": 3}}}))
    with pytest.warns(_tuning.TuningCacheWarning, match="corrupt"):
        assert len(fc.tuning_cache()) == 0


def test_an_unwritable_cache_warns_and_tunes_in_memory(tmp_path, monkeypatch, tunes):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(blocker / "sub"))  # a file is in the way
    monkeypatch.setattr(_tuning, "_enabled", True)
    monkeypatch.setattr(_tuning, "ROUNDS", 1)
    _tuning.reset()
    try:
        with pytest.warns(_tuning.TuningCacheWarning, match="cannot write"):
            fc.conv2d(X, W)
        fc.conv2d(X, W)
        assert len(tunes) == 1
    finally:
        _tuning.reset()


def test_an_entry_for_a_path_that_no_longer_runs_is_retuned(tuning, tunes):
    fc.conv2d(X, W)
    (sig, entry), = fc.tuning_cache().entries.items()
    data = json.loads(fc.tuning_cache().path.read_text())
    data["entries"][sig]["backend"] = "gpu"
    fc.tuning_cache().path.write_text(json.dumps(data))
    _tuning.reset()
    fc.conv2d(X, W)
    assert len(tunes) == 2
    assert fc.tuning_cache().entries[sig].backend in fc.backends()


def test_concurrent_processes_never_corrupt_the_file(tuning):
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from fastconv import _params, _tuning
        me = int(sys.argv[1])
        for i in range(15):
            x = np.ones((1, 1, 5 + me, 5 + i), np.float32)
            spec = _params.conv2d(x, np.ones((1, 1, 3, 3), np.float32), None, 1, 0, 1, 1,
                                  "zeros", None)[0]
            _tuning.record("conv2d", spec, 1, _tuning.Tuned("numpy", None, {"numpy": 1e-3},
                                                             0.01))
    """)
    env = {**__import__("os").environ, "FASTCONV_CACHE_DIR": str(tuning)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(me)], env=env)
             for me in range(4)]
    assert all(p.wait() == 0 for p in procs)
    path = fc.tuning_cache().path
    data = json.loads(path.read_text())  # whole, parseable
    assert data["format"] == _tuning.FORMAT
    # each process's last write holds at least its own 15 entries
    assert len(data["entries"]) >= 15
    assert not [p for p in tuning.iterdir() if p != path]


def test_tuning_cache_shows_and_clears(tuning):
    fc.conv2d(X, W)
    fc.max_pool2d(X, 2)
    cache = fc.tuning_cache()
    assert len(cache) == 2
    text = str(cache)
    assert str(cache.path) in text and "conv2d(" in text and "max_pool2d(" in text
    assert "->" in text and repr(cache).startswith("<fastconv.TuningCache 2 entries")
    cache.clear()
    assert len(fc.tuning_cache()) == 0 and not cache.path.exists()


def test_autotune_switch_and_env(monkeypatch):
    monkeypatch.setattr(_tuning, "_enabled", None)
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "1")
    assert fc.autotune() is True
    monkeypatch.setattr(_tuning, "_enabled", None)
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    assert fc.autotune() is False
    assert fc.autotune(True) is True and fc.autotune() is True
    assert fc.autotune(False) is False
    with pytest.raises(TypeError, match="autotune"):
        fc.autotune("yes")


def test_cache_dir_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "mine"))
    assert _tuning.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("FASTCONV_CACHE_DIR")
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG_CACHE_HOME applies to Linux and the BSDs")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _tuning.cache_dir() == tmp_path / "xdg" / "fastconv"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, per XDG
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _tuning.cache_dir() == tmp_path / "home" / ".cache" / "fastconv"


def test_measure_picks_the_fastest_by_a_fake_clock(monkeypatch):
    monkeypatch.setattr(_tuning, "SHORT_ROUNDS", _tuning.ROUNDS)  # counts as for long calls
    now = [0.0]
    monkeypatch.setattr(_tuning.time, "perf_counter", lambda: now[0])
    cost = {"slow": 40e-3, "fast": 20e-3, "hopeless": 180e-3}
    runs = {name: 0 for name in cost}

    def run(name):
        runs[name] += 1
        now[0] += cost[name]

    winner, seconds = _tuning.measure([(n, n) for n in cost], run)
    assert [n for n in cost][winner] == "fast"
    assert seconds == pytest.approx(cost)
    # one warm-up and one call per sample (each is over MIN_SAMPLE and too long
    # for a wake-up call); hopeless (9x the best) dropped after PRUNE_AFTER
    # rounds, slow (2x) timed to the end
    assert _tuning.MIN_SAMPLE < 20e-3 and _tuning.WAKE_BELOW < 20e-3
    assert _tuning.PRUNE < 9 and _tuning.PRUNE > 2
    assert runs["hopeless"] == 1 + _tuning.PRUNE_AFTER
    assert runs["fast"] == runs["slow"] == 1 + _tuning.ROUNDS


def test_measure_ranks_by_the_median_sample(monkeypatch):
    # cpp's calls are sometimes fast (as its alexnet_c1 gradients: 33-35 or
    # 41-46 ms against Numba's steady 36-39); its best sample beats Numba's,
    # its typical one does not
    monkeypatch.setattr(_tuning, "SHORT_ROUNDS", _tuning.ROUNDS)
    now = [0.0]
    monkeypatch.setattr(_tuning.time, "perf_counter", lambda: now[0])
    cpp_calls = iter([44e-3, 33e-3, 45e-3, 34e-3, 43e-3, 46e-3])  # a warm-up, five samples

    def run(name):
        now[0] += next(cpp_calls) if name == "cpp" else 37e-3

    winner, seconds = _tuning.measure([("cpp", "cpp"), ("numba", "numba")], run)
    assert winner == 1
    assert seconds == pytest.approx({"cpp": 43e-3, "numba": 37e-3})


@pytest.mark.parametrize("seconds, rounds", [(2.0**-16, "short"), (2.0**-7, "long")])
def test_measure_gives_short_calls_more_rounds(monkeypatch, seconds, rounds):
    now = [0.0]  # binary fractions of a second: the fake clock adds up exactly
    monkeypatch.setattr(_tuning.time, "perf_counter", lambda: now[0])
    cost = {"a": seconds, "b": 2 * seconds}
    runs = {name: 0 for name in cost}

    def run(name):
        runs[name] += 1
        now[0] += cost[name]

    winner, _ = _tuning.measure([(n, n) for n in cost], run)
    assert winner == 0
    # per sample: an untimed call when the call is short, then the timed ones
    per_sample = {n: int(c < _tuning.WAKE_BELOW)
                  + max(1, min(_tuning.MAX_INNER, math.ceil(_tuning.MIN_SAMPLE / c)))
                  for n, c in cost.items()}
    round_time = sum(per_sample[n] * c for n, c in cost.items())
    if rounds == "short":  # SHORT_ROUNDS fit in SHORT_TIME
        assert _tuning.SHORT_ROUNDS * round_time < _tuning.SHORT_TIME
        assert all(runs[n] == 1 + _tuning.SHORT_ROUNDS * per_sample[n] for n in cost)
    else:  # ROUNDS take SHORT_TIME and more
        assert _tuning.ROUNDS * round_time >= _tuning.SHORT_TIME
        assert all(runs[n] == 1 + _tuning.ROUNDS * per_sample[n] for n in cost)


def test_measure_times_blas_callers_after_the_others(monkeypatch):
    monkeypatch.setattr(_tuning, "SHORT_ROUNDS", _tuning.ROUNDS)
    now, order = [0.0], []
    monkeypatch.setattr(_tuning.time, "perf_counter", lambda: now[0])
    cost = {"numpy": 1.5e-3, "cpp": 1e-3, "numba": 1.2e-3}

    def run(name):
        order.append(name)
        now[0] += cost[name]

    winner, _ = _tuning.measure([(n, n) for n in cost], run, [True, False, True])
    assert winner == 1
    last_cpp = max(i for i, n in enumerate(order) if n == "cpp")
    first_blas = min(i for i, n in enumerate(order) if n != "cpp")
    assert last_cpp < first_blas
    assert order.count("cpp") == order.count("numpy") == order.count("numba")
    # the BLAS callers one after the other, not interleaved
    blas = [n for n in order[first_blas:]]
    assert blas == sorted(blas, key=lambda n: n != "numpy")


def test_measure_times_the_others_again_when_a_blas_caller_leads(monkeypatch):
    # cpp's samples all fell in a burst of load (3x their time); after the BLAS
    # callers' lead and a pause for their spinning threads, cpp's kernels are
    # timed again (not the one pruned as hopeless)
    monkeypatch.setattr(_tuning, "SHORT_ROUNDS", _tuning.ROUNDS)
    now, order, slept = [0.0], [], []
    monkeypatch.setattr(_tuning.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(_tuning, "wait_for_idle_threads", lambda: slept.append("idle"))
    cost = {"numpy": 30e-3, "cpp": 20e-3, "numba": 24e-3, "cpp/direct": 40e-3,
            "cpp/hopeless": 180e-3}  # one call per sample, none to wake threads
    burst = [True]

    def run(name):
        order.append(name)
        now[0] += cost[name] * (3 if burst[0] and name.startswith("cpp") else 1)
        if name == "numpy":
            burst[0] = False

    candidates = [(n, n) for n in cost]
    winner, seconds = _tuning.measure(candidates, run, [True, False, True, False, False])
    assert winner == 1 and seconds["cpp"] == pytest.approx(20e-3)
    assert slept == ["idle"] * 3  # at the start, between numpy and numba, before cpp again
    again = order[max(i for i, n in enumerate(order) if n in ("numpy", "numba")) + 1:]
    assert sorted(again) == ["cpp"] * _tuning.ROUNDS + ["cpp/direct"] * _tuning.ROUNDS


def test_measure_times_nothing_again_when_no_blas_caller_leads(monkeypatch):
    now, slept = [0.0], []
    monkeypatch.setattr(_tuning.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(_tuning, "wait_for_idle_threads", lambda: slept.append("idle"))
    monkeypatch.setattr(_tuning.time, "sleep", slept.append)
    cost = {"numpy": 1.5e-3, "cpp": 1e-3}

    def run(name):
        now[0] += cost[name]

    assert _tuning.measure([(n, n) for n in cost], run, [True, False])[0] == 1
    assert slept == ["idle"]  # at the start only


@pytest.mark.parametrize("busy_steps, steps", [(0, 1), (3, 4), (1000, 24)])
def test_wait_for_idle_threads(monkeypatch, busy_steps, steps):
    # the other threads spin (a whole core) for busy_steps sleeps, then idle;
    # the wait ends at the first idle step, or at the limit (24 steps of 5 ms)
    now, cpu, slept = [0.0], [0.0], []
    monkeypatch.setattr(_tuning.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(_tuning.time, "process_time", lambda: cpu[0])

    def sleep(seconds):
        now[0] += seconds
        cpu[0] += seconds if len(slept) < busy_steps else 0.01 * seconds
        slept.append(seconds)

    monkeypatch.setattr(_tuning.time, "sleep", sleep)
    _tuning.wait_for_idle_threads(0.12)
    assert slept == [_tuning.IDLE_STEP] * steps


def test_measure_prunes_a_whole_phase(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(_tuning.time, "perf_counter", lambda: now[0])
    cost = {"cpp": 1e-3, "numpy": 9e-3, "numba": 8e-3}  # both BLAS callers hopeless

    def run(name):
        now[0] += cost[name]

    winner, seconds = _tuning.measure([(n, n) for n in cost], run, [False, True, True])
    assert winner == 0 and seconds == pytest.approx(cost)


def test_explain_reports_autotuning(tuning):
    plan = fc.explain("conv2d", X, W)
    assert plan.tuned is None and "not timed yet" in plan.autotune
    assert "cpp/gemm" in plan.autotune
    fc.conv2d(X, W)
    plan = fc.explain("conv2d", X, W)
    winner = fc.tuning_cache().entries[_tuning.signature("conv2d", plan.spec, plan.threads)]
    assert plan.tuned is not None and plan.backend == winner.backend
    assert plan.kernel == winner.kernel
    text = str(plan)
    assert "chosen by autotuning" in text and "timed (measured)" in text
    for label in winner.seconds:
        assert label in text


def test_only_winners_of_a_millisecond_or_more_with_a_runner_up_are_watched():
    assert _tuning.Tuned("cpp", None, {"cpp": 2e-3, "numba": 2.5e-3}, 0.1).recheck_above == \
        pytest.approx(_tuning.RECHECK_ABOVE * 2.5e-3)
    assert _tuning.Tuned("cpp", None, {"cpp": 5e-4, "numba": 6e-4}, 0.1).recheck_above == 0
    assert _tuning.Tuned("cpp", None, {"cpp": 2e-3, "numba": math.inf}, 0.1).recheck_above == 0
    assert _tuning.Tuned("cpp", None, {}, 0.0).recheck_above == 0
    # a look at its calls: WATCH_LOOK seconds of them, 3 to WATCH_CALLS
    assert [_tuning.Tuned("cpp", None, {"cpp": t, "numba": 1.0}, 0.1).look_calls
            for t in (2e-3, 1e-2, 0.1)] == [_tuning.WATCH_CALLS, 5, 3]


def _pretend_tuned(seconds):
    """Replace the one tuning in memory by numpy's, said to take `seconds` per
    call, as does the runner-up, already looked at twice (no second look
    comes); the signature's (op, spec, threads)."""
    (key, _), = _tuning._current().memory.items()
    _tuning.record(*key, _tuning.Tuned("numpy", None, {"numpy": seconds, "cpp": seconds}, 0.0,
                                       tunings=2))
    return key


def test_a_winner_slower_than_the_runner_up_was_is_tuned_again(tuning, tunes, monkeypatch):
    monkeypatch.setattr(_tuning, "WATCH_FROM", 0.0)
    want = fc.conv2d(X, W, backend="numpy")
    fc.conv2d(X, W)
    key = _pretend_tuned(1e-9)  # every real call is slower than that
    looks = (1 + _tuning.SLOW_LOOKS) * _tuning.WATCH_CALLS  # the first look is skipped
    for _ in range(looks - 1):
        _close(fc.conv2d(X, W), want)
    assert _tuning.rechecks(*key) == 0
    _close(fc.conv2d(X, W), want)
    assert len(tunes) == 1 and _tuning.rechecks(*key) == 1
    _close(fc.conv2d(X, W), want)  # the next call times the candidates again
    assert len(tunes) == 2 and _tuning.lookup(*key).seconds["numpy"] > 1e-9
    assert _tuning.lookup(*key).tunings == 3  # counted, not merged: the calls outvoted it
    assert "1 more time" in fc.explain("conv2d", X, W).autotune
    # at most RECHECKS times; then its calls are no longer timed
    for _ in range(_tuning.RECHECKS):
        _pretend_tuned(1e-9)
        for _ in range(looks + 1):
            fc.conv2d(X, W)
    assert len(tunes) == 1 + _tuning.RECHECKS
    assert _tuning.lookup(*key).recheck_above == 0 and _tuning.rechecks(*key) == _tuning.RECHECKS


def test_a_winner_as_fast_as_it_was_is_kept(tuning, tunes, monkeypatch):
    monkeypatch.setattr(_tuning, "WATCH_FROM", 0.0)
    fc.conv2d(X, W)
    key = _pretend_tuned(1.0)
    for _ in range(4 * _tuning.WATCH_CALLS):
        fc.conv2d(X, W)
    assert len(tunes) == 1 and _tuning.rechecks(*key) == 0
    assert _tuning.lookup(*key).recheck_above > 0
    text = fc.explain("conv2d", X, W).autotune
    assert "its calls are timed" in text and "more time" not in text


def test_watch_re_tunes_after_slow_looks_in_a_row_not_counting_the_first():
    spec = _params.conv2d(X, W, None, 1, 0, 1, 1, "zeros", None)[0]
    slow, fast = 3e-3, 2e-3  # the runner-up took 2.5 ms: over 2.75 ms is slow
    with _tuning.scratch():
        tuned = _tuning.Tuned("cpp", None, {"cpp": 2e-3, "numba": 2.5e-3}, 0.1)
        _tuning.record("conv2d", spec, 1, tuned)
        looks = [slow, slow, fast, slow]  # skipped, slow, fast, slow: none two in a row counted
        for seconds in looks:
            for _ in range(_tuning.WATCH_CALLS):
                _tuning.watch("conv2d", spec, 1, tuned, seconds)
        assert _tuning.rechecks("conv2d", spec, 1) == 0
        assert _tuning.lookup("conv2d", spec, 1) is tuned
        for _ in range(_tuning.WATCH_CALLS):
            _tuning.watch("conv2d", spec, 1, tuned, slow)
        assert _tuning.rechecks("conv2d", spec, 1) == 1
        assert _tuning.lookup("conv2d", spec, 1) is None


def test_a_first_tuning_with_a_runner_up_is_looked_at_again_after_a_while():
    after = [_tuning.Tuned("cpp", None, {"cpp": t, "numba": 1.0}, 0.1).second_look_in
             for t in (1e-3, _tuning.SECOND_LOOK_AFTER, 1.0)]
    assert after == [math.ceil(_tuning.SECOND_LOOK_AFTER / 1e-3), 1, 1]
    assert _tuning.Tuned("cpp", None, {"cpp": 1e-3, "numba": 2e-3}, 0.1,
                         tunings=2).second_look_in == 0
    assert _tuning.Tuned("cpp", None, {"cpp": 1e-3, "numba": math.inf}, 0.1).second_look_in == 0
    assert _tuning.Tuned("cpp", None, {}, 0.0).second_look_in == 0


def test_the_second_look_ranks_by_both_tunings(tuning, monkeypatch):
    # the first tuning times cpp in a slow stretch (4 ms) and picks numpy (2 ms);
    # the second times cpp at 0.5 ms: together 1.4 ms against numpy's 2
    timings = iter([{"cpp/gemm": 4e-3, "numpy": 2e-3}, {"cpp/gemm": 5e-4, "numpy": 2e-3}])

    def measure(candidates, run, spinners=None):
        labels = [label for label, _ in candidates]
        seconds = dict.fromkeys(labels, math.inf) | next(timings)
        return min(range(len(labels)), key=lambda i: seconds[labels[i]]), seconds

    monkeypatch.setattr(_tuning, "measure", measure)
    want = fc.conv2d(X, W, backend="numpy")
    _close(fc.conv2d(X, W), want)
    plan = fc.explain("conv2d", X, W)
    key = ("conv2d", plan.spec, plan.threads)
    first = _tuning.lookup(*key)
    assert first.backend == "numpy" and first.tunings == 1
    assert "timed again after" in plan.autotune
    assert first.second_look_in == math.ceil(_tuning.SECOND_LOOK_AFTER / 2e-3)  # from now
    for _ in range(first.second_look_in):
        _close(fc.conv2d(X, W), want)
    assert _tuning.lookup(*key, load=False) is None  # forgotten: the next call tunes
    _close(fc.conv2d(X, W), want)
    second = _tuning.lookup(*key)
    assert (second.backend, second.kernel, second.tunings) == ("cpp", "gemm", 2)
    assert second.seconds["cpp/gemm"] == pytest.approx(math.sqrt(4e-3 * 5e-4))
    assert second.seconds["numpy"] == pytest.approx(2e-3)
    assert second.tuning_seconds > first.tuning_seconds and second.second_look_in == 0
    assert "ranked by 2 tunings" in fc.explain("conv2d", X, W).autotune
    # what the file keeps: both tunings' ranking, counted
    entry = fc.tuning_cache().entries[_tuning.signature(*key)]
    assert (entry.label, entry.tunings) == ("cpp/gemm", 2)


def test_tunings_round_trip_through_the_file_and_old_entries_count_one():
    tuned = _tuning.Tuned("cpp", "gemm", {"cpp/gemm": 1e-3, "numba": 2e-3}, 0.1, tunings=2)
    assert _tuning.Tuned.from_json(tuned.to_json()).tunings == 2
    old = {k: v for k, v in tuned.to_json().items() if k != "tunings"}
    assert _tuning.Tuned.from_json(old).tunings == 1
    for bad in (0, True, "2"):
        with pytest.raises(ValueError):
            _tuning.Tuned.from_json(tuned.to_json() | {"tunings": bad})
