"""Mobile DeepLabv3 (paper Sec. 6.3): MobileNetV2 with atrous convolution and a DeepLabv3 head.

The head sits on the 320-channel output of the last bottleneck (not on the 1280-channel conv, which
the paper drops to save computation). Two heads, as in Table 7: the full ASPP (three atrous 3x3
branches, a 1x1 branch and image pooling) and the on-device choice (a 1x1 branch and image pooling).
Logits are upsampled bilinearly to the input size with ``align_corners=True``, as TF DeepLab does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.mobilenet_v2 import MobileNetV2, init_weights

ASPP_CHANNELS = 256
ASPP_RATES_OS16 = (6, 12, 18)  # doubled at output stride 8, as in DeepLabv3


class ConvBNReLU(nn.Sequential):
    """The DeepLab head uses plain ReLU (ReLU6 is MobileNet's)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ImagePooling(nn.Module):
    """Global context: average the whole map, project, and spread it back over every position."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = ConvBNReLU(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class DeepLabV3Head(nn.Module):
    """Parallel branches, concatenated and projected to 256 channels, then a 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: tuple[int, ...]) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, ASPP_CHANNELS)]
        branches += [ConvBNReLU(in_channels, ASPP_CHANNELS, 3, rate) for rate in atrous_rates]
        branches.append(ImagePooling(in_channels, ASPP_CHANNELS))
        self.branches = nn.ModuleList(branches)
        self.project = ConvBNReLU(len(branches) * ASPP_CHANNELS, ASPP_CHANNELS)
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.classifier(self.project(x))


class MobileDeepLabV3(nn.Module):
    """MobileNetV2 backbone at ``output_stride`` 16 or 8, with or without ASPP."""

    def __init__(
        self, num_classes: int = 21, output_stride: int = 16, aspp: bool = False, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        backbone = MobileNetV2(width_mult=width_mult, output_stride=output_stride)
        self.backbone = backbone.features[:-1]  # up to the 320-channel bottleneck; no 1280 conv
        in_channels = self.backbone[-1].out_channels
        rates = tuple(r * 16 // output_stride for r in ASPP_RATES_OS16) if aspp else ()
        self.head = DeepLabV3Head(in_channels, num_classes, rates)
        init_weights(self.head)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)


def deeplabv3_mobilenet_v2(output_stride: int = 16, aspp: bool = False, num_classes: int = 21) -> MobileDeepLabV3:
    return MobileDeepLabV3(num_classes=num_classes, output_stride=output_stride, aspp=aspp)


