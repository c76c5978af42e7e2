"""Schedule transfer: a kernel with no records of its own borrows the tuned schedules of kernels of the
same structure at other shapes (transfer-tuning, Gibson and Cano, PACT 2022).

The 27 models of the paper are a few kinds of kernel (depthwise 3x3, pointwise 1x1, the stem, the heads)
at many shapes. A source's best traces are replayed on the new workload with their tiling decisions
re-factored to its loop extents, then the target's postprocessors run on the result (parallelise,
vectorise, unroll, pack the weights). A trace that does not replay, or a schedule a postprocessor
rejects, is skipped with its reason; what is kept is a complete schedule of the new workload.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import tvm
from tvm.s_tir import meta_schedule as ms
from tvm_ffi import structural_hash

from schedules import database as db_files
from schedules.search.budget import mean_seconds
from schedules.tasks import Task, classify
from targets.registry import TargetSpec

SOURCES_PER_TASK = 3  # the nearest tuned workloads a task draws from
RECORDS_PER_SOURCE = 3  # each one's best records
MAX_CANDIDATES = SOURCES_PER_TASK * RECORDS_PER_SOURCE


class TransferSkipped(Exception):
    """A source trace that does not apply to the new workload; the message says why."""


@dataclass(frozen=True)
class Source:
    """A tuned workload whose records can be replayed elsewhere."""

    mod: tvm.IRModule
    records: tuple  # its best TuningRecords, fastest first
    database: str  # the key of the database it came from

    @cached_property
    def structure(self) -> tuple:
        return structure(self.mod)

    @cached_property
    def shape(self) -> tuple[int, ...]:
        return anchor_shape(self.mod)

    @cached_property
    def kind(self) -> str:
        return classify(self.mod)

    @property
    def best_s(self) -> float:
        return mean_seconds(self.records[0])


@dataclass
class Candidate:
    """A replayed schedule of a new workload, and the tuned workload it came from."""

    sch: tvm.s_tir.Schedule
    source: Source


def structure(mod: tvm.IRModule) -> tuple:
    """What a trace's instructions refer to: the blocks by name (numbering aside), each with its loop
    depth. Two workloads with the same structure differ only in their extents."""
    sch = tvm.s_tir.Schedule(mod)
    blocks = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = re.sub(r"_?\d+$", "", sch.get(block).name_hint)
        blocks.append((name, len(sch.get_loops(block))))
    return tuple(blocks)


ELEMENTWISE = re.compile(r"T_(add|subtract|multiply|divide|maximum|minimum|relu|cast)$")


def extends(blocks: tuple, prefix: tuple) -> bool:
    """``blocks`` are ``prefix`` followed by elementwise blocks only (TOPI names them ``T_add``, ...)."""
    extra = blocks[len(prefix):]
    return bool(extra) and blocks[: len(prefix)] == prefix and all(ELEMENTWISE.match(name) for name, _ in extra)


def anchor_shape(mod: tvm.IRModule) -> tuple[int, ...]:
    """The extents of every buffer the anchor block touches: what the distance between shapes reads."""
    from tvm.s_tir.analysis import find_anchor_sblock

    anchor = find_anchor_sblock(mod)
    if anchor is None:
        return ()
    regions = [*anchor.reads, *anchor.writes]
    return tuple(int(d) for region in regions for d in region.source.shape)


def distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Sum of |log(a/b)| over the anchor's extents (0 for the same shape)."""
    if len(a) != len(b):
        return math.inf
    return sum(abs(math.log(max(x, 1) / max(y, 1))) for x, y in zip(a, b))


def sources_from(database, key: str) -> list[Source]:
    """Every tuned workload of a database, with its best records."""
    if database is None:
        return []
    seen, sources = set(), []
    for record in database.get_all_tuning_records():
        workload_key = structural_hash(record.workload.mod)
        if workload_key not in seen:
            seen.add(workload_key)
            sources += source_of(database, record.workload.mod, key)
    return sources


def source_of(database, mod: tvm.IRModule, key: str) -> list[Source]:
    """``mod``'s best records in ``database`` as a source (a list of one), or [] if it has none."""
    if not database.has_workload(mod):
        return []
    best = database.get_top_k(database.commit_workload(mod), RECORDS_PER_SOURCE)
    return [Source(mod, tuple(best), key)] if best else []


