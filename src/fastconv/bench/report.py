"""A benchmark run as data: the cells, their statistics, the tables, JSON and --compare.

A cell is one contender on one layer of one op. Its `times` are per-call
seconds, one per round (see `runner`). The noise of a cell is the spread of
those repeats, IQR / median; the run's noise figure is the median of that over
its cells, with the worst cell named.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field

import fastconv as fc

from .. import _tuning
from . import ops

FORMAT = "fastconv-bench/1"


@dataclass
class Cell:
    op: str
    layer: str
    contender: str
    work: float  # GFLOP or GB per call
    unit: str  # "GFLOP/s" or "GB/s"
    times: list[float] = field(default_factory=list)  # per-call seconds, one per round
    error: str = ""  # how the result differed from the reference, or why it failed
    first: float | None = None  # seconds of the first call (JIT compiles, autotuning)
    path: str = ""  # what an auto contender ran ("cpp/gemm", "numba"...)
    tunings: int = 0  # autotuned: how often the layer was tuned (first call, second look...)
    tuning: float | None = None  # autotuned: seconds all those tunings cost
    against: str = ""  # the backend an auto contender was interleaved with
    ab: list[float] = field(default_factory=list)  # its time over against's, per sample

    @property
    def ok(self) -> bool:
        return bool(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def rate(self) -> float:
        """GFLOP/s or GB/s at the median time."""
        return self.work / self.median

    @property
    def spread(self) -> float | None:
        return spread(self.times)


def spread(times) -> float | None:
    """IQR / median of repeated timings; None with fewer than 2."""
    if len(times) < 2:
        return None
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(times)


def noise(cells) -> tuple[float | None, Cell | None]:
    """(the median spread over the cells, the noisiest cell)."""
    measured = [c for c in cells if c.ok and c.spread is not None]
    if not measured:
        return None, None
    return (statistics.median(c.spread for c in measured),
            max(measured, key=lambda c: c.spread))


def describe_noise(cells) -> str:
    typical, worst = noise(cells)
    if typical is None:
        return "noise: not measured (one repeat per cell)"
    return (f"noise (spread of the repeats, IQR / median): {typical:.1%} typical over "
            f"{sum(1 for c in cells if c.spread is not None)} cells, worst {worst.spread:.1%} "
            f"({worst.op} {worst.layer} {worst.contender})")


def fmt_time(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.3f} s"


def _ratio(base: Cell | None, cell: Cell) -> str:
    if base is None or not base.ok:
        return "-"
    return f"{base.median / cell.median:.2f}x"


def format_table(op: str, cells: list[Cell], dtype: str, limits) -> str:
    """One op: a block of rows per layer, one row per contender."""
    kind = ops.limit_kind(op)
    unit = ops.unit(op)
    limit = (limits.gemm.get(dtype) if kind == "gemm" else limits.copy) if limits else None
    limit_name = f"{dtype} GEMM peak" if kind == "gemm" else "copy bandwidth"
    title = (f"{op}, {dtype}: time per call (median, min), {unit} at the median"
             + (" (bytes read + written)" if unit == "GB/s" else "")
             + (f", share of the {limit_name} ({limit:.1f} {unit})" if limit else "")
             + ", speed relative to numpy and torch (> 1 = faster), spread of the repeats")
    head = (f"{'layer':<15} {'contender':<9} {'median':>10} {'min':>10} {unit:>8} "
            f"{'limit':>6} {'x numpy':>8} {'x torch':>8} {'spread':>7}")
    lines = [title, head, "-" * len(head)]
    layers = list(dict.fromkeys(c.layer for c in cells if c.op == op))
    for name in layers:
        row_cells = [c for c in cells if c.op == op and c.layer == name]
        by_name = {c.contender: c for c in row_cells}
        numpy_cell, torch_cell = by_name.get("numpy"), by_name.get("torch")
        for i, c in enumerate(row_cells):
            label = name if i == 0 else ""
            if not c.ok:
                lines.append(f"{label:<15} {c.contender:<9} {'failed':>10}")
                continue
            share = f"{c.rate / limit:.0%}" if limit else "-"
            sp = "-" if c.spread is None else f"{c.spread:.1%}"
            mark = " !" if c.error else ""
            ran = f"  ran {c.path}" if c.path else ""
            lines.append(f"{label:<15} {c.contender:<9} {fmt_time(c.median):>10} "
                         f"{fmt_time(c.min):>10} {c.rate:>8.2f} {share:>6} "
                         f"{_ratio(numpy_cell, c):>8} {_ratio(torch_cell, c):>8} "
                         f"{sp:>7}{mark}{ran}")
    problems = [f"  {c.layer} {c.contender}: {c.error}" for c in cells
                if c.op == op and c.error]
    if problems:
        lines.append("! problems (marked ! above):")
        lines += problems
    return "\n".join(lines)


# AUTO_SLACK: how much slower than the fastest backend auto may be on a layer.
AUTO_SLACK = 0.10


def paired_ratio(cell: Cell, base: Cell) -> float:
    """cell's time relative to base's: the median over the rounds of their two
    samples' ratio (taken within a second or so of each other, so that the
    machine's drift over a run cancels), else the ratio of their medians."""
    if len(cell.times) != len(base.times) or not cell.times:
        return cell.median / base.median
    return statistics.median(t / b for t, b in zip(cell.times, base.times))


