"""The tables as text: markdown per task for a reader (split by machine to fit a screen), or one table as
markdown, CSV or JSON; with the headings and notes that say what the figures are.
"""

from __future__ import annotations

import json
import re
import textwrap

import pandas as pd

from bench.labels import short_schedules
from bench.measurements import STATISTICS
from bench.tables import peer_name, ratio_table, task_tables
from models.errors import UserError

FORMATS = ("markdown", "csv", "json")
TUNED_NOTE = (
    "TVM cells: of the model's n kernels, k run schedules tuned for that machine (tuned k/n), and t more run "
    "schedules transferred from tuned kernels of the same kind (tuned k + transferred t / n); the others run "
    "TVM's default schedules."
)
#: prose lines are wrapped here; a table wider than SCREEN_WIDTH is split by machine.
PROSE_WIDTH = 100
SCREEN_WIDTH = 160


def ratio_title(ratios: pd.DataFrame, statistic: str = "median") -> str:
    """``"TVM/ORT (median time over median time, lower is better)"``, naming every peer of the ratio table."""
    peers = {column.rsplit("/", 1)[1].split(" [")[0] for column in ratios.columns}
    ordered = sorted(peers, key=lambda peer: (peer != peer_name("onnxruntime"), peer))
    what = "memory over memory" if statistic == "memory" else f"{statistic} time over {statistic} time"
    return " and ".join(f"TVM/{peer}" for peer in ordered) + f" ({what}, lower is better)"


def ratio_note(statistic: str = "median") -> str:
    below_one = STATISTICS[statistic][2]
    figure = "peak memory" if statistic == "memory" else statistic
    return f"Each column is TVM's {figure} divided by a peer's on the same machine: below 1.00, {below_one}."


def render(table: pd.DataFrame, fmt: str) -> str:
    """The table as markdown (2 decimals, '–' where nothing was measured), CSV or JSON records."""
    flat = table.reset_index()
    if fmt == "markdown":
        cells = flat.astype(object).where(flat.notna(), None)  # tabulate prints None as missingval, NaN as "nan"
        return cells.to_markdown(index=False, floatfmt=".2f", missingval="–")
    if fmt == "csv":
        return flat.to_csv(index=False)
    if fmt == "json":  # through json.dumps: pandas would escape the "/" of "TVM/ORT"
        return json.dumps(json.loads(flat.to_json(orient="records")), indent=2, ensure_ascii=False)
    raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _render_cells(table: pd.DataFrame) -> str:
    """A table of ready-made strings (NaN: nothing measured, shown as '–') as markdown: models left, figures
    right, no number re-parsed."""
    align = ("left",) + ("right",) * len(table.columns)
    table = table.fillna("–").rename(columns=_screen_header)
    return table.reset_index().to_markdown(index=False, colalign=align, disable_numparse=True)


def _render_ratios(table: pd.DataFrame) -> str:
    """The ratio table as markdown, its headers shortened to fit a screen."""
    return render(table.rename(columns=_screen_header), "markdown")


def _screen_header(label: str) -> str:
    """A column header that fits a screen: the machine without its architecture (its CPU says it) and ONNX
    Runtime as ORT, e.g. ``"x86_64-znver4-2c onnxruntime"`` -> ``"znver4-2c ORT"``."""
    return re.sub(r"^(x86_64|aarch64|armv7l)-", "", label).replace(" onnxruntime", " ORT")


def prose(text: str) -> str:
    return textwrap.fill(text, PROSE_WIDTH, break_on_hyphens=False)


def report(df: pd.DataFrame, left_out: pd.DataFrame | None = None, heading: str = "##",
           width: int = SCREEN_WIDTH) -> str:
    """What a reader takes in: per task, median ms per machine × runtime (TVM cells with their tuned share);
    then the TVM/peer ratios; then what was left out. Tables wider than ``width`` are split by machine."""
    statistic = df.attrs.get("statistic", "median")
    parts = []
    for task, table in task_tables(df).items():
        parts += [f"{heading} {task}: {STATISTICS[statistic][1]}", ""]
        parts += [line for part in _fitting(table, _render_cells, width) for line in (part, "")]
    if df["runtime"].astype(str).str.startswith("tvm").any():
        parts += [prose(TUNED_NOTE), ""]
    ratios = ratio_table(df)
    if not ratios.empty:
        parts += [f"{heading} {ratio_title(ratios, statistic)}", "", prose(ratio_note(statistic)), ""]
        parts += [line for part in _fitting(ratios, _render_ratios, width) for line in (part, "")]
    if left_out is not None and not left_out.empty:
        parts += [prose(left_out_note(left_out)), ""]
    return "\n".join(parts).rstrip("\n")


def _fitting(table: pd.DataFrame, render_table, width: int = SCREEN_WIDTH) -> list[str]:
    """``table`` rendered as one table, or, where that is wider than ``width``, as several with whole
    machines each (a column's label starts with its machine), so that no line leaves a laptop's screen.
    A split table leaves out the models its machines did not measure (NaN in all its columns)."""
    whole = render_table(table)
    if max(map(len, whole.splitlines())) <= width:
        return [whole]
    machines = list(dict.fromkeys(str(column).split(" ")[0] for column in table.columns))
    parts, group = [], []
    for machine in machines:
        candidate = group + [c for c in table.columns if str(c).split(" ")[0] == machine]
        rendered = render_table(table[candidate].dropna(how="all"))
        if group and max(map(len, rendered.splitlines())) > width:
            parts.append(render_table(table[group].dropna(how="all")))
            group = [c for c in table.columns if str(c).split(" ")[0] == machine]
        else:
            group = candidate
    parts.append(render_table(table[group].dropna(how="all")))
    return parts


def left_out_note(left_out: pd.DataFrame) -> str:
    """One sentence: how many TVM measurements older schedules account for, and which databases."""
    dbs = left_out.groupby("hardware")["schedules"].agg(lambda s: ", ".join(sorted(map(short_schedules, set(s)))))
    where = "; ".join(f"{hw}: {names}" for hw, names in dbs.items())
    return (f"Left out: {len(left_out)} TVM measurement(s) made with a machine's older schedules ({where}); "
            "`mnv2bench compare --all-schedules` shows them.")
