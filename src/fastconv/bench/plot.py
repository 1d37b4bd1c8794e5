"""`--plot FILE.png`: the run as a bar chart (matplotlib, the optional extra fastconv[plot]).

One panel per op: a group of bars per layer, one bar per contender in fixed
colours, the rate (GFLOP/s or GB/s) on a log axis so small and large layers
both read, and the machine's measured limit as a dashed line.
"""

from __future__ import annotations

from . import ops

COLOURS = {"cpp": "#1f77b4", "numba": "#ff7f0e", "numpy": "#2ca02c", "textbook": "#8c8c8c",
           "torch": "#d62728", "torch_cl": "#f4a3a3"}
FLOOR_DECADES = 3
MISSING = "matplotlib is needed for --plot: pip install 'fastconv[plot]'"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(path, header: dict, cells) -> None:
    """Write the chart of `cells` (report.Cell) to `path` (format from its suffix).

    Convolution-table ops get a full-width panel each; the pooling ops, with
    few cases each, share the last row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    op_names = [op for op in ops.OPS if any(c.op == op and c.ok for c in cells)]
    if not op_names:
        raise ValueError("nothing to plot: no cell finished")
    wide = [op for op in op_names if op in ops.CONV_OPS]
    narrow = [op for op in op_names if op not in ops.CONV_OPS]
    n_rows = len(wide) + (1 if narrow else 0)
    n_cols = max(1, len(narrow))
    width = 16.0 if wide else max(8.0, 4.5 * n_cols)
    fig = Figure(figsize=(width, 3.8 * n_rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows, n_cols)
    panels = [(op, fig.add_subplot(grid[i, :])) for i, op in enumerate(wide)]
    panels += [(op, fig.add_subplot(grid[n_rows - 1, j])) for j, op in enumerate(narrow)]
    settings, machine = header.get("settings", {}), header.get("machine", {})
    for op, ax in panels:
        _panel(ax, op, [c for c in cells if c.op == op and c.ok], header)
    # a legend per wide panel; one for the whole row of narrow ones, on its right
    legends = [[ax] for op, ax in panels if op in wide]
    legends += [[ax for op, ax in panels if op in narrow]] if narrow else []
    for axes in legends:
        entries = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(label, handle)
        axes[-1].legend(entries.values(), entries.keys(), fontsize=8, loc="upper left",
                        bbox_to_anchor=(1.005, 1.0), frameon=False)
    fig.suptitle(f"fastconv {header.get('versions', {}).get('fastconv', '')} bench, "
                 f"{header.get('date', '')[:16].replace('T', ' ')} UTC: "
                 f"{machine.get('cpu', '')}, {machine.get('cpus', '?')} CPUs, ISA path "
                 f"{machine.get('isa_path', '?')}, {settings.get('threads', '?')} threads, "
                 f"{settings.get('dtype', 'float32')}", fontsize=11)
    fig.savefig(path, dpi=100)


def _panel(ax, op: str, mine, header: dict) -> None:
    dtype = header.get("settings", {}).get("dtype", "float32")
    limits = header.get("limits") or {}
    layers = list(dict.fromkeys(c.layer for c in mine))
    names = [n for n in COLOURS if any(c.contender == n for c in mine)]
    names += [n for n in dict.fromkeys(c.contender for c in mine) if n not in names]
    unit = ops.unit(op)
    if ops.limit_kind(op) == "gemm":
        limit = (limits.get("gemm") or {}).get(dtype)
        label = f"{dtype} GEMM peak\n(NumPy matmul) {limit:.0f} {unit}" if limit else ""
    else:
        limit = limits.get("copy")
        label = f"copy bandwidth\n{limit:.1f} {unit}" if limit else ""
    # The axis spans FLOOR_DECADES below the limit; slower bars are cut, their value
    # written at the bottom, so a tiny layer does not squash the rest.
    rates = [c.rate for c in mine]
    floor = max(min(rates) / 2, (limit or max(rates)) / 10**FLOOR_DECADES)
    ax.set_yscale("log")
    ax.set_ylim(floor, max(rates + [limit or 0]) * 5)
    bar = 0.8 / len(names)
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, layer in enumerate(layers):
            for c in mine:
                if c.layer == layer and c.contender == name:
                    xs.append(i - 0.4 + bar * (j + 0.5))
                    ys.append(c.rate)
        bars = ax.bar(xs, ys, bar, label=name, color=COLOURS.get(name), zorder=2)
        ax.bar_label(bars, [f"{y:.3g}" if y >= floor else "" for y in ys], fontsize=6,
                     rotation=90, padding=2)
        for x, y in zip(xs, ys):
            if y < floor:
                ax.text(x, floor * 1.15, f"{y:.2g}", fontsize=6, rotation=90,
                        ha="center", va="bottom", color=COLOURS.get(name, "black"))
    if limit:
        ax.axhline(limit, color="black", linestyle="--", linewidth=1, zorder=3, label=label)
    ax.set_xticks(range(len(layers)), layers, rotation=20, ha="right")
    ax.set_ylabel(f"{unit} (log)")
    ax.set_title(op + (" (bytes read + written)" if unit == "GB/s" else ""), fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3, zorder=0)
