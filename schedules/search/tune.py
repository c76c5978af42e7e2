"""MetaSchedule tuning for one target: evolutionary search guided by an XGBoost cost model.

Tasks of all selected models are merged first (the shared backbone is tuned once) and tuned one at a
time against the target's JSON database, with one cost model for the whole run (``cost_model``). A
task with no records first measures the schedules transferred from tuned kernels of its kind
(``transfer``): they become its first records, and the evolutionary search starts from them instead of
from random schedules. Every untuned task gets that first visit before any task is searched further.
The budget rules are in ``budget``. Every measured trial is appended to the database as it comes, so a
run can be interrupted and re-run: it spends only the trials still lacking.
"""

from __future__ import annotations

import itertools
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm_ffi import structural_hash

from schedules import database as db_files
from schedules.search.budget import (
    MIN_TRIALS,
    allocate_trials,
    best_latency_s,
    time_shares,
    trials_done,
    tuning_order,
    visit_plan,
)
from schedules.search.cost_model import load_cost_model, save_cost_model
from schedules.search.measure import RPCOptions, make_builder, make_runner, measured_on, time_schedules
from schedules.search.transfer import (
    MAX_CANDIDATES,
    Sources,
    record_for,
    source_of,
    transfer_candidates,
    transfer_sources,
)
from schedules.tasks import Task
from targets.registry import TargetSpec

OPENING_TRIALS = max(MIN_TRIALS, MAX_CANDIDATES)  # an untuned task's first visit: its transfers, or one small batch
GPU_TRIALS_PER_BATCH = 64  # MetaSchedule's default; see SearchOptions


class TuningMeasuredNothing(RuntimeError):
    """Every candidate of a batch failed to build or run: the tuning setup is broken, not the task."""


class _TimeUp(Exception):
    """The slice is over: stop after the batch just recorded."""


@dataclass
class Slice:
    """When a run stops: at the end of the last batch that fits before ``deadline`` (``--minutes``; a
    batch is expected to last as long as the one before it), or on the first SIGINT or SIGTERM (Ctrl-C,
    ``kill``, ``timeout``) at the end of the batch being measured; either way the batch is saved and the
    next run resumes after it. A second signal interrupts at once."""

    deadline: float | None = None
    signalled: str | None = None
    last_batch_s: float = 0.0

    def over(self) -> bool:
        if self.signalled is not None:
            return True
        return self.deadline is not None and time.time() + self.last_batch_s > self.deadline

    def reason(self, minutes: float | None) -> str:
        if self.signalled:
            return f"stopped by {self.signalled}"
        if time.time() > self.deadline:
            return f"time limit of {minutes:g} min reached"
        return f"time limit of {minutes:g} min: the next batch (about {self.last_batch_s:.0f} s) would pass it"

    @contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM while the run lasts (a SIGINT the shell ignores, as in a background
        job, stays ignored; outside the main thread nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum, frame) -> None:
            if self.signalled:
                raise KeyboardInterrupt
            self.signalled = signal.Signals(signum).name
            print(f"\n{self.signalled}: stopping at the end of this batch (again to stop now)", file=sys.stderr)

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(sig) is not signal.SIG_IGN}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
class SearchOptions:
    """Evolutionary search sizes. Smaller than MetaSchedule's defaults (population 512), which spend
    about 40 s per 16 candidates on 2 cores, mostly in the search, not the measurement.

    A batch costs one search whatever its size (a CUDA pointwise kernel, population 128, on 2 cores:
    19 s for 16 candidates, 19 s for 64), then its builds and runs. A CPU candidate runs for tens of
    milliseconds and feeds the cost model sooner in batches of 16; a GPU candidate runs in microseconds,
    so GPU batches take MetaSchedule's default of 64 (``for_target``)."""

    population_size: int = 128
    genetic_num_iters: int = 3
    trials_per_batch: int = 16
    seed: int = 0

    @classmethod
    def for_target(cls, spec: TargetSpec, **sizes: int | None) -> SearchOptions:
        """The sizes for ``spec`` (64 candidates per batch on a GPU), overridden by those given (not None)."""
        defaults = {"trials_per_batch": GPU_TRIALS_PER_BATCH} if spec.is_gpu else {}
        return cls(**{**defaults, **{name: size for name, size in sizes.items() if size is not None}})


