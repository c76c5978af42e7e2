"""MetaSchedule tuning for one target: evolutionary search guided by an XGBoost cost model.

Tasks of all selected models are merged first (the shared backbone is tuned once) and tuned one at a
time against the target's JSON database. A total budget is shared by where the time goes (each task's
share of its models' measured time); untuned tasks go first, then those furthest behind their share. That
makes a run resumable at any point: every measured trial is appended to the database as it comes,
and a re-run gives each task only the trials it still lacks.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import tvm
from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm_ffi import structural_hash

from schedules import database as db_files
from schedules.builder import alloc_arguments_from_host, build_candidate, export_shared_library, use_threads
from schedules.evaluator import run_as_in_model
from schedules.tasks import Task
from targets.registry import TargetSpec

MIN_TRIALS = 8  # below one small batch the search is pure chance; every task gets at least this


class TuningMeasuredNothing(RuntimeError):
    """Every candidate of a batch failed to build or run: the tuning setup is broken, not the task."""


@dataclass
class TuningTask:
    """One distinct kernel, possibly shared by several models."""

    task: Task
    calls_by_model: dict[str, int] = field(default_factory=dict)  # calls per inference of each model

    @property
    def models(self) -> list[str]:
        return list(self.calls_by_model)

    @property
    def calls(self) -> int:
        return sum(self.calls_by_model.values())

    @property
    def cost(self) -> float:
        return self.calls * self.task.flops


@dataclass(frozen=True)
class RPCOptions:
    tracker: str  # HOST:PORT
    key: str
    session_timeout_s: float = 120.0
    boards: int = 1  # measurements run in parallel on this many boards


@dataclass(frozen=True)
class SearchOptions:
    """Evolutionary search sizes. Smaller than MetaSchedule's defaults (population 512), which spend
    about 40 s per 16 candidates on 2 cores, mostly in the search, not the measurement."""

    population_size: int = 128
    genetic_num_iters: int = 3
    trials_per_batch: int = 16
    seed: int = 0


def merge_tasks(tasks_by_model: dict[str, list[Task]]) -> list[TuningTask]:
    """Merge structurally identical kernels across models, most expensive first."""
    merged: dict[int, TuningTask] = {}
    for model, tasks in tasks_by_model.items():
        for task in tasks:
            key = structural_hash(task.mod)
            entry = merged.setdefault(key, TuningTask(task))
            entry.calls_by_model[model] = entry.calls_by_model.get(model, 0) + task.weight
    return sorted(merged.values(), key=lambda t: t.cost, reverse=True)


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
    if not top:
        return None
    secs = [float(s) for s in top[0].run_secs]
    return sum(secs) / len(secs)


def tune(
    spec: TargetSpec,
    tasks: list[TuningTask],
    models: list[str],
    trials_per_task: int | None = None,
    total_trials: int | None = None,
    root: Path | None = None,
    rpc: RPCOptions | None = None,
    search: SearchOptions = SearchOptions(),
    force: bool = False,
    log=print,
    builder=None,
) -> dict:
    """Tune every task up to its allocation; returns a summary. Safe to interrupt and re-run."""
    database = db_files.open_database(spec, root, force=force, create=True)
    folder = db_files.database_dir(spec, root)
    db_files.write_metadata(folder, spec, trials_per_task or 0, models, measured_on=measured_on(spec, rpc))
    shares = time_shares(tasks, database)
    goals = allocate_trials(tasks, trials_per_task, total_trials, shares)
    done_by_workload = trials_done(database, folder)
    done = [done_by_workload.get(structural_hash(t.task.mod), 0) for t in tasks]
    todo = [(tasks[i], goals[i] - done[i]) for i in tuning_order(goals, done, shares)]
    log(f"{len(tasks)} tasks for {spec.key}; {len(tasks) - len(todo)} already tuned; "
        f"{sum(n for _, n in todo)} trials to run -> {folder}")
    builder, runner = builder or make_builder(spec), make_runner(spec, rpc)
    bar = tqdm(total=sum(n for _, n in todo), unit="trial", dynamic_ncols=True, disable=not todo)
    measured = 0
    start = time.time()
    try:
        for index, (entry, trials) in enumerate(todo, start=1):
            bar.set_description(f"[{index}/{len(todo)}] {entry.task.kind:9s}")
            measured += _tune_one(spec, entry.task, trials, database, builder, runner, search, bar)
            best = best_latency_s(database, entry.task.mod)
            log_line = f"[{index}/{len(todo)}] {entry.task.kind:9s} {entry.task.name}: {trials} trials"
            if best:
                log_line += f", best {best * 1e3:.4f} ms ({entry.task.flops / best / 1e9:.1f} GFLOP/s)"
            bar.write(log_line)
    finally:
        bar.close()
        db_files.write_metadata(folder, spec, trials_per_task or 0, models, new_run=False)
    return {"tasks": len(tasks), "tuned_now": len(todo), "valid_trials": measured,
            "seconds": time.time() - start, "database": str(folder)}


def _tune_one(spec, task: Task, trials: int, database, builder, runner, search: SearchOptions, bar) -> int:
    """Run MetaSchedule on one task; returns how many candidates were measured successfully."""
    from tvm.s_tir import meta_schedule as ms

    progress = _ProgressCallback(bar)
    context = ms.TuneContext(
        mod=task.mod,
        target=spec.tvm_target(),
        space_generator="post-order-apply",
        search_strategy=ms.search_strategy.EvolutionarySearch(
            population_size=search.population_size, genetic_num_iters=search.genetic_num_iters
        ),
        task_name=task.name,
        rand_state=search.seed,
        num_threads="physical",
    )
    with tempfile.TemporaryDirectory(prefix="mnv2bench-tune-") as work_dir:
        try:
            ms.tune.tune_tasks(
                tasks=[context],
                task_weights=[1.0],
                work_dir=work_dir,
                max_trials_global=trials,
                max_trials_per_task=trials,
                num_trials_per_iter=min(trials, search.trials_per_batch),
                builder=builder,
                runner=runner,
                database=database,
                cost_model=ms.cost_model.XGBModel(extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=True),
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress],
                task_scheduler="round-robin",
            )
        except Exception:
            if progress.failure:
                raise TuningMeasuredNothing(progress.failure) from None
            raise
    if progress.failure:
        raise TuningMeasuredNothing(progress.failure)
    return progress.valid


def make_builder(spec: TargetSpec):
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(
        f_build=build_candidate,
        f_export=partial(export_shared_library, cross_compiler=spec.cross_compiler),
        timeout_sec=120,
    )


def local_threads(spec: TargetSpec) -> int:
    """Threads a candidate is timed on here: the target's cores, all of this machine's by default."""
    return spec.num_cores or os.cpu_count() or 1


def measured_on(spec: TargetSpec, rpc: RPCOptions | None) -> str:
    """Where a run's trials are timed, for the metadata: records timed differently don't compare."""
    if rpc:
        return f"rpc:{rpc.key}"
    caches = "" if spec.is_gpu else ", caches as in the model"
    return f"local, {local_threads(spec)} threads{caches}"


def make_runner(spec: TargetSpec, rpc: RPCOptions | None = None):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
    if rpc is None:
        return ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=60,
                                     initializer=partial(use_threads, local_threads(spec)),
                                     f_run_evaluator=None if spec.is_gpu else run_as_in_model)
    from targets.rpc import parse_tracker

    host, port = parse_tracker(rpc.tracker)
    config = ms.runner.RPCConfig(
        tracker_host=host, tracker_port=port, tracker_key=rpc.key, session_timeout_sec=rpc.session_timeout_s
    )
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=rpc.boards,
                               f_alloc_argument=alloc_arguments_from_host)


@derived_object
class _ProgressCallback(PyMeasureCallback):
    """Advances the progress bar and fails loudly when a whole batch measures nothing."""

    def __init__(self, bar) -> None:
        super().__init__()
        self.bar = bar
        self.valid = 0
        self.failure: str | None = None

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        ok = sum(1 for r in runner_results if r.error_msg is None and r.run_secs)
        self.valid += ok
        self.bar.update(len(runner_results))
        if ok == 0 and runner_results:
            errors = [b.error_msg for b in builder_results if b.error_msg] or [
                r.error_msg for r in runner_results if r.error_msg
            ]
            last_line = (errors[0] or "").strip().splitlines()[-1:] if errors else []
            self.failure = (
                f"tuning measured nothing: all {len(runner_results)} candidates of a batch failed "
                f"({len(errors)} errors; first: {last_line[0] if last_line else 'unknown'})"
            )
            raise TuningMeasuredNothing(self.failure)
