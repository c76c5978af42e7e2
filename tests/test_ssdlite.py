"""SSDLite + MobileNetV2: shapes, size against the paper's Table 6, anchors, decoding, NMS, post-processing."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from models.ssdlite import (
    SSDLiteMobileNetV2,
    anchors,
    decode_boxes,
    feature_map_sizes,
    non_max_suppression,
    num_anchors_per_location,
    postprocess,
    ssdlite_mobilenet_v2,
)

INPUT_SIZE = 320
NUM_ANCHORS_320 = 20 * 20 * 3 + (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1 * 1) * 6  # 2034


@pytest.fixture(scope="module")
def model() -> SSDLiteMobileNetV2:
    torch.manual_seed(0)
    return ssdlite_mobilenet_v2().eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)


def test_output_shapes(model: SSDLiteMobileNetV2, image: torch.Tensor) -> None:
    with torch.no_grad():
        box_regression, class_logits = model(image.expand(2, -1, -1, -1))
    assert box_regression.shape == (2, NUM_ANCHORS_320, 4)
    assert class_logits.shape == (2, NUM_ANCHORS_320, 91)


def test_feature_maps_match_paper_and_anchor_sizes(model: SSDLiteMobileNetV2, image: torch.Tensor) -> None:
    with torch.no_grad():
        maps = model.feature_maps(image)
    # Sec. 6.2: layer-15 expansion (576 ch, output stride 16), the 1280 conv, then the extra layers.
    assert [m.shape[1] for m in maps] == [576, 1280, 512, 256, 256, 128]
    assert [m.shape[-1] for m in maps] == [m.shape[-2] for m in maps] == feature_map_sizes(INPUT_SIZE)
    assert feature_map_sizes(INPUT_SIZE) == [20, 10, 5, 3, 2, 1]
    assert feature_map_sizes(300) == [19, 10, 5, 3, 2, 1]  # the TF config's input size


def test_param_count_near_paper(model: SSDLiteMobileNetV2) -> None:
    # Table 6: 4.3M. We count 4,500,543 (body 2.22M without classifier, extra layers 0.66M, predictors
    # 1.62M of which 1.52M are the 91-class heads): 4.7 % above the paper, as the body itself is
    # (torchvision 3.50M vs paper 3.4M); BN affine parameters are counted, running statistics are not.
    params = sum(p.numel() for p in model.parameters())
    assert params == 4_500_543
    assert abs(params - 4.3e6) / 4.3e6 < 0.10


def test_anchor_count_matches_model_outputs(model: SSDLiteMobileNetV2, image: torch.Tensor) -> None:
    assert num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    with torch.no_grad():
        box_regression, _ = model(image)
    assert anchors(INPUT_SIZE).shape == (box_regression.shape[1], 4) == (NUM_ANCHORS_320, 4)
    assert anchors(300).shape == (1917, 4)  # the count of TF's 300x300 SSDLite


def test_anchor_values() -> None:
    boxes = anchors(INPUT_SIZE)
    cy, cx, h, w = boxes.unbind(-1)
    assert ((cy > 0) & (cy < 1) & (cx > 0) & (cx < 1)).all()
    assert ((h > 0) & (w > 0)).all()
    assert h.max() < 1.7 and w.max() < 1.7  # 0.95 * sqrt(3): anchors are not clipped
    # First cell of the first map: centre (0.5 / 20), boxes (scale 0.1, ratio 1), (0.2, 2), (0.2, 1/2).
    first = boxes[:3]
    torch.testing.assert_close(first[:, :2], torch.full((3, 2), 0.025))
    torch.testing.assert_close(first[0, 2:], torch.tensor([0.1, 0.1]))
    torch.testing.assert_close(first[1, 2:], torch.tensor([0.2 / 2**0.5, 0.2 * 2**0.5]))
    # Order is row, column, anchor: the next cell moves along x.
    torch.testing.assert_close(boxes[3, :2], torch.tensor([0.025, 0.075]))
    # Last map (1x1): one cell at the centre, the interpolated scale sqrt(0.95 * 1.0) last.
    last = boxes[-6:]
    torch.testing.assert_close(last[:, :2], torch.full((6, 2), 0.5))
    torch.testing.assert_close(last[-1, 2:], torch.full((2,), 0.95**0.5))


def test_decode_zero_regression_gives_anchor_boxes() -> None:
    anchor_boxes = anchors(INPUT_SIZE)
    decoded = decode_boxes(torch.zeros(2, len(anchor_boxes), 4), anchor_boxes)
    cy, cx, h, w = anchor_boxes.unbind(-1)
    expected = torch.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], dim=-1)
    assert decoded.shape == (2, len(anchor_boxes), 4)
    torch.testing.assert_close(decoded, expected.expand(2, -1, -1))


def test_decode_applies_scale_factors() -> None:
    anchor = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    # ty = 10 moves the centre by one anchor height; th = 5 * ln 2 doubles the height.
    codes = torch.tensor([[10.0, 0.0, 5.0 * torch.log(torch.tensor(2.0)).item(), 0.0]])
    torch.testing.assert_close(decode_boxes(codes, anchor), torch.tensor([[0.5, 0.3, 0.9, 0.7]]))


def test_nms_removes_overlap_keeps_disjoint() -> None:
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 1.0, 1.0], [0.0, 0.0, 0.5, 0.45]])
    scores = torch.tensor([0.9, 0.7, 0.8])
    kept = non_max_suppression(boxes, scores, iou_threshold=0.6)
    assert kept.tolist() == [0, 1]  # box 2 overlaps box 0 with IoU 0.9 and scores lower
    assert non_max_suppression(boxes, scores, iou_threshold=0.95).tolist() == [0, 2, 1]


def _logits_with(hits: dict[tuple[int, int], float], num_anchors: int, num_classes: int = 91) -> torch.Tensor:
    """Class logits of one image, all at a very low score except ``{(anchor, class): probability}``."""
    logits = torch.full((1, num_anchors, num_classes), -20.0)
    for (anchor, label), probability in hits.items():
        logits[0, anchor, label] = torch.logit(torch.tensor(probability))
    return logits


def test_postprocess_threshold_background_and_nms() -> None:
    anchor_boxes = anchors(INPUT_SIZE)
    box_regression = torch.zeros(1, len(anchor_boxes), 4)
    cell = 3 * (5 * 20 + 5)  # first anchor of cell (row 5, column 5) of the 20x20 map
    far_cell = 3 * (15 * 20 + 15)
    neighbour = cell + 3  # same anchor shape, one cell to the right (0.05 further along x)...
    box_regression[0, neighbour, 1] = -4.0  # ...moved back 0.04: IoU 0.09 / 0.11 with the first box
    hits = {
        (cell, 0): 0.99,  # background: never reported
        (cell, 7): 0.9,
        (neighbour, 7): 0.8,  # suppressed by the 0.9 box of the same class
        (neighbour, 12): 0.8,  # kept: NMS is per class
        (far_cell, 7): 0.6,
        (far_cell + 1, 7): 0.25,  # below the score threshold
    }
    (detections,) = postprocess(box_regression, _logits_with(hits, len(anchor_boxes)), anchor_boxes)
    assert detections["labels"].tolist() == [7, 12, 7]
    torch.testing.assert_close(detections["scores"], torch.tensor([0.9, 0.8, 0.6]))
    assert detections["boxes"].shape == (3, 4)
    assert ((detections["boxes"] >= 0) & (detections["boxes"] <= 1)).all()
    cy, cx, h, w = anchor_boxes[cell]
    torch.testing.assert_close(detections["boxes"][0], torch.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]))


def test_postprocess_max_detections_and_empty_images() -> None:
    anchor_boxes = anchors(INPUT_SIZE)
    box_regression = torch.zeros(2, len(anchor_boxes), 4)
    # Twelve well separated cells of the 20x20 map, class 3, scores 0.40 .. 0.95.
    cells = [3 * (row * 20 + column) for row in (2, 8, 14) for column in (2, 7, 12, 17)]
    hits = {(anchor, 3): 0.4 + 0.05 * i for i, anchor in enumerate(cells)}
    logits = torch.cat([_logits_with(hits, len(anchor_boxes)), _logits_with({}, len(anchor_boxes))])
    full, empty = postprocess(box_regression, logits, anchor_boxes, max_detections=5)
    assert len(full["scores"]) == 5
    torch.testing.assert_close(full["scores"], torch.tensor([0.95, 0.9, 0.85, 0.8, 0.75]))
    assert (full["labels"] == 3).all()
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,) and empty["labels"].shape == (0,)


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs onnxscript")
def test_onnx_export(model: SSDLiteMobileNetV2, image: torch.Tensor) -> None:
    program = torch.onnx.export(model, (image,), dynamo=True, verbose=False)
    graph = program.model_proto.graph
    # Plain convolutions and tensor reshuffling only: nothing a compiler has to special-case.
    assert {node.op_type for node in graph.node} <= {"Conv", "Clip", "Add", "Concat", "Reshape", "Transpose"}
    shapes = [[dim.dim_value for dim in out.type.tensor_type.shape.dim] for out in graph.output]
    assert shapes == [[1, NUM_ANCHORS_320, 4], [1, NUM_ANCHORS_320, 91]]


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ssdlite_mobilenet_v2(num_classes=1)
    with pytest.raises(ValueError):
        anchors(feature_sizes=[20, 10])
