"""Alternating-block timing (bench/interleave.py) with runtimes whose cost is known."""

from __future__ import annotations

import statistics
import time
from typing import ClassVar

from bench.interleave import ReplayClock, time_alternating


class FakeRuntime:
    """An inference that takes ``seconds``, and ``switch_s`` more on the first one after another runtime ran."""

    calls: ClassVar[list[str]] = []  # every fake's inferences, in order

    def __init__(self, name: str, seconds: float, switch_s: float = 0.0) -> None:
        self.name, self.seconds, self.switch_s = name, seconds, switch_s

    def __call__(self) -> None:
        switched = bool(self.calls) and self.calls[-1] != self.name
        time.sleep(self.seconds + (self.switch_s if switched else 0.0))
        self.calls.append(self.name)


def test_blocks_alternate_in_rotating_order_and_meet_both_minimums() -> None:
    FakeRuntime.calls = []
    seconds = {"tvm": 0.001, "onnxruntime": 0.002, "openvino": 0.0015}
    runs = {name: FakeRuntime(name, s) for name, s in seconds.items()}
    times = time_alternating(runs, seconds=0.05, min_rounds=20, blocks=3)
    for name, s in seconds.items():
        assert len(times[name]) >= 20 and sum(times[name]) >= 0.05 and min(times[name]) >= s
    blocks = [name for i, name in enumerate(FakeRuntime.calls) if i == 0 or FakeRuntime.calls[i - 1] != name]
    assert blocks == ["tvm", "onnxruntime", "openvino", "onnxruntime", "openvino", "tvm", "openvino", "tvm",
                      "onnxruntime"]


def test_the_cost_of_a_switch_is_left_out() -> None:
    FakeRuntime.calls = []
    runs = {name: FakeRuntime(name, 0.001, switch_s=0.05) for name in ("tvm", "openvino", "executorch")}
    times = time_alternating(runs, seconds=0.03, min_rounds=6, blocks=3)
    assert all(max(t) < 0.04 for t in times.values())  # no timed inference paid for a switch


def test_pytest_benchmark_computes_its_statistics_from_the_replayed_times(benchmark) -> None:
    times = [0.004, 0.001, 0.003, 0.002, 0.010]
    clock = ReplayClock(times)
    benchmark._timer = clock.now
    benchmark.pedantic(clock.step, rounds=len(times), iterations=1, warmup_rounds=0)
    stats = benchmark.stats.stats
    assert stats.rounds == 5 and stats.median == statistics.median(times) and stats.max == 0.010
