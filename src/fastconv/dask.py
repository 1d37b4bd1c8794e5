"""fastconv on Dask arrays: lazy conv2d, max_pool2d and avg_pool2d, block by block.

    import dask.array as da
    import fastconv.dask as fcd
    x = da.from_zarr("images.zarr")                  # (N, C, H, W), chunked any way
    y = fcd.conv2d(x, w, b, padding="same", activation="relu")
    y = fcd.max_pool2d(y, 2)                         # still lazy: nothing computed yet
    y.to_zarr("features.zarr")

Each function takes the arguments of its in-memory namesake (except `out=`),
validates them with the same code and messages on the shapes and dtypes alone,
and returns a lazy dask array. Every output block is one call of the in-memory
function on the input it needs, so each output element is computed by the
same backend kernel over the same window as the in-memory call.

How the input is cut (per spatial axis; window `o` reads rows
[o*s - p, o*s - p + ek) with stride s, padding p before, span ek = d*(k-1)+1):

- An output row goes to the input chunk holding its window's centre, so a
  stride-1 'same' convolution keeps the input's chunks. Input chunk boundaries
  are then moved onto the stride grid (row o*s - p for the block's first output
  o) and the input is rechunked there; each block then reads its chunk plus a
  halo of max(ek - s, 0) rows after it (pooling: also (-p) mod s rows before
  it, which only the last block reads), taken with `dask.array.overlap`.
  Chunks smaller than the halo are merged with their neighbours.
- conv2d with zero padding: each block's call pads its own edges, (before,
  after) as its windows reach past the image, as the kernel pads the whole
  image. Other padding modes read across the image (circular wraps around), so
  the dask array is padded first, as the in-memory call pads its input (da.pad:
  reflect -> 'reflect', replicate -> 'edge', circular -> 'wrap'), and every
  block runs without padding.
- Pooling keeps its padding virtual, because max pooling's -inf padding never
  wins an index and average pooling's divisor depends on where a window meets
  the border. Inner blocks run without padding; a block at the top (left) edge
  starts at row 0 with padding p; a block at the bottom (right) edge starts on
  the stride grid and runs to the end with padding p and the caller's
  ceil_mode; the windows it computes beyond its block are dropped. Whether
  such a local call holds exactly the block's windows is checked when the
  graph is built; where it would not, blocks are merged.
- Channels: pooling keeps any channel chunks; conv2d keeps channel chunks that
  hold whole groups (their outputs are chunked by group too) and otherwise
  rechunks channels into one chunk. Batch chunks are kept.

Weights and bias enter the graph once (one key each), not once per task.

Threads: a task runs fastconv with
    max(1, min(fastconv.get_num_threads(), cores // slots))
threads, where cores are the CPUs the worker process may run on and slots the
tasks that can run at once on that machine: on a dask.distributed worker, the
nthreads of all workers on the same host (asked from the scheduler, cached for
30 s); under the local threaded scheduler, its pool size (dask's `num_workers`
setting, else dask.system.CPU_COUNT). So workers x threads x fastconv threads
never exceeds the cores.

Bit for bit: see README's Dask section for what holds on each backend.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import _api, _dispatch, _params
from ._threads import get_num_threads, set_num_threads

__all__ = ["avg_pool2d", "conv2d", "max_pool2d"]

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}


def _da():
    """dask.array, imported on first use (fastconv[dask] installs it)."""
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("fastconv.dask needs Dask: pip install 'fastconv[dask]'") from exc
    return da


# ------------------------------------------------------------ validation


def _standin(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array that claims `shape` and C order over one element of memory.

    _params only reads shapes and dtypes, never values; with the compute dtype
    and C strides it neither copies nor converts this. It lets the in-memory
    validation run on a dask array's shape without computing or allocating it.
    """
    dtype = np.dtype(dtype)
    strides = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * dtype.itemsize
                    for i in range(len(shape)))
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, strides,
                                           writeable=False)


def _dtype_probe(a) -> np.ndarray:
    """A zero-size array of a's dtype, for _params.compute_dtype."""
    return np.empty(0, a.dtype)


def _as_dask(x, name="x"):
    da = _da()
    x = x if isinstance(x, da.Array) else da.asarray(_params._array(x, name))
    if any(np.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() "
                         "first")
    return x


