"""Schedule transfer across shapes and CPUs, defaults that are never TVM's naive loops, and a cost model
that carries over from one tuning run to the next."""

from __future__ import annotations

import shutil

import pytest
from conftest import TINY

from schedules import database as db_files
from schedules.pipeline.compile import model_tasks
from schedules.search.cost_model import INFO_FILE, MODEL_FILE, load_cost_model, save_cost_model
from schedules.search.fallback import default_schedule
from schedules.search.transfer import (
    Source,
    Sources,
    TransferSkipped,
    narrow,
    nearest_sources,
    refactor,
    replay,
    sources_from,
    tune_context,
    vector_lanes,
)


@pytest.mark.parametrize(
    ("factors", "extent", "lanes", "expected"),
    [
        ([4, 2, 7, 16], 4 * 2 * 7 * 16, 16, [4, 2, 7, 16]),  # the same extent: the decision is kept
        ([1, 4, 3, 32], 96, 16, [1, 1, 3, 32]),  # factors that divide what is left are kept
        ([1, 4, 3, 32], 80, 16, [5, 1, 1, 16]),  # 20 would divide 80, but 16 is a whole vector
        ([2, 2, 5, 16], 9 * 16, 16, [3, 1, 3, 16]),  # 5 -> 3, the largest divisor of 9 below it; the outermost takes the rest
        ([1, 1, 24], 20, 8, [1, 1, 20]),  # no whole vector divides 20: the largest divisor below 24
        ([1, 2, 16], 144, 16, [9, 1, 16]),
    ],
)
def test_tiles_are_refactored_to_the_new_extent(factors, extent, lanes, expected) -> None:
    new = refactor(factors, extent, lanes)
    assert new == expected
    product = 1
    for f in new:
        product *= f
    assert product == extent


@pytest.mark.parametrize(
    ("factors", "narrowing", "lanes", "expected"),
    [
        ([1, 4, 2, 32], 2, 8, [1, 4, 4, 16]),  # 2 zmm per row tuned on AVX-512 -> 2 ymm on AVX2, same extent
        ([7, 1, 16], 2, 8, [7, 2, 8]),
        ([2, 3, 24], 2, 8, [2, 3, 24]),  # 24 is no whole number of 16-lane vectors: kept
        ([1, 4, 2, 32], 1, 16, [1, 4, 2, 32]),  # same vector width: nothing to fit
    ],
)
def test_register_tiles_are_narrowed_to_the_targets_vectors(factors, narrowing, lanes, expected) -> None:
    assert narrow(factors, narrowing, lanes) == expected


def test_vector_lanes_follow_the_target() -> None:
    import tvm

    def lanes(mcpu: str) -> int:
        return vector_lanes(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu}))

    assert lanes("znver3") == 8 and lanes("znver4") == 16 and lanes("x86-64-v3") == 8


def classifier(bias: bool, width: int = 32):
    """A classifier's kernel: ``matmul`` alone (the exports whose bias folded away) or with ``T_add``."""
    import tvm
    from tvm import te, topi

    x, w = te.placeholder((1, 64), name="x"), te.placeholder((64, width), name="w")
    k = te.reduce_axis((0, 64), name="k")
    out = te.compute((1, width), lambda i, j: te.sum(x[i, k] * w[k, j], axis=k), name="matmul")
    args = [x, w]
    if bias:
        args.append(te.placeholder((width,), name="bias"))
        out = topi.add(out, args[-1])
    return tvm.IRModule({"main": te.create_prim_func([*args, out])})


def sampled_source(mod, target, seconds: float = 1e-3) -> Source:
    """A source with one record: a schedule sampled from MetaSchedule's design space (none measured), its
    trace simplified as a database stores it (a query for the matmul's consumers, which found none, dropped)."""
    from tvm.s_tir import meta_schedule as ms

    from schedules.search.transfer import args_info

    (sch, *_) = tune_context(mod, target, seed=0).space_generator.generate_design_space(mod)
    workload = ms.database.MemoryDatabase().commit_workload(mod)
    trace = sch.trace.simplified(remove_postproc=True)
    return Source(mod, (ms.database.TuningRecord(trace, workload, [seconds], target, args_info(sch)),), "test")


