"""How a tuning budget is shared: each task's share of its models' time, and which task goes next."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import tvm
from tvm_ffi import structural_hash

from schedules import database as db_files

if TYPE_CHECKING:
    from schedules.search.tune import TuningTask

MIN_TRIALS = 8  # below one small batch the search is pure chance; every task gets at least this
REFINING_ROUNDS = 4  # passes over the tasks after their opening visits (a visit costs about a second)


def allocate_trials(tasks: list[TuningTask], trials_per_task: int | None, total: int | None,
                    weights: list[float] | None = None) -> list[int]:
    """Trials each task should have in the end: uniform, or a total budget shared by ``weights``
    (default: FLOP share)."""
    if total is None:
        return [trials_per_task or 64 for _ in tasks]
    weights = weights if weights is not None else [t.cost for t in tasks]
    all_weight = sum(weights) or 1.0
    shares = [max(MIN_TRIALS, math.ceil(total * w / all_weight)) for w in weights]
    return [min(s, trials_per_task) if trials_per_task else s for s in shares]


def time_shares(tasks: list[TuningTask], database) -> list[float]:
    """Each task's share of its models' time, summed over the models, from the best latencies measured
    so far (FLOPs at the median measured rate where a task has none yet). Every model counts alike, so
    the budget goes where it lowers each model's latency most, not only the biggest model's."""
    best = [best_latency_s(database, t.task.mod) for t in tasks]
    rates = sorted(t.task.flops / b for t, b in zip(tasks, best) if b and t.task.flops)
    rate = rates[len(rates) // 2] if rates else 1e10
    seconds = [b if b else max(t.task.flops, 1.0) / rate for t, b in zip(tasks, best)]
    model_time: dict[str, float] = {}
    for task, s in zip(tasks, seconds):
        for model, calls in task.calls_by_model.items():
            model_time[model] = model_time.get(model, 0.0) + calls * s
    return [sum(calls * s / model_time[m] for m, calls in t.calls_by_model.items()) for t, s in zip(tasks, seconds)]


def tuning_order(goals: list[int], done: list[int], shares: list[float]) -> list[int]:
    """Indices of the tasks short of their goal, in the order to tune them. Untuned tasks first (a
    default schedule costs more than any refinement saves), then the furthest behind their goal, then
    where the time is: a run cut short has spread its trials as the budget would, instead of spending
    them all on the biggest tasks while the small ones keep a random first batch."""
    short = [i for i, (goal, n) in enumerate(zip(goals, done)) if goal > n]
    return sorted(short, key=lambda i: (done[i] > 0, done[i] / goals[i], -shares[i]))


def visit_plan(order: list[int], done: list[int], goals: list[int], opening: int,
               rounds: int = REFINING_ROUNDS) -> list[tuple[int, int | None]]:
    """The visits of a run, as (task index, trials cap; None: up to the goal): first an opening visit of
    every untuned task in ``order`` (its transferred schedules measured, else a search of at most
    ``opening`` trials), then ``rounds`` passes over ``order``, each visit capped at its task's remaining
    trials over ``rounds`` (at least ``MIN_TRIALS``), the last pass uncapped. A run cut short has given
    every kernel it reached a measured schedule, then refined them all alike, where one pass of whole
    shares would spend a short slice on the first kernel in line."""
    openings = [(i, opening) for i in order if done[i] == 0]
    chunks = [(i, max(MIN_TRIALS, math.ceil((goals[i] - done[i]) / rounds))) for i in order]
    return openings + chunks * (rounds - 1) + [(i, None) for i in order]


def trials_done(database, folder: Path | None = None) -> dict[int, int]:
    """Trials spent per workload (structural hash), failed ones included: the records in the database
    plus those ``--remeasure`` dropped from it (counted in the folder's metadata)."""
    counts = {int(key): n for key, n in db_files.pruned_counts(folder).items()} if folder else {}
    for record in database.get_all_tuning_records():
        key = structural_hash(record.workload.mod)
        counts[key] = counts.get(key, 0) + 1
    return counts


def best_latency_s(database, mod: tvm.IRModule) -> float | None:
    if not database.has_workload(mod):
        return None
    top = database.get_top_k(database.commit_workload(mod), 1)
    return mean_seconds(top[0]) if top else None


def mean_seconds(record) -> float:
    """A tuning record's mean measured time."""
    secs = [float(s) for s in record.run_secs]
    return sum(secs) / len(secs)
