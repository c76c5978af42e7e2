"""The paper's published figures (Sandler et al., CVPR 2018), shipped as CSV data with their sources.

These are reference data, never measurements: they are read from ``models/paper/*.csv`` (see the
README there for where each number comes from) and attached to the registry's model variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

PAPER_DIR = Path(__file__).with_name("paper")
CITATION = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018, arXiv:1801.04381"


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's tables: what the paper reports for a model variant."""

    source: str  # table and document the figures come from
    params_m: float | None = None
    madds_m: float | None = None
    pixel1_ms: float | None = None  # one big core of a Google Pixel 1, TF-Lite
    accuracy: float | None = None
    metric: str | None = None  # "top1", "mAP" or "mIOU"
    note: str = ""


@cache
def table(name: str) -> pd.DataFrame:
    return pd.read_csv(PAPER_DIR / f"{name}.csv")


def _opt(value: object) -> float | None:
    return None if pd.isna(value) else float(value)


TABLE4_NETWORKS = {(1.0, 224): "MobileNetV2", (1.4, 224): "MobileNetV2 (1.4)"}


def classification_row(width_mult: float, resolution: int) -> PaperRow:
    """Table 4 for the two variants it lists; the paper's checkpoint table for the other 20."""
    if (width_mult, resolution) in TABLE4_NETWORKS:
        row = table("classification").set_index("network").loc[TABLE4_NETWORKS[width_mult, resolution]]
        return PaperRow(
            source="paper Table 4",
            params_m=float(row.params_m),
            madds_m=float(row.madds_m),
            pixel1_ms=_opt(row.pixel1_cpu_ms),
            accuracy=float(row.top1),
            metric="top1",
            note="ImageNet; 1001 classes",
        )
    df = table("mobilenet_v2_checkpoints")
    row = df[(df.depth_multiplier == width_mult) & (df.resolution == resolution)].iloc[0]
    return PaperRow(
        source="tensorflow/models research/slim/nets/mobilenet/README.md (the paper's checkpoints)",
        params_m=float(row.params_m),
        madds_m=float(row.macs_m),
        pixel1_ms=float(row.pixel1_latency_ms),
        accuracy=float(row.top1),
        metric="top1",
        note="TF checkpoints have 1001 classes",
    )


def detection_row() -> PaperRow:
    row = table("detection").set_index("network").loc["MNet V2 + SSDLite"]
    return PaperRow(
        source="paper Table 6",
        params_m=float(row.params_m),
        madds_m=float(row.madds_b) * 1000,
        pixel1_ms=_opt(row.pixel1_cpu_ms),
        accuracy=float(row["map"]),
        metric="mAP",
        note="COCO; 80 classes in the count",
    )


def segmentation_row(output_stride: int, aspp: bool) -> PaperRow:
    df = table("segmentation")
    rows = df[
        (df.network == "MNet V2*") & (df.output_stride == output_stride) & (df.aspp == ("yes" if aspp else "no"))
    ]
    row = rows.iloc[0]
    multiscale = row.multiscale_flip == "yes"
    return PaperRow(
        source="paper Table 7",
        params_m=float(row.params_m),
        # The OS 8 rows are evaluated multi-scale with flips: their MAdds are not one forward pass.
        madds_m=None if multiscale else float(row.madds_b) * 1000,
        accuracy=float(row.miou),
        metric="mIOU",
        note="mIOU with multi-scale + flip; MAdds not single-scale" if multiscale else "PASCAL VOC 2012 val",
    )
