"""bench/gpu_slice.py's CPU side: one slice (tune, then benchmark at batch 1 and a larger batch) on this host,
into folders of its own. The GPU side differs only in the target and the runtimes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, TINY

from schedules import database as db_files


@pytest.mark.slow
def test_one_slice_tunes_then_benchmarks_and_says_what_to_commit(tmp_path) -> None:
    schedules, results = tmp_path / "schedules", tmp_path / "results"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_slice.py"), "--target", "host", "--models", TINY,
         "--minutes", "0.2", "--trials", "8", "--max-tasks", "1", "--batch-rows", "2", "--batch-model", TINY,
         "--runtimes", "tvm,onnxruntime", "--rounds", "5",
         "--schedules", str(schedules), "--results", str(results)],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (database,) = schedules.iterdir()
    assert (database / "database_tuning_record.json").stat().st_size > 0
    meta = json.loads((database / "metadata.json").read_text())
    assert meta["tuning_minutes"] > 0
    # the commands as the slice printed them; pruned before the benchmark, so the results name what is committed
    assert [run["command"].split(" --target")[0] for run in meta["runs"]] == ["mnv2bench tune"] * 2
    assert meta["runs"][-1]["command"].endswith(f"--prune 8 --schedules {schedules}")
    (results_file,) = results.glob("*.json")
    rows = {(b["extra_info"]["model"], b["extra_info"]["runtime"], b["extra_info"]["batch"])
            for b in json.loads(results_file.read_text())["benchmarks"]}
    assert rows == {(TINY, "tvm", 1), (TINY, "onnxruntime", 1), (TINY, "tvm", 2), (TINY, "onnxruntime", 2)}
    named = {b["extra_info"]["schedules"] for b in json.loads(results_file.read_text())["benchmarks"]
             if b["extra_info"]["runtime"] == "tvm"}
    assert named == {f"{database.name}@{db_files.content_hash(database)}"}
    assert f"Commit: {database}/ and {results}/" in result.stdout


def test_a_bad_target_is_one_line() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_slice.py"), "--target", "mips-linux-gnu",
                             "--no-tune"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "unknown target" in result.stderr and "Traceback" not in result.stderr


def test_zero_rounds_is_one_line() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_slice.py"), "--rounds", "0", "--no-tune"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--rounds must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
