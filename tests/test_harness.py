"""The pytest-benchmark harness, run as a user runs it, on one tiny variant per task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import merge_run
from models.errors import UserError

REPO = Path(__file__).resolve().parent.parent
TINY = "mobilenet_v2_0.35_96,ssdlite_mobilenet_v2_320,deeplabv3_mobilenet_v2_os16"
FAST = ["--benchmark-min-rounds=1", "--benchmark-max-time=0.000001", "--benchmark-warmup=off", "-p", "no:cacheprovider"]


def run_bench(tmp_path: Path, *args: str, plugins: Path | None = None) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "run.json"
    env = None
    if plugins is not None:
        import os

        env = {**os.environ, "PYTHONPATH": f"{plugins}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "bench"), "--benchmark-only", f"--benchmark-json={out}",
         "--schedules", str(tmp_path / "no-schedules"), *FAST, *args],
        capture_output=True, text=True, timeout=1800, cwd=tmp_path, env=env,
    )
    return result, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.slow
def test_one_variant_per_task_on_every_runtime(tmp_path) -> None:
    result, data = run_bench(tmp_path, f"--models={TINY}", "--runtimes=tvm,onnxruntime,torch", "--threads=2")
    assert result.returncode == 0, result.stdout[-4000:]
    benches = {(b["extra_info"]["model"], b["extra_info"]["runtime"]): b for b in data["benchmarks"]}
    assert len(benches) == 9
    for (model, runtime), bench in benches.items():
        info = bench["extra_info"]
        assert bench["group"] == model and bench["stats"]["median"] > 0 and bench["stats"]["rounds"] >= 1
        assert info["params"] > 1e6 and info["madds"] > 1e7 and info["gmadds_per_s"] > 0
        assert info["threads"] == 2 and info["warmup_runs"] >= 3 and info["max_abs_error_vs_torch"] < 1e-2
        assert info["paper"]["source"] and info["hardware"] == data["machine_info"]["hardware"]
        assert info["task"] in ("classification", "detection", "segmentation")
        stats = bench["stats"]
        assert stats["min"] <= info["latency_p90_s"] <= info["latency_p99_s"] <= stats["max"]
        assert 0 < info["init_memory_mib"] <= info["peak_memory_mib"] and info["batch"] == 1
        # the model's three runtimes were timed in alternating blocks: 10 blocks of at least one inference
        assert info["latency_source"] == "pytest-benchmark, alternating blocks" and stats["rounds"] >= 10
        assert sorted([runtime, *info["alternated_with"]]) == ["onnxruntime", "torch", "tvm"]
        if runtime == "tvm":
            assert info["schedules"] == "untuned" and "llvm" in info["tvm_target"]  # an empty schedules folder
        else:
            assert info["schedules"] is None
    assert benches["mobilenet_v2_0.35_96", "onnxruntime"]["extra_info"]["paper"]["pixel1_ms"] == 4.5
    assert benches["ssdlite_mobilenet_v2_320", "tvm"]["extra_info"]["paper"]["accuracy"] == 22.1
    assert "[1/9] mobilenet_v2_0.35_96 on tvm: build" in result.stdout  # one progress line per case
    assert result.stdout.count("ms median over") == 9
    machine = data["machine_info"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and "python_version" in machine  # standard + ours

    results = merge_run(tmp_path / "run.json", tmp_path / "results")
    assert results.name == f"{machine['hardware']}.json"
    compare = subprocess.run([sys.executable, "-m", "bench", "compare", str(results), "--format", "csv"],
                             capture_output=True, text=True, timeout=300)
    assert compare.returncode == 0, compare.stderr
    assert "ssdlite_mobilenet_v2_320" in compare.stdout and f"{machine['hardware']} onnxruntime" in compare.stdout


@pytest.mark.slow
def test_mnv2bench_run_alternates_the_runtimes_for_two_seconds_each_and_saves(cli, tmp_path) -> None:
    results = tmp_path / "results"
    result = cli("run", "--models", "mobilenet_v2_0.35_96", "--runtimes", "tvm-untuned,onnxruntime", "--threads", "2",
                 "--results", results)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "--benchmark-max-time=2.0" in result.stdout and "timing them in alternating blocks" in result.stdout
    (saved,) = results.glob("*.json")
    benches = json.loads(saved.read_text())["benchmarks"]
    assert sorted(b["extra_info"]["runtime"] for b in benches) == ["onnxruntime", "tvm-untuned"]
    for bench in benches:
        assert bench["extra_info"]["latency_source"] == "pytest-benchmark, alternating blocks"
        # 2 s of timing, lead-ins left out (the sum of inferences misses only the loop between them)
        assert 1.8 <= bench["stats"]["mean"] * bench["stats"]["rounds"] <= 4.0
    assert (results / "README.md").exists()


@pytest.mark.slow
def test_wrong_output_is_caught_and_not_timed(tmp_path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "corrupt_onnxruntime.py").write_text(
        "from bench.runtimes import OnnxRuntime\n"
        "_run = OnnxRuntime.run\n"
        "OnnxRuntime.run = lambda self, x: [o + 0.5 for o in _run(self, x)]  # a fast but wrong runtime\n"
    )
    result, data = run_bench(tmp_path, "--models=mobilenet_v2_0.35_96", "--runtimes=onnxruntime,torch",
                             "-p", "corrupt_onnxruntime", plugins=plugins)
    assert result.returncode == 1
    assert "wrong output, not timed" in result.stdout and "onnxruntime vs PyTorch" in result.stdout
    assert [b["extra_info"]["runtime"] for b in data["benchmarks"]] == ["torch"]
    assert data["benchmarks"][0]["extra_info"]["latency_source"] == "pytest-benchmark"  # nothing to alternate with


@pytest.mark.parametrize("option,message", [
    ("--runtimes=tvm,tensorrt", "unknown runtime(s) tensorrt"),
    ("--models=resnet50", "unknown model 'resnet50'"),
    ("--target=mips-linux-gnu", "unknown target 'mips-linux-gnu'"),
    ("--rpc-tracker=nohost", "invalid tracker address"),
    ("--batch=0", "--batch must be at least 1"),
])
def test_bad_options_are_usage_errors(tmp_path, option: str, message: str) -> None:
    result, _ = run_bench(tmp_path, "--models=mobilenet_v2_0.35_96", option)
    assert result.returncode == 4  # pytest's usage error
    assert message in result.stderr and "Traceback" not in result.stderr


def test_default_runtimes_are_what_a_user_would_otherwise_run(monkeypatch) -> None:
    import importlib.util

    from bench.harness import default_runtimes
    from targets.registry import resolve_target

    host, gpu, board = resolve_target("host"), resolve_target("h200"), resolve_target("rpi4")
    installed = {"onnxruntime", "executorch"}  # as if OpenVINO were not installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert default_runtimes(host, remote=False) == ["tvm", "onnxruntime", "executorch"]
    assert default_runtimes(gpu, remote=False) == ["tvm", "torch", "torch-cudagraph"]
    assert default_runtimes(board, remote=True) == ["tvm"]


def test_merge_replaces_reruns_and_refuses_emulated(tmp_path) -> None:
    def run_file(name: str, benches: list[tuple[str, str, float]], emulated: bool = False) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"machine_info": {"hardware": "hw-1c"}, "benchmarks": [
            {"name": f"{m}[{r}]", "stats": {"median": t}, "extra_info": {"model": m, "runtime": r, "emulated": emulated}}
            for m, r, t in benches]}))
        return path

    results = tmp_path / "results"
    merge_run(run_file("a.json", [("m1", "tvm", 1.0), ("m2", "tvm", 2.0)]), results)
    merged = merge_run(run_file("b.json", [("m1", "tvm", 0.5), ("m1", "onnxruntime", 0.7)]), results)
    data = json.loads(merged.read_text())
    assert {(b["extra_info"]["model"], b["extra_info"]["runtime"]): b["stats"]["median"] for b in data["benchmarks"]} == {
        ("m1", "tvm"): 0.5, ("m1", "onnxruntime"): 0.7, ("m2", "tvm"): 2.0}
    with pytest.raises(UserError, match="emulated"):
        merge_run(run_file("c.json", [("m1", "tvm", 9.0)], emulated=True), results)


@pytest.mark.slow
def test_batch_rows_are_measured_and_kept_apart(tmp_path) -> None:
    result, batch1 = run_bench(tmp_path, "--models=mobilenet_v2_0.35_96", "--runtimes=onnxruntime")
    assert result.returncode == 0, result.stdout[-3000:]
    merge_run(tmp_path / "run.json", tmp_path / "results")
    result, batch4 = run_bench(tmp_path, "--models=mobilenet_v2_0.35_96", "--runtimes=tvm,onnxruntime", "--batch=4",
                               "--no-interleave")
    assert result.returncode == 0, result.stdout[-3000:]
    for bench in batch4["benchmarks"]:
        info = bench["extra_info"]
        assert info["latency_source"] == "pytest-benchmark" and "alternated_with" not in info
        assert info["batch"] == 4 and info["input_shape"] == [4, 3, 96, 96] and info["paper"] is None
        assert info["madds"] == pytest.approx(4 * batch1["benchmarks"][0]["extra_info"]["madds"])
    merged = json.loads(merge_run(tmp_path / "run.json", tmp_path / "results").read_text())
    assert sorted((b["extra_info"]["runtime"], b["extra_info"]["batch"]) for b in merged["benchmarks"]) == [
        ("onnxruntime", 1), ("onnxruntime", 4), ("tvm", 4)]


def test_torch_cuda_graphs_need_a_gpu() -> None:
    from bench.runtimes import TorchCudaGraphRuntime

    with pytest.raises(UserError, match="needs a GPU target"):
        TorchCudaGraphRuntime(None, threads=1, gpu=False)


def test_peak_memory_sees_an_allocation() -> None:
    import numpy as np

    from bench.memory import PeakMemory, release_free_memory

    release_free_memory()  # else freed pages this long-lived process still holds could absorb the allocations
    with PeakMemory() as peak:
        loaded = np.ones(16 * 2**20 // 8)  # 16 MiB, touched: "the weights"
        peak.loaded()
        block = np.ones(64 * 2**20 // 8)  # 64 MiB more while "inferring", then freed
        del block, loaded
    if peak.mib is None:
        pytest.skip("no /proc/self/clear_refs here: peak memory is not recorded on this system")
    # 64 MiB is above glibc's largest mmap threshold (32 MiB): always fresh pages, so the peak must see it.
    # The 16 MiB may come from pages the process already holds, so loading is only bounded by the peak.
    assert 0 <= peak.init_mib <= peak.mib and 60 <= peak.mib < 200
