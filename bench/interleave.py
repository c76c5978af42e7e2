"""Time several runtimes of one model in alternating blocks, so that a noisy machine's drift hits them alike.

Timed one after another, each runtime sees the machine as it was during its own second: on a shared VM a
neighbour's burst lands on one runtime and not on the next, and one run's TVM/peer ratios move by several
per cent. Alternating blocks (the order rotating from block to block) spread every burst over all of them.

A switch costs the runtime that takes over a few per cent for a moment, so every block starts with an
untimed lead-in (the measurements: bench/README.md). Each inference after it is timed on its own, and
pytest-benchmark computes the statistics from these times as from its own (``ReplayClock``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

BLOCKS = 10  # blocks per runtime: enough to spread drift, few enough switches (bench/README.md)
LEAD_IN_S = 0.2  # untimed inferences at the start of each block: the cost of the switch, not of the runtime
LATENCY_SOURCE = "pytest-benchmark, alternating blocks"  # extra_info.latency_source of a case timed so


def time_alternating(runs: dict[str, Callable[[], object]], seconds: float, min_rounds: int,
                     blocks: int = BLOCKS) -> dict[str, list[float]]:
    """Seconds per inference of each runtime (name: a call that runs one inference): ``blocks`` rounds in
    which every runtime runs an untimed lead-in and then a timed block of at least ``seconds / blocks`` and
    ``min_rounds / blocks`` inferences. The order rotates from round to round, so that no runtime always
    follows the same one."""
    block_s = seconds / blocks
    block_runs = math.ceil(min_rounds / blocks)
    lead_in_s = min(LEAD_IN_S, block_s)  # a test asking for microseconds of timing gets no long lead-ins
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(blocks):
        shift = i % len(order)
        for name in order[shift:] + order[:shift]:
            _block(runs[name], lead_in_s, 1)
            times[name] += _block(runs[name], block_s, block_runs)
    return times


def _block(run: Callable[[], object], seconds: float, min_runs: int) -> list[float]:
    """Run until both ``seconds`` have passed and ``min_runs`` inferences are done; each one's time."""
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return times


class ReplayClock:
    """A timer for pytest-benchmark that replays times already taken: ``step`` advances it by the next one.

    ``benchmark._timer = clock.now`` and ``benchmark.pedantic(clock.step, rounds=len(times))`` hand the
    alternating blocks' times to pytest-benchmark, which reads the clock before and after each call."""

    def __init__(self, times: list[float]) -> None:
        self._times = iter(times)
        self._now = 0.0

    def now(self) -> float:
        return self._now

    def step(self) -> None:
        self._now += next(self._times)