def test_a_kernel_with_an_epilogue_borrows_when_nothing_matches_it_exactly(host) -> None:
    import numpy as np
    import tvm

    target = host.tvm_target()
    plain = sampled_source(classifier(bias=False, width=48), target)
    with_bias = classifier(bias=True)
    assert [s for _, s in nearest_sources(with_bias, Sources([plain]))] == [plain]
    exact = sampled_source(classifier(bias=True, width=48), target)
    assert [s for _, s in nearest_sources(with_bias, Sources([plain, exact]))] == [exact]  # exact matches first
    assert nearest_sources(classifier(bias=False), Sources([exact])) == []  # never the other way: the add is lost

    sch = replay(plain.records[0], with_bias, target, vector_lanes(target))
    x, w, b = (np.random.default_rng(0).standard_normal(s).astype("float32") for s in ((1, 64), (64, 32), (32,)))
    out = tvm.runtime.tensor(np.zeros((1, 32), "float32"))
    tvm.compile(sch.mod, target=target)(*(tvm.runtime.tensor(a) for a in (x, w, b)), out)
    np.testing.assert_allclose(out.numpy(), x @ w + b, rtol=1e-5)


class CountingSources(Sources):
    """Sources whose foreign database is a list given here, counting how often it is opened."""

    def __init__(self, native: list[Source], foreign: list[Source]):
        super().__init__(native, "other-architecture")
        self.opened, self._foreign = 0, foreign

    @property
    def foreign(self) -> list[Source]:
        self.opened += 1
        return self._foreign


def test_another_architecture_lends_only_what_the_targets_own_cannot(host) -> None:
    """An aarch64 board with a database of its own takes its schedules before an x86 database's, even at a
    farther shape; the x86 one (opened only then) covers the kernels its own does not."""
    target = host.tvm_target()
    own, foreign = sampled_source(classifier(bias=False, width=96), target), sampled_source(classifier(False), target)
    sources = CountingSources([own], [foreign])
    assert [s for _, s in nearest_sources(classifier(bias=False), sources)] == [own]
    assert sources.opened == 0
    assert [s for _, s in nearest_sources(classifier(bias=True), CountingSources([], [foreign]))] == [foreign]


def test_gpu_kernels_transfer_with_cudas_rules_and_postprocessors() -> None:
    """A CUDA trace replays on another shape and passes CUDA's postprocessors (thread limits verified), so
    a GPU slice seeds the kernels it has not reached from those it has. Built here with no GPU."""
    import tvm

    from targets.cuda import cuda_source
    from targets.registry import resolve_target

    target = resolve_target("h200").tvm_target()
    source = sampled_source(classifier(bias=False, width=48), target)
    sch = replay(source.records[0], classifier(bias=False, width=32), target, vector_lanes(target))
    assert "threadIdx" in cuda_source(tvm.compile(sch.mod, target=target))


@pytest.mark.slow
def test_a_trace_that_does_not_apply_is_skipped_with_a_reason(tuned, host) -> None:
    database = db_files.open_database(host, tuned[0])
    (source, *_) = sources_from(database, host.key)
    other = next(t for t in model_tasks(TINY, host) if t.kind == "depthwise" and t.kind != source.kind)
    with pytest.raises(TransferSkipped, match="does not replay|rejected|failed"):
        replay(source.records[0], other.mod, host.tvm_target(), vector_lanes(host.tvm_target()))


@pytest.mark.slow
def test_tuning_measures_transferred_schedules_first(tuned, cli, host, tmp_path) -> None:
    root = tmp_path / "schedules"
    shutil.copytree(db_files.database_dir(host, tuned[0]), root / host.key)
    more = cli("tune", "--models", TINY, "--max-tasks", "3", "--trials-per-task", "8", "--population", "32",
               "--schedules", root)  # the tuned fixture's run with one task more
    assert more.returncode == 0, more.stderr[-2000:]
    assert "2 already tuned" in more.stdout and "transferred)" in more.stdout, more.stdout
    assert '"transferred_trials": 0' not in more.stdout