def auto_ratio(cell: Cell, best: Cell, by: dict[str, Cell]) -> float:
    """An auto contender's time relative to the fastest backend `best`: its time
    over that of the backend it ran, interleaved call by call (the median of
    `cell.ab`), times that backend's paired ratio to `best` (1 when it is `best`).
    Without the interleaved timing, its own paired ratio to `best`."""
    base = by.get(cell.against)
    if not cell.ab or base is None or not base.ok:
        return paired_ratio(cell, best)
    over = statistics.median(cell.ab)
    return over if base is best else over * paired_ratio(base, best)


def format_auto(op: str, cells: list[Cell]) -> str:
    """Auto's contenders against the fastest fastconv backend of each layer (the
    one with the lowest median; see auto_ratio), and what autotuning a layer's
    first call cost; "" without them."""
    named = set(fc.backends())
    rows, within, layers = [], {a: 0 for a in ops.AUTO}, 0
    worst: dict[str, tuple[float, str]] = {}
    for name in dict.fromkeys(c.layer for c in cells if c.op == op):
        by = {c.contender: c for c in cells if c.op == op and c.layer == name and c.ok}
        backends = [c for n, c in by.items() if n in named]
        autos = [by[a] for a in ops.AUTO if a in by]
        if not backends or not autos:
            continue
        best = min(backends, key=lambda c: c.median)
        layers += 1
        parts = []
        for c in autos:
            ratio = auto_ratio(c, best, by)
            within[c.contender] += ratio <= 1 + AUTO_SLACK
            if ratio > worst.get(c.contender, (0.0, ""))[0]:
                worst[c.contender] = (ratio, name)
            parts.append(f"{c.path:<12} {ratio:>5.2f}x")
        tuned = by.get("autotuned")
        first = fmt_time(tuned.first) if tuned and tuned.first is not None else "-"
        every = (f"{fmt_time(tuned.tuning)} ({tuned.tunings})"
                 if tuned and tuned.tuning is not None else "-")
        rows.append(f"{name:<15} {best.contender:<6} {fmt_time(best.median):>10}  "
                    + "  ".join(f"{p:<19}" for p in parts) + f" {first:>10} {every:>14}")
    if not rows:
        return ""
    present = [a for a in ops.AUTO if a in worst]
    head = (f"{'layer':<15} {'fastest':<6} {'median':>10}  "
            + "  ".join(f"{a + ' (x fastest)':<19}" for a in present)
            + f" {'1st tuned':>10} {'all tunings':>14}")
    lines = [f"{op}: auto against the fastest backend of each layer (its time relative to "
             f"the backend it ran, their calls interleaved, times that backend's to the "
             f"fastest over the rounds; < {1 + AUTO_SLACK:.2f}x is the aim); '1st tuned' is "
             f"the first autotuned call, timing every candidate; 'all tunings' what every "
             f"tuning of the layer cost (how many: the first, the second look after "
             f"{_tuning.SECOND_LOOK_AFTER * 1e3:.0f} ms of calls, a re-tune)",
             head, "-" * len(head), *rows]
    lines += [f"{a}: within {AUTO_SLACK:.0%} of the fastest on {within[a]} of {layers} layers, "
              f"worst {worst[a][0]:.2f}x on {worst[a][1]}" for a in present]
    return "\n".join(lines)


