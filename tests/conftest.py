"""Shared fixtures. The slow tests (export, compile, tune end to end) are marked ``slow``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = "mobilenet_v2_0.35_96"
TUNE = ("tune", "--models", TINY, "--max-tasks", "2", "--trials-per-task", "8", "--population", "32")


@pytest.fixture(scope="session")
def host():
    from targets.registry import resolve_target

    return resolve_target("host")


@pytest.fixture(scope="session")
def tuned(tmp_path_factory):
    """One real tuning run, shared by the tests that need a database: the two most expensive tasks of the
    tiny model, 8 trials each, in a schedules folder of its own. Returns (root, CompletedProcess)."""
    root = tmp_path_factory.mktemp("schedules")
    result = subprocess.run([sys.executable, "-m", "bench", *TUNE, "--schedules", str(root)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


@pytest.fixture
def cli(tmp_path):
    """Run ``python -m bench`` as a user would; returns the CompletedProcess."""

    def run(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
        import os

        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True, timeout=timeout,
            cwd=tmp_path, env=full_env,
        )

    return run


@pytest.fixture
def conv_head():
    """An SSDLite head as ONNX: 1x1 conv 8 -> ``channels`` with bias on a 5 x 5 map, then the head's own
    NCHW -> NHWC transpose and flatten to (1, -1, 4)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def build(channels: int):
        rng = np.random.default_rng(0)
        initializers = [
            numpy_helper.from_array(rng.standard_normal((channels, 8, 1, 1)).astype("float32"), "w"),
            numpy_helper.from_array(rng.standard_normal(channels).astype("float32"), "b"),
            numpy_helper.from_array(np.array([1, -1, 4], dtype="int64"), "shape"),
        ]
        nodes = [
            helper.make_node("Conv", ["x", "w", "b"], ["conv"]),
            helper.make_node("Transpose", ["conv"], ["nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", ["nhwc", "shape"], ["boxes"]),
        ]
        graph = helper.make_graph(
            nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
            [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 25 * channels // 4, 4])], initializers,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    return build


@pytest.fixture
def matches_onnxruntime():
    """Compile an ONNX model for the host and check its output against ONNX Runtime's on random input."""
    import numpy as np

    def check(model, input_shape, rtol: float = 1e-5, atol: float = 1e-5) -> None:
        import onnxruntime as ort
        import tvm
        from tvm import relax

        from schedules.pipeline.compile import compile_onnx
        from targets.registry import resolve_target

        x = np.random.default_rng(1).standard_normal(input_shape).astype("float32")
        vm = relax.VirtualMachine(compile_onnx(model, resolve_target("host")).executable, tvm.cpu())
        expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=rtol, atol=atol)

    return check