@pytest.mark.slow
def test_a_cpu_without_a_database_draws_on_its_architectures(tuned, cli, host, tmp_path) -> None:
    """x86-64-v3 (AVX2) has no database: the host's records are replayed for it, reported as transferred
    from that database, and the library computes what ONNX Runtime does."""
    built = cli("compile", TINY, "--mcpu", "x86-64-v3", "-o", tmp_path / "v3.so", "--schedules", tuned[0])
    assert built.returncode == 0, built.stderr[-2000:]
    assert f"transfers from {host.key}@" in built.stdout and "0 tuned, " in built.stdout, built.stdout
    assert f"transferred (replayed from {host.key}):" in built.stdout
    assert "parity with ONNX Runtime: ok" in built.stdout


@pytest.mark.slow
def test_an_architecture_without_a_database_draws_on_anothers(tuned, cli, host, tmp_path) -> None:
    """No aarch64 database: an aarch64 board's kernels replay the x86 host's records, their register tiles
    narrowed to NEON's 4 lanes (the board check of the library: tests/test_rpc_board.py)."""
    built = cli("compile", TINY, "--target", "rpi4", "-o", tmp_path / "rpi4.so", "--schedules", tuned[0])
    assert built.returncode == 0, built.stderr[-2000:]
    assert f"transfers from {host.key}@" in built.stdout and "0 tuned, " in built.stdout, built.stdout
    assert f"transferred (replayed from {host.key}):" in built.stdout


@pytest.mark.slow
def test_default_cpu_schedules_are_parallel_and_vectorised(host) -> None:
    convs = [t for t in model_tasks(TINY, host) if t.kind in ("depthwise", "pointwise")][:2]
    for task in convs:
        script = default_schedule(task.mod, host.tvm_target()).mod.script()
        assert "T.parallel" in script and "T.vectorized" in script, task.name


@pytest.mark.slow
def test_the_cost_model_is_saved_beside_the_database_and_reloaded(tuned, host) -> None:
    folder = db_files.database_dir(host, tuned[0])
    warnings = []
    model = load_cost_model(folder, host, warn=warnings.append)
    assert warnings == [] and model.booster is not None and model.data_size >= 8


@pytest.mark.parametrize("damage", ["missing info", "corrupt", "other target"])
def test_an_unusable_cost_model_is_ignored_with_one_line(tmp_path, host, damage) -> None:
    import json

    (tmp_path / MODEL_FILE).write_bytes(b"\x1f\x8b not a model")
    if damage != "missing info":
        key = host.key if damage == "corrupt" else "aarch64-linux-gnu-cortex-a72"
        (tmp_path / INFO_FILE).write_text(json.dumps({"target_key": key}))
    warnings = []
    model = load_cost_model(tmp_path, host, warn=warnings.append)
    assert model.booster is None and len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("mnv2bench: warning: ignoring the cost model")
    assert load_cost_model(tmp_path / "nothing", host, warn=warnings.append).booster is None
    assert len(warnings) == 1  # no file at all is a cold start, not a warning
    save_cost_model(model, tmp_path, host)  # an untrained model is not written over the old file
    assert (tmp_path / MODEL_FILE).read_bytes() == b"\x1f\x8b not a model"


@pytest.mark.slow
def test_compile_can_time_transferred_schedules_to_choose(tuned, cli, tmp_path) -> None:
    """``--measure-transfers`` times the transferred candidates where the library runs, keeps the fastest
    and says so; the library still computes what ONNX Runtime does."""
    built = cli("compile", TINY, "--mcpu", "x86-64-v3", "--measure-transfers", "-o", tmp_path / "v3.so",
                "--schedules", tuned[0])
    assert built.returncode == 0, built.stderr[-2000:]
    assert "chosen by timing: " in built.stdout and "the fastest kept" in built.stdout, built.stdout
    assert "parity with ONNX Runtime: ok" in built.stdout


def test_measuring_transfers_needs_a_machine_that_runs_the_target(cli, tmp_path) -> None:
    result = cli("compile", TINY, "--target", "rpi4", "--measure-transfers", "-o", tmp_path / "pi.so")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "does not run here" in result.stderr, result.stderr
