"""One binary for every x86-64 CPU: AVX instructions only in the dispatched kernels.

The extension is built for the x86-64 baseline; only the ISA-flagged sources
(cpp/**/*_avx2.cpp, later *_avx512.cpp) are compiled with -mavx2 -mfma, and
their code runs only when cpu_features.cpp finds the CPU able. The danger is
code that escapes: an inline function or template (std::, pybind11, a shared
header) that the compiler emits in an AVX2 file and the linker then keeps as
the one copy every caller uses, so a generic-path call executes AVX2 and dies
with SIGILL on an older CPU. This test disassembles the installed extension
and names the function of every AVX-class instruction (VEX/EVEX encodings,
ymm/zmm/mask registers); each must be a dispatched kernel:

- a symbol named for its ISA path: namespace fastconv::avx2:: (or ::avx512::),
  or a function such as sgemm_ukernel_avx2;
- or a file-local symbol (anonymous namespace, static) of an ISA-flagged
  source, attributed through the symbol table's FILE entries.

It needs the symbol table, so pyproject.toml sets install.strip = false (no
debug info is built; the table costs ~20 KB of a compressed wheel). .ci/old_cpu
checks the other half at run time: the generic path under an emulated
pre-AVX CPU.
"""

from __future__ import annotations

import bisect
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv

if platform.machine().lower() not in ("x86_64", "amd64"):
    pytest.skip(f"no x86 ISA paths on {platform.machine()}: only the portable path is built",
                allow_module_level=True)
if not sys.platform.startswith("linux"):
    pytest.skip("reads the extension's ELF symbol table", allow_module_level=True)

from fastconv import _cpp  # noqa: E402  (a build without it fails test_extension.py)

OBJDUMP = shutil.which("objdump")
EXTENSION = Path(_cpp.__file__)

# Sources compiled with ISA flags, and symbols named for an ISA path.
ISA_FILE = re.compile(r"_avx(?:2|512)\w*\.(?:cpp|cc|c)$")
ISA_NAME = re.compile(r"::avx(?:2|512)::|_avx(?:2|512)\b")
# AVX-class instructions (AT&T syntax): a VEX/EVEX mnemonic (every AVX form of
# an SSE instruction, FMA, vzeroupper...), a 256/512-bit or mask register, or
# an AVX-512 mask instruction. The v-mnemonics of VMX/segment checks are not SIMD.
AVX_MNEMONIC = re.compile(r"^(?:v(?!er[rw]\b|m(?:call|launch|resume|xon|xoff|read|write|ptr\w*|clear|func|run|load|save|mcall)\b)\w+|k(?:mov|or|and|andn|xor|xnor|not|test|shift\w*|add|unpck)\w*)$")
AVX_OPERAND = re.compile(r"%(?:[yz]mm\d+|k[0-7]\b)")


def _objdump(*args: str) -> str:
    return subprocess.run([OBJDUMP, "-C", *args, str(EXTENSION)], check=True,
                          capture_output=True, text=True).stdout


class Functions:
    """The extension's function symbols, with the source file of the local ones."""

    def __init__(self, symtab: str):
        self.starts: list[int] = []
        self.entries: list[tuple[int, int, str, str | None]] = []  # start, end, name, file
        current_file = None
        rows = []
        for line in symtab.splitlines():
            left, tab, right = line.partition("\t")
            fields = left.split()
            if not tab or len(fields) < 3:
                continue
            size_name = right.split(None, 1)
            name = size_name[1] if len(size_name) == 2 else ""
            name = name.removeprefix(".hidden ").strip()
            if "df" in fields[1:-1] and fields[-1] == "*ABS*":
                current_file = name  # the local symbols that follow come from this file
                continue
            flags = left[17:24]  # objdump's seven flag columns
            if "F" not in flags:
                continue
            local = flags[0] == "l"
            rows.append((int(fields[0], 16), int(size_name[0], 16), name,
                         current_file if local else None))
        for start, size, name, file in sorted(set(rows)):
            if size:
                self.starts.append(start)
                self.entries.append((start, start + size, name, file))

    def at(self, address: int):
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0:
            start, end, name, file = self.entries[i]
            if start <= address < end:
                return name, file
        return None

    @staticmethod
    def dispatched(name: str, file: str | None) -> bool:
        return bool(ISA_NAME.search(name) or (file and ISA_FILE.search(file)))


