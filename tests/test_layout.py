"""Channels-last convolutions on CPUs: the tasks are NHWC, ReLU6 adds no transposes, GPUs stay NCHW."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.build import resolve_onnx
from schedules.compile import compile_onnx, import_onnx, lower
from schedules.layout import clip_as_elementwise_ops
from schedules.tasks import extract_tasks
from targets.registry import resolve_target

TINY = "mobilenet_v2_0.35_96"


@pytest.fixture(scope="module")
def imported():
    return import_onnx(resolve_onnx(TINY)[1])


def test_relu6_becomes_elementwise_ops(imported) -> None:
    before = imported.script()
    assert "R.call_tir(cls.maximum" in before  # the ONNX frontend's Clip: opaque to ConvertLayout
    after = clip_as_elementwise_ops(imported).script()
    assert not re.search(r"R\.call_tir\(cls\.(maximum|minimum)", after)
    assert after.count("R.maximum(") == after.count("R.minimum(") == before.count("R.call_tir(cls.maximum")


def test_cpu_tasks_are_channels_last_with_transposes_only_at_the_edges(imported) -> None:
    spec = resolve_target("host")
    assert spec.data_layout == "NHWC"
    tasks = extract_tasks(lower(imported, spec), spec)
    convs = [t for t in tasks if t.kind in ("depthwise", "pointwise", "conv")]
    assert convs and all("conv2d_nhwc" in t.mod.script() for t in convs)
    transposes = [t.name for t in tasks if "transpose" in t.name]
    assert len(transposes) <= 2, transposes  # the input to NHWC, the head back to NCHW; none around ReLU6


def test_gpu_keeps_nchw(imported) -> None:
    spec = resolve_target("h100")
    assert spec.data_layout == "NCHW"
    assert "NHWC" not in lower(imported, spec).script()


def head_model() -> onnx.ModelProto:
    """An SSDLite box head: 1x1 conv with bias, then the head's own NCHW -> NHWC transpose and flatten."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((12, 8, 1, 1)).astype("float32"), "w")
    bias = numpy_helper.from_array(rng.standard_normal(12).astype("float32"), "b")
    shape = numpy_helper.from_array(np.array([1, -1, 4], dtype="int64"), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"]),
        helper.make_node("Transpose", ["conv"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "shape"], ["boxes"]),
    ]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 75, 4])],
                              [weight, bias, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_graphs_own_transpose_to_nhwc_leaves_no_copy_behind() -> None:
    import onnxruntime as ort
    import tvm
    from tvm import relax

    model, spec = head_model(), resolve_target("host")
    tasks = extract_tasks(lower(import_onnx(model), spec), spec)
    convs = [t.name for t in tasks if t.kind == "pointwise"]
    assert len(convs) == 1 and "transpose" not in convs[0], convs  # the conv's epilogue is its bias alone
    x = np.random.default_rng(1).standard_normal((1, 8, 5, 5)).astype("float32")
    vm = relax.VirtualMachine(compile_onnx(model, spec).executable, tvm.cpu())
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
