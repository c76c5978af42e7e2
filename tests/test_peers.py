"""The peer runtimes OpenVINO and ExecuTorch (XNNPACK): outputs, threads, the harness, a missing package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench import runtimes
from bench.harness import ATOL, RTOL, Harness, Options
from models.errors import UserError
from models.export import assert_close, sample_input, torch_outputs
from models.registry import create_model, get_spec
from targets.registry import resolve_target

TINY = "mobilenet_v2_0.35_96"  # the smallest registered model
THREADS = 2  # one count for the whole session: ExecuTorch's thread pool cannot change once a method is loaded
PEERS = ("openvino", "executorch")


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness(Options(target=resolve_target("host"), models=[TINY], runtimes=list(PEERS), threads=THREADS))


@pytest.fixture(scope="module")
def pte_dir(tmp_path_factory) -> Path:
    """ExecuTorch programs lowered afresh into a folder of their own (ONNX exports stay in the usual cache)."""
    folder = tmp_path_factory.mktemp("pte")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtimes.ExecuTorchRuntime, "program_path", staticmethod(lambda model, net, x: folder / f"{model}.pte"))
        yield folder


@pytest.mark.slow
@pytest.mark.parametrize("peer", PEERS)
def test_peer_matches_pytorch_through_the_harness(harness: Harness, pte_dir: Path, peer: str) -> None:
    case = harness.prepare(TINY, peer)  # checks against PyTorch before anything is timed
    x = sample_input(get_spec(TINY).input_shape)
    assert_close(case.run(), torch_outputs(create_model(TINY), x), f"{TINY} on {peer}", rtol=RTOL, atol=ATOL)
    info = case.extra
    assert info["runtime"] == peer and info["runtime_version"] and info["threads"] == THREADS
    assert info["device"] == "host" and info["schedules"] is None and info["max_abs_error_vs_torch"] < 1e-3
    assert case.warmup_runs >= 3 and info["warmup_runs"] == case.warmup_runs
    said = {
        "openvino": f"INFERENCE_NUM_THREADS={THREADS} (the compiled model reports {THREADS})",
        "executorch": f"set to {THREADS} with portable_lib._unsafe_reset_threadpool before loading; it reports",
    }
    assert said[peer] in info["notes"]  # how the threads were set, in the published record


@pytest.mark.slow
def test_openvino_runs_on_the_threads_asked() -> None:
    from models.export import export_model

    runtime = runtimes.OpenVinoRuntime(export_model(TINY), threads=1)
    assert runtime.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert runtime.compiled.get_property("NUM_STREAMS") == 1
    assert "INFERENCE_NUM_THREADS=1 (the compiled model reports 1)" in runtime.notes[0]


@pytest.mark.slow
def test_executorch_program_is_cached_and_its_pool_sized(pte_dir: Path) -> None:
    from executorch.extension.pybindings import portable_lib

    net, x = create_model(TINY), sample_input(get_spec(TINY).input_shape)
    first = runtimes.ExecuTorchRuntime(TINY, net, x, THREADS)
    again = runtimes.ExecuTorchRuntime(TINY, net, x, THREADS)
    assert (pte_dir / f"{TINY}.pte").is_file() and "program reused from the cache" in again.notes
    assert portable_lib._threadpool_get_thread_count() == THREADS and f"it reports {THREADS}" in first.notes[0]
    with pytest.raises(UserError, match="cannot change"):  # the loaded methods hold the pool
        runtimes.ExecuTorchRuntime(TINY, net, x, THREADS + 1)


@pytest.mark.parametrize("peer", PEERS)
def test_missing_package_is_a_user_error_with_the_install_hint(monkeypatch, peer: str) -> None:
    monkeypatch.setitem(sys.modules, peer, None)  # what `import openvino` does when it is not installed
    make = {
        "openvino": lambda: runtimes.OpenVinoRuntime(Path("model.onnx"), 1),
        "executorch": lambda: runtimes.ExecuTorchRuntime(TINY, None, None, 1),
    }[peer]
    with pytest.raises(UserError, match=rf"{peer} is not installed: pip install -e '\.\[peers\]'"):
        make()


@pytest.mark.parametrize("peer", PEERS)
def test_peers_refuse_a_gpu_target(peer: str) -> None:
    make = {
        "openvino": lambda: runtimes.OpenVinoRuntime(Path("model.onnx"), 1, gpu=True),
        "executorch": lambda: runtimes.ExecuTorchRuntime(TINY, None, None, 1, gpu=True),
    }[peer]
    with pytest.raises(UserError, match="CPU only"):
        make()


def test_perf_vs_ort_rejects_an_unknown_peer(capsys) -> None:
    from bench import perf_vs_ort

    assert perf_vs_ort.main(["--peers", "onnxruntime,tensorrt"]) == 2
    assert "unknown peer(s) tensorrt; choose from onnxruntime, openvino, executorch" in capsys.readouterr().err


@pytest.mark.slow
def test_perf_vs_ort_times_every_peer_beside_tvm(pte_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import pandas as pd

    from bench import perf_vs_ort

    for variable in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(variable, str(THREADS))  # main() pins them: put them back afterwards
    curve = tmp_path / "curve.csv"
    args = [
        "--models",
        TINY,
        "--untuned",
        "--repeat",
        "2",
        "--min-block-s",
        "0.02",
        "--threads",
        str(THREADS),
        "--peers",
        "onnxruntime,openvino,executorch",
        "--record",
        str(curve),
    ]
    assert perf_vs_ort.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("worst TVM/ORT ratio: ") and out[-2].startswith("worst TVM/best-peer ratio: ")
    assert "ratios: TVM time / peer time (below 1: TVM faster)" in out
    assert any(line.startswith("executorch: threads: ") for line in out)
    (row,) = pd.read_csv(curve).itertuples()
    assert row.ort_ms > 0 and row.openvino_ms > 0 and row.executorch_ms > 0 and row.executorch == "1.5.1"
    assert row.best_peer_ms == min(row.ort_ms, row.openvino_ms, row.executorch_ms)
    assert row.ratio == pytest.approx(row.tvm_ms / row.ort_ms, rel=1e-2)  # the old columns, as before
    assert row.tvm_over_best_peer == pytest.approx(row.tvm_ms / row.best_peer_ms, rel=1e-2)
    assert row.tvm_over_openvino == pytest.approx(row.tvm_ms / row.openvino_ms, rel=1e-2)


def test_measure_alternating_times_every_peer_in_the_same_rounds(monkeypatch) -> None:
    from bench import perf_vs_ort

    class Fake:
        def __init__(self) -> None:
            self.calls = 0

        def run(self, x):
            self.calls += 1

        def time_evaluator(self, x, number: int, repeat: int) -> list[float]:
            return [0.001]

    peers = {"onnxruntime": Fake(), "openvino": Fake(), "executorch": Fake()}
    monkeypatch.setattr(perf_vs_ort, "IDLE_BETWEEN_BLOCKS_S", 0.0)
    tvm_ms, peer_ms = perf_vs_ort.measure_alternating(Fake(), peers, None, repeat=3, min_block_s=0.0)
    assert tvm_ms == pytest.approx(1.0) and set(peer_ms) == set(peers)
    assert all(ms >= 0 for ms in peer_ms.values()) and {fake.calls for fake in peers.values()} == {1 + 3 + 3}