@dataclass
class Sources:
    """The tuned workloads a target's kernels may borrow from: its own architecture's (``native``, which a
    tuning run extends as it goes) and, for a kernel none of those fits, those of the database named by
    ``foreign_key``, another CPU architecture's, opened the first time one is needed (tens of seconds)."""

    native: list[Source] = field(default_factory=list)
    foreign_key: str | None = None
    root: Path | None = None

    @cached_property
    def foreign(self) -> list[Source]:
        if self.foreign_key is None:
            return []
        return sources_from(db_files.open_by_key(self.foreign_key, self.root), self.foreign_key)

    def pools(self) -> Iterator[list[Source]]:
        """The native sources, then (lazily) the foreign ones."""
        yield self.native
        yield self.foreign


def transfer_sources(spec: TargetSpec, root: Path | None = None, database=None) -> Sources:
    """What a kernel for ``spec`` may borrow from: the tuned workloads of its own database (``database``, if
    already open) and of every other database of its architecture, then another architecture's."""
    native = [source for key in db_files.same_architecture(spec, root)
              for source in sources_from(database if key == spec.key and database is not None
                                         else db_files.open_by_key(key, root), key)]
    return Sources(native, db_files.other_architecture(spec, root), root)


def nearest_sources(mod: tvm.IRModule, sources: Sources, count: int = SOURCES_PER_TASK) -> list[tuple[float, Source]]:
    """The tuned workloads of the same kind and structure as ``mod``, nearest shapes first. Failing those,
    the ones whose blocks ``mod`` repeats and then follows with elementwise ones (a classifier with a bias
    borrows from one without: the trace schedules the matmul, the bias add runs as a loop of its own).
    Another architecture's sources only where none of the target's own fits."""
    kind, shape, blocks = classify(mod), anchor_shape(mod), structure(mod)
    for pool in sources.pools():
        same = [s for s in pool if s.kind == kind and s.structure == blocks]
        same = same or [s for s in pool if s.kind == kind and extends(blocks, s.structure)]
        matching = [(distance(shape, s.shape), s) for s in same]
        matching = [(d, s) for d, s in matching if d < math.inf]
        if matching:
            return sorted(matching, key=lambda pair: (pair[0], pair[1].best_s))[:count]
    return []


def vector_lanes(target: tvm.target.Target) -> int:
    """float32 lanes of one vector register of the target: 16 with AVX-512, 8 with AVX2, 4 otherwise
    (NEON, SSE). Read from the target's CPU features (LLVM's own vector-width query answers for the
    host, not for the target)."""
    has = tvm.get_global_func("target.llvm_cpu_has_feature")
    for feature, lanes in (("avx512f", 16), ("avx2", 8)):
        try:
            if has(feature, target):
                return lanes
        except Exception:  # a feature this triple does not know
            break
    return 4


def refactor(factors: list[int], extent: int, lanes: int, max_innermost: int = 0) -> list[int]:
    """Tile factors of ``extent`` close to ``factors``: each inner factor kept where it divides what is
    left, else the largest divisor below it (a whole number of vectors where possible for the
    innermost); the outermost takes the rest."""
    left, inner = extent, []
    for position, factor in enumerate(reversed(factors[1:])):
        cap = max(1, min(factor, left))
        if position == 0 and max_innermost > 0:
            cap = min(cap, max_innermost)
        divisors = [d for d in range(cap, 0, -1) if left % d == 0]
        if position == 0 and factor % lanes == 0:
            whole_vectors = [d for d in divisors if d % lanes == 0]
            divisors = whole_vectors or divisors
        inner.append(divisors[0])
        left //= divisors[0]
    return [left, *reversed(inner)]


