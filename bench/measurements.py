"""pytest-benchmark JSON files from many machines → one DataFrame, a row per measurement, labelled for the tables.

The harness writes standard ``pytest --benchmark-json`` files; our facts ride in each benchmark's
``extra_info`` and the machine's in ``machine_info``. Nothing here re-measures or re-computes statistics:
the harness's median is the figure we publish. (``bench.results`` merges a run into those files.)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.labels import with_labels
from models.errors import UserError

log = logging.getLogger(__name__)

#: extra_info fields without which a row can't be placed in the table.
REQUIRED_EXTRA = ("model", "task", "runtime", "params", "madds")
PAPER_FIELDS = ("accuracy", "metric", "params_m", "madds_m", "pixel1_ms")
#: what ``compare --statistic`` can tabulate: the result column, its heading, and what a ratio below 1 means.
STATISTICS = {
    "median": ("median_ms", "median latency (ms)", "TVM is faster"),
    "p90": ("p90_ms", "90th-percentile latency (ms)", "TVM is faster"),
    "p99": ("p99_ms", "99th-percentile latency (ms)", "TVM is faster"),
    "memory": ("peak_memory_mib", "peak memory: loading and one inference (MiB, resident-set rise)", "TVM needs less"),
}


class ResultFileError(UserError):
    """A result file that can't be read as mnv2bench's pytest-benchmark output.

    A ``UserError`` so the command line prints one line naming the file instead of a traceback.
    """


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
    return with_statistic(with_labels(df[~emulated].reset_index(drop=True)), "median")


def run_days(rows: pd.DataFrame) -> list[str]:
    """The days (``2026-12-05``) on which ``rows`` were measured, oldest first: a file keeps each runtime's
    last run of each model, so one machine's figures can come from several days' runs."""
    return sorted({str(d)[:10] for d in rows["datetime"].dropna()})


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
