"""results/<hardware>.json: one pytest-benchmark file per measured machine, updated run by run.

A run measures some models on some runtimes; merging it into the machine's file replaces those
(model, runtime) entries and keeps the others, so the file can be built up over several runs (22
classification variants today, detection tomorrow) and stays standard pytest-benchmark JSON that
``pytest-benchmark compare`` reads. Written atomically: an interrupted run never damages the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.errors import UserError
from models.files import write_text_atomically


def _key(bench: dict) -> tuple[str, str, int]:
    info = bench.get("extra_info", {})
    return info.get("model", bench.get("name")), info.get("runtime", ""), info.get("batch", 1)


def merge_run(run_json: Path, results_dir: Path) -> Path:
    """Merge one ``--benchmark-json`` file into ``results_dir/<hardware>.json``; returns that path."""
    try:
        run = json.loads(Path(run_json).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read benchmark output {run_json}: {exc}") from None
    hardware = run.get("machine_info", {}).get("hardware")
    if not hardware:
        raise UserError(f"{run_json} has no machine_info.hardware: not written by the mnv2bench harness")
    if any(b.get("extra_info", {}).get("emulated") for b in run.get("benchmarks", [])):
        raise UserError("emulated measurements are never published in results/")
    for bench in run.get("benchmarks", []):  # kept rows keep their own run's date (compare's "newest schedules")
        bench.setdefault("extra_info", {}).setdefault("datetime", run.get("datetime"))
    target = results_dir / f"{hardware}.json"
    merged = run
    if target.exists():
        previous = json.loads(target.read_text())
        fresh = {_key(b) for b in run["benchmarks"]}
        kept = [b for b in previous.get("benchmarks", []) if _key(b) not in fresh]
        merged = {**run, "benchmarks": kept + run["benchmarks"]}
    merged["benchmarks"].sort(key=_key)
    return write_text_atomically(target, json.dumps(merged, indent=2) + "\n")
