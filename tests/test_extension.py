"""The compiled module: present in a built install, and optional at import."""

import os
import subprocess
import sys

import pytest

import fastconv as fc


ORDER = ["generic", "avx2", "avx512"]


def capped(best: str) -> str:
    """The path a process starts on: the CPU's best, capped by FASTCONV_ISA."""
    cap = os.environ.get("FASTCONV_ISA", "").strip()
    return ORDER[min(ORDER.index(best), ORDER.index(cap))] if cap in ORDER else best


def test_cpp_extension_reports_build_and_cpu():
    info = fc.backends()["cpp"]
    assert info.available, f"fastconv._cpp did not load: {info.reason}"
    from fastconv import _cpp

    build = _cpp.build_info()
    assert build["version"] == fc.__version__
    assert build["cplusplus"] >= 201703
    assert "-march=native" not in build["flags"]
    features = _cpp.cpu_features()
    assert set(features) == {"avx2", "fma", "avx512f"}
    assert all(isinstance(v, bool) for v in features.values())
    best = ("avx512" if features["avx512f"] and features["avx2"] and features["fma"]
            else "avx2" if features["avx2"] and features["fma"] else "generic")
    assert _cpp.best_isa_path() == best
    assert _cpp.isa_path() == capped(best)
    assert set(_cpp.compiled_isa_paths()) <= {"generic", "avx2", "avx512"}
    assert "generic" in _cpp.compiled_isa_paths()


def _run(code, **env):
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("cap", ["generic", "avx2"])
def test_fastconv_isa_caps_the_path(cap):
    from fastconv import _cpp

    order = ["generic", "avx2", "avx512"]
    best = _cpp.best_isa_path()
    r = _run("from fastconv import _cpp; print(_cpp.isa_path())", FASTCONV_ISA=cap)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == order[min(order.index(cap), order.index(best))]


def test_import_works_without_the_extension():
    # A module finder that refuses fastconv._cpp, as when the build failed.
    code = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "fastconv._cpp":
            raise ImportError("simulated: extension missing")
sys.meta_path.insert(0, Refuse())
import numpy as np, fastconv as fc
info = fc.backends()["cpp"]
assert not info.available and "simulated" in info.reason, info
print(fc.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)))[0, 0, 0, 0])
"""
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "9.0"
