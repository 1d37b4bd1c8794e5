"""Command line: `python -m fastconv info`, `bench` and `memory`."""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

import fastconv as fc


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info(_args) -> int:
    print(f"fastconv {fc.__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"cpu: {_cpu_model()}")
    print(f"threads: {fc.get_num_threads()}")
    print("backends (auto's order of preference):")
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
        print(f"isa path: {cpp.isa_path()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from .bench.runner import SUITES

    parser = argparse.ArgumentParser(prog="python -m fastconv",
                                     description="fastconv: backends, machine and benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, backends, CPU features, threads").set_defaults(run=info)
    bench = sub.add_parser("bench", help="time backends (and PyTorch) on the layer table")
    bench.add_argument("layers", nargs="*", help="layer names (default: the whole table)")
    bench.add_argument("--suite", choices=sorted(SUITES), default="quick",
                       help="quick (default): few repeats; full: more repeats, steadier")
    bench.add_argument("--op", choices=["conv2d", "max_pool2d", "avg_pool2d"],
                       default="conv2d")
    bench.add_argument("--backends", nargs="+", choices=sorted(fc.backends()),
                       help="default: every available backend")
    bench.add_argument("--threads", type=int, help="default: fastconv.get_num_threads()")
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--repeat", type=int, help="timed calls per cell (at least)")
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
