"""``mnv2bench compare``: pytest-benchmark JSON files from many machines → one table, one plot, results/README.

The harness writes standard ``pytest --benchmark-json`` files; our facts ride in each benchmark's
``extra_info`` and the machine's in ``machine_info``. Nothing here re-measures or re-computes statistics:
the harness's median is the figure we publish. The paper's figures travel in ``extra_info["paper"]`` and
are shown next to ours, always labelled as the paper's.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from models.errors import UserError

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
FORMATS = ("markdown", "csv", "json")
TASK_ORDER = ("classification", "detection", "segmentation")
RUNTIME_ORDER = ("tvm", "tvm-untuned", "onnxruntime", "torch")
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


class ResultFileError(UserError):
    """A result file that can't be read as mnv2bench's pytest-benchmark output.

    A ``UserError`` so the command line prints one line naming the file instead of a traceback.
    """


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
    df = df[~emulated].reset_index(drop=True)
    df["build"], df["label"] = _labels(df)
    return df


_COLUMNS = [
    "file", "datetime", "hardware", "cpu_model", "cores", "gpu", "model", "task", "resolution", "runtime",
    "runtime_version", "tvm_version", "tvm_target", "schedules", "threads", "device", "emulated",
    "latency_source", "median_ms", "mean_ms", "stddev_ms", "iqr_ms", "rounds", "params", "madds",
    *(f"paper_{f}" for f in PAPER_FIELDS),
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


def _row(path: Path, doc: dict, machine: dict, bench: dict) -> dict:
    """Flatten one benchmark entry; seconds become milliseconds."""
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
    return {
        "file": path.name, "datetime": doc.get("datetime"), "hardware": hardware,
        "cpu_model": machine.get("cpu_model") or (machine.get("cpu") or {}).get("brand_raw"),
        "cores": machine.get("cores"), "gpu": machine.get("gpu"),
        **{k: extra.get(k) for k in ("model", "task", "runtime", "runtime_version", "tvm_version", "tvm_target",
                                     "schedules", "threads", "device", "latency_source", "params", "madds")},
        "resolution": shape[-1], "emulated": bool(extra.get("emulated", False)),
        **ms, "rounds": stats.get("rounds"),
        **{f"paper_{f}": paper.get(f) for f in PAPER_FIELDS},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


# --- column labels ----------------------------------------------------------------------------------
def column_label(row: pd.Series | dict, varying: Sequence[str] = ()) -> str:
    """The table column a measurement goes to: ``"<hardware> <runtime>"``.

    ``varying`` names the build fields (``BUILD_FIELDS``) that differ among the inputs' measurements
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


