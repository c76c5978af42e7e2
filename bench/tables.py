"""Measurements → tables: models (in the paper's order) × machine-runtime columns, the tuned share of TVM's
cells, and TVM over each peer on the same machine.

Ratios go one way only, TVM over its peer (time over time, lower is better); the paper's figures are always
labelled as the paper's. Each table holds the newest measurement per model and column.
"""

from __future__ import annotations

import logging
import re

import pandas as pd

from models.errors import UserError

log = logging.getLogger(__name__)

TASK_ORDER = ("classification", "detection", "segmentation")
RUNTIME_ORDER = ("tvm", "tvm-untuned", "onnxruntime", "openvino", "executorch", "torch", "torch-cudagraph")
#: how a peer runtime is named in a ratio column ("TVM/ORT").
PEER_NAMES = {
    "onnxruntime": "ORT", "openvino": "OpenVINO", "executorch": "ExecuTorch", "torch-cudagraph": "torch+graphs",
}


def tuned_share(tuned, transferred, tasks) -> str:
    """``"tuned 34/34"``, or ``"tuned 0 + transferred 32 / 34"`` where schedules were transferred; "" if unknown."""
    if tasks is None or pd.isna(tasks):
        return ""
    transferred = 0 if transferred is None or pd.isna(transferred) else int(transferred)
    if transferred:
        return f"tuned {int(tuned)} + transferred {transferred} / {int(tasks)}"
    return f"tuned {int(tuned)}/{int(tasks)}"


def kernel_share(tuned, transferred, tasks) -> str:
    """``"30+8/38"``: tuned + transferred of all kernels, the compact form of ``tuned_share``; "" if unknown."""
    if tasks is None or pd.isna(tasks):
        return ""
    return f"{int(tuned)}+{0 if transferred is None or pd.isna(transferred) else int(transferred)}/{int(tasks)}"


def model_order(df: pd.DataFrame) -> list[str]:
    """Classification by width then resolution (both descending, as the paper lists them), then detection,
    then segmentation; anything else in order of first appearance."""
    first = {m: i for i, m in reversed(list(enumerate(df["model"])))}
    facts = df.drop_duplicates("model").set_index("model")

    def key(model: str) -> tuple:
        width = re.search(r"_(\d+(?:\.\d+)?)_\d+$", model)
        res = facts.at[model, "resolution"]
        return (task_rank(facts.at[model, "task"]), -float(width[1]) if width else 0.0,
                -float(res) if pd.notna(res) else 0.0, first[model])

    return sorted(first, key=key)


def task_rank(task: str) -> int:
    return TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)


def label_order(df: pd.DataFrame) -> list[str]:
    """The column labels by machine, then runtime (``RUNTIME_ORDER``), then label."""
    labels = df.drop_duplicates("label")

    def key(row) -> tuple:
        rank = RUNTIME_ORDER.index(row.runtime) if row.runtime in RUNTIME_ORDER else len(RUNTIME_ORDER)
        return (row.hardware, rank, row.label)

    return [row.label for row in sorted(labels.itertuples(), key=key)]


def paper_columns(df: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Per model (in the given order): its task, and the paper's figures beside ours (params, MAdds)."""
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


def latest_measurements(df: pd.DataFrame) -> pd.DataFrame:
    """One measurement per model and column: a rerun (a newer file) replaces the older one."""
    ordered = df.sort_values("datetime", kind="stable", na_position="first")
    dropped = len(ordered) - len(latest := ordered.drop_duplicates(["model", "label"], keep="last"))
    if dropped:
        log.info("kept the newest of repeated measurements (%d older one(s) left out)", dropped)
    return latest


def _by_model(df: pd.DataFrame, values: str, labels: list[str]) -> pd.DataFrame:
    """Models (in the paper's order) × the given column labels, from the newest measurement of each."""
    table = latest_measurements(df).pivot(index="model", columns="label", values=values)
    table = table.reindex(index=model_order(df), columns=labels)
    table.index.name, table.columns.name = "model", None
    return table


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Models × machine-runtime columns: the chosen statistic (median ms unless ``with_statistic`` chose
    another); index = model."""
    if df.empty:
        raise UserError("no published measurements to tabulate")
    return _by_model(df, "value", label_order(df))


def tuned_table(df: pd.DataFrame, share=tuned_share) -> pd.DataFrame:
    """Models × TVM columns: how much of each TVM measurement was tuned (``share``'s form: "tuned 34/34";
    "" if unknown)."""
    shares = df.assign(share=[share(*r) for r in df[["tuned", "transferred", "tasks"]].itertuples(index=False)])
    tvm = set(df.loc[df["runtime"].astype(str).str.startswith("tvm"), "label"])
    return _by_model(shares, "share", [label for label in label_order(df) if label in tvm]).fillna("")


def ratio_table(df: pd.DataFrame) -> pd.DataFrame:
    """Models × ``"<machine> TVM/<peer>"``: TVM's figure (median unless another statistic was chosen) over
    each peer's on the same machine, lower is better. Models without any ratio are left out."""
    latency = latency_table(df)
    columns = df.drop_duplicates("label").set_index("label").loc[label_order(df)]
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


def data_table(df: pd.DataFrame) -> pd.DataFrame:
    """Everything per model, for CSV and JSON: the paper's figures, the chosen statistic, the tuned shares, the
    ratios."""
    latency = latency_table(df)
    parts = [paper_columns(df, list(latency.index)), latency, tuned_table(df).add_suffix(" tuned"), ratio_table(df)]
    table = pd.concat(parts, axis=1).reindex(latency.index)
    table.index.name = "model"
    return table


def task_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task, models × columns as shown to a reader: the statistic (median ms), with its tuned share in TVM cells;
    NaN where nothing was measured. Columns that measured none of a task's models are left out of its table."""
    latency, tuned = latency_table(df), tuned_table(df)
    cells = latency.map("{:.2f}".format, na_action="ignore")
    for label in tuned.columns:
        marked = (tuned[label] != "") & latency[label].notna()
        cells.loc[marked, label] += " (" + tuned.loc[marked, label] + ")"
    task_of = df.drop_duplicates("model").set_index("model")["task"].reindex(latency.index)
    tables = {}
    for task in sorted(task_of.unique(), key=task_rank):
        rows = task_of == task
        tables[task] = cells.loc[rows, latency.loc[rows].notna().any()]
    return tables
