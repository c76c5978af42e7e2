"""First TVM build: ONNX -> Relax -> library for this CPU, checked against ONNX Runtime, per task."""

from __future__ import annotations

import numpy as np
import pytest

from bench.build import compile_to_library
from models.export import onnxruntime_outputs, sample_input
from models.registry import get_spec
from targets.registry import resolve_target

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["mobilenet_v2_0.35_96", "ssdlite_mobilenet_v2_320", "deeplabv3_mobilenet_v2_os16"])
def test_untuned_build_matches_onnxruntime(name: str, tmp_path) -> None:
    """Nothing tuned: every kernel runs MetaSchedule's default schedule for it, and computes the same."""
    built = compile_to_library(name, resolve_target("host"), tmp_path / "lib.so", untuned=True)
    assert built.parity.startswith("ok"), built.parity
    coverage = built.coverage
    assert built.schedules == "untuned" and coverage.default and not coverage.tuned and not coverage.transferred


def test_compile_command_writes_a_library_whose_main_takes_the_input_alone(cli, tmp_path) -> None:
    import tvm
    from tvm import relax

    lib = tmp_path / "mnv2.so"
    result = cli("compile", "mobilenet_v2_0.35_96", "--target", "x86_64-linux-gnu", "-o", str(lib),
                 "--schedules", str(tmp_path / "no-schedules"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parity with ONNX Runtime: ok" in result.stdout and "schedules: untuned" in result.stdout
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    x = sample_input(get_spec("mobilenet_v2_0.35_96").input_shape, seed=3)
    out = vm["main"](tvm.runtime.tensor(x)).numpy()  # weights embedded: the input alone
    assert out.shape == (1, 1000)

    # the harness's runtime hands out the VM's output buffers uncopied; a later run must not write into them
    from bench.runtimes import TvmRuntime

    runtime = TvmRuntime(lib, "tvm", 1, "llvm", "untuned")
    first = runtime.run(x)[0]
    assert not first.flags.owndata
    other = sample_input(x.shape, seed=4)
    second = runtime.run(other)[0]
    np.testing.assert_array_equal(first, out)
    # each run copies its own input into the VM's input tensor
    np.testing.assert_array_equal(second, vm["main"](tvm.runtime.tensor(other)).numpy())
    assert not np.array_equal(first, second)


def test_compile_an_onnx_file(cli, tmp_path) -> None:
    onnx_path = tmp_path / "m.onnx"
    assert cli("export", "mobilenet_v2_0.5_96", "-o", str(onnx_path)).returncode == 0
    lib = tmp_path / "from_file.so"
    result = cli("compile", str(onnx_path), "-o", str(lib), "--schedules", str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr[-3000:]
    import tvm
    from tvm import relax

    x = sample_input((1, 3, 96, 96), seed=4)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), onnxruntime_outputs(onnx_path, x)[0],
                               rtol=1e-3, atol=1e-4)