def merge_tasks(tasks_by_model: dict[str, list[Task]]) -> list[TuningTask]:
    """Merge structurally identical kernels across models, most expensive first."""
    merged: dict[int, TuningTask] = {}
    for model, tasks in tasks_by_model.items():
        for task in tasks:
            key = structural_hash(task.mod)
            entry = merged.setdefault(key, TuningTask(task))
            entry.calls_by_model[model] = entry.calls_by_model.get(model, 0) + task.weight
    return sorted(merged.values(), key=lambda t: t.cost, reverse=True)


def tune(
    spec: TargetSpec,
    tasks: list[TuningTask],
    models: list[str],
    trials_per_task: int | None = None,
    total_trials: int | None = None,
    root: Path | None = None,
    rpc: RPCOptions | None = None,
    search: SearchOptions | None = None,
    force: bool = False,
    log=print,
    builder=None,
    transfer: bool = True,
    sources: Sources | None = None,
    minutes: float | None = None,
) -> dict:
    """Tune every task up to its allocation, breadth first (``visit_plan``); returns a summary. Safe to
    interrupt and re-run.

    With ``transfer``, a task without records first measures schedules transferred from ``sources``
    (default: the tuned workloads of this database and the others of its architecture, then another
    architecture's), to which every task tuned in the run is added.
    With ``minutes``, the run stops at the end of the last batch that fits in that time (a slice of a
    longer run: what it measured is kept, and the next run resumes from it). ``search`` defaults to the target's
    sizes (``SearchOptions.for_target``)."""
    search = search or SearchOptions.for_target(spec)
    database = db_files.open_database(spec, root, force=force, create=True)
    folder = db_files.database_dir(spec, root)
    if not transfer:
        sources = Sources()
    elif sources is None:
        sources = transfer_sources(spec, root, database)
    sources = replace(sources, native=list(sources.native))  # grows with every task tuned in this run
    cost_model = load_cost_model(folder, spec)
    db_files.write_metadata(folder, spec, trials_per_task or 0, models, measured_on=measured_on(spec, rpc))
    shares = time_shares(tasks, database)
    goals = allocate_trials(tasks, trials_per_task, total_trials, shares)
    done_by_workload = trials_done(database, folder)
    done = [done_by_workload.get(structural_hash(t.task.mod), 0) for t in tasks]
    order = tuning_order(goals, done, shares)
    to_run = sum(goals[i] - done[i] for i in order)
    log(f"{len(tasks)} tasks for {spec.key}; {len(tasks) - len(order)} already tuned; "
        f"{to_run} trials to run -> {folder}")
    plan = visit_plan(order, done, goals, OPENING_TRIALS)
    builder, runner = builder or make_builder(spec), make_runner(spec, rpc)
    bar = tqdm(total=to_run, unit="trial", dynamic_ncols=True, disable=not order)
    measured = transferred = 0
    reached: set[int] = set()
    start = time.time()
    until = Slice(start + minutes * 60 if minutes is not None else None)
    stopped = None
    with until.stopping_on_signals(), _closing(bar, folder, spec, trials_per_task, models, start):
        for index, (i, cap) in enumerate(plan, start=1):
            entry, left = tasks[i], goals[i] - done[i]
            if left <= 0:
                continue
            trials = min(left, cap or left)
            bar.set_description(f"[{index}/{len(plan)}] {entry.task.kind:9s}")
            seeded, untuned = 0, best_latency_s(database, entry.task.mod) is None
            if transfer and untuned:
                seeded = _measure_transfers(spec, entry.task, min(trials, MAX_CANDIDATES), sources, database,
                                            builder, runner)
                bar.update(seeded)
            searched = 0 if cap and seeded else trials - seeded  # an opening visit that transferred is done
            if searched:
                measured += _tune_one(spec, entry.task, searched, database, builder, runner, search, bar,
                                      cost_model, until)
                save_cost_model(cost_model, folder, spec)
            done[i] += seeded + searched
            measured, transferred = measured + seeded, transferred + seeded
            if untuned:
                sources.native += source_of(database, entry.task.mod, spec.key)  # for the tasks after it
            reached.add(i)
            bar.write(_task_line(f"[{index}/{len(plan)}]", entry.task, seeded + searched, seeded, database))
            if until.over():
                stopped = f"{until.reason(minutes)}; {len(reached)} of {len(order)} tasks visited; re-run to resume"
                break
    if stopped:
        log(stopped)
    return {"tasks": len(tasks), "tuned_now": len(reached), "valid_trials": measured, "transferred_trials": transferred,
            "seconds": time.time() - start, "database": str(folder), "stopped": stopped}


