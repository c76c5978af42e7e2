"""``python bench/perf_vs_ort.py``, run as the README runs it: a script in bench/, from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = "mobilenet_v2_0.35_96"


@pytest.mark.slow
def test_prints_each_ratio_and_appends_the_tuning_curve(tmp_path) -> None:
    curve = tmp_path / "curve.csv"
    result = subprocess.run(
        [sys.executable, "bench/perf_vs_ort.py", "--models", TINY, "--untuned", "--repeat", "2",
         "--min-block-s", "0.02", "--record", str(curve)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "MNV2BENCH_CACHE": str(tmp_path / "cache")},  # exports afresh, as a new clone does
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.splitlines()[-1]
    assert last.startswith("worst TVM/ORT ratio: ") and float(last.split(": ")[1]) > 0
    (row,) = pd.read_csv(curve).itertuples()
    assert row.model == TINY and row.tvm_ms > 0 and row.ort_ms > 0
    assert row.ratio == pytest.approx(row.tvm_ms / row.ort_ms, rel=1e-2)
