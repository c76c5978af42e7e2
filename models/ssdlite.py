"""SSDLite on MobileNetV2 (Sandler et al., CVPR 2018, Sec. 6.2), for 320x320 COCO detection.

The layout follows the TF reference the paper's numbers come from (tensorflow/models,
research/object_detection: ``ssd_mobilenet_v2_feature_extractor.py`` and
``samples/configs/ssdlite_mobilenet_v2_coco.config``):

- two feature maps from the MobileNetV2 body: the expansion output of layer 15 (the first c=160
  bottleneck, output stride 16) and the 1280-channel 1x1 conv (output stride 32);
- four extra layers (depths 512, 256, 256, 128), each 1x1 to half the depth, 3x3 depthwise with
  stride 2, 1x1 to the depth;
- SSDLite predictors: every regular 3x3 convolution of SSD's heads replaced by a separable one
  (3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias to the box codes or class logits);
- anchors from ``multiple_grid_anchor_generator.create_ssd_anchors``; boxes decoded with
  ``FasterRcnnBoxCoder``; sigmoid scores and per-class greedy NMS.

The network's forward pass stops at the raw box codes and class logits: that is the part that is
compiled and benchmarked. Decoding and NMS are plain PyTorch functions kept apart from it, since
their cost depends on the image content and they run on the host in a deployment.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.mobilenet_v2 import ConvBNReLU6, InvertedResidual, MobileNetV2, init_weights

# Index in ``MobileNetV2.features`` of TF's "layer_15" (features[0] is TF's layer_1, the stem):
# the first c=160 bottleneck, whose expansion output is the first SSDLite feature map.
LAYER_15 = 14

# Depths of the four extra feature layers after the body (TF ``feature_map_layout['layer_depth']``).
EXTRA_LAYER_DEPTHS: tuple[int, ...] = (512, 256, 256, 128)
# TF's ``min_depth`` for the feature extractor: the floor when the width multiplier shrinks a layer.
MIN_DEPTH = 16

# Anchor generator (ssdlite_mobilenet_v2_coco.config, ``ssd_anchor_generator``).
NUM_LAYERS = 6
MIN_SCALE = 0.2
MAX_SCALE = 0.95
ASPECT_RATIOS: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
# The first (highest-resolution) layer uses three boxes only ("reduce_boxes_in_lowest_layer").
LOWEST_LAYER_SCALE = 0.1

BOX_CODE_SIZE = 4  # (ty, tx, th, tw)
BOX_SCALE_FACTORS: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
# Class-head bias so that every sigmoid score starts near 0.01 (config ``class_prediction_bias_init``).
CLASS_PREDICTION_BIAS_INIT = -4.6


def anchor_box_specs(num_layers: int = NUM_LAYERS) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) of each anchor of each feature map, as TF's ``create_ssd_anchors``.

    Scales are spaced linearly from ``MIN_SCALE`` to ``MAX_SCALE``; each layer after the first also
    gets an anchor of ratio 1 at the geometric mean of its scale and the next one (1.0 after the last).
    The model's heads take their anchor counts from here, so heads and anchors cannot drift apart.
    """
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (num_layers - 1) for i in range(num_layers)] + [1.0]
    specs: list[list[tuple[float, float]]] = []
    for layer in range(num_layers):
        scale, next_scale = scales[layer], scales[layer + 1]
        if layer == 0:
            specs.append([(LOWEST_LAYER_SCALE, 1.0), (scale, 2.0), (scale, 0.5)])
        else:
            specs.append([(scale, ratio) for ratio in ASPECT_RATIOS] + [(math.sqrt(scale * next_scale), 1.0)])
    return specs


def num_anchors_per_location() -> list[int]:
    """Anchors per feature-map cell: 3 on the first map, 6 on the others."""
    return [len(specs) for specs in anchor_box_specs()]


