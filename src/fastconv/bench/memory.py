"""`python -m fastconv memory`: the peak memory a conv2d call adds, per backend.

Each measurement runs in a fresh process whose allocator hands freed memory
straight back to the system, so the kernel's page-level peak (VmHWM, reset
through /proc/self/clear_refs just before the call) is what the call itself
needed: its output (unless `out=` is given) plus its workspace. Two calls are
measured: the first of the layer's shape (after a warm-up on a small crop of
it, for imports and JIT compiles), which includes the buffers the kernels keep
for later calls (cpp's scratch), and a repeated one. Linux only. The kernel
counts resident pages per CPU in batches, so a peak can read a few hundred KB
low. The probe also measures conv2d_backward (results: its three gradients),
and reports what fastconv.explain predicts for the call's workspace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .shapes import CONV_LAYERS

_PROBE = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None)
libc.mallopt(-3, 64 << 10)  # M_MMAP_THRESHOLD: large blocks are mapped and unmapped
libc.mallopt(-1, 64 << 10)  # M_TRIM_THRESHOLD: the heap's top goes back at once
import numpy as np
import fastconv as fc
from fastconv.bench.shapes import CONV_LAYERS

name, batch, backend, use_out, op = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
    sys.argv[4] == "1", sys.argv[5]
layer = {l.name: l for l in CONV_LAYERS}[name]
x = np.ones((batch, *layer.x_shape[1:]), np.float32)
w = np.ones(layer.weight_shape, np.float32)
kw = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups, backend=backend)
out = np.ones((batch, layer.k, *layer.out_hw), np.float32) if use_out else None
if op == "conv2d":
    side = max(layer.kh, layer.kw) + layer.stride  # warm-up: imports, JIT, x and w touched
    fc.conv2d(np.ones((1, layer.c, side, side), np.float32), w, **kw)
    args, call = (x, w), lambda: fc.conv2d(x, w, **kw, out=out)
else:
    g = np.ones((batch, layer.k, *layer.out_hw), np.float32)
    args, call = (g, x, w), lambda: fc.conv2d_backward(g, x, w, **kw)
    # warm-up on a small layer of its own: a crop of this one would leave the
    # buffers sized by the weights (partial sums, packed weights) allocated
    small, sw = np.ones((2, 4, 16, 16), np.float32), np.ones((8, 4, 3, 3), np.float32)
    fc.conv2d_backward(np.ones((2, 8, 16, 16), np.float32), small, sw, padding=1,
                       backend=backend)

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

def peak_extra():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = status("VmRSS")
    result = call()
    results = result if isinstance(result, tuple) else (result,)
    return status("VmHWM") - before, sum(r.nbytes for r in results)

first, _ = peak_extra()
extra, nbytes = peak_extra()
predicted = fc.explain(op, *args, **kw).workspace_bytes
print(json.dumps({"first": first, "extra": extra, "output": nbytes, "predicted": predicted}))
"""


def peak_extra_bytes(layer: str, batch: int, backend: str, use_out: bool,
                     op: str = "conv2d", threads: int | None = None) -> dict:
    """{"first": bytes the first call of the shape added at its peak, "extra": the
    same for a repeated call, "output": bytes of its result (conv2d_backward's
    three gradients), "predicted": explain's workspace_bytes for the call}.
    threads: FASTCONV_NUM_THREADS for the probe (None: as in this process's
    environment)."""
    if op not in ("conv2d", "conv2d_backward") or (use_out and op != "conv2d"):
        raise ValueError(f"measures conv2d (out= or not) and conv2d_backward, not {op}")
    env = dict(os.environ)
    if threads is not None:
        env["FASTCONV_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", _PROBE, layer, str(batch), backend,
                           "1" if use_out else "0", op], capture_output=True, text=True,
                          timeout=600, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def main(args) -> int:
    import fastconv as fc

    names = args.layers or ["resnet_stem"]
    unknown = set(names) - {l.name for l in CONV_LAYERS}
    if unknown:
        print(f"unknown layers: {sorted(unknown)}; choose from {[l.name for l in CONV_LAYERS]}")
        return 2
    backends = args.backends or [n for n, b in fc.backends().items() if b.available]
    mb = 1 << 20
    print("conv2d peak extra memory per call, float32 (MB; resident pages, fresh process; "
          "the first call of the shape, with the buffers the kernels keep, and a repeated one)")
    head = (f"{'layer':<15}{'batch':>6}{'backend':>9}{'output':>9}{'first, out=':>13}"
            f"{'with out=':>11}{'without':>9}")
    print(head)
    print("-" * len(head))
    for name in names:
        for batch in args.batch:
            for backend in backends:
                with_out = peak_extra_bytes(name, batch, backend, True)
                without = peak_extra_bytes(name, batch, backend, False)
                print(f"{name:<15}{batch:>6}{backend:>9}{with_out['output'] / mb:>9.1f}"
                      f"{with_out['first'] / mb:>13.1f}{with_out['extra'] / mb:>11.1f}"
                      f"{without['extra'] / mb:>9.1f}")
    return 0
