"""CPU graph rewrites keep the ONNX semantics (checked against ONNX Runtime): the separable bilinear
resize, the padded output channels, the gathered head rows, the dilated convolutions that skip the
taps reading padding and the stitched concatenations that join them."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from schedules.pipeline.compile import import_onnx, lower
from schedules.pipeline.rewrites import computed_share, padded_channels, tap_intervals
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
def test_separable_resize_matches_onnxruntime(mode: str, out_hw: tuple[int, int], matches_onnxruntime) -> None:
    model = resize_model(mode, out_hw)
    lowered = lower(import_onnx(model), resolve_target("host")).script()
    assert "resize2d" not in lowered and "resize_rows" in lowered  # rewritten, not the generic kernel
    matches_onnxruntime(model, (1, 3, 5, 7), atol=1e-6)


@pytest.mark.parametrize(("channels", "padded"), [(273, 288), (546, 560), (127, 128), (96, 96), (24, 24), (21, 21)])
def test_output_channels_are_padded_to_vectors_only_when_cheap(channels: int, padded: int) -> None:
    assert padded_channels(channels) == padded


def test_padded_head_computes_the_real_channels(conv_head, matches_onnxruntime) -> None:
    model = conv_head(124)  # 124 -> 128
    lowered = lower(import_onnx(model), resolve_target("host")).script()
    assert "T.int64(128), T.int64(1), T.int64(1), T.int64(8)" in lowered  # the weights, padded (OHWI)
    assert "strided_slice" in lowered  # the real channels cut back out
    matches_onnxruntime(model, (1, 8, 5, 5))


def heads_model(k: int) -> onnx.ModelProto:
    """Two SSD-style heads on maps of 5 x 5 and 3 x 3 (stride 2): conv, NCHW -> NHWC, rows of ``k``, concat."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((c, 8, 1, 1)).astype("float32"), f"w{i}")
               for i, c in enumerate((3 * k, 2 * k))]
    rows = numpy_helper.from_array(np.array([1, -1, k], dtype="int64"), "rows")
    nodes = []
    for i, stride in enumerate((1, 2)):
        nodes += [helper.make_node("Conv", ["x", f"w{i}"], [f"conv{i}"], strides=[stride, stride]),
                  helper.make_node("Transpose", [f"conv{i}"], [f"nhwc{i}"], perm=[0, 2, 3, 1]),
                  helper.make_node("Reshape", [f"nhwc{i}", "rows"], [f"rows{i}"])]
    nodes.append(helper.make_node("Concat", ["rows0", "rows1"], ["y"], axis=1))
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 75 + 18, k])],
                              [*weights, rows])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("k", [4, 7])
def test_head_rows_are_gathered_without_per_element_index_arithmetic(k: int, matches_onnxruntime) -> None:
    model = heads_model(k)
    lowered = lower(import_onnx(model), resolve_target("host")).script()
    assert "gather_rows" in lowered and "concatenate" not in lowered
    matches_onnxruntime(model, (1, 8, 5, 5))


def test_tap_intervals_of_an_aspp_convolution() -> None:
    # DeepLab's dilation-36 ASPP branch on a 65-wide map: the outer taps read padding for most outputs
    intervals = tap_intervals(size=65, taps=3, dilation=36, pad_before=36, out_size=65)
    assert intervals == [(0, 29, 1, 2), (29, 36, 1, 1), (36, 65, 0, 1)]
    assert computed_share(intervals, 3, 65) == (29 * 2 + 7 + 29 * 2) / (65 * 3)
    assert computed_share(tap_intervals(65, 3, 2, 2, 65), 3, 65) > 0.95  # the backbone's dilation 2: left alone
    assert tap_intervals(size=2, taps=3, dilation=1, pad_before=5, out_size=10) is None  # outputs of padding alone


def dilated_conv_model(dilation: int, pads: list[int]) -> onnx.ModelProto:
    """A 3 x 3 convolution 6 -> 16 with bias and ReLU on a 13 x 11 map."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((16, 6, 3, 3)).astype("float32"), "w"),
               numpy_helper.from_array(rng.standard_normal(16).astype("float32"), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], dilations=[dilation, dilation], pads=pads),
             helper.make_node("Relu", ["conv"], ["y"])]
    out_hw = [13 + pads[0] + pads[2] - 2 * dilation, 11 + pads[1] + pads[3] - 2 * dilation]
    graph = helper.make_graph(nodes, "dilated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 13, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, *out_hw])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("dilation", "pads"), [(6, [6, 6, 6, 6]), (4, [4, 4, 4, 4]), (5, [3, 5, 6, 2])])
def test_dilated_convolution_skips_padding_taps(dilation: int, pads: list[int], matches_onnxruntime) -> None:
    model = dilated_conv_model(dilation, pads)
    kernels = [g.name_hint for g in lower(import_onnx(model), resolve_target("host")).functions]
    assert sum(k.startswith("fused_conv2d") for k in kernels) > 1  # the regions ...
    assert any("stitch" in k for k in kernels) and not any("concatenate" in k for k in kernels)  # ... joined
    assert not any("stitch" in k and ("add" in k or "relu" in k) for k in kernels)  # bias and ReLU per region
    matches_onnxruntime(model, (1, 6, 13, 11), atol=1e-4)


def aspp_model() -> onnx.ModelProto:
    """DeepLab's ASPP in small: a 1 x 1 branch and 3 x 3 branches of dilation 3 and 5 (6 -> 8 channels
    each, ReLU) on a 13 x 11 map, concatenated along the channels."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    weights, nodes, branches = [], [], []
    for i, (size, dilation) in enumerate([(1, 1), (3, 3), (3, 5)]):
        weights.append(numpy_helper.from_array(rng.standard_normal((8, 6, size, size)).astype("float32"), f"w{i}"))
        pad = dilation * (size // 2)
        nodes += [helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"], dilations=[dilation] * 2, pads=[pad] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        branches.append(f"r{i}")
    nodes.append(helper.make_node("Concat", branches, ["y"], axis=1))
    graph = helper.make_graph(nodes, "aspp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 13, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 13, 11])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_aspp_branches_and_their_regions_are_stitched_in_one_kernel(matches_onnxruntime) -> None:
    model = aspp_model()
    kernels = [g.name_hint for g in lower(import_onnx(model), resolve_target("host")).functions]
    assert sum("stitch" in k for k in kernels) == 1 and not any("concatenate" in k for k in kernels)
    matches_onnxruntime(model, (1, 6, 13, 11), atol=1e-4)