def feature_map_sizes(input_size: int = 320) -> list[int]:
    """Side of each of the six feature maps for a square input.

    Every stride-2 convolution of the network is 3x3 with padding 1, which maps n to ceil(n / 2).
    The first map has output stride 16 (four halvings), the second 32, and each extra layer halves again.
    """
    if input_size < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")
    size = input_size
    for _ in range(4):
        size = -(-size // 2)
    sizes = [size]
    for _ in range(NUM_LAYERS - 1):
        size = -(-size // 2)
        sizes.append(size)
    return sizes


def anchors(input_size: int = 320, feature_sizes: list[int] | None = None) -> Tensor:
    """All anchors as (cy, cx, h, w), normalised to the image, in the order of the model's outputs.

    Order: feature maps in turn, then row, column, anchor within a cell (the order of an NHWC reshape).
    Centres sit at (i + 0.5) / size. The anchors are not clipped (TF does not clip them either), so
    the widest ones extend past the image: h and w go up to about 1.65.
    """
    sizes = feature_sizes if feature_sizes is not None else feature_map_sizes(input_size)
    if len(sizes) != NUM_LAYERS:
        raise ValueError(f"expected {NUM_LAYERS} feature map sizes, got {len(sizes)}")
    per_map: list[Tensor] = []
    for size, specs in zip(sizes, anchor_box_specs()):
        scales = torch.tensor([scale for scale, _ in specs])
        ratio_sqrts = torch.tensor([ratio for _, ratio in specs]).sqrt()
        heights, widths = scales / ratio_sqrts, scales * ratio_sqrts
        row, column, k = torch.meshgrid(
            torch.arange(size), torch.arange(size), torch.arange(len(specs)), indexing="ij"
        )
        cy, cx = (row + 0.5) / size, (column + 0.5) / size
        per_map.append(torch.stack([cy, cx, heights[k], widths[k]], dim=-1).reshape(-1, 4))
    return torch.cat(per_map)


class ExtraLayer(nn.Sequential):
    """One extra SSD feature layer: 1x1 to half the depth, 3x3 depthwise with stride 2, 1x1 to the depth."""

    def __init__(self, in_channels: int, hidden: int, depth: int) -> None:
        super().__init__(
            ConvBNReLU6(in_channels, hidden, kernel_size=1),  # pw
            ConvBNReLU6(hidden, hidden, stride=2, groups=hidden),  # dw
            ConvBNReLU6(hidden, depth, kernel_size=1),  # pw
        )
        self.out_channels = depth


class SSDLitePredictor(nn.Module):
    """SSDLite box and class predictors for one feature map: separable instead of regular 3x3 convs.

    Each head is a 3x3 depthwise ConvBNReLU6 followed by a 1x1 convolution with bias and no activation.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.box_head = nn.Sequential(
            ConvBNReLU6(in_channels, in_channels, groups=in_channels),  # dw
            nn.Conv2d(in_channels, num_anchors * BOX_CODE_SIZE, 1),
        )
        self.class_head = nn.Sequential(
            ConvBNReLU6(in_channels, in_channels, groups=in_channels),  # dw
            nn.Conv2d(in_channels, num_anchors * num_classes, 1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # NCHW -> N, H, W, anchors * k -> N, H * W * anchors, k: the order of ``anchors()``.
        box_regression = self.box_head(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, BOX_CODE_SIZE)
        class_logits = self.class_head(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.num_classes)
        return box_regression, class_logits


class SSDLiteMobileNetV2(nn.Module):
    """SSDLite detector on a MobileNetV2 body.

    Args:
        width_mult: the body's width multiplier. As in TF, the extra layers scale with it too
            (never below ``MIN_DEPTH`` channels); the heads follow their inputs.
        num_classes: class logits per anchor, background (class 0) included: 91 for COCO.
        input_size: the square input side the model is meant for (320 in the paper); kept for the
            anchors and for callers, the convolutions themselves accept any size.

    ``forward`` returns ``(box_regression [N, A, 4], class_logits [N, A, num_classes])``, A being the
    number of anchors (2034 at 320x320), in the order of ``anchors(input_size)``.
    """

    def __init__(self, width_mult: float = 1.0, num_classes: int = 91, input_size: int = 320) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background, so it must be at least 2, got {num_classes}")
        if input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.num_classes = num_classes
        self.input_size = input_size

        # The classifier is dropped: only the body (``features``) is kept, under a readable name.
        self.backbone = MobileNetV2(width_mult).features
        layer_15 = self.backbone[LAYER_15]
        if not isinstance(layer_15, InvertedResidual) or layer_15.use_res_connect:
            raise ValueError("layer 15 must be a stride-2 bottleneck without residual")
        # The first map is taken inside this block, so the block is run in two parts in ``feature_maps``.
        in_channels = [layer_15.conv[0].out_channels, self.backbone[-1].out_channels]

        def depth_fn(depth: float) -> int:  # TF scales the extra layers with the body, down to MIN_DEPTH
            return max(int(depth * width_mult), MIN_DEPTH)

        extras: list[nn.Module] = []
        for depth in EXTRA_LAYER_DEPTHS:
            extras.append(ExtraLayer(in_channels[-1], depth_fn(depth / 2), depth_fn(depth)))
            in_channels.append(extras[-1].out_channels)
        self.extras = nn.ModuleList(extras)

        self.predictors = nn.ModuleList(
            SSDLitePredictor(channels, anchors_here, num_classes)
            for channels, anchors_here in zip(in_channels, num_anchors_per_location())
        )
        init_weights(self.extras)
        init_weights(self.predictors)
        for predictor in self.predictors:
            nn.init.constant_(predictor.class_head[-1].bias, CLASS_PREDICTION_BIAS_INIT)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """The six maps the predictors look at (output strides 16, 32, 64, 128, 256, 512)."""
        for layer in self.backbone[:LAYER_15]:
            x = layer(x)
        layer_15 = self.backbone[LAYER_15].conv
        expansion = layer_15[0](x)  # TF's "layer_15/expansion_output"
        x = layer_15[1:](expansion)  # dw, pw-linear, BN; no residual (stride 2)
        for layer in self.backbone[LAYER_15 + 1 :]:
            x = layer(x)  # up to and including the 1x1 conv to 1280
        maps = [expansion, x]
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        return maps

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        predictions = [predictor(fmap) for predictor, fmap in zip(self.predictors, self.feature_maps(x))]
        box_regression = torch.cat([box for box, _ in predictions], dim=1)
        class_logits = torch.cat([logits for _, logits in predictions], dim=1)
        return box_regression, class_logits


def ssdlite_mobilenet_v2(width_mult: float = 1.0, num_classes: int = 91, input_size: int = 320) -> SSDLiteMobileNetV2:
    """SSDLite + MobileNetV2 as in the paper's Table 6 (width 1.0, 320x320, 90 COCO classes + background)."""
    return SSDLiteMobileNetV2(width_mult, num_classes, input_size)


def decode_boxes(
    box_regression: Tensor, anchors: Tensor, scale_factors: tuple[float, float, float, float] = BOX_SCALE_FACTORS
) -> Tensor:
    """Box codes (ty, tx, th, tw) relative to anchors (cy, cx, h, w) -> boxes (ymin, xmin, ymax, xmax).

    TF's ``FasterRcnnBoxCoder.decode``: the codes are divided by ``scale_factors``, centres move by a
    fraction of the anchor size, sizes scale by exp. ``box_regression`` is [..., A, 4], anchors [A, 4].
    """
    codes = box_regression / box_regression.new_tensor(scale_factors)
    ty, tx, th, tw = codes.unbind(-1)
    cy_a, cx_a, h_a, w_a = anchors.unbind(-1)
    cy, cx = ty * h_a + cy_a, tx * w_a + cx_a
    h, w = th.exp() * h_a, tw.exp() * w_a
    return torch.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union of [M, 4] and [K, 4] corner boxes -> [M, K]; 0 for empty unions."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area1[:, None] + area2[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def non_max_suppression(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds ``iou_threshold``.
    The IoU matrix is computed once; the loop only visits boxes, which stays cheap for the few
    hundred candidates left after the score threshold.
    """
    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def postprocess(
    box_regression: Tensor,
    class_logits: Tensor,
    anchors: Tensor,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
) -> list[dict[str, Tensor]]:
    """Detections per image: ``{"boxes": [D, 4], "scores": [D], "labels": [D]}``, best score first.

    As TF's SSD post-processing: sigmoid scores (each class independent), background class 0 skipped,
    boxes decoded and clipped to the image, per-class NMS keeping at most ``max_detections`` per class,
    then the ``max_detections`` best overall. Boxes are (ymin, xmin, ymax, xmax) in [0, 1]; labels are
    indices into ``class_logits``' last axis (1 .. num_classes - 1).
    """
    boxes = decode_boxes(box_regression, anchors).clamp(0.0, 1.0)
    scores = class_logits.sigmoid()
    results: list[dict[str, Tensor]] = []
    for image_boxes, image_scores in zip(boxes, scores):
        # Start from empty tensors so that an image without detections still gets well-shaped outputs.
        kept_boxes: list[Tensor] = [image_boxes.new_zeros(0, 4)]
        kept_scores: list[Tensor] = [image_scores.new_zeros(0)]
        kept_labels: list[Tensor] = [torch.zeros(0, dtype=torch.long)]
        for label in range(1, image_scores.shape[-1]):
            class_scores = image_scores[:, label]
            candidates = (class_scores > score_threshold).nonzero().flatten()
            if len(candidates) == 0:
                continue
            keep = candidates[non_max_suppression(image_boxes[candidates], class_scores[candidates], iou_threshold)]
            keep = keep[:max_detections]
            kept_boxes.append(image_boxes[keep])
            kept_scores.append(class_scores[keep])
            kept_labels.append(torch.full((len(keep),), label, dtype=torch.long))
        all_scores = torch.cat(kept_scores)
        best = all_scores.topk(min(max_detections, len(all_scores))).indices
        results.append(
            {"boxes": torch.cat(kept_boxes)[best], "scores": all_scores[best], "labels": torch.cat(kept_labels)[best]}
        )
    return results