# ------------------------------------------------------------------ JSON


def to_json(header: dict, cells: list[Cell]) -> dict:
    return {"format": FORMAT, **header,
            "results": [{**asdict(c), "median": c.median if c.ok else None,
                         "min": c.min if c.ok else None,
                         "spread": c.spread if c.ok else None} for c in cells]}


def save(path, header: dict, cells: list[Cell]) -> None:
    with open(path, "w") as f:
        json.dump(to_json(header, cells), f, indent=1)
        f.write("\n")


def load(path) -> tuple[dict, list[Cell]]:
    """(the header, the cells) of a run saved with --json."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a `python -m fastconv bench --json` file "
                         f"(format {FORMAT!r})")
    fields = Cell.__dataclass_fields__
    cells = [Cell(**{k: v for k, v in r.items() if k in fields}) for r in data["results"]]
    header = {k: v for k, v in data.items() if k != "results"}
    return header, cells


# --------------------------------------------------------------- compare

# Below this a change is not called out even when the repeats agree closely:
# runs on shared machines drift by a few percent between them.
MIN_CHANGE = 0.05
NOISE_FACTOR = 3


def compare(old_header: dict, old: list[Cell], new_header: dict, new: list[Cell]) -> str:
    """Per cell of both runs: old and new median, new speed relative to old, and a
    flag when it is slower (or faster) by more than the noise both runs measured:
    NOISE_FACTOR times the larger spread of the cell's repeats, and at least MIN_CHANGE."""
    lines = [f"compared with the run of {old_header.get('date', '?')} "
             f"(> 1 = faster now; flagged beyond {NOISE_FACTOR}x the cell's spread, "
             f"at least {MIN_CHANGE:.0%})"]
    for key, what in (("machine", "machine"), ("settings", "settings")):
        a, b = old_header.get(key, {}), new_header.get(key, {})
        differs = [k for k in ("cpu", "threads", "dtype", "isa_path") if k in a and k in b
                   and a[k] != b[k]]
        if differs:
            lines.append(f"  note: different {what}: " + ", ".join(
                f"{k} {a[k]} then, {b[k]} now" for k in differs))
    old_by = {(c.op, c.layer, c.contender): c for c in old if c.ok}
    head = (f"{'op':<20} {'layer':<15} {'contender':<9} {'old':>10} {'new':>10} "
            f"{'speed':>7} {'noise':>6}")
    lines += [head, "-" * len(head)]
    slower = faster = 0
    for c in new:
        o = old_by.get((c.op, c.layer, c.contender))
        if o is None or not c.ok:
            continue
        speed = o.median / c.median
        spreads = [s for s in (o.spread, c.spread) if s is not None]
        threshold = max(MIN_CHANGE, NOISE_FACTOR * max(spreads, default=0.0))
        flag = ""
        if c.median / o.median - 1 > threshold:
            flag, slower = "  SLOWER", slower + 1
        elif o.median / c.median - 1 > threshold:
            flag, faster = "  faster", faster + 1
        lines.append(f"{c.op:<20} {c.layer:<15} {c.contender:<9} {fmt_time(o.median):>10} "
                     f"{fmt_time(c.median):>10} {speed:>6.2f}x {threshold:>6.1%}{flag}")
    unmatched = sum(1 for c in new if c.ok and (c.op, c.layer, c.contender) not in old_by)
    lines.append(f"{slower} slower, {faster} faster beyond the noise"
                 + (f"; {unmatched} cells not in the old run" if unmatched else ""))
    return "\n".join(lines)
