"""Which schedule each kernel of a model compiles with: its own tuned record, a schedule transferred
from a tuned kernel of the same kind at another shape, or a default.

On CPUs a default is MetaSchedule's first design space for the kernel (parallel and vectorised,
``search.fallback``), never TVM's naive loop nest; on GPUs it is DLight's rules (``compile``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from tvm.s_tir import meta_schedule as ms

from schedules.search.budget import best_latency_s
from schedules.search.fallback import default_schedule
from schedules.search.transfer import Candidate, Sources, record_for, transfer_candidates
from schedules.tasks import Task
from targets.registry import TargetSpec

NOT_MEASURED = [1.0]  # run_secs of a schedule chosen without measuring (one per kernel, in memory only)
MEASURED_PER_KERNEL = 6  # transferred schedules timed per kernel when compile measures to choose

# Times schedules on the target: ``measure(schedules) -> [run_secs, or None where one failed]``
Measure = Callable[[list], list]


@dataclass
class Coverage:
    """How each task of a model is scheduled, by task name."""

    tuned: list[str] = field(default_factory=list)
    transferred: dict[str, str] = field(default_factory=dict)  # task -> the database it came from
    default: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # task -> why source traces did not apply
    measured: int = 0  # transferred schedules timed on the target to choose among them (0: chosen unmeasured)

    @property
    def total(self) -> int:
        return len(self.tuned) + len(self.transferred) + len(self.default)

    def counts(self) -> dict[str, int]:
        return {"tuned": len(self.tuned), "transferred": len(self.transferred), "default": len(self.default),
                "tasks": self.total}

    def summary(self) -> str:
        return (f"{len(self.tuned)} tuned, {len(self.transferred)} transferred, {len(self.default)} default "
                f"of {self.total} kernels")

    def sources(self) -> list[str]:
        """The databases the transferred schedules came from."""
        return sorted(set(self.transferred.values()))


def cover(tasks: list[Task], spec: TargetSpec, database=None, sources: Sources | None = None,
          with_defaults: bool = True, measure: Measure | None = None) -> tuple[object, Coverage]:
    """A database to compile with (the target's own records first, then one transferred or default
    schedule per kernel it lacks) and the coverage it gives. ``with_defaults=False`` only counts:
    the kernels left to a default get no schedule (``mnv2bench schedules``). With ``measure``, each
    kernel's first transferred schedules are timed and the fastest is kept; without, the first one."""
    sources = sources if sources is not None else Sources()
    coverage = Coverage()
    extra = ms.database.MemoryDatabase()
    target = spec.tvm_target()
    transfers: dict[str, tuple[Task, list[Candidate]]] = {}
    for task in tasks:
        if database is not None and best_latency_s(database, task.mod) is not None:
            coverage.tuned.append(task.name)
            continue
        if spec.is_gpu:  # DLight's rules schedule it at compile time
            coverage.default.append(task.name)
            continue
        skipped: list[str] = []
        limit = MEASURED_PER_KERNEL if measure else 1
        candidates = list(itertools.islice(transfer_candidates(task.mod, sources, target, skipped), limit))
        if skipped:
            coverage.skipped[task.name] = skipped
        if candidates:
            transfers[task.name] = (task, candidates)
            continue
        fallback = default_schedule(task.mod, target) if with_defaults else None
        if fallback is not None:
            record_for(extra, task, fallback, target, NOT_MEASURED)
        coverage.default.append(task.name)
    for name, (task, candidate, run_secs) in choose(transfers, measure, coverage).items():
        record_for(extra, task, candidate.sch, target, run_secs)
        coverage.transferred[name] = candidate.source.database
    if database is None:
        return extra, coverage
    return ms.database.OrderedUnionDatabase(database, extra), coverage


def choose(transfers: dict[str, tuple[Task, list[Candidate]]], measure: Measure | None,
           coverage: Coverage) -> dict[str, tuple[Task, Candidate, list[float]]]:
    """Each kernel's transferred schedule: the fastest measured (all kernels' candidates timed in one
    batch, so the builds run in parallel), else the first: the nearest source's fastest
    record (speed carries over to a near shape far better than to a far one)."""
    flat = [(name, candidate) for name, (_, candidates) in transfers.items() for candidate in candidates]
    times = measure([candidate.sch for _, candidate in flat]) if measure and flat else [None] * len(flat)
    coverage.measured = sum(1 for secs in times if secs)
    timed: dict[str, list[tuple[float, Candidate, list[float]]]] = {}
    for (name, candidate), secs in zip(flat, times):
        if secs:
            timed.setdefault(name, []).append((sum(secs) / len(secs), candidate, secs))
    chosen = {}
    for name, (task, candidates) in transfers.items():
        if name in timed:
            _, candidate, secs = min(timed[name], key=lambda entry: entry[0])
            chosen[name] = (task, candidate, secs)
        else:  # not measured, or none of its candidates ran
            chosen[name] = (task, candidates[0], NOT_MEASURED)
    return chosen
