"""What a target's database holds: tasks by kind, their best latency, and per model how many kernels are
tuned, transferred from another shape or database, or left to a default."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm
from tvm_ffi import structural_hash

from models.files import write_text_atomically
from schedules import database as db_files
from schedules.pipeline.compile import model_tasks
from schedules.pipeline.coverage import cover
from schedules.search.budget import best_latency_s, trials_done
from schedules.search.transfer import transfer_sources
from schedules.tasks import KINDS


def schedules_report(target: str | None, models: list[str], root: Path | None = None) -> list[dict]:
    """One entry per target database (all of them, or the one named)."""
    from models.errors import UserError
    from models.registry import resolve_names

    names = resolve_names(models)
    keys = [target] if target else db_files.known_keys(root)
    if not keys:
        raise UserError(f"no schedule databases under {root or db_files.schedules_root()}")
    return [_cached_report(db_files.resolve_database_target(key, root), names, root) for key in keys]


def _cached_report(spec, names: list[str], root: Path | None) -> dict:
    """``_target_report``, kept in the cache under everything it depends on (the databases it draws on, the
    models, TVM): extracting every model's kernels takes minutes, and nothing changes between two calls."""
    import hashlib
    import json

    import tvm

    from models.export import cache_dir

    key = json.dumps([spec.key, db_files.sources_hash(spec, root), names, tvm.__version__])
    path = cache_dir() / "reports" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.exists():
        return json.loads(path.read_text())
    report = _target_report(spec, names, root)
    write_text_atomically(path, json.dumps(report))
    return report


def _target_report(spec, names: list[str], root: Path | None) -> dict:
    folder = db_files.database_dir(spec, root)
    database = db_files.open_database(spec, root, force=True)
    counts = trials_done(database, folder) if database is not None else {}
    sources = transfer_sources(spec, root, database)
    tasks: dict[int, dict] = {}
    coverage = []
    for name in tqdm(names, desc=f"kernels of each model for {spec.key} (cached after)", unit="model",
                     disable=None, file=sys.stderr):
        model_entries = model_tasks(name, spec)
        kernels = cover(model_entries, spec, database, sources, with_defaults=False)[1]
        coverage.append({"model": name, **kernels.counts(), "transferred_from": kernels.sources(),
                         "coverage": (kernels.total - len(kernels.default)) / max(kernels.total, 1)})
        for task in model_entries:
            key = structural_hash(task.mod)
            if key not in tasks:
                best = best_latency_s(database, task.mod) if database is not None else None
                tasks[key] = {
                    "task": task.name, "kind": task.kind, "flops": task.flops, "trials": counts.get(key, 0),
                    "best_ms": None if best is None else best * 1e3,
                    "gflops": None if best is None else task.flops / best / 1e9, "models": [],
                }
            tasks[key]["models"].append(name)
    by_kind = {
        kind: {"tasks": sum(t["kind"] == kind for t in tasks.values()),
               "tuned": sum(t["kind"] == kind and t["best_ms"] is not None for t in tasks.values())}
        for kind in KINDS
    }
    meta = db_files.read_metadata(folder) or {}
    return {
        "target_key": spec.key, "database": str(folder), "exists": database is not None,
        "content_hash": db_files.content_hash(folder) if database is not None else None,
        "tvm_version": meta.get("tvm_version"), "trials_per_task": meta.get("trials_per_task"),
        "total_trials": sum(counts.values()), "by_kind": by_kind, "models": coverage,
        "tasks": sorted(tasks.values(), key=lambda t: -t["flops"] * len(t["models"])),
    }


def format_report(report: list[dict]) -> str:
    import pandas as pd

    out = []
    for entry in report:
        out.append(f"== {entry['target_key']}  ({entry['database']}, {entry['total_trials']} trials, "
                   f"TVM {entry['tvm_version']}, hash {entry['content_hash']})")
        kinds = pd.DataFrame(entry["by_kind"]).T
        out.append(kinds[kinds.tasks > 0].to_string())
        out.append(pd.DataFrame(entry["models"]).to_string(index=False, float_format=lambda v: f"{v:.0%}"))
        tasks = pd.DataFrame(entry["tasks"])
        tasks["models"] = tasks["models"].map(", ".join)  # task names repeat across models; shapes don't
        out.append(tasks.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="untuned",
                                   formatters={"task": "{:<48.48}".format}))
        out.append("")
    return "\n".join(out)



