"""Does the carried cost model help? An A/B of tuning with and without it, same tasks, same trials.

    python bench/cost_model_ab.py [--model mobilenet_v2_0.5_128] [--kinds depthwise] [--tasks 4] [--trials 32]

Both arms tune the same tasks one after the other from random schedules (no transfer), each into a
schedules folder of its own: arm "carried" keeps one XGBoost model from task to task (what ``tune``
does), arm "cold" starts every task with a fresh one (what it did before). Prints, per task and arm,
the best latency after each batch of trials, and the trials each arm needed to come within 10 % of the
better of the two final latencies. Run it on a quiet machine: it measures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

WITHIN = 1.10  # "reached": within 10 % of the better final latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2_0.5_128")
    parser.add_argument("--kinds", nargs="+", default=["depthwise", "pointwise"])
    parser.add_argument("--tasks", type=int, default=4, help="the model's N most expensive tasks of those kinds")
    parser.add_argument("--trials", type=int, default=32, help="trials per task in each arm")
    parser.add_argument("--json", type=Path, default=None, help="also write the curves here")
    args = parser.parse_args(argv)

    from schedules.pipeline.compile import model_tasks
    from schedules.search.tune import SearchOptions, merge_tasks
    from targets.registry import resolve_target

    spec = resolve_target("host")
    tasks = [t for t in merge_tasks({args.model: model_tasks(args.model, spec)}) if t.task.kind in args.kinds]
    tasks = tasks[: args.tasks]
    search = SearchOptions(population_size=64)
    curves = {}
    with tempfile.TemporaryDirectory(prefix="mnv2bench-ab-") as tmp:
        for arm in ("carried", "cold"):
            root = Path(tmp) / arm
            curves[arm] = tune_arm(spec, tasks, args.model, args.trials, root, search, cold=arm == "cold")
    report(tasks, curves, search.trials_per_batch)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "tasks": [t.task.name for t in tasks],
                                         "curves": curves}, indent=2))
    return 0


def tune_arm(spec, tasks, model: str, trials: int, root: Path, search, cold: bool) -> list[list[float]]:
    """Tune ``tasks`` one by one into ``root``; returns each task's running best latency (ms) per trial."""
    from schedules import database as db_files
    from schedules.search.cost_model import INFO_FILE, MODEL_FILE
    from schedules.search.tune import tune

    folder = db_files.database_dir(spec, root)
    for task in tasks:
        if cold:
            for name in (MODEL_FILE, INFO_FILE):
                (folder / name).unlink(missing_ok=True)
        tune(spec, [task], [model], trials_per_task=trials, root=root, search=search, transfer=False,
             log=lambda *_: None)
    return [running_best(folder, task.task.mod) for task in tasks]


def running_best(folder: Path, mod) -> list[float]:
    """The best latency (ms) after each trial, in the order the trials were measured: the record file's
    order (each line names its workload by its line in the workload file, which holds its hash)."""
    from tvm_ffi import structural_hash

    from schedules import database as db_files

    workloads = [json.loads(line)[0] for line in (folder / db_files.WORKLOAD_FILE).read_text().splitlines()]
    key, best, curve = str(structural_hash(mod)), float("inf"), []
    for line in (folder / db_files.RECORD_FILE).read_text().splitlines():
        index, (_, secs, *_) = json.loads(line)
        if workloads[index] == key and secs:
            best = min(best, sum(secs) / len(secs) * 1e3)
            curve.append(best)
    return curve


def trials_to_reach(curve: list[float], target_ms: float) -> int | None:
    return next((i + 1 for i, ms in enumerate(curve) if ms <= target_ms), None)


def report(tasks, curves: dict[str, list[list[float]]], batch: int) -> None:
    print(f"{'task':44s} {'arm':8s} best ms after each batch of {batch}          trials to within 10 %")
    totals = {arm: 0 for arm in curves}
    for i, task in enumerate(tasks):
        goal = min(curves[arm][i][-1] for arm in curves) * WITHIN
        for arm, per_task in curves.items():
            curve = per_task[i]
            marks = " ".join(f"{curve[min(k, len(curve)) - 1]:.4f}" for k in range(batch, len(curve) + batch, batch))
            reached = trials_to_reach(curve, goal)
            totals[arm] += reached or len(curve)
            print(f"{task.task.name[:44]:44s} {arm:8s} {marks:40s} {reached}")
    print("trials to within 10 % of the better final latency, summed over the tasks: "
          + ", ".join(f"{arm} {n}" for arm, n in totals.items()))


if __name__ == "__main__":
    sys.exit(main())
