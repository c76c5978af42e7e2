"""Tuning: a real MetaSchedule run on a tiny budget, resume, interruption, and database safety."""

from __future__ import annotations

import base64
import contextlib
import json
import operator
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from functools import partial

import pytest
from conftest import TINY, TUNE
from tvm_ffi import structural_hash

from models.errors import UserError
from schedules import database as db_files
from schedules.pipeline.compile import model_tasks
from schedules.search.budget import allocate_trials, time_shares, tuning_order, visit_plan
from schedules.search.measure import make_runner
from schedules.search.tune import SearchOptions, TuningMeasuredNothing, TuningTask, merge_tasks, tune
from schedules.tasks import Task


def copy_of_tuned_database(tuned, spec, root):
    """A schedules folder of our own to damage, holding a copy of the tuned database."""
    shutil.copytree(db_files.database_dir(spec, tuned[0]), root / spec.key)
    return root


def records(root, spec) -> list[dict]:
    path = db_files.database_dir(spec, root) / db_files.RECORD_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_task_classification(host) -> None:
    tasks = model_tasks("mobilenet_v2_1.0_224", host)
    kinds = Counter(t.kind for t in tasks)
    assert kinds["depthwise"] >= 9 and kinds["pointwise"] >= 17  # the network's dw / pw layers
    assert kinds["conv"] == 1  # the 3x3 stem
    assert kinds["dense"] == 1  # the classifier
    merged = merge_tasks({"a": tasks, "b": tasks})
    assert len(merged) == len(tasks) and all(t.models == ["a", "b"] for t in merged)
    assert [t.cost for t in merged] == sorted((t.cost for t in merged), reverse=True)


def test_budget_follows_each_models_measured_time(monkeypatch) -> None:
    best_ms = {"a": 1.0, "b": 3.0, "c": 10.0, "new": None}
    monkeypatch.setattr("schedules.search.budget.best_latency_s", lambda db, mod: best_ms[mod] and best_ms[mod] / 1e3)
    tasks = [TuningTask(Task(name, "pointwise", 1, 1e6, name), calls) for name, calls in
             [("a", {"m1": 1}), ("b", {"m1": 1}), ("c", {"m2": 1}), ("new", {"m2": 1})]]
    shares = time_shares(tasks, database=None)
    # m1's time is a 1:3 split; m2 is c plus a task not yet measured, priced at the median rate (3 ms).
    assert shares == pytest.approx([0.25, 0.75, 10 / 13, 3 / 13])
    assert allocate_trials(tasks, None, 200, shares) == [25, 75, 77, 24]
    assert allocate_trials(tasks, 50, 200, shares) == [25, 50, 50, 24]


def test_tuning_order_spreads_a_budget_that_may_be_cut_short() -> None:
    goals, shares = [100, 40, 40, 20, 10], [0.5, 0.2, 0.2, 0.1, 0.05]
    done = [60, 8, 0, 20, 4]
    # untuned first; then the furthest behind its goal (8/40 before 4/10 before 60/100); met goals drop out
    assert tuning_order(goals, done, shares) == [2, 1, 4, 0]


def test_every_untuned_task_is_visited_before_any_is_refined() -> None:
    order, done, goals = [3, 0, 1], [0, 5, 0, 0], [200, 20, 10, 100]
    # openings of the untuned tasks (3, 0) in order, capped; then passes over all three, each visit a
    # share of the task's remaining trials (never below 8); the last pass uncapped
    plan = visit_plan(order, done, goals, 9, rounds=3)
    assert plan == [(3, 9), (0, 9), (3, 34), (0, 67), (1, 8), (3, 34), (0, 67), (1, 8), (3, None), (0, None), (1, None)]


@pytest.mark.slow
def test_tuning_measures_and_records(tuned, host) -> None:
    root, result = tuned
    recs = records(root, host)
    valid = [r for r in recs if r[1][1] and all(s < 1e9 for s in r[1][1])]  # [workload, [trace, run_secs, ...]]
    assert len(recs) == 16 and len(valid) >= 8, recs[:1]
    meta = db_files.read_metadata(db_files.database_dir(host, root))
    assert meta["target"]["mcpu"] == host.mcpu and meta["tvm_version"] and meta["runs"][0]["trials_per_task"] == 8
    assert '"valid_trials"' in result.stdout
    workload = json.loads((root / host.key / db_files.WORKLOAD_FILE).read_text().splitlines()[0])
    assert b"\n" not in base64.b64decode(workload[1])  # the run left its files compact
    assert "\\n" not in json.dumps(recs[0])