def narrow(factors: list[int], narrowing: int, lanes: int) -> list[int]:
    """A tile tuned for vectors ``narrowing`` times wider than the target's, fitted to the target's register
    file: an innermost factor of whole wide vectors (a register tile of, say, 2 x 16 floats) shrinks by
    ``narrowing`` (2 x 8 floats on AVX2: as many registers, each narrower) and the next factor out grows by
    as much, so the tile covers the same extent. Left as it is where the innermost is no whole vector."""
    if narrowing == 1 or len(factors) < 2 or factors[-1] % (lanes * narrowing):
        return factors
    return [*factors[:-2], factors[-2] * narrowing, factors[-1] // narrowing]


def replay(record, mod: tvm.IRModule, target: tvm.target.Target, lanes: int) -> tvm.s_tir.Schedule:
    """The record's trace on ``mod`` with re-factored tiles, postprocessed for ``target``."""
    sch = tvm.s_tir.Schedule(mod)
    narrowing = max(vector_lanes(record.target) // lanes, 1) if record.target is not None else 1

    def decide(inst, inputs, attrs, decision):
        if inst.kind.name == "SamplePerfectTile":
            extent = int(sch.get(inputs[0]).extent)
            return refactor(narrow([int(f) for f in decision], narrowing, lanes), extent, lanes, int(attrs[1]))
        return decision

    try:
        record.trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=decide)
    except Exception as exc:  # a block or loop the trace names is not there, a decision out of range ...
        raise TransferSkipped(f"trace does not replay: {_first_line(exc)}") from None
    postprocess(sch, mod, target)
    return sch


def postprocess(sch: tvm.s_tir.Schedule, mod: tvm.IRModule, target: tvm.target.Target) -> None:
    """Run the target's postprocessors on ``sch`` as MetaSchedule does on every candidate; without them
    a schedule compiles but runs unparallelised and unvectorised."""
    context = tune_context(mod, target)
    sch.enter_postproc()  # marks where a replay with remove_postproc=True stops, as MetaSchedule's own traces do
    for postproc in context.space_generator.postprocs:
        try:
            accepted = postproc.apply(sch)
        except Exception as exc:
            raise TransferSkipped(f"{type(postproc).__name__} failed: {_first_line(exc)}") from None
        if not accepted:
            raise TransferSkipped(f"{type(postproc).__name__} rejected the schedule")


def tune_context(mod: tvm.IRModule, target: tvm.target.Target, seed: int = -1) -> ms.TuneContext:
    """A TuneContext with the target's generic schedule rules and postprocessors (LLVM's or CUDA's), made
    without importing TVM's tensor intrinsics: ``TuneContext`` imports them all unconditionally (20-40 s:
    hundreds of TVMScript functions parsed), and float32 kernels use none of them (the x86 defaults would
    ask for VNNI's)."""
    import sys
    import types

    kind = "cuda" if target.kind.name == "cuda" else "llvm"
    space = ms.space_generator.PostOrderApply(
        sch_rules=ms.schedule_rule.ScheduleRule.create(kind), postprocs=ms.postproc.Postproc.create(kind),
        mutator_probs=ms.mutator.Mutator.create(kind))
    name = "tvm.s_tir.tensor_intrin"
    stand_in = name not in sys.modules
    if stand_in:
        sys.modules[name] = types.ModuleType(name)  # satisfies the import; removed right after it
    try:
        return ms.TuneContext(mod=mod, target=target, space_generator=space, rand_state=seed)
    finally:
        if stand_in:
            del sys.modules[name]


def transfer_candidates(mod: tvm.IRModule, sources: Sources, target: tvm.target.Target,
                        skipped: list[str] | None = None) -> Iterator[Candidate]:
    """Replayed schedules of ``mod`` from the nearest sources' best records, nearest and fastest first
    (lazily: replaying costs a fraction of a second); each skipped trace adds its reason to ``skipped``."""
    lanes = vector_lanes(target)
    seen = set()
    for _, source in nearest_sources(mod, sources):
        for record in source.records:
            try:
                sch = replay(record, mod, target, lanes)
            except TransferSkipped as exc:
                if skipped is not None:
                    skipped.append(str(exc))
                continue
            key = structural_hash(sch.mod)
            if key not in seen:
                seen.add(key)
                yield Candidate(sch, source)


def record_for(database, task: Task, sch: tvm.s_tir.Schedule, target: tvm.target.Target,
               run_secs: list[float]) -> None:
    """Commit ``sch`` as a record of the task's workload."""
    workload = database.commit_workload(task.mod)
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, run_secs, target, args_info(sch)))


def args_info(sch: tvm.s_tir.Schedule) -> list:
    """The kernel's arguments as the schedule leaves them (weights in the layout it packed them into)."""
    return ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)


def _first_line(exc: Exception) -> str:
    """The last non-empty line of a TVM error (its message; the lines above are the C++ stack)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__
