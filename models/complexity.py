"""Parameters and multiply-adds, counted from the model itself.

The paper's convention: multiply-adds of convolution and fully connected layers only (BatchNorm,
activations, pooling and additions are not counted). One multiply-add = one MAC, not two FLOPs.
"""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_madds(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Run one forward pass on zeros and add up conv and linear multiply-adds with forward hooks."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        model.eval()(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def complexity_table(names: list[str]):
    """Per model: our parameter and multiply-add counts beside the paper's, with the difference.

    Returns a pandas DataFrame, one row per model, in registry order.
    """
    import pandas as pd

    from models.registry import get_spec

    rows = []
    for name in names:
        spec = get_spec(name)
        with torch.device("meta"):  # shapes without storage: counting 27 models takes seconds, not minutes
            model = spec.builder()
            params, madds = count_params(model), count_madds(model, spec.input_shape)
        paper = spec.paper
        rows.append(
            {
                "name": name,
                "task": spec.task,
                "input_shape": list(spec.input_shape),
                "params": params,
                "madds": madds,
                "paper_params_m": paper.params_m if paper else None,
                "paper_madds_m": paper.madds_m if paper else None,
                "params_diff_pct": _diff_pct(params / 1e6, paper.params_m if paper else None),
                "madds_diff_pct": _diff_pct(madds / 1e6, paper.madds_m if paper else None),
                "paper_pixel1_ms": paper.pixel1_ms if paper else None,
                "paper_accuracy": paper.accuracy if paper else None,
                "paper_metric": paper.metric if paper else None,
                "paper_source": paper.source if paper else None,
            }
        )
    return pd.DataFrame(rows)


def _diff_pct(ours: float, theirs: float | None) -> float | None:
    return None if theirs is None else round(100.0 * (ours - theirs) / theirs, 1)
