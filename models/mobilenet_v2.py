"""MobileNetV2 (Sandler et al., CVPR 2018), written to mirror the paper's Tables 1 and 2.

The module tree and parameter names are those of torchvision's ``mobilenet_v2`` (``features.N.conv.M``,
``classifier.1``), so a torchvision checkpoint loads with ``load_state_dict`` and real trained weights can
be benchmarked. ``dilation_from`` lets DeepLab turn the late strides into atrous convolutions
(output stride 16 or 8) without a second copy of the network.
"""

from __future__ import annotations

from torch import Tensor, nn

# Table 2: expansion factor t, output channels c, repeats n, stride s of the first repeat.
INVERTED_RESIDUAL_SETTING: list[tuple[int, int, int, int]] = [
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10 % (as TF does)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Convolution, BatchNorm and (unless ``activation`` is false) ReLU6: the paper's basic layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: bool = True,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """Bottleneck residual block (Table 1): 1x1 expand ("pw"), 3x3 depthwise ("dw"), linear 1x1 ("pw-linear")."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))  # pw
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),  # dw
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # pw-linear
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier.

    Args:
        width_mult: the paper's width multiplier; scales every layer, and the last 1x1 conv only when > 1.
        num_classes: 1000 for torchvision checkpoints, 1001 for the TF-slim ones.
        output_stride: 32 for classification; 16 or 8 replaces the last strides with dilation (DeepLab).
        dropout: dropout before the classifier (a no-op in eval mode, kept for checkpoint compatibility).
    """

    def __init__(
        self, width_mult: float = 1.0, num_classes: int = 1000, output_stride: int = 32, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        input_channels = make_divisible(FIRST_CHANNELS * width_mult)
        self.last_channels = make_divisible(LAST_CHANNELS * max(1.0, width_mult))

        features: list[nn.Module] = [ConvBNReLU6(3, input_channels, stride=2)]
        current_stride, dilation = 2, 1
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                block_dilation = dilation
                if stride == 2 and current_stride == output_stride:
                    # Atrous (as TF-slim does it): this block keeps the resolution, the ones after it
                    # dilate their depthwise convs to keep the receptive field.
                    stride, dilation = 1, dilation * 2
                current_stride *= stride
                features.append(InvertedResidual(input_channels, out_channels, stride, t, block_dilation))
                input_channels = out_channels
        features.append(ConvBNReLU6(input_channels, self.last_channels, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channels, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def init_weights(module: nn.Module) -> None:
    """torchvision's initialisation, so random-weight activations stay in a realistic range."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
