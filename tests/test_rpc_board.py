"""ARM over TVM RPC, end to end, on the emulated aarch64 board behind a real tracker on 127.0.0.1.

Tune a tiny model over the tracker, compile the smallest variant of each task for aarch64 and check it
on the board against ONNX Runtime here, benchmark on the board (labelled emulated, never published).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

from bench.results import merge_run
from models.errors import UserError
from schedules import database as db_files
from targets.emulated.board import BOARD_NOT_BUILT_REASON, emulated_rpc_server, is_built
from targets.registry import resolve_target
from targets.rpc import free_port, local_tracker

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not is_built(), reason=BOARD_NOT_BUILT_REASON)]
REPO = Path(__file__).resolve().parent.parent
KEY = "emulated-aarch64"
TARGET = ("--target", "aarch64-linux-gnu", "--mcpu", "cortex-a72")


@pytest.fixture(scope="module")
def tracker():
    with local_tracker() as (host, port), emulated_rpc_server(host, port, KEY):
        yield f"{host}:{port}"


def mnv2bench(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout)


def test_tune_over_the_tracker(tracker, tmp_path) -> None:
    result = mnv2bench("tune", *TARGET, "--models", "mobilenet_v2_0.35_96", "--max-tasks", "1",
                       "--trials-per-task", "8", "--population", "32", "--rpc-tracker", tracker, "--rpc-key", KEY,
                       "--schedules", str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    spec = resolve_target("aarch64-linux-gnu", mcpu="cortex-a72")
    database = db_files.open_database(spec, tmp_path)
    valid = [r for r in database.get_all_tuning_records() if r.run_secs and float(r.run_secs[0]) < 1e9]
    assert len(valid) >= 4  # measured on the board, not on this x86 host


@pytest.mark.parametrize("model", ["mobilenet_v2_0.35_96", "ssdlite_mobilenet_v2_320", "deeplabv3_mobilenet_v2_os16"])
def test_compile_and_check_on_the_board(tracker, tuned, tmp_path, model: str) -> None:
    """The tiny model with schedules transferred from the host's x86 database (tiles narrowed to NEON's),
    the others with default schedules: both compute on the board what ONNX Runtime computes here."""
    lib = tmp_path / f"{model}.so"
    schedules = tuned[0] if model == TINY else tmp_path / "none"
    result = mnv2bench("compile", model, *TARGET, "-o", str(lib), "--rpc-tracker", tracker, "--rpc-key", KEY,
                       "--schedules", str(schedules))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "parity with ONNX Runtime: ok" in result.stdout and f"on board '{KEY}'" in result.stdout
    assert ("transferred (replayed from" in result.stdout) == (model == TINY), result.stdout
    assert lib.read_bytes()[:4] == b"\x7fELF" and lib.read_bytes()[18] == 183  # e_machine = EM_AARCH64


def test_benchmark_on_the_board_is_labelled_emulated(tracker, tuned, tmp_path) -> None:
    """Two cases on the one board: each hands the board back to the tracker once timed."""
    out = tmp_path / "board.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "bench"), "--benchmark-only", f"--benchmark-json={out}",
         *TARGET, "--rpc-tracker", tracker, "--rpc-key", KEY, "--emulated-board", "--models", TINY,
         "--runtimes", "tvm,tvm-untuned", "--benchmark-min-rounds=3", "-p", "no:cacheprovider",
         "--schedules", str(tuned[0])],
        capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:]
    data = json.loads(out.read_text())
    assert [b["extra_info"]["runtime"] for b in data["benchmarks"]] == ["tvm", "tvm-untuned"]
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert info["emulated"] and info["device"] == f"rpc:{KEY}" and info["latency_source"] == "time_evaluator"
        assert info["hardware"] == "aarch64-cortex-a72-4c-emulated" == data["machine_info"]["hardware"]
        assert bench["stats"]["rounds"] == 3 and bench["stats"]["median"] > 0
        assert "aarch64" in info["tvm_target"]
    assert data["benchmarks"][0]["extra_info"]["kernels"]["transferred"] > 0  # from the host's x86 database
    with pytest.raises(UserError, match="emulated"):
        merge_run(out, tmp_path / "results")


def test_missing_board_is_a_clear_error(tracker, tmp_path) -> None:
    result = mnv2bench("compile", "mobilenet_v2_0.35_96", *TARGET, "-o", str(tmp_path / "x.so"),
                       "--rpc-tracker", f"127.0.0.1:{free_port()}", "--rpc-key", KEY)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unreachable" in result.stderr


def test_benchmark_goes_on_when_a_board_is_missing(tracker, tmp_path) -> None:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "bench"), "--benchmark-only", *TARGET,
         "--rpc-tracker", tracker, "--rpc-key", "no-such-board", "--models", "mobilenet_v2_0.35_96,mobilenet_v2_0.5_96",
         "--runtimes", "tvm-untuned", "-p", "no:cacheprovider", "--schedules", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "MNV2BENCH_RPC_TIMEOUT": "2"})
    assert result.returncode == 1
    assert "2 failed" in result.stdout  # both models reported, neither crashed the run
    assert result.stdout.count("no board under key 'no-such-board' answered within 2 s") >= 2
