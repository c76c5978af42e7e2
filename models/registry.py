"""Named model variants, in the manner of timm's ``create_model``: one name, one configured model.

Each entry carries its task, input resolution and the row of the paper's table it reproduces, so the
paper's figures travel with the model. Adding a variant is one ``register`` call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from models import paper
from models.errors import UserError

TASKS = ("classification", "detection", "segmentation")


@dataclass(frozen=True)
class ModelSpec:
    """A registered variant: how to build it and what the paper says about it."""

    name: str
    task: str
    resolution: int
    builder: Callable[[], nn.Module] = field(repr=False, compare=False)
    paper: paper.PaperRow | None = None
    batch: int = 1  # the paper's figures are batch 1; GPU throughput rows use more

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, self.resolution, self.resolution)

    def with_batch(self, batch: int) -> ModelSpec:
        """The same variant with ``batch`` images per inference."""
        if batch < 1:
            raise UserError(f"--batch must be at least 1 (got {batch})")
        return replace(self, batch=batch)


_REGISTRY: dict[str, ModelSpec] = {}
HEADLINE = ("mobilenet_v2_1.0_224", "ssdlite_mobilenet_v2_320", "deeplabv3_mobilenet_v2_os16")


def register(spec: ModelSpec) -> ModelSpec:
    if spec.task not in TASKS:
        raise ValueError(f"unknown task {spec.task!r}")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(pattern: str = "*") -> list[str]:
    return [name for name in _REGISTRY if fnmatch.fnmatch(name, pattern)]


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; `mnv2bench models` lists the {len(_REGISTRY)} known ones") from None


def resolve_names(names: list[str]) -> list[str]:
    """Expand groups (``headline``, a task name, ``all``) and glob patterns into registered names."""
    out: list[str] = []
    for name in names:
        if name == "all":
            matched = list_models()
        elif name == "headline":
            matched = list(HEADLINE)
        elif name in TASKS:
            matched = [n for n, s in _REGISTRY.items() if s.task == name]
        else:
            matched = list_models(name) if any(c in name for c in "*?[") else [get_spec(name).name]
        if not matched:
            raise UserError(f"no model matches {name!r}")
        out += [m for m in matched if m not in out]
    return out


def create_model(name: str, weights: str | Path | None = None, seed: int = 0) -> nn.Module:
    """Build a registered model in eval mode: seeded random weights, or a PyTorch state-dict file."""
    spec = get_spec(name)
    torch.manual_seed(seed)
    model = spec.builder()
    if weights is None:
        randomize_batchnorm(model)
    else:
        from models.weights import load_weights

        load_weights(model, weights)
    return model.eval()


@torch.no_grad()
def randomize_batchnorm(model: nn.Module) -> None:
    """Give BatchNorm the non-trivial statistics of a trained network.

    Freshly initialised BatchNorm is the identity, so the exported graph loses every bias add and its
    kernels differ from those of a trained checkpoint: schedules tuned on them would not apply to
    real weights. Seeded statistics keep the graph (and the tuning tasks) the same as a trained one's.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)


# --- MobileNetV2 classification: the paper's width x resolution sweep (22 variants) ----------------
def _mobilenet_v2(width_mult: float) -> nn.Module:
    from models.mobilenet_v2 import MobileNetV2

    return MobileNetV2(width_mult=width_mult)


CLASSIFICATION_SWEEP = [(1.4, 224), (1.3, 224)] + [
    (w, r) for w in (1.0, 0.75, 0.5, 0.35) for r in (224, 192, 160, 128, 96)
]
for _width, _resolution in CLASSIFICATION_SWEEP:
    register(
        ModelSpec(
            name=f"mobilenet_v2_{_width}_{_resolution}",
            task="classification",
            resolution=_resolution,
            builder=partial(_mobilenet_v2, _width),
            paper=paper.classification_row(_width, _resolution),
        )
    )


# --- SSDLite-MobileNetV2 detection ------------------------------------------------------------------
def _ssdlite() -> nn.Module:
    from models.ssdlite import ssdlite_mobilenet_v2

    return ssdlite_mobilenet_v2()


register(ModelSpec("ssdlite_mobilenet_v2_320", "detection", 320, _ssdlite, paper.detection_row()))


# --- Mobile DeepLabv3 segmentation ------------------------------------------------------------------
def _deeplab(output_stride: int, aspp: bool) -> nn.Module:
    from models.deeplab import deeplabv3_mobilenet_v2

    return deeplabv3_mobilenet_v2(output_stride=output_stride, aspp=aspp)


for _os in (16, 8):
    for _aspp in (False, True):
        register(
            ModelSpec(
                name=f"deeplabv3_mobilenet_v2_os{_os}" + ("_aspp" if _aspp else ""),
                task="segmentation",
                resolution=513,
                builder=partial(_deeplab, _os, _aspp),
                paper=paper.segmentation_row(_os, _aspp),
            )
        )