@pytest.mark.slow
def test_resume_runs_nothing_new(tuned, cli, host) -> None:
    root, _ = tuned
    before = len(records(root, host))
    again = cli(*TUNE, "--schedules", str(root))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 already tuned; 0 trials to run" in again.stdout
    assert len(records(root, host)) == before


@pytest.mark.slow
def test_schedules_report_and_compile_apply_the_database(tuned, cli, host, tmp_path) -> None:
    root, _ = tuned
    report = cli("schedules", host.key, "--models", TINY, "--schedules", str(root), "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    (entry,) = json.loads(report.stdout)
    (model,) = entry["models"]
    assert model["model"] == TINY and model["tuned"] == 2 and model["transferred"] >= 1
    assert model["tuned"] + model["transferred"] + model["default"] == model["tasks"]
    assert model["transferred_from"] == [host.key] and 0.0 < model["coverage"] <= 1.0
    assert entry["by_kind"]["pointwise"]["tuned"] + entry["by_kind"]["conv"]["tuned"] >= 1
    tuned_tasks = [t for t in entry["tasks"] if t["best_ms"] is not None]
    assert len(tuned_tasks) == 2 and all(t["trials"] == 8 for t in tuned_tasks)
    built = cli("compile", TINY, "-o", str(tmp_path / "lib.so"), "--schedules", str(root))
    assert built.returncode == 0, built.stderr[-2000:]
    counts = f"2 tuned, {model['transferred']} transferred, {model['default']} default of {model['tasks']} kernels"
    assert f"schedules: {host.key}@" in built.stdout and counts in built.stdout, built.stdout
    assert f"transferred (replayed from {host.key}):" in built.stdout
    assert "parity with ONNX Runtime: ok" in built.stdout  # transferred schedules compute what ONNX Runtime does


@pytest.mark.slow
def test_prepacked_weights_reach_their_kernels_as_constants(tuned, host) -> None:
    """No tuple of weights built and unpacked by the VM around every kernel on every run."""
    from bench.build import resolve_onnx
    from schedules.pipeline.compile import compile_onnx

    compiled = compile_onnx(resolve_onnx(TINY)[1], host, db_files.open_database(host, tuned[0]))
    main = compiled.executable.as_text().split("@main:\n", 1)[1].split("\n\n", 1)[0]  # main's instructions
    assert "_prepacked" in main  # the tuned kernels took pre-packed weights
    assert "vm.builtin.make_tuple" not in main and "vm.builtin.tuple_getitem" not in main


@pytest.mark.slow
def test_foreign_database_is_refused_unless_forced(tuned, cli, host, tmp_path) -> None:
    foreign = copy_of_tuned_database(tuned, host, tmp_path / "foreign")
    meta_path = foreign / host.key / db_files.METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["target"]["mcpu"] = "cortex-a72"
    meta_path.write_text(json.dumps(meta))
    refused = cli("compile", TINY, "-o", str(tmp_path / "a.so"), "--schedules", str(foreign))
    assert refused.returncode == 2 and "tuned for" in refused.stderr and "--force-schedules" in refused.stderr
    forced = cli("compile", TINY, "-o", str(tmp_path / "b.so"), "--schedules", str(foreign), "--force-schedules")
    assert forced.returncode == 0, forced.stderr[-2000:]


@pytest.mark.slow
def test_corrupt_database_names_the_file(tuned, cli, host, tmp_path) -> None:
    broken = copy_of_tuned_database(tuned, host, tmp_path / "broken")
    path = broken / host.key / db_files.RECORD_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    result = cli("compile", TINY, "-o", str(tmp_path / "c.so"), "--schedules", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and "line 2" in result.stderr


def test_torn_last_line_is_dropped_and_the_rest_kept(tmp_path) -> None:
    path = tmp_path / db_files.RECORD_FILE
    path.write_text('[0, [["a"], [1e-3]]]\n[0, [["b"], [2e-3]]]\n[0, [["c"], [3e')  # killed mid-write
    assert db_files.repair_and_validate(path) == 2
    assert path.read_text() == '[0, [["a"], [1e-3]]]\n[0, [["b"], [2e-3]]]\n'
    path.write_text('[0]\nnot json\n[1]\n')
    with pytest.raises(UserError, match=f"{path}, line 2"):
        db_files.repair_and_validate(path)


@pytest.mark.slow
def test_interrupted_run_leaves_a_valid_database_and_resumes(cli, host, tmp_path) -> None:
    root = tmp_path / "schedules"
    args = [sys.executable, "-m", "bench", "tune", "--models", TINY, "--max-tasks", "3", "--trials-per-task", "8",
            "--population", "32", "--schedules", str(root)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    record_file = db_files.database_dir(host, root) / db_files.RECORD_FILE
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if record_file.exists() and record_file.read_text().count("\n") >= 8:  # first task done
            break
        time.sleep(1)
    import os

    proc.send_signal(signal.SIGTERM)  # `kill` (or Ctrl-C): the run ends at the end of the batch, saved
    try:
        output, _ = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever worker outlived it
    assert proc.returncode == 0 and "stopped by SIGTERM; " in output, output[-2000:]
    assert db_files.read_metadata(db_files.database_dir(host, root))["runs"][-1]["minutes"] > 0  # saved on the way out
    kept = db_files.repair_and_validate(record_file)
    assert kept >= 8
    resumed = cli("tune", "--models", TINY, "--max-tasks", "1", "--trials-per-task", "8", "--schedules", str(root))
    assert resumed.returncode == 0 and "1 already tuned; 0 trials to run" in resumed.stdout, resumed.stdout
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    time.sleep(20)  # mid-batch
    os.killpg(proc.pid, signal.SIGKILL)  # a hard crash: the records so far still load
    proc.wait()
    kept = db_files.repair_and_validate(record_file)
    database = db_files.open_database(host, root)  # loads: nothing half-written remains
    assert len(database.get_all_tuning_records()) == kept >= 8


@pytest.mark.slow
def test_a_time_limit_ends_a_slice_cleanly_and_the_next_resumes(cli, host, tmp_path) -> None:
    args = ("tune", "--models", TINY, "--max-tasks", "2", "--trials-per-task", "8", "--population", "32",
            "--schedules", tmp_path)
    first = cli(*args, "--minutes", "0.001")  # past the limit after the first batch
    assert first.returncode == 0, first.stderr[-2000:]
    assert "time limit of 0.001 min reached; 1 of 2 tasks visited; re-run to resume" in first.stdout
    assert '"tuned_now": 1,' in first.stdout  # the tasks it reached, not the ones it planned
    kept = records(tmp_path, host)
    assert len(kept) == 8  # the first task's batch, recorded and compacted
    meta = db_files.read_metadata(db_files.database_dir(host, tmp_path))
    assert meta["runs"][-1]["minutes"] >= 0 and meta["tuning_minutes"] == meta["runs"][-1]["minutes"]
    second = cli(*args)
    assert second.returncode == 0 and "1 already tuned; 8 trials to run" in second.stdout, second.stdout
    assert len(records(tmp_path, host)) == 16


def test_a_slice_ends_before_a_batch_that_would_not_fit() -> None:
    from schedules.search.tune import Slice

    ten_seconds_left = Slice(deadline=time.time() + 10)
    ten_seconds_left.last_batch_s = 2
    assert not ten_seconds_left.over()
    ten_seconds_left.last_batch_s = 30
    assert ten_seconds_left.over()
    assert "the next batch (about 30 s) would pass it" in ten_seconds_left.reason(5)
    assert Slice(deadline=time.time() - 1).reason(5) == "time limit of 5 min reached"


def test_gpu_search_rounds_take_64_candidates_cpu_ones_16(host) -> None:
    from targets.registry import resolve_target

    assert SearchOptions.for_target(host).trials_per_batch == 16
    assert SearchOptions.for_target(resolve_target("h200")).trials_per_batch == 64
    given = SearchOptions.for_target(resolve_target("h200"), trials_per_batch=8, population_size=None)
    assert (given.trials_per_batch, given.population_size) == (8, SearchOptions().population_size)


@pytest.mark.slow
def test_trials_per_batch_sets_the_search_round(cli, host, tmp_path) -> None:
    result = cli("tune", "--models", TINY, "--max-tasks", "1", "--trials-per-task", "8", "--population", "32",
                 "--no-transfer", "--trials-per-batch", "4", "--minutes", "0.001", "--schedules", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(records(tmp_path, host)) == 4  # the slice ended after one round of 4


def test_trials_per_batch_must_be_positive(cli) -> None:
    result = cli("tune", "--trials", "8", "--trials-per-batch", "0")
    assert result.returncode == 2 and "--trials-per-batch must be positive" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_tuning_that_measures_nothing_fails_loudly(host, tmp_path) -> None:
    from tvm.s_tir import meta_schedule as ms

    tasks = merge_tasks({TINY: model_tasks(TINY, host)})[:1]
    broken = ms.builder.LocalBuilder(f_build=partial(operator.truediv, 1, 0), max_workers=1)  # every build fails
    with pytest.raises(TuningMeasuredNothing, match="tuning measured nothing: all 8 candidates"):
        tune(host, tasks, [TINY], trials_per_task=8, root=tmp_path, builder=broken,
             search=SearchOptions(population_size=32), log=lambda *_: None)


def test_runner_times_candidates_on_the_targets_cores(host) -> None:
    # Left alone, TVM's pool takes half of an x86 machine's cores: one thread on a 2-vCPU machine.
    for cores in {1, host.num_cores}:
        runner = make_runner(replace(host, num_cores=cores))
        worker_threads = runner.pool.submit(lambda: __import__("tvm").get_global_func("runtime.NumThreads")())
        assert worker_threads.result() == cores


def test_cpu_candidates_are_timed_as_in_the_model(host, tmp_path) -> None:
    """The evaluator runs the kernel it is given, on the arguments it is given, and leaves them intact."""
    import numpy as np
    import tvm
    from tvm import te

    from schedules.search.evaluator import CALLS, run_as_in_model

    assert make_runner(host).f_run_evaluator is run_as_in_model
    data = te.placeholder((64, 64), "float32", name="data")
    tvm.compile(te.create_prim_func([data, te.compute((64, 64), lambda i, j: data[i, j] * 2.0)]),
                target=host.tvm_target()).export_library(str(tmp_path / "kernel.so"))
    x = np.random.default_rng(0).standard_normal((64, 64)).astype("float32")
    args = [tvm.runtime.tensor(x), tvm.runtime.empty((64, 64), "float32")]
    # As the runner's worker calls it: on the module loaded from the candidate's library.
    costs = run_as_in_model(tvm.runtime.load_module(str(tmp_path / "kernel.so")), tvm.cpu(), None, [args])
    assert len(costs) == CALLS and all(0 < c < 1 for c in costs)
    np.testing.assert_array_equal(args[0].numpy(), x)
    np.testing.assert_array_equal(args[1].numpy(), 2 * x)


def best_traces(recs: list, keep: int) -> set[str]:
    """The traces of each workload's ``keep`` fastest records, compacted as the database keeps them."""
    by_workload: dict[int, list] = {}
    for workload, (trace, secs, *_) in recs:
        compact = json.dumps(db_files.compact_trace_json(trace))
        by_workload.setdefault(workload, []).append((sum(secs) / len(secs), compact))
    return {trace for rows in by_workload.values() for _, trace in sorted(rows)[:keep]}


@pytest.mark.slow
def test_remeasure_keeps_the_best_records_retimed(tuned, cli, host, tmp_path) -> None:
    root = copy_of_tuned_database(tuned, host, tmp_path / "kept")
    folder = db_files.database_dir(host, root)
    workloads_before = (folder / db_files.WORKLOAD_FILE).read_bytes()
    before = records(root, host)
    result = cli("tune", "--remeasure", "2", "--schedules", root)
    assert result.returncode == 0, result.stderr[-2000:]
    after = records(root, host)
    assert json.loads(result.stdout.splitlines()[-1])["records_kept"] == len(after) <= 4
    assert {json.dumps(trace) for _, (trace, *_) in after} == best_traces(before, 2)
    assert not {tuple(secs) for _, (_, secs, *_) in after} & {tuple(secs) for _, (_, secs, *_) in before}  # re-timed
    assert (folder / db_files.WORKLOAD_FILE).read_bytes() == workloads_before
    meta = db_files.read_metadata(folder)
    assert meta["runs"][-1]["command"].endswith(f"--remeasure 2 --schedules {root}")
    assert meta["runs"][-1]["measured_on"] == f"local, {host.num_cores} threads, caches as in the model"
    assert sum(meta["pruned"].values()) == len(before) - len(after)
    again = cli(*TUNE, "--schedules", root)  # the dropped records still count as trials spent
    assert again.returncode == 0 and "2 already tuned; 0 trials to run" in again.stdout, again.stdout
    built = cli("compile", TINY, "-o", tmp_path / "lib.so", "--schedules", root)
    assert built.returncode == 0 and "parity with ONNX Runtime: ok" in built.stdout, built.stderr[-2000:]
    assert "schedules: " in built.stdout and " 2 tuned, " in built.stdout


@pytest.mark.slow
def test_prune_keeps_the_best_records_as_timed(tuned, cli, host, tmp_path) -> None:
    root = copy_of_tuned_database(tuned, host, tmp_path / "pruned")
    before = records(root, host)
    result = cli("tune", "--prune", "1", "--schedules", root)
    assert result.returncode == 0, result.stderr[-2000:]
    after = records(root, host)
    assert json.loads(result.stdout.splitlines()[-1])["records_kept"] == len(after) == 2
    assert {json.dumps(trace) for _, (trace, *_) in after} == best_traces(before, 1)
    assert {tuple(secs) for _, (_, secs, *_) in after} <= {tuple(secs) for _, (_, secs, *_) in before}  # as timed
    assert db_files.read_metadata(db_files.database_dir(host, root))["runs"][-1]["measured_on"].startswith("kept as")
    both = cli("tune", "--prune", "1", "--remeasure", "1", "--schedules", root)
    assert both.returncode == 2 and "not both" in both.stderr and "Traceback" not in both.stderr


@pytest.mark.slow
def test_remeasure_of_some_kernels_leaves_the_others_as_they_are(tuned, cli, host, tmp_path) -> None:
    """After a slice, its kernels alone are re-timed, so its new records and the old best share one clock."""
    root = copy_of_tuned_database(tuned, host, tmp_path / "some")
    before = records(root, host)
    dense = {str(structural_hash(t.task.mod)) for t in merge_tasks({TINY: model_tasks(TINY, host)})
             if t.task.kind == "dense"}
    workload_file = db_files.database_dir(host, root) / db_files.WORKLOAD_FILE
    hashes = [json.loads(line)[0] for line in workload_file.read_text().splitlines()]  # [shash, module]
    result = cli("tune", "--remeasure", "1", "--models", TINY, "--kinds", "dense", "--schedules", root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1])["workloads"] == 1
    after = records(root, host)
    unchanged = [json.dumps(r) for r in before if hashes[r[0]] not in dense]
    assert unchanged and sorted(json.dumps(r) for r in after if hashes[r[0]] not in dense) == sorted(unchanged)
    retimed = [r for r in after if hashes[r[0]] in dense]
    assert len(retimed) == 1 and retimed[0][1][1] not in [r[1][1] for r in before]
    nothing = cli("tune", "--remeasure", "1", "--models", TINY, "--kinds", "depthwise", "--schedules", root)
    assert nothing.returncode == 2 and "none of the kernels asked for" in nothing.stderr, nothing.stderr[-2000:]
    assert records(root, host) == after


def test_a_prune_keeps_the_machine_the_records_were_timed_on(host, tmp_path) -> None:
    """A GPU window's database is pruned on the build machine: the metadata still names the GPU's host."""
    db_files.write_metadata(tmp_path, host, 8, [TINY], measured_on="local, 16 threads")
    meta = db_files.read_metadata(tmp_path)
    tuned_on = {**meta["machine"], "cpu": "the GPU's host"}
    (tmp_path / db_files.METADATA_FILE).write_text(json.dumps({**meta, "machine": tuned_on}))
    db_files.write_metadata(tmp_path, host, 0, [], measured_on="kept as timed by the tuning runs", pruned={"1": 3})
    assert db_files.read_metadata(tmp_path)["machine"] == tuned_on
    db_files.write_metadata(tmp_path, host, 8, [TINY], measured_on="local, 2 threads")
    assert db_files.read_metadata(tmp_path)["machine"]["cpu"] != "the GPU's host"


def test_remeasure_without_a_database_is_an_error(cli, tmp_path) -> None:
    result = cli("tune", "--remeasure", "4", "--schedules", tmp_path)
    assert result.returncode == 2 and "nothing tuned for" in result.stderr and "Traceback" not in result.stderr


def test_shipped_databases_keep_a_few_records_per_workload_each_timed_as_stated() -> None:
    """What the repository ships is pruned by --remeasure: every trial ever measured would not fit."""
    for key in db_files.known_keys():
        folder = db_files.schedules_root() / key
        with (folder / db_files.RECORD_FILE).open() as lines:
            per_workload = Counter(line.split(",", 1)[0] for line in lines if line.strip())
        assert max(per_workload.values()) <= db_files.SHIPPED_PER_WORKLOAD, key
        assert all(run.get("measured_on") for run in db_files.read_metadata(folder)["runs"]), key


@pytest.mark.slow
def test_kinds_limits_tuning_to_those_kernels(cli, host, tmp_path) -> None:
    tuned = cli("tune", "--models", TINY, "--kinds", "depthwise", "--max-tasks", "1", "--trials-per-task", "8",
                "--population", "32", "--schedules", tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    report = cli("schedules", host.key, "--models", TINY, "--schedules", tmp_path, "--json")
    (entry,) = json.loads(report.stdout)
    assert [t["kind"] for t in entry["tasks"] if t["best_ms"] is not None] == ["depthwise"]


def test_unknown_kind_is_refused(cli) -> None:
    result = cli("tune", "--kinds", "depthwise", "winograd", "--trials", "8")
    assert result.returncode == 2 and "unknown kernel kind winograd" in result.stderr
    assert "Traceback" not in result.stderr