def _small(value, name):
    """weight or bias: a NumPy array, or a dask array kept lazy."""
    if value is None:
        return None
    da = _da()
    return value if isinstance(value, da.Array) else _params._array(value, name)


def _shaped(a, dtype):
    da = _da()
    return _standin(a.shape, dtype) if isinstance(a, da.Array) else a


def _once(a):
    """One graph key for weight or bias, whatever the number of tasks."""
    if a is None:
        return None
    da = _da()
    import dask

    if isinstance(a, da.Array):
        return a.rechunk(a.shape).to_delayed().ravel()[0]
    return dask.delayed(np.asarray(a), pure=True)


# ------------------------------------------------------- cutting an axis


@dataclass(frozen=True)
class _Block:
    """One output block along one axis, and the local call that computes it.

    Outputs [out_start, out_stop) come from a call on input rows
    [read_start, read_stop) with local padding `pad` (before, after), of whose
    outputs the first `skip` are dropped. `held_start` is the first row of the
    overlapped dask block the task receives.
    """

    out_start: int
    out_stop: int
    read_start: int
    read_stop: int
    pad: tuple[int, int]
    skip: int
    held_start: int


@dataclass(frozen=True)
class _Axis:
    chunks: tuple[int, ...]   # input chunks to rechunk to
    depth: tuple[int, int]    # halo (before, after) for dask.array.overlap
    blocks: tuple[_Block, ...]

    @property
    def out_chunks(self) -> tuple[int, ...]:
        return tuple(b.out_stop - b.out_start for b in self.blocks)


