"""``mnv2bench compare``: pytest-benchmark JSON files from many machines → per-task tables, a plot, results/README.

The harness writes standard ``pytest --benchmark-json`` files; our facts ride in each benchmark's
``extra_info`` and the machine's in ``machine_info``. Nothing here re-measures or re-computes statistics:
the harness's median is the figure we publish. Ratios go one way only, TVM over its peer (time over time,
lower is better), and the paper's figures are always labelled as the paper's.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.errors import UserError
from models.files import replace_atomically, write_text_atomically

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
FORMATS = ("markdown", "csv", "json")
TASK_ORDER = ("classification", "detection", "segmentation")
RUNTIME_ORDER = ("tvm", "tvm-untuned", "onnxruntime", "openvino", "executorch", "torch", "torch-cudagraph")
#: how a peer runtime is named in a ratio column ("TVM/ORT").
PEER_NAMES = {"onnxruntime": "ORT", "openvino": "OpenVINO", "executorch": "ExecuTorch", "torch-cudagraph": "torch+graphs"}
#: extra_info fields without which a row can't be placed in the table.
REQUIRED_EXTRA = ("model", "task", "runtime", "params", "madds")
#: fields whose differing values within one hardware+runtime make separate columns (see ``column_label``).
BUILD_FIELDS = ("tvm_version", "schedules", "runtime_version", "threads")
PAPER_FIELDS = ("accuracy", "metric", "params_m", "madds_m", "pixel1_ms")
PAPER_NOTE = (
    "Columns named *paper* come from the paper (Sandler et al., MobileNetV2, CVPR 2018, arXiv:1801.04381; "
    "Pixel 1 = one big core of a Google Pixel 1 running TF-Lite). Every other number was measured by this "
    "repository's harness (pytest-benchmark medians) on the machines listed below."
)
TUNED_NOTE = (
    "TVM cells: of the model's n kernels, k run schedules tuned for that machine (tuned k/n), and t more run "
    "schedules transferred from tuned kernels of the same kind (tuned k + transferred t / n); the others run "
    "TVM's default schedules."
)
#: what ``compare --statistic`` can tabulate: the result column, its heading, and what a ratio below 1 means.
STATISTICS = {
    "median": ("median_ms", "median latency (ms)", "TVM is faster"),
    "p90": ("p90_ms", "90th-percentile latency (ms)", "TVM is faster"),
    "p99": ("p99_ms", "99th-percentile latency (ms)", "TVM is faster"),
    "memory": ("peak_memory_mib", "peak memory: loading and one inference (MiB, resident-set rise)", "TVM needs less"),
}
#: prose lines are wrapped here; a table wider than SCREEN_WIDTH is split by machine.
PROSE_WIDTH = 100
SCREEN_WIDTH = 160


class ResultFileError(UserError):
    """A result file that can't be read as mnv2bench's pytest-benchmark output.

    A ``UserError`` so the command line prints one line naming the file instead of a traceback.
    """


@dataclass(frozen=True)
class Selection:
    """What ``compare`` shows: models (names, groups, globs), runtimes and machines (names or globs), and
    whether TVM measurements made with a machine's older schedule databases are shown too."""

    models: Sequence[str] = ()
    runtimes: Sequence[str] = ()
    machines: Sequence[str] = ()
    all_schedules: bool = False
    statistic: str = "median"  # a key of STATISTICS

    @property
    def is_default(self) -> bool:
        """Everything, newest schedules only, medians: the view that results/README.md publishes."""
        return not (self.models or self.runtimes or self.machines or self.all_schedules) and self.statistic == "median"


# --- loading ----------------------------------------------------------------------------------------
def load_results(paths: Sequence[Path]) -> pd.DataFrame:
    """One row per published benchmark of the given files, latencies in ms, labelled for the table.

    Emulated measurements (a board under QEMU) prove the build runs, not how fast: they are dropped
    here, with a logged note, so no later step can publish them.
    """
    rows = [row for path in paths for row in _file_rows(Path(path))]
    df = pd.DataFrame(rows, columns=_COLUMNS)
    emulated = df["emulated"].astype(bool)
    if emulated.any():
        log.warning("left out %d emulated measurement(s): emulated latencies are never published", emulated.sum())
    return with_statistic(_with_labels(df[~emulated].reset_index(drop=True)), "median")


