"""Latency of every selected model on every selected runtime (one pytest-benchmark each)."""

from __future__ import annotations

import pytest


def test_latency(benchmark, harness, model: str, runtime: str) -> None:
    try:
        case = harness.prepare(model, runtime)
    except AssertionError as exc:
        pytest.fail(f"wrong output, not timed: {exc}", pytrace=False)
    benchmark.group = model
    benchmark.name = f"{model}[{runtime}]"
    benchmark.extra_info.update(case.extra)
    benchmark(case.run)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info["gmadds_per_s"] = case.extra["madds"] / median_s / 1e9