def _cuts(bounds, n_out, s, ek, off):
    """Output block boundaries: each output goes to the chunk holding its window's centre."""
    half = (ek - 1) // 2
    return sorted({-(-(e + off - half) // s) for e in bounds} & set(range(1, n_out)))


def _plan_axis(size, in_chunks, n_out, s, ek, off, pool_check=None) -> _Axis:
    """Cut one axis of `size` rows into output blocks and the input chunks they read.

    Window o reads rows [o*s - off, o*s - off + ek), the rows outside [0, size)
    being padding. Without pool_check (conv2d) a block's local call gets the
    zero padding its windows reach, (before, after) as it needs. With
    pool_check (pooling: symmetric padding `off`), see _blocks;
    pool_check(local_size, pad) -> the local output count, or None when such
    a local call is invalid.
    """
    bounds = np.cumsum(in_chunks)[:-1].tolist()
    before = (-off) % s if pool_check else 0
    after = max(ek - s, 0)
    need = max(before, after, 1)
    kept, start = [], 0
    for b in _cuts(bounds, n_out, s, ek, off):
        e = b * s - off
        if e - start >= need and size - e >= need:
            kept.append(b)
            start = e
    while True:
        blocks = _blocks(size, n_out, s, ek, off, kept, before, pool_check)
        if not isinstance(blocks, str):
            break
        # An edge block no local call reproduces: merge it with its neighbour
        # (a single block is the in-memory call's own axis, always valid).
        assert kept, "one block along an axis is the in-memory call's own geometry"
        kept = kept[1:] if blocks == "first" else kept[:-1]
    edges = [0] + [b * s - off for b in kept] + [size]
    chunks = tuple(int(b - a) for a, b in zip(edges[:-1], edges[1:]))
    return _Axis(chunks, (before, after) if len(chunks) > 1 else (0, 0), tuple(blocks))


def _blocks(size, n_out, s, ek, off, kept, before, pool_check):
    """The blocks for output cuts `kept`, or "first"/"last" naming an edge block
    whose local pooling call would not hold exactly its windows."""
    outs = [0, *kept, n_out]
    edges = [0] + [b * s - off for b in kept] + [size]
    blocks = []
    for i, (o0, o1) in enumerate(zip(outs[:-1], outs[1:])):
        held = max(edges[i] - before, 0) if i else 0
        r0, r1 = o0 * s - off, (o1 - 1) * s - off + ek
        inner = r0 >= 0 and r1 <= size
        if pool_check is None:     # conv2d: exactly the zero padding its windows reach
            a, b = max(r0, 0), min(r1, size)
            if b <= a:  # every window lies in the padding before row 0: read one row
                a, b = 0, 1  # (its extra windows are dropped)
            blocks.append(_Block(o0, o1, a, b, (a - r0, max(r1 - b, 0)), 0, held))
            continue
        # Pooling pads symmetrically, and its padding and ceil_mode decide the
        # divisors and which windows exist: edge blocks keep the caller's.
        if inner:
            block = _Block(o0, o1, r0, r1, (0, 0), 0, held)
        elif r0 < 0 and r1 <= size:    # first: from row 0, padding p
            block = _Block(o0, o1, 0, r1, (off, off), o0, held)
        elif r0 >= 0:                  # last: from the stride grid to the end, padding p
            q = r0 - r0 % s
            block = _Block(o0, o1, q, size, (off, off), o0 - q // s, held)
        else:                          # the whole axis
            block = _Block(o0, o1, 0, size, (off, off), o0, held)
        if not inner:
            count = pool_check(block.read_stop - block.read_start, off)
            if count is None or count < block.skip + o1 - o0:
                return "first" if i == 0 else "last"
        blocks.append(block)
    return blocks


def _pool_checker(kind, k, s, d, ceil_mode, count_include_pad, divisor_override):
    """pool_check for _plan_axis: the in-memory validation on one axis."""

    def check(local_size, pad):
        try:
            spec = _params._pool_spec(kind, "check", (1, 1, local_size, 1), True, (k, 1),
                                      (s, 1), (pad, 0), (d, 1), ceil_mode,
                                      count_include_pad, divisor_override, False,
                                      np.dtype(np.float64))
        except ValueError:
            return None
        return spec.oh

    return check


def _halo(x, axes: dict[int, _Axis]):
    """x rechunked to the plans' input chunks, with their halos attached."""
    da = _da()
    x = x.rechunk({ax: plan.chunks for ax, plan in axes.items()})
    depth = {ax: plan.depth for ax, plan in axes.items() if plan.depth != (0, 0)}
    if not depth:
        return x
    held = da.overlap.overlap(x, depth=depth, boundary="none", allow_rechunk=False)
    for ax, plan in axes.items():  # the halo is taken exactly as planned
        starts = [b.held_start for b in plan.blocks]
        ends = np.cumsum(plan.chunks).tolist()
        want = tuple(min(e + plan.depth[1], ends[-1]) - h if len(ends) > 1 else e - h
                     for h, e in zip(starts, ends))
        assert held.chunks[ax] == want, (held.chunks[ax], want)
    return held


def _window(block: np.ndarray, h: _Block, w: _Block) -> np.ndarray:
    return block[:, :, h.read_start - h.held_start:h.read_stop - h.held_start,
                 w.read_start - w.held_start:w.read_stop - w.held_start]


def _local(y: np.ndarray, h: _Block, w: _Block) -> np.ndarray:
    return y[:, :, h.skip:h.skip + h.out_stop - h.out_start,
             w.skip:w.skip + w.out_stop - w.out_start]


# -------------------------------------------------------------- threads

_budget_lock = threading.Lock()
_budget_users = 0
_budget_saved: int | None = None
_slots_cache: tuple[float, int] = (float("-inf"), 1)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _host_slots() -> int:
    """Tasks that can run at once on this machine (see the module's docstring)."""
    global _slots_cache
    worker = None
    if "distributed" in sys.modules:  # a worker has imported it; don't import it here
        try:
            worker = sys.modules["distributed"].get_worker()
        except ValueError:  # not inside a dask.distributed task
            pass
    if worker is None:
        import dask
        from dask.system import CPU_COUNT

        return int(dask.config.get("num_workers", None) or CPU_COUNT)
    stamp, slots = _slots_cache
    if time.monotonic() - stamp < 30:
        return slots
    try:
        from distributed.utils import sync

        ident = sync(worker.loop, worker.scheduler.identity)
        slots = sum(int(info.get("nthreads", 1)) for info in ident["workers"].values()
                    if info.get("host") == worker.host)
    except Exception:  # no answer: assume every core is taken by a task slot
        slots = _cores()
    slots = max(slots, worker.state.nthreads)
    _slots_cache = (time.monotonic(), slots)
    return slots


def _task_threads() -> int:
    """fastconv's threads for one task: cores shared by the task slots of this machine."""
    return max(1, min(get_num_threads(), _cores() // max(_host_slots(), 1)))


@contextlib.contextmanager
def _thread_budget():
    """Run a task with _task_threads() fastconv threads, restored afterwards.

    fastconv's thread count is per process; tasks running side by side in one
    process all ask for the same count, so the first sets it, the last restores.
    """
    global _budget_users, _budget_saved
    threads = _task_threads()
    with _budget_lock:
        if _budget_users == 0:
            _budget_saved = get_num_threads()
        _budget_users += 1
        set_num_threads(threads)
    try:
        yield threads
    finally:
        with _budget_lock:
            _budget_users -= 1
            if _budget_users == 0:
                set_num_threads(_budget_saved)


# ------------------------------------------------------------ convolution


@dataclass(frozen=True)
class _ConvTask:
    h: _Axis
    w: _Axis
    groups_per_chunk: tuple[tuple[int, int], ...]  # (first group, groups) per C chunk
    k_per_group: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    activation: str | None
    backend: str

    def __call__(self, block, weight, bias, block_id=None):
        _, ci, hi, wi = block_id
        h, w = self.h.blocks[hi], self.w.blocks[wi]
        g0, groups = self.groups_per_chunk[ci]
        k0, k1 = g0 * self.k_per_group, (g0 + groups) * self.k_per_group
        with _thread_budget():
            y = _api.conv2d(_window(block, h, w), weight[k0:k1],
                            None if bias is None else bias[k0:k1], self.stride,
                            (h.pad, w.pad), self.dilation, groups,
                            activation=self.activation, backend=self.backend)
        return _local(y, h, w)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, backend="auto"):
    """fastconv.conv2d on a dask array x (N, C, H, W) or (C, H, W): a lazy result.

    weight and bias may be NumPy or dask arrays. Same arguments, validation and
    results as fastconv.conv2d (no `out=`); see the module docstring for the cut.
    """
    da = _da()
    x = _as_dask(x)
    weight = _small(weight, "weight")
    bias = _small(bias, "bias")
    named = {"x": _dtype_probe(x), "weight": _dtype_probe(weight)}
    if bias is not None:
        named["bias"] = _dtype_probe(bias)
    dtype = _params.compute_dtype(named)
    spec, _, _, _ = _params.conv2d(_standin(x.shape, dtype), _shaped(weight, dtype),
                                   None if bias is None else _shaped(bias, dtype),
                                   stride, padding, dilation, groups, padding_mode, activation)
    impl, _ = _dispatch.select("conv2d", spec, backend)  # resolve "auto" once, for every block
    if spec.n == 0:
        return da.zeros(spec.out_shape, dtype=spec.dtype)
    x4 = x if spec.batched else x[None]

    # Channels: whole groups per chunk, else one chunk.
    cg = spec.c // spec.groups
    c_chunks = x4.chunks[1]
    if not all(c % cg == 0 for c in c_chunks):
        c_chunks = (spec.c,)
    starts = np.cumsum((0,) + c_chunks)[:-1] // cg
    groups_per_chunk = tuple((int(g), c // cg) for g, c in zip(starts, c_chunks))
    kg = spec.k // spec.groups

    top, bottom, left, right = spec.pads
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    ekh, ekw = dh * (spec.kh - 1) + 1, dw * (spec.kw - 1) + 1
    xp = x4.rechunk({1: c_chunks})
    if spec.padding_mode == "zeros":  # blocks pad their own edges, as the kernel would
        h_plan = _plan_axis(spec.h, x4.chunks[2], spec.oh, sh, ekh, top)
        w_plan = _plan_axis(spec.w, x4.chunks[3], spec.ow, sw, ekw, left)
    else:  # the other modes read across the image: pad it as the in-memory call does
        xp = da.pad(xp, ((0, 0), (0, 0), (top, bottom), (left, right)),
                    mode=_PAD_MODES[spec.padding_mode])
        h_plan = _plan_axis(spec.h + top + bottom, _shifted(x4.chunks[2], top, bottom),
                            spec.oh, sh, ekh, 0)
        w_plan = _plan_axis(spec.w + left + right, _shifted(x4.chunks[3], left, right),
                            spec.ow, sw, ekw, 0)
    held = _halo(xp, {2: h_plan, 3: w_plan})
    task = _ConvTask(h_plan, w_plan, groups_per_chunk, kg, spec.stride, spec.dilation,
                     spec.activation, impl.name)
    out = da.map_blocks(
        task, held, _once(weight), _once(bias), token="fastconv-conv2d",
        chunks=(x4.chunks[0], tuple(g * kg for _, g in groups_per_chunk),
                h_plan.out_chunks, w_plan.out_chunks),
        dtype=spec.dtype, meta=np.empty((0, 0, 0, 0), spec.dtype))
    return out if spec.batched else out[0]


def _shifted(chunks, before, after):
    """x's chunks as chunks of x padded by (before, after)."""
    return (chunks[0] + before, *chunks[1:-1], chunks[-1] + after) if len(chunks) > 1 \
        else (chunks[0] + before + after,)


# --------------------------------------------------------------- pooling


@dataclass(frozen=True)
class _PoolTask:
    kind: str
    h: _Axis
    w: _Axis
    in_w: int                 # the input's W, for return_indices
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None
    return_indices: bool
    backend: str

    def __call__(self, block, block_id=None):
        h, w = self.h.blocks[block_id[2]], self.w.blocks[block_id[3]]
        data = _window(block, h, w)
        with _thread_budget():
            if self.kind == "avg":
                y = _api.avg_pool2d(data, self.kernel_size, self.stride, (h.pad[0], w.pad[0]),
                                    self.ceil_mode, self.count_include_pad,
                                    self.divisor_override, backend=self.backend)
                return _local(y, h, w)
            y = _api.max_pool2d(data, self.kernel_size, self.stride, (h.pad[0], w.pad[0]),
                                self.dilation, self.ceil_mode, self.return_indices,
                                backend=self.backend)
        if not self.return_indices:
            return _local(y, h, w)
        values, local = (_local(a, h, w) for a in y)
        width = data.shape[3]  # local plane index -> the input plane's h * W + w
        rows, cols = np.divmod(local, width)
        result = np.empty(values.shape, [("values", values.dtype), ("indices", np.int64)])
        result["values"] = values
        result["indices"] = (rows + h.read_start) * self.in_w + cols + w.read_start
        return result


def _pool(kind, x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad,
          divisor_override, return_indices, backend):
    da = _da()
    x = _as_dask(x)
    dtype = _params.compute_dtype({"x": _dtype_probe(x)})
    spec, _ = _params.pool2d(kind, _standin(x.shape, dtype), kernel_size, stride, padding,
                             dilation, ceil_mode, count_include_pad, divisor_override,
                             return_indices)
    impl, _ = _dispatch.select(f"{kind}_pool2d", spec, backend)
    if spec.n == 0:
        empty = da.zeros(spec.out_shape, dtype=spec.dtype)
        return (empty, da.zeros(spec.out_shape, np.int64)) if spec.return_indices else empty
    x4 = x if spec.batched else x[None]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = ((spec.kh, spec.kw), spec.stride, spec.padding,
                                              spec.dilation)
    args = (spec.ceil_mode, spec.count_include_pad, spec.divisor_override)
    h_plan = _plan_axis(spec.h, x4.chunks[2], spec.oh, sh, dh * (kh - 1) + 1, ph,
                        _pool_checker(kind, kh, sh, dh, *args))
    w_plan = _plan_axis(spec.w, x4.chunks[3], spec.ow, sw, dw * (kw - 1) + 1, pw,
                        _pool_checker(kind, kw, sw, dw, *args))
    held = _halo(x4, {2: h_plan, 3: w_plan})
    task = _PoolTask(kind, h_plan, w_plan, spec.w, (kh, kw), spec.stride, spec.dilation,
                     *args, spec.return_indices, impl.name)
    out_dtype = (np.dtype([("values", spec.dtype), ("indices", np.int64)])
                 if spec.return_indices else spec.dtype)
    out = da.map_blocks(task, held, token=f"fastconv-{kind}_pool2d",
                        chunks=(x4.chunks[0], x4.chunks[1], h_plan.out_chunks,
                                w_plan.out_chunks),
                        dtype=out_dtype, meta=np.empty((0, 0, 0, 0), out_dtype))
    out = out if spec.batched else out[0]
    if spec.return_indices:
        return out["values"], out["indices"]
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, backend="auto"):
    """fastconv.max_pool2d on a dask array: a lazy result (and lazy int64 indices).

    Same arguments, validation and results as fastconv.max_pool2d (no `out=`).
    """
    return _pool("max", x, kernel_size, stride, padding, dilation, ceil_mode, True, None,
                 return_indices, backend)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, backend="auto"):
    """fastconv.avg_pool2d on a dask array: a lazy result.

    Same arguments, validation and results as fastconv.avg_pool2d (no `out=`).
    """
    return _pool("avg", x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                 divisor_override, False, backend)