@contextmanager
def _closing(bar, folder: Path, spec: TargetSpec, trials_per_task: int | None, models: list[str], start: float):
    """However a run ends: close the bar, repair a record torn by an interrupt, compact the database and
    add the run's minutes to the metadata."""
    try:
        yield
    finally:
        bar.close()
        db_files.repair_and_validate(folder / db_files.RECORD_FILE)
        db_files.compact(folder)
        db_files.write_metadata(folder, spec, trials_per_task or 0, models, new_run=False,
                                minutes=(time.time() - start) / 60)


def _task_line(prefix: str, task: Task, trials: int, seeded: int, database) -> str:
    line = f"{prefix} {task.kind:9s} {task.name}: {trials} trials"
    if seeded:
        line += f" ({seeded} transferred)"
    best = best_latency_s(database, task.mod)
    if best:
        line += f", best {best * 1e3:.4f} ms ({task.flops / best / 1e9:.1f} GFLOP/s)"
    return line


def _measure_transfers(spec, task: Task, limit: int, sources: Sources, database, builder, runner) -> int:
    """Measure up to ``limit`` schedules transferred to ``task`` and keep them as its first records (the
    search then seeds its population from them); returns how many ran."""
    target = spec.tvm_target()
    candidates = list(itertools.islice(transfer_candidates(task.mod, sources, target), limit))
    times = time_schedules([c.sch for c in candidates], target, builder, runner)
    for candidate, secs in zip(candidates, times):
        if secs:
            record_for(database, task, candidate.sch, target, secs)
    return sum(1 for secs in times if secs)


def _tune_one(spec, task: Task, trials: int, database, builder, runner, search: SearchOptions, bar, cost_model,
              until: Slice | None = None) -> int:
    """Run MetaSchedule on one task (until the slice is over, if given); returns how many candidates were
    measured successfully."""
    from tvm.s_tir import meta_schedule as ms

    progress = _ProgressCallback(bar, until or Slice())
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
                cost_model=cost_model,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress],
                task_scheduler="round-robin",
            )
        except Exception:
            if progress.failure:
                raise TuningMeasuredNothing(progress.failure) from None
            if not progress.time_up:
                raise
    if progress.failure:
        raise TuningMeasuredNothing(progress.failure)
    return progress.valid


@derived_object
class _ProgressCallback(PyMeasureCallback):
    """Advances the progress bar, fails loudly when a whole batch measures nothing, times each batch, and
    ends the search after the last batch that fits in the slice (it is in the database by then: the default
    callbacks run first)."""

    def __init__(self, bar, until: Slice) -> None:
        super().__init__()
        self.bar = bar
        self.until = until
        self.batch_start = time.time()
        self.valid = 0
        self.failure: str | None = None
        self.time_up = False

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
        now = time.time()
        self.until.last_batch_s, self.batch_start = now - self.batch_start, now
        if self.until.over():
            self.time_up = True
            raise _TimeUp()
