"""NVIDIA GPU builds without a GPU: every headline model compiles for sm_80 and sm_90 with its kernels
on the device (DLight defaults where nothing is tuned) and its launches captured as CUDA graphs, and nvcc
compiles that device code."""

from __future__ import annotations

import shutil

import onnx
import pytest

from models.export import export_model
from models.registry import HEADLINE
from schedules.pipeline.compile import compile_onnx
from targets.cuda import NoDeviceCode, compile_cubin, cuda_source, kernel_count
from targets.registry import detect_gpu_arch, resolve_target

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preset", ["a100", "h100"])
@pytest.mark.parametrize("model", HEADLINE)
def test_headline_models_build_for_the_gpu(model: str, preset: str) -> None:
    spec = resolve_target(preset)
    compiled = compile_onnx(onnx.load(str(export_model(model))), spec, database=None)
    source = cuda_source(compiled.executable)
    tasks = compiled.coverage.total
    assert kernel_count(source) >= tasks > 20  # every fused kernel is a CUDA kernel, none left on the host
    if model == "mobilenet_v2_1.0_224" and shutil.which("nvcc"):
        cubin = compile_cubin(source, spec.arch)
        assert cubin[:4] == b"\x7fELF" and len(cubin) > 10_000


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_gpu_libraries_replay_their_launches_as_cuda_graphs(cuda_graph: bool) -> None:
    """Captured on the first run and replayed after it, unless turned off (--no-cuda-graph)."""
    model = onnx.load(str(export_model("mobilenet_v2_0.35_96")))
    text = compile_onnx(model, resolve_target("h200"), cuda_graph=cuda_graph).executable.as_text()
    assert ("vm.builtin.cuda_graph.run_or_capture" in text) == cuda_graph


def test_a_cpu_library_has_no_device_code() -> None:
    with pytest.raises(NoDeviceCode):
        cuda_source(_cpu_module())


def _cpu_module():
    import tvm
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class AddOne:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            return R.add(x, R.const(1.0, "float32"))

    return tvm.compile(AddOne, target=resolve_target("host").tvm_target())


@pytest.mark.skipif(detect_gpu_arch() is None, reason="no NVIDIA GPU on this machine")
def test_runs_on_the_gpu(tmp_path) -> None:
    from bench.build import compile_to_library

    built = compile_to_library("mobilenet_v2_0.35_96", resolve_target("cuda"), tmp_path / "gpu.so", untuned=True)
    assert built.parity.startswith("ok"), built.parity


@pytest.mark.skipif(detect_gpu_arch() is None, reason="no NVIDIA GPU on this machine")
def test_torch_peer_on_the_gpu_is_device_timed() -> None:
    import numpy as np

    from bench.runtimes import TorchRuntime
    from models.export import sample_input, torch_outputs
    from models.registry import create_model, get_spec

    name = "mobilenet_v2_0.35_96"
    model, x = create_model(name), sample_input(get_spec(name).input_shape)
    expected = torch_outputs(model, x)
    runtime = TorchRuntime(model, threads=1, gpu=True)
    np.testing.assert_allclose(runtime.run(x)[0], expected[0], rtol=1e-3, atol=1e-4)
    runtime.device_run(x)
    assert runtime.device_timed and runtime.device_clock() > 0.0
    assert next(model.parameters()).device.type == "cpu"  # the reference model stays on the CPU


def test_a_gpu_database_is_what_its_libraries_are_built_from_and_named_by(tmp_path) -> None:
    """A cuda-sm_90 database in the schedules folder: its records schedule their kernels (DLight the rest),
    and its hash names the library, so a record added by the next GPU slice means a new build. The records
    here are sampled and postprocessed, never measured (no GPU), in a folder of the test's own."""
    from bench.build import schedule_databases
    from schedules import database as db_files
    from schedules.search.fallback import default_schedule
    from schedules.search.transfer import record_for

    spec, model = resolve_target("h200"), onnx.load(str(export_model("mobilenet_v2_0.35_96")))
    target = spec.tvm_target()
    database = db_files.open_database(spec, tmp_path, create=True)
    db_files.write_metadata(db_files.database_dir(spec, tmp_path), spec, 1, ["mobilenet_v2_0.35_96"])

    def add_record(task) -> bool:
        """A sample within the GPU's limits (VerifyGPUCode rejects most), made as a CPU kernel's default is."""
        sch = next(filter(None, (default_schedule(task.mod, target, seed) for seed in range(1, 11))), None)
        if sch is not None:
            record_for(database, task, sch, target, [1.0])
        return sch is not None

    tasks = compile_onnx(model, spec).tasks
    first = next(task for task in tasks if add_record(task))
    _, _, label = schedule_databases(spec, tmp_path)
    before = db_files.sources_hash(spec, tmp_path)
    assert label == f"cuda-sm_90@{db_files.content_hash(tmp_path / 'cuda-sm_90')}" and before != "untuned"
    compiled = compile_onnx(model, spec, database=database)
    assert compiled.coverage.tuned == [first.name] and len(compiled.coverage.default) == len(tasks) - 1
    cuda_source(compiled.executable)
    assert any(add_record(task) for task in tasks if task is not first)
    assert db_files.sources_hash(spec, tmp_path) != before
