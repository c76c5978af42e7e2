"""CPU graph rewrites keep the ONNX semantics: the separable bilinear resize against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from schedules.compile import compile_onnx, import_onnx, lower
from targets.registry import resolve_target


def resize_model(mode: str, out_hw: tuple[int, int]) -> onnx.ModelProto:
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 3, *out_hw])
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode=mode)
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, *out_hw])], [sizes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("mode", ["align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric"])
@pytest.mark.parametrize("out_hw", [(17, 29), (3, 4)])  # up and down
def test_separable_resize_matches_onnxruntime(mode: str, out_hw: tuple[int, int]) -> None:
    import onnxruntime as ort
    import tvm
    from tvm import relax

    model, spec = resize_model(mode, out_hw), resolve_target("host")
    lowered = lower(import_onnx(model), spec).script()
    assert "resize2d" not in lowered and "resize_rows" in lowered  # rewritten, not the generic kernel
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 7)).astype("float32")
    vm = relax.VirtualMachine(compile_onnx(model, spec).executable, tvm.cpu())
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
