"""Conv + ReLU + max-pool over an image stack on disk, on a dask.distributed cluster.

    python examples/dask_pipeline.py                     # quick default (~300 MB on disk)
    python examples/dask_pipeline.py --images 4000 --size 512 --memory-limit 1GiB

Writes a random image stack (N, C, S, S) to Zarr, larger than one worker's
memory limit, then runs fastconv.dask's conv2d ('same', fused ReLU) and a 2x2
max pool over it on a LocalCluster of worker processes, streaming the result
back to Zarr with a progress bar. The same work then runs in this one process
(slab by slab, fastconv using every core), and the two results and
throughputs are compared. Needs `pip install "fastconv[dask]"`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import fastconv as fc
import fastconv.dask as fcd


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=384, help="images in the stack (384)")
    p.add_argument("--size", type=int, default=256, help="image height and width (256)")
    p.add_argument("--channels", type=int, default=3, help="input channels (3)")
    p.add_argument("--filters", type=int, default=16, help="conv filters (16)")
    p.add_argument("--kernel", type=int, default=3, help="conv kernel size (3)")
    p.add_argument("--batch", type=int, default=4, help="images per chunk (4)")
    p.add_argument("--tile", type=int, default=0,
                   help="also cut images into tiles of this height and width (0: whole)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="threads per worker (1)")
    p.add_argument("--memory-limit", default="256MiB", help="per worker (256MiB)")
    p.add_argument("--backend", default="auto", help="fastconv backend (auto)")
    p.add_argument("--dir", default=None, help="where the Zarr stores go (a temporary dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def create(path: Path, shape, chunks):
    """An empty float32 Zarr array, uncompressed (random data does not compress; the
    example measures convolution, not zstd)."""
    import zarr

    if int(zarr.__version__.split(".")[0]) >= 3:
        return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="f4",
                                 compressors=None, overwrite=True)
    return zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype="f4",
                           compressor=None)


def write_stack(path: Path, args):
    """A random (N, C, S, S) float32 stack, written slab by slab (never all in memory)."""
    shape = (args.images, args.channels, args.size, args.size)
    z = create(path, shape, (args.batch, *shape[1:]))
    rng = np.random.default_rng(0)
    for i in range(0, args.images, args.batch):
        n = min(args.batch, args.images - i)
        z[i:i + n] = rng.standard_normal((n, *shape[1:]), dtype=np.float32)
    return z


def layer(args):
    rng = np.random.default_rng(1)
    k = args.kernel
    w = rng.standard_normal((args.filters, args.channels, k, k), dtype=np.float32)
    w *= np.float32(1 / np.sqrt(args.channels * k * k))
    return w, rng.standard_normal(args.filters, dtype=np.float32) * np.float32(0.1)


def warm_up():
    """Imports and first calls (in each worker too), kept out of the measured time."""
    import dask.array  # noqa: F401
    import zarr  # noqa: F401

    fc.max_pool2d(fc.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 2, 2),
                                                                        np.float32)), 2)


def run_distributed(src: Path, dst: Path, args) -> float:
    """The stack through conv + relu + pool on a LocalCluster; returns the seconds it took."""
    import dask.array as da
    from distributed import Client, LocalCluster, progress, wait

    w, b = layer(args)
    with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                      memory_limit=args.memory_limit, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster, \
            Client(cluster) as client:
        client.run(warm_up)
        x = da.from_zarr(str(src))
        if args.tile:
            x = x.rechunk((args.batch, args.channels, args.tile, args.tile))
        y = fcd.conv2d(x, w, b, padding="same", activation="relu", backend=args.backend)
        y = fcd.max_pool2d(y, 2, backend=args.backend)
        # Zarr chunks must not straddle dask chunks: store with the result's batch chunks
        # and whole pooled images (tiles are joined back before writing).
        y = y.rechunk((args.batch, args.filters, y.shape[2], y.shape[3]))
        out = create(dst, y.shape, y.chunksize)
        store = y.store(out, lock=False, compute=False)
        start = time.perf_counter()
        future = client.compute(store)
        if not args.no_progress:
            progress(future)
            print()
        wait(future)
        future.result()
        return time.perf_counter() - start


def run_one_process(src: Path, dst: Path, args) -> float:
    """The same work in this process, slab by slab; returns the seconds it took."""
    import zarr

    w, b = layer(args)
    x = zarr.open_array(str(src), mode="r")
    oh = ow = args.size // 2
    out = create(dst, (args.images, args.filters, oh, ow), (args.batch, args.filters, oh, ow))
    warm_up()
    start = time.perf_counter()
    for i in range(0, args.images, args.batch):
        h = fc.conv2d(x[i:i + args.batch], w, b, padding="same", activation="relu",
                      backend=args.backend)
        out[i:i + args.batch] = fc.max_pool2d(h, 2, backend=args.backend)
    return time.perf_counter() - start


def compare(a: Path, b: Path, args) -> tuple[float, float]:
    """(max abs difference, max abs value) of two result stores, read slab by slab."""
    import zarr

    za, zb = zarr.open_array(str(a), mode="r"), zarr.open_array(str(b), mode="r")
    worst = largest = 0.0
    for i in range(0, args.images, args.batch):
        sa, sb = za[i:i + args.batch], zb[i:i + args.batch]
        worst = max(worst, float(np.abs(sa - sb).max()))
        largest = max(largest, float(np.abs(sb).max()))
    return worst, largest


def _bytes(text: str) -> int:
    from dask.utils import parse_bytes

    return parse_bytes(text)


def main(argv=None) -> None:
    args = parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="fastconv-dask-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        src = root / "images.zarr"
        write_stack(src, args)
        nbytes = args.images * args.channels * args.size ** 2 * 4
        limit = _bytes(args.memory_limit)
        print(f"stack: {args.images} x {args.channels} x {args.size} x {args.size} float32, "
              f"{nbytes / 2**20:.0f} MiB on disk as Zarr; "
              f"{args.workers} workers x {args.threads_per_worker} thread(s), "
              f"{limit / 2**20:.0f} MiB memory limit each"
              + ("" if nbytes > limit else "  (note: the stack fits in one worker)"))
        flops = 2 * args.images * args.filters * args.channels * args.kernel ** 2 * args.size ** 2

        seconds_dask = run_distributed(src, root / "features_dask.zarr", args)
        seconds_one = run_one_process(src, root / "features_one.zarr", args)
        diff, largest = compare(root / "features_dask.zarr", root / "features_one.zarr", args)

        for name, seconds in (("dask.distributed", seconds_dask), ("one process", seconds_one)):
            print(f"{name:>17}: {seconds:7.2f} s  {args.images / seconds:8.1f} images/s  "
                  f"{nbytes / 2**20 / seconds:7.1f} MiB/s in  "
                  f"{flops / 1e9 / seconds:6.2f} GFLOP/s")
        print(f"distributed / one process: {seconds_one / seconds_dask:.2f}x the throughput")
        # the contract's float32 tolerance; bitwise (0.0) on backends whose sums
        # do not depend on the chunking (see README, "Dask")
        verdict = ("matches the one-process result" if diff <= 1e-4 * (1 + largest)
                   else "DIFFERS from the one-process result")
        print(f"result {verdict} (max abs difference {diff:.3g})")
        if "DIFFERS" in verdict:
            raise SystemExit(1)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