def _labels(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: the bracketed build suffix ("" unless mixed) and the full column label."""
    builds, labels = pd.Series("", index=df.index, dtype=object), pd.Series("", index=df.index, dtype=object)
    for _, group in df.groupby(["hardware", "runtime"], sort=False):
        varying = [f for f in BUILD_FIELDS if group[f].astype(str).nunique() > 1]
        for i, row in group.iterrows():
            builds[i], labels[i] = _build_suffix(row, varying), column_label(row, varying)
    return builds, labels


# --- the table --------------------------------------------------------------------------------------
def _model_order(df: pd.DataFrame) -> list[str]:
    """Classification by width then resolution (both descending, as the paper lists them), then detection,
    then segmentation; anything else in order of first appearance."""
    first = {m: i for i, m in reversed(list(enumerate(df["model"])))}
    facts = df.drop_duplicates("model").set_index("model")

    def key(model: str) -> tuple:
        task = facts.at[model, "task"]
        rank = TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)
        width = re.search(r"_(\d+(?:\.\d+)?)_\d+$", model)
        res = facts.at[model, "resolution"]
        return (rank, -float(width[1]) if width else 0.0, -float(res) if pd.notna(res) else 0.0, first[model])

    return sorted(first, key=key)


def _label_order(df: pd.DataFrame) -> list[str]:
    labels = df.drop_duplicates("label")

    def key(row: pd.Series) -> tuple:
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


def _speedups(df: pd.DataFrame, latency: pd.DataFrame, pixel1_ms: pd.Series) -> pd.DataFrame:
    """Per hardware: ORT median / TVM median and the paper's Pixel 1 / TVM median (> 1: TVM is faster)."""
    out = {}
    labels = df.drop_duplicates("label")
    for hardware, on_hw in labels.groupby("hardware", sort=True):
        tvm = on_hw[on_hw["runtime"] == "tvm"]
        ort = on_hw[on_hw["runtime"] == "onnxruntime"]
        for t in tvm.itertuples():
            for o in ort.itertuples():
                name = f"{hardware} TVM vs ORT" + "".join(f" [{b}]" for b in (t.build, o.build) if b)
                out[name] = latency[o.label] / latency[t.label]
            out[f"{hardware} TVM vs Pixel 1" + (f" [{t.build}]" if t.build else "")] = pixel1_ms / latency[t.label]
    return pd.DataFrame(out, index=latency.index)


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Models × (the paper's figures, median ms per hardware+runtime column, speedups); index = model."""
    if df.empty:
        raise UserError("no published measurements to tabulate")
    models = _model_order(df)
    latency = (
        _latest(df).pivot(index="model", columns="label", values="median_ms").reindex(index=models,
                                                                                   columns=_label_order(df))
    )
    paper = _paper_columns(df, models)
    table = pd.concat([paper, latency, _speedups(df, latency, paper["paper Pixel 1 (ms)"])], axis=1)
    table.index.name = "model"
    table.columns.name = None
    return table


# --- output -----------------------------------------------------------------------------------------
def render(table: pd.DataFrame, fmt: str) -> str:
    """The table as markdown (2 decimals, '–' where nothing was measured), CSV or JSON records."""
    flat = table.reset_index()
    if fmt == "markdown":
        cells = flat.astype(object).where(flat.notna(), None)  # tabulate prints None as missingval, NaN as "nan"
        return cells.to_markdown(index=False, floatfmt=".2f", missingval="–")
    if fmt == "csv":
        return flat.to_csv(index=False)
    if fmt == "json":
        return flat.to_json(orient="records", indent=2)
    raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _replace_atomically(path: Path, write) -> Path:
    """Write through a temporary sibling and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def plot_latency_vs_madds(df: pd.DataFrame, path: Path) -> Path:
    """Median latency against multiply-adds, one series per column of the table, plus the paper's Pixel 1.

    Uses a bare ``Figure`` (Agg canvas) rather than pyplot: no global state, no display needed.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = Figure(figsize=(11, 5.5), layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vP*Xhp<>"
    latest = _latest(df)
    for i, label in enumerate(_label_order(df)):
        points = latest[latest["label"] == label].sort_values("madds")
        ax.plot(points["madds"] / 1e6, points["median_ms"], marker=markers[i % len(markers)], ls="", label=label)
    paper = df.drop_duplicates("model").dropna(subset=["paper_pixel1_ms"])
    if not paper.empty:
        x = paper["paper_madds_m"].astype(float).fillna(paper["madds"] / 1e6)
        ax.plot(x, paper["paper_pixel1_ms"].astype(float), marker="*", ms=12, ls="", color="black",
                label="paper: Pixel 1, 1 core, TF-Lite (Sandler et al. 2018)")
    ax.set(xscale="log", yscale="log", xlabel="multiply-adds (millions)", ylabel="median latency (ms)",
           title="MobileNetV2 networks: latency vs multiply-adds")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # "300", not "3×10²"
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())  # minor labels collide on a log axis
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")  # beside the axes: never hides a point
    return _replace_atomically(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def _machine_section(hardware: str, rows: pd.DataFrame) -> str:
    """A hardware's facts (from its rows, not from this host) and how each of its columns was built."""

    def one(col: str) -> str:
        values = rows[col].dropna().astype(str).unique()
        return ", ".join(values) if len(values) else "–"

    builds = rows.drop_duplicates("label").set_index("label").loc[_label_order(rows)].reset_index()[
        ["label", "runtime_version", "tvm_version", "tvm_target", "schedules", "threads", "device", "latency_source"]
    ].rename(columns={"label": "column", "latency_source": "timed by"})
    builds = builds.astype(object).where(builds.notna(), None)
    return "\n".join([
        f"### {hardware}",
        "",
        f"- CPU: {one('cpu_model')}",
        f"- cores: {one('cores')}",
        f"- GPU: {one('gpu')}",
        f"- TVM: {one('tvm_version')}",
        f"- files: {one('file')}",
        "",
        builds.to_markdown(index=False, missingval="–"),
        "",
    ])


def write_results_readme(df: pd.DataFrame, results_dir: Path, plot_name: str = "latency_vs_madds.png") -> Path:
    """(Re)write ``results_dir/README.md`` and its plot from the measurements: the published results page."""
    results_dir = Path(results_dir)
    plot_latency_vs_madds(df, results_dir / plot_name)
    machines = [_machine_section(hw, rows) for hw, rows in df.groupby("hardware", sort=True)]
    text = "\n".join([
        "<!-- Generated by `mnv2bench compare` from results/*.json; edit bench/compare.py, not this file. -->",
        "",
        "# Results",
        "",
        PAPER_NOTE,
        "",
        "## Median latency (ms) and speedups",
        "",
        "Speedups are ratios of medians; above 1 means TVM is faster.",
        "",
        render(latency_table(df), "markdown"),
        "",
        f"![median latency vs multiply-adds]({plot_name})",
        "",
        "## Machines",
        "",
        *machines,
    ])
    return _replace_atomically(results_dir / "README.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def compare(
    paths: Sequence[Path] | None = None,
    fmt: str = "markdown",
    plot: Path | None = None,
    results_dir: Path = RESULTS_DIR,
    readme: bool | None = None,
) -> str:
    """The whole ``mnv2bench compare`` job; returns the rendered table.

    With no ``paths`` it reads ``results_dir/*.json`` and (unless ``readme=False``) rewrites
    ``results_dir/README.md`` and its plot, so the published page always matches the published files.
    With explicit ``paths`` nothing is published unless ``readme=True``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    published = paths is None
    files = sorted(Path(results_dir).glob("*.json")) if published else [Path(p) for p in paths]
    if not files:
        raise UserError(f"no result files (none given, none in {results_dir}/*.json); run the benchmarks first")
    df = load_results(files)
    if df.empty:
        raise UserError(f"no published measurements in {len(files)} file(s): all are emulated or empty")
    table = latency_table(df)
    if plot is not None:
        plot_latency_vs_madds(df, Path(plot))
    if published if readme is None else readme:
        write_results_readme(df, Path(results_dir))
    return render(table, fmt)
