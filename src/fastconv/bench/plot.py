"""`--plot FILE.png`: the run as a bar chart (matplotlib, the optional extra fastconv[plot]).

One panel per op: a group of bars per layer, one bar per contender in fixed
colours, the rate (GFLOP/s or GB/s) on a log axis so small and large layers
both read, and the machine's measured limit as a dashed line.
"""

from __future__ import annotations

from . import ops

COLOURS = {"cpp": "#1f77b4", "numba": "#ff7f0e", "numpy": "#2ca02c", "textbook": "#8c8c8c",
           "torch": "#d62728", "torch_cl": "#f4a3a3"}
MISSING = "matplotlib is needed for --plot: pip install 'fastconv[plot]'"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(path, header: dict, cells) -> None:
    """Write the chart of `cells` (report.Cell) to `path` (format from its suffix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    op_names = [op for op in ops.OPS if any(c.op == op and c.ok for c in cells)]
    if not op_names:
        raise ValueError("nothing to plot: no cell finished")
    rows = [(op, list(dict.fromkeys(c.layer for c in cells if c.op == op and c.ok)))
            for op in op_names]
    width = max(8.0, 1.1 * max(len(layers) for _, layers in rows) + 3.5)
    fig = Figure(figsize=(width, 3.6 * len(rows) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    settings, machine = header.get("settings", {}), header.get("machine", {})
    dtype = settings.get("dtype", "float32")
    limits = header.get("limits") or {}
    for ax, (op, layers) in zip(axes, rows):
        mine = [c for c in cells if c.op == op and c.ok]
        names = [n for n in COLOURS if any(c.contender == n for c in mine)]
        names += [n for n in dict.fromkeys(c.contender for c in mine) if n not in names]
        bar = 0.8 / len(names)
        for j, name in enumerate(names):
            xs, ys = [], []
            for i, layer in enumerate(layers):
                for c in mine:
                    if c.layer == layer and c.contender == name:
                        xs.append(i - 0.4 + bar * (j + 0.5))
                        ys.append(c.rate)
            bars = ax.bar(xs, ys, bar, label=name, color=COLOURS.get(name), zorder=2)
            ax.bar_label(bars, [f"{y:.3g}" for y in ys], fontsize=6, rotation=90,
                         padding=2)
        unit = ops.unit(op)
        if ops.limit_kind(op) == "gemm":
            limit = (limits.get("gemm") or {}).get(dtype)
            limit_label = f"{dtype} GEMM peak (NumPy matmul) {limit:.0f} {unit}" if limit else ""
        else:
            limit = limits.get("copy")
            limit_label = f"copy bandwidth {limit:.1f} {unit}" if limit else ""
        if limit:
            ax.axhline(limit, color="black", linestyle="--", linewidth=1, zorder=3,
                       label=limit_label)
        ax.set_yscale("log")
        top = max([c.rate for c in mine] + [limit or 0])
        ax.set_ylim(top=top * 4)
        ax.set_xticks(range(len(layers)), layers, rotation=20, ha="right")
        ax.set_ylabel(f"{unit} (log)")
        ax.set_title(f"{op}, {dtype}, {settings.get('threads', '?')} threads"
                     + (" (bytes read + written)" if unit == "GB/s" else ""), fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3, zorder=0)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    fig.suptitle(f"fastconv {header.get('versions', {}).get('fastconv', '')} bench, "
                 f"{header.get('date', '')[:16].replace('T', ' ')}: {machine.get('cpu', '')}, "
                 f"{machine.get('cpus', '?')} CPUs, ISA path {machine.get('isa_path', '?')}",
                 fontsize=11)
    fig.savefig(path, dpi=110)
