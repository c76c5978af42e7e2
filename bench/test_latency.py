"""Latency of every selected model on every selected runtime (one pytest-benchmark each)."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import UserError


def test_latency(benchmark, harness, progress, model: str, runtime: str) -> None:
    try:
        case = harness.case(model, runtime, progress)
    except AssertionError as exc:
        pytest.fail(f"wrong output, not timed: {exc}", pytrace=False)
    except UserError as exc:
        pytest.fail(str(exc), pytrace=False)
    benchmark.group = model
    benchmark.name = f"{model}[{runtime}]"
    benchmark.extra_info.update(case.extra)
    try:
        time_case(benchmark, harness, case)
    finally:
        case.runtime.close()  # a board goes back to the tracker for the next case
    stats = benchmark.stats.stats
    benchmark.extra_info["gmadds_per_s"] = case.extra["madds"] / stats.median / 1e9
    # MLPerf's single-stream metric is the 90th percentile; ONNX Runtime's perf_test prints up to P999.
    for percentile in (90, 99):
        benchmark.extra_info[f"latency_p{percentile}_s"] = float(np.percentile(stats.data, percentile))
    built = " (library from the cache)" if case.runtime.library_cached else ""
    progress(f"    {stats.median * 1e3:.2f} ms median over {stats.rounds} rounds, checked (max error "
             f"{case.max_abs_error:.1e}){built}")


def time_case(benchmark, harness, case) -> None:
    """pytest-benchmark's own timing on this host, or the times the harness took in alternating blocks;
    on a GPU or board, rounds of the device's own timer."""
    if case.times:
        from bench.interleave import ReplayClock

        clock = ReplayClock(case.times)
        benchmark._timer = clock.now
        benchmark.pedantic(clock.step, rounds=len(case.times), iterations=1, warmup_rounds=0)
    elif case.runtime.device_timed:
        # GPU or board: each round is one inference timed by TVM's time_evaluator on the device, read
        # through a clock that only moves while the device computes (no RPC round trips, no Python).
        benchmark._timer = case.runtime.device_clock
        rounds = max(harness.options.device_rounds, 1)
        try:
            benchmark.pedantic(case.device_run, rounds=rounds, iterations=1, warmup_rounds=0)
        except Exception as exc:  # a board that disconnects or times out: report it, go on with the others
            if not case.runtime.device.startswith("rpc:"):
                raise
            pytest.fail(f"board {case.runtime.device} failed while timing: {str(exc).splitlines()[0]}", pytrace=False)
    else:
        benchmark(case.run)
