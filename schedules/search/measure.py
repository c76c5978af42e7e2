"""How candidates are built and timed for a target: the builder, the runner, and one call that
measures a list of schedules (used to re-time records and to try transferred schedules)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

from schedules.search.builder import alloc_arguments_from_host, build_candidate, export_shared_library, use_threads
from schedules.search.evaluator import run_as_in_model
from targets.registry import TargetSpec


@dataclass(frozen=True)
class RPCOptions:
    tracker: str  # HOST:PORT
    key: str
    session_timeout_s: float = 120.0
    boards: int = 1  # measurements run in parallel on this many boards


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


def measure_candidates(candidates, target, builder, runner) -> list[list[float] | None]:
    """Build and time each ``MeasureCandidate``; None where it does not build or run."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    if not candidates:
        return []
    built = builder.build([ms.builder.BuilderInput(c.sch.mod, target) for c in candidates])
    times: list[list[float] | None] = [None] * len(candidates)
    runnable = [i for i, b in enumerate(built) if b.error_msg is None]
    device = tvm.runtime.Device._DEVICE_TYPE_TO_NAME[target.get_target_device_type()]  # "cpu", "cuda"
    futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, device, candidates[i].args_info)
                          for i in runnable])
    for i, future in zip(runnable, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            times[i] = [float(s) for s in result.run_secs]
    return times


def time_schedules(schedules: list, target, builder, runner) -> list[list[float] | None]:
    """Build and time whole-kernel schedules (``tvm.s_tir.Schedule``); None where one does not build or run."""
    from tvm.s_tir import meta_schedule as ms

    from schedules.search.transfer import args_info

    return measure_candidates([ms.MeasureCandidate(sch, args_info(sch)) for sch in schedules], target, builder, runner)


def schedule_timer(spec: TargetSpec, rpc: RPCOptions | None = None):
    """``time(schedules)``: ``time_schedules`` for ``spec``'s kernels here (or on a board), timed as tuning
    times them; ``compile --measure-transfers`` chooses with it."""
    return partial(time_schedules, target=spec.tvm_target(), builder=make_builder(spec), runner=make_runner(spec, rpc))