def with_statistic(df: pd.DataFrame, statistic: str) -> pd.DataFrame:
    """``df`` with ``value``, the column the tables show, set to ``statistic``'s (a key of STATISTICS);
    ``df.attrs["statistic"]`` names it for headings."""
    if statistic not in STATISTICS:
        raise UserError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    out = df.assign(value=df[STATISTICS[statistic][0]].astype(float))
    out.attrs["statistic"] = statistic
    return out


_COLUMNS = [
    "file", "datetime", "hardware", "cpu_model", "cores", "gpu", "model", "task", "resolution", "runtime",
    "runtime_version", "tvm_version", "tvm_target", "schedules", "threads", "device", "emulated",
    "latency_source", "median_ms", "mean_ms", "stddev_ms", "iqr_ms", "p90_ms", "p99_ms", "peak_memory_mib",
    "rounds", "params", "madds",
    "tuned", "transferred", "tasks", "library_cached", *(f"paper_{f}" for f in PAPER_FIELDS),
]


def _read_json(path: Path) -> dict:
    """The file's pytest-benchmark document, or a one-line ``ResultFileError`` naming the file."""
    if not path.is_file():
        raise ResultFileError(f"{path}: no such result file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise ResultFileError(f"{path}: not pytest-benchmark output (no 'benchmarks' list)")
    if not isinstance(doc.get("machine_info"), dict):
        raise ResultFileError(f"{path}: not pytest-benchmark output (no 'machine_info')")
    return doc


def _file_rows(path: Path) -> list[dict]:
    doc = _read_json(path)
    machine = doc["machine_info"]
    return [_row(path, doc, machine, bench) for bench in doc["benchmarks"]]


def _percentile_s(extra: dict, stats: dict, percentile: int) -> float | None:
    """The percentile the harness recorded; for files older than that, computed as the harness does from
    the rounds pytest-benchmark stored (``stats.data``); None where neither is there."""
    recorded = extra.get(f"latency_p{percentile}_s")
    if recorded is not None:
        return recorded
    rounds = stats.get("data")
    return float(np.percentile(rounds, percentile)) if rounds else None


def _row(path: Path, doc: dict, machine: dict, bench: dict) -> dict:
    """Flatten one benchmark entry; seconds become milliseconds. A row's date is its own run's where the
    file records it (``extra_info["datetime"]``, see ``bench.results``), else the file's."""
    name = bench.get("name", "?") if isinstance(bench, dict) else "?"
    extra = (bench.get("extra_info") or {}) if isinstance(bench, dict) else {}
    missing = [f for f in REQUIRED_EXTRA if extra.get(f) is None]
    if missing:
        raise ResultFileError(
            f"{path}: benchmark {name!r} lacks extra_info {', '.join(missing)} (not written by mnv2bench's harness)"
        )
    hardware = extra.get("hardware") or machine.get("hardware")
    stats = bench.get("stats") or {}
    if not hardware or stats.get("median") is None:
        what = "a hardware name" if not hardware else "stats.median"
        raise ResultFileError(f"{path}: benchmark {name!r} has no {what}")
    paper = extra.get("paper") or {}
    shape = extra.get("input_shape") or [None]
    ms = {f"{k}_ms": _ms(stats.get(k)) for k in ("median", "mean", "stddev", "iqr")}
    ms |= {f"p{p}_ms": _ms(_percentile_s(extra, stats, p)) for p in (90, 99)}
    return {
        "file": path.name, "datetime": extra.get("datetime") or doc.get("datetime"), "hardware": hardware,
        "cpu_model": machine.get("cpu_model") or (machine.get("cpu") or {}).get("brand_raw"),
        "cores": machine.get("cores"), "gpu": machine.get("gpu"),
        **{k: extra.get(k) for k in ("model", "task", "runtime", "runtime_version", "tvm_version", "tvm_target",
                                     "schedules", "threads", "device", "latency_source", "params", "madds")},
        "resolution": shape[-1], "emulated": bool(extra.get("emulated", False)),
        **ms, "peak_memory_mib": extra.get("peak_memory_mib"), "rounds": stats.get("rounds"), **kernel_counts(extra),
        "library_cached": extra.get("library_cached"),
        **({"model": f"{extra['model']} batch {extra['batch']}"} if extra.get("batch", 1) > 1 else {}),
        **{f"paper_{f}": paper.get(f) for f in PAPER_FIELDS},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


_NOTES = re.compile(r"(\d+) tuned, (\d+) transferred, \d+ default of (\d+) kernels")
_OLD_NOTES = re.compile(r"(\d+)/(\d+) tasks tuned")


def kernel_counts(extra: dict) -> dict:
    """Kernels tuned, transferred and in all: from ``extra_info["kernels"]``, or from the notes of files
    written before it existed ("34/34 tasks tuned": those predate transfer). None where nothing says."""
    kernels = extra.get("kernels")
    if isinstance(kernels, dict) and kernels.get("tasks") is not None:
        return {"tuned": kernels.get("tuned", 0), "transferred": kernels.get("transferred", 0),
                "tasks": kernels["tasks"]}
    notes = str(extra.get("notes") or "")
    if match := _NOTES.search(notes):
        return dict(zip(("tuned", "transferred", "tasks"), map(int, match.groups())))
    if match := _OLD_NOTES.search(notes):
        return {"tuned": int(match[1]), "transferred": 0, "tasks": int(match[2])}
    return {"tuned": None, "transferred": None, "tasks": None}


def tuned_share(tuned, transferred, tasks) -> str:
    """``"tuned 34/34"``, or ``"tuned 0 + transferred 32 / 34"`` where schedules were transferred; "" if unknown."""
    if tasks is None or pd.isna(tasks):
        return ""
    transferred = 0 if transferred is None or pd.isna(transferred) else int(transferred)
    if transferred:
        return f"tuned {int(tuned)} + transferred {transferred} / {int(tasks)}"
    return f"tuned {int(tuned)}/{int(tasks)}"


# --- choosing what to show --------------------------------------------------------------------------
def select(df: pd.DataFrame, selection: Selection = Selection()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the measurements to show, relabelled; the TVM ones left out for older schedules).

    A machine's newest schedules are decided over all its measurements, before the filters, so that
    ``--models`` never passes off an older database as the newest.
    """
    older = pd.Series(False, index=df.index) if selection.all_schedules else older_schedules(df)
    chosen = _chosen(df, selection)
    shown = df[chosen & ~older].reset_index(drop=True)
    if shown.empty:
        raise UserError("no measurements match the given --models, --runtimes and --machines")
    shown = with_statistic(_with_labels(shown), selection.statistic)
    if shown["value"].isna().all():
        raise UserError(f"none of the selected results records the {selection.statistic} (older result files "
                        "lack it): benchmark again, or choose another --statistic")
    return shown, df[chosen & older].reset_index(drop=True)


def _chosen(df: pd.DataFrame, selection: Selection) -> pd.Series:
    keep = pd.Series(True, index=df.index)
    if selection.models:
        keep &= df["model"].isin(match_models(selection.models, df["model"].unique()))
    if selection.runtimes:
        keep &= df["runtime"].isin(_match(selection.runtimes, df["runtime"].unique(), "runtime"))
    if selection.machines:
        keep &= df["hardware"].isin(_match(selection.machines, df["hardware"].unique(), "machine"))
    return keep


def match_models(names: Sequence[str], in_results: Sequence[str]) -> list[str]:
    """Registered models that the names, groups or globs resolve to, plus models of the result files they
    match (a file may hold a model the registry no longer has). A name that matches neither is an error."""
    from models.registry import resolve_names

    out: list[str] = []
    for name in names:
        try:
            registered = resolve_names([name])
        except UserError:
            registered = []
        found = registered + fnmatch.filter(in_results, name)
        if not found:
            raise UserError(f"no model matches {name!r}, neither in the registry nor in the result files")
        out += [m for m in found if m not in out]
    return out


def _match(patterns: Sequence[str], values: Sequence[str], what: str) -> list[str]:
    """The values each name or glob matches; one that matches nothing is an error listing the choices."""
    out: list[str] = []
    for pattern in patterns:
        found = fnmatch.filter(values, pattern)
        if not found:
            raise UserError(f"no {what} matches {pattern!r}; the result files have {', '.join(sorted(values))}")
        out += found
    return out


def older_schedules(df: pd.DataFrame) -> pd.Series:
    """True for TVM measurements whose schedules are not the newest of their machine and runtime."""
    tvm = df["runtime"].astype(str).str.startswith("tvm") & df["schedules"].notna()
    older = pd.Series(False, index=df.index)
    for _, rows in df[tvm].groupby(["hardware", "runtime"], sort=False):
        older[rows.index] = rows["schedules"] != newest_schedules(rows)
    return older


def newest_schedules(rows: pd.DataFrame) -> str:
    """The schedules of the newest measurement; among equally dated ones, the database with the larger tuned
    share (older files date every row with the file's date, and a database's tuned share only grows); last,
    the one that comes later."""
    share = rows["tuned"].astype(float) / rows["tasks"].astype(float)
    keyed = rows.assign(date=rows["datetime"].fillna("").astype(str), share=share.fillna(-1.0),
                        position=range(len(rows)))
    per_db = keyed.groupby("schedules").agg(date=("date", "max"), share=("share", "mean"),
                                            position=("position", "max"))
    return per_db.sort_values(["date", "share", "position"]).index[-1]


# --- column labels ----------------------------------------------------------------------------------
def column_label(row: pd.Series | dict, varying: Sequence[str] = ()) -> str:
    """The table column a measurement goes to: ``"<hardware> <runtime>"``.

    ``varying`` names the build fields (``BUILD_FIELDS``) that differ among the shown measurements
    of this hardware+runtime; they are appended in brackets (``"x86_64-znver4-2c tvm [0.27.0 @1a2b3c]"``)
    so that two TVM versions or two schedule databases never share a column and get silently mixed.
    """
    suffix = _build_suffix(row, varying)
    return f"{row['hardware']} {row['runtime']}" + (f" [{suffix}]" if suffix else "")


def _build_suffix(row: pd.Series | dict, varying: Sequence[str]) -> str:
    if not varying:
        return ""
    is_tvm = str(row["runtime"]).startswith("tvm")
    parts: list[str] = []
    if is_tvm and ({"tvm_version", "schedules"} & set(varying)):
        parts += [str(row["tvm_version"]), _short_schedules(row["schedules"])]
    if "runtime_version" in varying and not (is_tvm and row["runtime_version"] == row["tvm_version"]):
        parts.append(str(row["runtime_version"]))
    if "threads" in varying:
        parts.append(f"{row['threads']} threads")
    return " ".join(p for p in parts if p and p not in ("None", "nan"))


def _short_schedules(schedules: str | None) -> str:
    """``"x86_64-linux-gnu-znver4@1a2b3c4d5e6f"`` → ``"@1a2b3c"``: the database's hash names it."""
    if not schedules or pd.isna(schedules):
        return ""
    return "@" + schedules.split("@", 1)[1][:6] if "@" in schedules else str(schedules)


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with per row the bracketed build suffix ("" unless mixed) and the full column label; decided
    over the rows given, so that a filter that leaves one database unmixes its column."""
    builds, labels = pd.Series("", index=df.index, dtype=object), pd.Series("", index=df.index, dtype=object)
    for _, group in df.groupby(["hardware", "runtime"], sort=False):
        varying = [f for f in BUILD_FIELDS if group[f].astype(str).nunique() > 1]
        for i, row in group.iterrows():
            builds[i], labels[i] = _build_suffix(row, varying), column_label(row, varying)
    return df.assign(build=builds, label=labels)


# --- the tables -------------------------------------------------------------------------------------
def _model_order(df: pd.DataFrame) -> list[str]:
    """Classification by width then resolution (both descending, as the paper lists them), then detection,
    then segmentation; anything else in order of first appearance."""
    first = {m: i for i, m in reversed(list(enumerate(df["model"])))}
    facts = df.drop_duplicates("model").set_index("model")

    def key(model: str) -> tuple:
        width = re.search(r"_(\d+(?:\.\d+)?)_\d+$", model)
        res = facts.at[model, "resolution"]
        return (_task_rank(facts.at[model, "task"]), -float(width[1]) if width else 0.0,
                -float(res) if pd.notna(res) else 0.0, first[model])

    return sorted(first, key=key)


def _task_rank(task: str) -> int:
    return TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)


def _label_order(df: pd.DataFrame) -> list[str]:
    labels = df.drop_duplicates("label")

    def key(row) -> tuple:
        rank = RUNTIME_ORDER.index(row.runtime) if row.runtime in RUNTIME_ORDER else len(RUNTIME_ORDER)
        return (row.hardware, rank, row.label)

    return [row.label for row in sorted(labels.itertuples(), key=key)]


def _paper_columns(df: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    facts = df.drop_duplicates("model").set_index("model").reindex(models)
    return pd.DataFrame(
        {
            "task": facts["task"],
            "paper accuracy": facts["paper_accuracy"].astype(float),
            "metric": facts["paper_metric"],
            "params (M)": facts["params"].astype(float) / 1e6,
            "paper params (M)": facts["paper_params_m"].astype(float),
            "MAdds (M)": facts["madds"].astype(float) / 1e6,
            "paper MAdds (M)": facts["paper_madds_m"].astype(float),
            "paper Pixel 1 (ms)": facts["paper_pixel1_ms"].astype(float),
        }
    )


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """One measurement per model and column: a rerun (a newer file) replaces the older one."""
    ordered = df.sort_values("datetime", kind="stable", na_position="first")
    dropped = len(ordered) - len(latest := ordered.drop_duplicates(["model", "label"], keep="last"))
    if dropped:
        log.info("kept the newest of repeated measurements (%d older one(s) left out)", dropped)
    return latest


def _by_model(df: pd.DataFrame, values: str, labels: list[str]) -> pd.DataFrame:
    """Models (in the paper's order) × the given column labels, from the newest measurement of each."""
    table = _latest(df).pivot(index="model", columns="label", values=values)
    table = table.reindex(index=_model_order(df), columns=labels)
    table.index.name, table.columns.name = "model", None
    return table


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Models × machine-runtime columns: the chosen statistic (median ms unless ``with_statistic`` chose
    another); index = model."""
    if df.empty:
        raise UserError("no published measurements to tabulate")
    return _by_model(df, "value", _label_order(df))


def tuned_table(df: pd.DataFrame) -> pd.DataFrame:
    """Models × TVM columns: how much of each TVM measurement was tuned ("tuned 34/34"; "" if unknown)."""
    shares = df.assign(share=[tuned_share(*r) for r in df[["tuned", "transferred", "tasks"]].itertuples(index=False)])
    tvm = set(df.loc[df["runtime"].astype(str).str.startswith("tvm"), "label"])
    return _by_model(shares, "share", [label for label in _label_order(df) if label in tvm]).fillna("")


def ratio_table(df: pd.DataFrame) -> pd.DataFrame:
    """Models × ``"<machine> TVM/<peer>"``: TVM's figure (median unless another statistic was chosen) over
    each peer's on the same machine, lower is better. Models without any ratio are left out."""
    latency = latency_table(df)
    columns = df.drop_duplicates("label").set_index("label").loc[_label_order(df)]
    out = {}
    for hardware, on_hw in columns.groupby("hardware", sort=True):
        peers = on_hw[~on_hw["runtime"].astype(str).str.startswith("tvm")]
        for tvm_label, tvm in on_hw[on_hw["runtime"] == "tvm"].iterrows():
            for peer_label, peer in peers.iterrows():
                ratio = latency[tvm_label] / latency[peer_label]
                out[_ratio_label(hardware, tvm, peer)] = ratio.where(latency[peer_label] > 0)  # 0 MiB: no ratio
    return pd.DataFrame(out, index=latency.index).dropna(how="all")


def _ratio_label(hardware: str, tvm: pd.Series, peer: pd.Series) -> str:
    """``"x86_64-znver4-2c TVM/ORT"``, with the bracketed builds where a machine has several."""
    def side(name: str, build: str) -> str:
        return name + (f" [{build}]" if build else "")

    return f"{hardware} {side('TVM', tvm['build'])}/{side(peer_name(peer['runtime']), peer['build'])}"


def peer_name(runtime: str) -> str:
    return PEER_NAMES.get(runtime, runtime)


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


def data_table(df: pd.DataFrame) -> pd.DataFrame:
    """Everything per model, for CSV and JSON: the paper's figures, the chosen statistic, the tuned shares, the
    ratios."""
    latency = latency_table(df)
    parts = [_paper_columns(df, list(latency.index)), latency, tuned_table(df).add_suffix(" tuned"), ratio_table(df)]
    table = pd.concat(parts, axis=1).reindex(latency.index)
    table.index.name = "model"
    return table


def task_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task, models × columns as shown to a reader: the statistic (median ms), with its tuned share in TVM cells.
    Columns that measured none of a task's models are left out of its table."""
    latency, tuned = latency_table(df), tuned_table(df)
    cells = latency.apply(lambda col: col.map(lambda v: "–" if pd.isna(v) else f"{v:.2f}"))
    for label in tuned.columns:
        marked = (tuned[label] != "") & latency[label].notna()
        cells.loc[marked, label] += " (" + tuned.loc[marked, label] + ")"
    task_of = df.drop_duplicates("model").set_index("model")["task"].reindex(latency.index)
    tables = {}
    for task in sorted(task_of.unique(), key=_task_rank):
        rows = task_of == task
        tables[task] = cells.loc[rows, latency.loc[rows].notna().any()]
    return tables


# --- output -----------------------------------------------------------------------------------------
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
    """A table of ready-made strings as markdown: models left, figures right, no number re-parsed."""
    align = ("left",) + ("right",) * len(table.columns)
    table = table.rename(columns=_screen_header)
    return table.reset_index().to_markdown(index=False, colalign=align, disable_numparse=True)


def _screen_header(label: str) -> str:
    """A column header that fits a screen: the machine without its architecture (its CPU says it) and ONNX
    Runtime as ORT, e.g. ``"x86_64-znver4-2c onnxruntime"`` -> ``"znver4-2c ORT"``."""
    return re.sub(r"^(x86_64|aarch64|armv7l)-", "", label).replace(" onnxruntime", " ORT")


def _prose(text: str) -> str:
    return textwrap.fill(text, PROSE_WIDTH, break_on_hyphens=False)


def report(df: pd.DataFrame, left_out: pd.DataFrame | None = None, heading: str = "##") -> str:
    """What a reader takes in: per task, median ms per machine × runtime (TVM cells with their tuned share);
    then the TVM/peer ratios; then what was left out."""
    statistic = df.attrs.get("statistic", "median")
    parts = []
    for task, table in task_tables(df).items():
        parts += [f"{heading} {task}: {STATISTICS[statistic][1]}", ""]
        parts += [line for part in _fitting(table, _render_cells) for line in (part, "")]
    if df["runtime"].astype(str).str.startswith("tvm").any():
        parts += [_prose(TUNED_NOTE), ""]
    ratios = ratio_table(df)
    if not ratios.empty:
        parts += [f"{heading} {ratio_title(ratios, statistic)}", "", _prose(ratio_note(statistic)), ""]
        parts += [line for part in _fitting(ratios, lambda t: render(t.rename(columns=_screen_header), "markdown")) for line in (part, "")]
    if left_out is not None and not left_out.empty:
        parts += [_prose(left_out_note(left_out)), ""]
    return "\n".join(parts).rstrip("\n")


def _fitting(table: pd.DataFrame, render_table, width: int = SCREEN_WIDTH) -> list[str]:
    """``table`` rendered as one table, or, where that is wider than ``width``, as several with whole
    machines each (a column's label starts with its machine), so that no line leaves a laptop's screen."""
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
    dbs = left_out.groupby("hardware")["schedules"].agg(lambda s: ", ".join(sorted(map(_short_schedules, set(s)))))
    where = "; ".join(f"{hw}: {names}" for hw, names in dbs.items())
    return (f"Left out: {len(left_out)} TVM measurement(s) made with a machine's older schedules ({where}); "
            "`mnv2bench compare --all-schedules` shows them.")


def plot_latency_vs_madds(df: pd.DataFrame, path: Path) -> Path:
    """Latency against multiply-adds: one panel per machine, one colour per runtime (the same in every
    panel), one marker per task, and the paper's Pixel 1 figures in grey, so each machine reads alone.

    Uses a bare ``Figure`` (Agg canvas) rather than pyplot: no global state, no display needed.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    latest = _latest(df)
    machines = sorted(latest["hardware"].unique())
    labels = _label_order(df)
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
    return (runtimes.index(runtime) if runtime in runtimes else len(runtimes), _task_rank(task))


def _machine_section(hardware: str, rows: pd.DataFrame) -> str:
    """A hardware's facts (from its rows, not from this host) and, per column, how it was built: a list,
    not a table, so that long targets and database names wrap instead of widening the page."""

    def one(col: str) -> str:
        values = rows[col].dropna().astype(str).unique()
        return ", ".join(values) if len(values) else "–"

    lines = [f"### {hardware}", "", f"- CPU: {one('cpu_model')}, {one('cores')} cores; GPU: {one('gpu')}",
             f"- files: {one('file')}", ""]
    for _, column in rows.drop_duplicates("label").set_index("label").loc[_label_order(rows)].iterrows():
        facts = [f"{column['runtime']} {column['runtime_version']}", f"{column['threads']} threads",
                 f"on {column['device']}", f"timed by {column['latency_source']}"]
        if str(column["runtime"]).startswith("tvm"):
            facts[1:1] = [f"target `{_target_text(column['tvm_target'])}`", f"schedules `{column['schedules']}`"]
        lines.append(textwrap.fill(f"- **{column.name}**: " + ", ".join(facts), PROSE_WIDTH, subsequent_indent="  ",
                                   break_on_hyphens=False))
    return "\n".join([*lines, ""])


def _target_text(target) -> str:
    """``llvm -mtriple=x86_64-linux-gnu -mcpu=znver4 -num-cores=2`` from a stored target (TVM prints its
    config as a Python dict)."""
    if isinstance(target, str) and target.startswith("{"):
        import ast

        try:
            target = ast.literal_eval(target)
        except (ValueError, SyntaxError):
            return target
    if isinstance(target, dict):
        options = " ".join(f"-{k}={v}" for k, v in target.items() if k != "kind")
        return f"{target.get('kind', '?')} {options}".strip()
    return str(target)


def write_results_readme(df: pd.DataFrame, results_dir: Path, left_out: pd.DataFrame | None = None,
                         plot_name: str = "latency_vs_madds.png") -> Path:
    """(Re)write ``results_dir/README.md`` and its plot from the measurements: the published results page,
    with the same per-task tables and ratios that ``mnv2bench compare`` prints."""
    results_dir = Path(results_dir)
    plot_latency_vs_madds(df, results_dir / plot_name)
    models = _paper_columns(df, _model_order(df)).drop(columns="task")
    machines = [_machine_section(hw, rows) for hw, rows in df.groupby("hardware", sort=True)]
    text = "\n".join([
        "<!-- Generated by `mnv2bench compare` from results/*.json; edit bench/compare.py, not this file. -->",
        "",
        "# Results",
        "",
        _prose(PAPER_NOTE),
        "",
        report(df, left_out, heading="##"),
        "",
        "## The models",
        "",
        render(models, "markdown"),
        "",
        f"![median latency vs multiply-adds]({plot_name})",
        "",
        "## Machines",
        "",
        *machines,
    ])
    return write_text_atomically(results_dir / "README.md", text)


def compare(
    paths: Sequence[Path] | None = None,
    fmt: str = "markdown",
    plot: Path | None = None,
    results_dir: Path = RESULTS_DIR,
    readme: bool | None = None,
    selection: Selection = Selection(),
) -> str:
    """The whole ``mnv2bench compare`` job; returns what it prints: the per-task tables and the ratios as
    markdown, or one table of everything as CSV or JSON.

    With no ``paths`` and the default selection it reads ``results_dir/*.json`` and (unless
    ``readme=False``) rewrites ``results_dir/README.md`` and its plot, so the published page always
    matches the published files. Otherwise nothing is published unless ``readme=True``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    published = paths is None and selection.is_default
    files = sorted(Path(results_dir).glob("*.json")) if paths is None else [Path(p) for p in paths]
    if not files:
        raise UserError(f"no result files (none given, none in {results_dir}/*.json); run the benchmarks first")
    df = load_results(files)
    if df.empty:
        raise UserError(f"no published measurements in {len(files)} file(s): all are emulated or empty")
    shown, left_out = select(df, selection)
    if plot is not None:
        plot_latency_vs_madds(shown, Path(plot))
    if published if readme is None else readme:
        path = write_results_readme(shown, Path(results_dir), left_out)
        print(f"mnv2bench: updated {path} and its plot", file=sys.stderr)
        # The project README's results block shows the project's results only (not a test's or --results DIR's),
        # and only where that README exists with its markers (not in an installed package).
        if Path(results_dir).resolve() == RESULTS_DIR:
            from bench.readme import update_project_readme

            if updated := update_project_readme(df, Path(__file__).resolve().parents[1] / "README.md"):
                print(f"mnv2bench: updated the results block of {updated}", file=sys.stderr)
    if fmt == "markdown":
        return report(shown, left_out)
    if not left_out.empty:
        log.warning("%s", left_out_note(left_out))
    return render(data_table(shown), fmt)
