"""The latency-vs-MAdds plot: one panel per machine, the paper's Pixel 1 figures in grey."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.measurements import STATISTICS
from bench.tables import TASK_ORDER, label_order, latest_measurements, task_rank
from models.files import replace_atomically


def plot_latency_vs_madds(df: pd.DataFrame, path: Path) -> Path:
    """Latency against multiply-adds: one panel per machine, one colour per runtime (the same in every
    panel), one marker per task, and the paper's Pixel 1 figures in grey, so each machine reads alone.

    Uses a bare ``Figure`` (Agg canvas) rather than pyplot: no global state, no display needed.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    latest = latest_measurements(df)
    machines = sorted(latest["hardware"].unique())
    labels = label_order(df)
    runtimes = list(dict.fromkeys(latest.set_index("label").loc[labels, "runtime"].astype(str)))
    colours = {runtime: f"C{i}" for i, runtime in enumerate(runtimes)}
    markers = dict(zip(TASK_ORDER, "osD"))
    columns = min(len(machines), 3)
    rows = -(-len(machines) // columns)
    fig = Figure(figsize=(5 * columns + 2, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    paper = df.drop_duplicates("model").dropna(subset=["paper_pixel1_ms"])
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # "300", not "3×10²"
    for ax, machine in zip(axes, machines):
        on_machine = latest[latest["hardware"] == machine]
        for (label, task), points in on_machine.groupby(["label", "task"], sort=False):
            runtime = str(points["runtime"].iloc[0])
            ax.plot(points["madds"] / 1e6, points["value"], ls="", marker=markers.get(task, "^"),
                    color=colours[runtime], alpha=0.85, label=f"{runtime} · {task}")
        if not paper.empty:
            x = paper["paper_madds_m"].astype(float).fillna(paper["madds"] / 1e6)
            ax.plot(x, paper["paper_pixel1_ms"].astype(float), ls="", marker="*", color="0.6",
                    label="paper: Pixel 1, TF-Lite")
        ax.set(xscale="log", yscale="log", title=machine)
        ax.grid(True, which="both", alpha=0.3)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())  # minor labels collide on a log axis
    for ax in axes[len(machines):]:
        ax.set_visible(False)
    fig.supxlabel("multiply-adds (millions)")
    fig.supylabel(STATISTICS[df.attrs.get("statistic", "median")][1])
    handles = {}
    for ax in axes[: len(machines)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    order = sorted(handles, key=lambda label: (label.startswith("paper"), *_legend_rank(label, runtimes)))
    fig.legend([handles[label] for label in order], order, loc="outside right upper", fontsize="small")
    return replace_atomically(path, lambda staged: fig.savefig(staged, format="png", dpi=110))


def _legend_rank(label: str, runtimes: list[str]) -> tuple[int, int]:
    runtime, _, task = label.partition(" · ")
    return (runtimes.index(runtime) if runtime in runtimes else len(runtimes), task_rank(task))
