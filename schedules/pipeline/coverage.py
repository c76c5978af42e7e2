"""Which schedule each kernel of a model compiles with: its own tuned record, a schedule transferred
from a tuned kernel of the same kind at another shape, or a default.

On CPUs a default is MetaSchedule's first design space for the kernel (parallel and vectorised,
``search.fallback``), never TVM's naive loop nest; on GPUs it is DLight's rules (``compile``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm.s_tir import meta_schedule as ms

from schedules.search.budget import best_latency_s
from schedules.search.fallback import default_schedule
from schedules.search.transfer import Source, best_transfer, record_for
from schedules.tasks import Task
from targets.registry import TargetSpec

NOT_MEASURED = [1.0]  # run_secs of a schedule chosen without measuring (one per kernel, in memory only)


@dataclass
class Coverage:
    """How each task of a model is scheduled, by task name."""

    tuned: list[str] = field(default_factory=list)
    transferred: dict[str, str] = field(default_factory=dict)  # task -> the database it came from
    default: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # task -> why source traces did not apply

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


def cover(tasks: list[Task], spec: TargetSpec, database=None, sources: list[Source] = (),
          with_defaults: bool = True) -> tuple[object, Coverage]:
    """A database to compile with (the target's own records first, then one transferred or default
    schedule per kernel it lacks) and the coverage it gives. ``with_defaults=False`` only counts:
    the kernels left to a default get no schedule (``mnv2bench schedules``)."""
    coverage = Coverage()
    extra = ms.database.MemoryDatabase()
    target = spec.tvm_target()
    for task in tasks:
        if database is not None and best_latency_s(database, task.mod) is not None:
            coverage.tuned.append(task.name)
            continue
        if spec.is_gpu:  # DLight's rules schedule it at compile time
            coverage.default.append(task.name)
            continue
        skipped: list[str] = []
        candidate = best_transfer(task, sources, target, skipped)
        if skipped:
            coverage.skipped[task.name] = skipped
        if candidate is not None:
            record_for(extra, task, candidate.sch, target, NOT_MEASURED)
            coverage.transferred[task.name] = candidate.source.database
            continue
        fallback = default_schedule(task.mod, target) if with_defaults else None
        if fallback is not None:
            record_for(extra, task, fallback, target, NOT_MEASURED)
        coverage.default.append(task.name)
    if database is None:
        return extra, coverage
    return ms.database.OrderedUnionDatabase(database, extra), coverage
