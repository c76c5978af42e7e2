"""The end of ``mnv2bench run`` (``make bench``): what this run measured, one row per model, 100 columns.

The full cross-machine tables are ``mnv2bench compare``'s job; this summary answers the question a run
leaves: how fast was TVM here, against which peer, and how much of it was tuned.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from bench.measurements import load_results
from bench.readme import peer_title
from bench.tables import kernel_share

#: short column names, so that four peers fit 100 columns; the legend below the table spells them out.
SHORT = {"onnxruntime": "ORT", "openvino": "OV", "executorch": "ET", "torch": "torch", "torch-cudagraph": "torch+g"}
LEGEND = {short: peer_title(runtime) for runtime, short in SHORT.items() if short != runtime}
NOTES = ("TVM/best: TVM's median over the fastest peer's, same machine and run (below 1.00, TVM is faster). "
         "kernels: tuned + transferred / all of TVM's kernels; the rest run default schedules.")


def run_summary(run_json: Path) -> str:
    """A table of one run's medians (ms): model, TVM with its tuned share, each peer, TVM over the fastest
    peer; then how many TVM libraries were compiled and how many came from the cache."""
    df = load_results([run_json])
    if df.empty:
        return "this run measured nothing"
    rows = [_model_row(model, on_model) for model, on_model in df.groupby("model", sort=False)]
    table = pd.DataFrame(rows).set_index("model").dropna(axis=1, how="all").fillna("–")
    legend = ", ".join(f"{short} = {LEGEND[short]}" for short in table.columns if short in LEGEND)
    lines = [f"This run on {df['hardware'].iloc[0]}, median ms:", "", _render(table), ""]
    lines += textwrap.wrap(NOTES + (f" {legend}." if legend else ""), 100)
    lines.append(_library_line(df))
    return "\n".join(lines)


def _model_row(model: str, rows: pd.DataFrame) -> dict:
    medians = dict(zip(rows["runtime"], rows["median_ms"]))
    row: dict = {"model": model}
    tvm = rows[rows["runtime"] == "tvm"]
    if not tvm.empty:
        row["TVM"] = f"{tvm['median_ms'].iloc[0]:.2f}"
        row["kernels"] = kernel_share(*tvm[["tuned", "transferred", "tasks"]].iloc[0]) or None
    peers = {r: ms for r, ms in medians.items() if not r.startswith("tvm")}
    row |= {SHORT.get(r, r): f"{ms:.2f}" for r, ms in peers.items()}
    if "tvm" in medians and peers:
        best = min(peers, key=peers.get)
        row["TVM/best"] = f"{medians['tvm'] / peers[best]:.2f} {SHORT.get(best, best)}"
    return row


def _render(table: pd.DataFrame) -> str:
    align = ("left",) + ("right",) * len(table.columns)
    return table.to_markdown(tablefmt="simple", colalign=align, disable_numparse=True)


def _library_line(df: pd.DataFrame) -> str:
    """"TVM libraries: 0 compiled, 3 reused from the cache" (from each TVM result's ``library_cached``)."""
    cached = df.loc[df["runtime"].astype(str).str.startswith("tvm"), "library_cached"]
    if cached.empty:
        return ""
    reused = int(cached.fillna(False).astype(bool).sum())
    return f"TVM libraries: {len(cached) - reused} compiled, {reused} reused from the cache (--no-cache to rebuild)."
