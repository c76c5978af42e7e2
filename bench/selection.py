"""Which measurements ``mnv2bench compare`` shows: ``--models``, ``--runtimes``, ``--machines``, and only
each machine's newest schedules unless ``--all-schedules``.

The newest schedules are decided over all of a machine's measurements, before any filter, so that a filter
never passes off an older database as the newest.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench.labels import with_labels
from bench.measurements import with_statistic
from models.errors import UserError


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
    shown = with_statistic(with_labels(shown), selection.statistic)
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
