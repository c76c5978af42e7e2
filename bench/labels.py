"""Column labels: the table column a measurement goes to, ``"<hardware> <runtime>"``, with its build in
brackets where that differs among the rows shown (see ``column_label``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

#: fields whose differing values within one hardware+runtime make separate columns (see ``column_label``).
BUILD_FIELDS = ("tvm_version", "schedules", "runtime_version", "threads")


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
        parts += [str(row["tvm_version"]), short_schedules(row["schedules"])]
    if "runtime_version" in varying and not (is_tvm and row["runtime_version"] == row["tvm_version"]):
        parts.append(str(row["runtime_version"]))
    if "threads" in varying:
        parts.append(f"{row['threads']} threads")
    return " ".join(p for p in parts if p and p not in ("None", "nan"))


def short_schedules(schedules: str | None) -> str:
    """``"x86_64-linux-gnu-znver4@1a2b3c4d5e6f"`` → ``"@1a2b3c"``: the database's hash names it."""
    if not schedules or pd.isna(schedules):
        return ""
    return "@" + schedules.split("@", 1)[1][:6] if "@" in schedules else str(schedules)


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with per row the bracketed build suffix ("" unless mixed) and the full column label; decided
    over the rows given, so that a filter that leaves one database unmixes its column."""
    builds, labels = pd.Series("", index=df.index, dtype=object), pd.Series("", index=df.index, dtype=object)
    for _, group in df.groupby(["hardware", "runtime"], sort=False):
        varying = [f for f in BUILD_FIELDS if group[f].astype(str).nunique() > 1]
        for i, row in group.iterrows():
            builds[i], labels[i] = _build_suffix(row, varying), column_label(row, varying)
    return df.assign(build=builds, label=labels)
