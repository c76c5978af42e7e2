"""Tuning tasks: extraction from a lowered model, and what kind of kernel each one is.

MobileNetV2's time goes to depthwise 3x3 and pointwise 1x1 convolutions, which the user asked to
see tuned; the kind of every task is read from its TIR (the weight buffer's shape), not its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm

from targets.registry import TargetSpec

KINDS = ("depthwise", "pointwise", "conv", "dense", "other")


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    weight: int  # how many times the model calls it
    flops: float  # per call
    mod: tvm.IRModule  # the workload (one PrimFunc named "main")


def extract_tasks(lowered: tvm.IRModule, spec: TargetSpec) -> list[Task]:
    """One task per distinct fused kernel, with how often the model calls it and its FLOPs."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    tasks = []
    for extracted in ms.relax_integration.extract_tasks(lowered, spec.tvm_target()):
        mod = extracted.dispatched[0]
        tasks.append(
            Task(
                name=extracted.task_name,
                kind=classify(mod),
                weight=int(extracted.weight),
                flops=float(estimate_tir_flops(mod)),
                mod=mod,
            )
        )
    return tasks


def classify(mod: tvm.IRModule) -> str:
    """depthwise / pointwise / conv from the weight buffer of a conv2d's anchor block; dense; other."""
    from tvm.s_tir.analysis import find_anchor_sblock

    anchor = find_anchor_sblock(mod)
    name = anchor.name_hint if anchor is not None else ""
    if "conv2d" in name.lower():
        data, weight = (tuple(int(d) for d in region.source.shape) for region in anchor.reads[:2])
        if len(weight) != 4:
            return "conv"
        if "nhwc" in name.lower():  # data NHWC, weight OHWI
            (out_channels, kh, kw, in_per_group), channels = weight, data[3]
        else:  # data NCHW, weight OIHW
            (out_channels, in_per_group, kh, kw), channels = weight, data[1]
        return conv_kind(out_channels, in_per_group, kh, kw, channels)
    if "matmul" in name or "dense" in name:
        return "dense"
    return "other"


def conv_kind(out_channels: int, in_per_group: int, kh: int, kw: int, channels: int) -> str:
    """depthwise (one input channel per output channel), pointwise (1x1) or conv, from the weight's shape."""
    if in_per_group == 1 and out_channels == channels > 1:
        return "depthwise"
    if kh == kw == 1:
        return "pointwise"
    return "conv"