def _avx_instructions():
    """(address, mnemonic, operands) of every AVX-class instruction in the extension."""
    line_re = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
    for line in _objdump("-d", "--no-show-raw-insn").splitlines():
        m = line_re.match(line)
        if not m:
            continue
        address, mnemonic, operands = m.groups()
        operands = operands.split("#", 1)[0]
        if AVX_MNEMONIC.match(mnemonic) or AVX_OPERAND.search(operands):
            yield int(address, 16), mnemonic, operands


@pytest.fixture(scope="module")
def census():
    """{(function, file): [instructions]} for every AVX-class instruction."""
    if OBJDUMP is None:
        pytest.fail("objdump (GNU binutils) is needed to inspect the extension")
    symtab = _objdump("-t")
    if "no symbols" in symtab or " F .text" not in symtab:
        pytest.fail(f"{EXTENSION} carries no symbol table (stripped?): keep "
                    "[tool.scikit-build] install.strip = false so its code can be attributed")
    functions = Functions(symtab)
    assert len(functions.entries) > 100, "the symbol table looks incomplete"
    found: dict[tuple[str, str | None], list[str]] = {}
    for address, mnemonic, operands in _avx_instructions():
        where = functions.at(address) or (f"<no symbol at {address:#x}>", None)
        found.setdefault(where, []).append(f"{mnemonic} {operands}".strip())
    return found


def test_avx_instructions_only_in_dispatched_kernels(census):
    escaped = {k: v for k, v in census.items() if not Functions.dispatched(*k)}
    report = "\n".join(f"  {name}  [{file or 'global'}]: {len(ins)} e.g. {ins[0]}"
                       for (name, file), ins in sorted(escaped.items(), key=str))
    assert not escaped, (
        "AVX-class instructions outside the dispatched kernels; these would run on "
        f"every CPU and crash pre-AVX2 ones with SIGILL:\n{report}")


def test_the_dispatched_kernels_do_use_avx2_and_fma(census):
    # The positive control: the check above sees these instructions when they
    # are there, and the avx2 path really is vectorised with FMA.
    kernels = {k: v for k, v in census.items() if Functions.dispatched(*k)}
    flat = [i for ins in kernels.values() for i in ins]
    assert any("%ymm" in i for i in flat), "no 256-bit code in the avx2 kernels"
    assert any(i.startswith("vfmadd") for i in flat), "no FMA in the avx2 kernels"
    files = {file for _, file in kernels if file}
    assert any(ISA_FILE.search(f) for f in files), files
    assert any("::avx2::" in name for name, _ in kernels)  # the direct kernels
    # AVX-512 code only once avx512 kernels exist, and only in them.
    for (name, file), ins in kernels.items():
        if any(re.search(r"%zmm|%k[0-7]\b", i) for i in ins):
            assert "avx512" in name or (file and "avx512" in file), name


@pytest.mark.skipif(not os.environ.get("FASTCONV_EXPECT_INSTALLED"),
                    reason="set by .ci/wheel, which tests the installed wheel")
def test_fastconv_comes_from_the_installed_wheel():
    # .ci/wheel runs this suite from outside the source tree: prove it did.
    package = Path(fastconv.__file__).resolve().parent
    repo = Path(__file__).resolve().parents[1]
    assert Path(sys.prefix).resolve() in package.parents, package
    assert repo not in package.parents, package
    assert EXTENSION.resolve().parent == package
    assert fastconv.__version__ == _cpp.build_info()["version"]
