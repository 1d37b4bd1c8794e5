"""Command line: `python -m fastconv info`, `bench` and `memory`."""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

import fastconv as fc
from fastconv import _tuning


def info(_args) -> int:
    import os

    print(f"fastconv {fc.__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"cpu: {_tuning.cpu_model()}")
    print(f"threads: {fc.get_num_threads()}")
    print("backends (auto falls back in this order when its rule's choice cannot run):")
    for name, b in fc.backends().items():
        print(f"  {name:<6} {'available' if b.available else 'unavailable: ' + b.reason}")
    print("numba cache:", sys.modules["fastconv.backends.numba_backend"].cache_status())
    from .backends.cpp_backend import CppBackend

    cpp = CppBackend().module
    if cpp is not None:
        build = cpp.build_info()
        features = cpp.cpu_features()
        found = [k for k, v in features.items() if v]
        print(f"cpp extension: built by {build['compiler']}, flags '{build['flags'].strip()}', "
              f"{build['build_type']}")
        print(f"cpu features detected: {', '.join(found) or 'none of ' + ', '.join(features)}")
        # The paths in cpu_features.cpp's order. x86-64 builds compile the avx2
        # kernels (avx512 runs them until it has its own); other builds only the
        # portable ones.
        order = ["generic", "avx2", "avx512"]
        if hasattr(cpp, "compiled_isa_paths"):
            compiled = list(cpp.compiled_isa_paths())
        elif platform.machine().lower() in ("x86_64", "amd64"):
            compiled = order
        else:
            compiled = ["generic"]
        best = cpp.best_isa_path()
        supported = [p for p in compiled if order.index(p) <= order.index(best)]
        print(f"isa paths compiled in: {', '.join(compiled)}"
              + (" (avx512 runs the avx2 kernels)" if "avx512" in compiled else ""))
        print(f"isa paths this cpu supports: {', '.join(supported)}")
        print(f"isa path: {cpp.isa_path()}"
              + (f" (capped by FASTCONV_ISA={os.environ['FASTCONV_ISA']})"
                 if cpp.isa_path() != best and os.environ.get("FASTCONV_ISA") else ""))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from .bench.ops import OPS
    from .bench.runner import SUITES

    parser = argparse.ArgumentParser(prog="python -m fastconv",
                                     description="fastconv: backends, machine and benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, backends, CPU features, threads").set_defaults(run=info)
    bench = sub.add_parser(
        "bench", help="time backends (and PyTorch) on the layer table, against the machine",
        description="Time every backend, the textbook NumPy code and PyTorch (when installed) "
                    "on the layer table, check each result against the NumPy reference, and "
                    "rate them against the GEMM peak and copy bandwidth measured in the same run.")
    bench.add_argument("layers", nargs="*",
                       help="layer names (default: the whole table of each op)")
    bench.add_argument("--suite", choices=sorted(SUITES), default="quick",
                       help="quick (default): 3 rounds, short samples; full: 10 rounds, "
                            "longer samples and limit probes, steadier")
    bench.add_argument("--op", nargs="+", metavar="OP",
                       help=f"one or more of {', '.join(OPS)}, or all (default: conv2d)")
    bench.add_argument("--backends", nargs="+", metavar="NAME",
                       help=f"fastconv backends among {', '.join(fc.backends())} "
                            "(default: every available one)")
    bench.add_argument("--threads", type=_positive, help="default: fastconv.get_num_threads()")
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--repeat", type=_positive,
                       help="rounds, i.e. timed samples per cell (default: the suite's)")
    bench.add_argument("--json", metavar="FILE", help="save the run (settings, limits, times)")
    bench.add_argument("--compare", metavar="OLD.json",
                       help="speed relative to a run saved with --json; flags slowdowns "
                            "beyond the measured noise")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="a bar chart of the rates per layer (needs fastconv[plot])")
    bench.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    bench.set_defaults(run=_bench)
    memory = sub.add_parser("memory", help="peak extra memory of a conv2d call, per backend")
    memory.add_argument("layers", nargs="*", help="layer names (default: resnet_stem)")
    memory.add_argument("--batch", nargs="+", type=int, default=[8, 64])
    memory.add_argument("--backends", nargs="+", choices=sorted(fc.backends()),
                        help="default: every available backend")
    memory.set_defaults(run=_memory)
    return parser


def _memory(args) -> int:
    from .bench.memory import main

    return main(args)


def _bench(args) -> int:
    from .bench.runner import main

    return main(args)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
