"""Channels-last convolutions on CPUs: the tasks are NHWC, ReLU6 adds no transposes, GPUs stay NCHW."""

from __future__ import annotations

import re

import pytest

from bench.build import resolve_onnx
from schedules.pipeline.compile import import_onnx, lower
from schedules.pipeline.layout import clip_as_elementwise_ops
from schedules.tasks import extract_tasks
from targets.registry import resolve_target

TINY = "mobilenet_v2_0.35_96"


@pytest.fixture(scope="module")
def imported():
    return import_onnx(resolve_onnx(TINY)[1])


def test_relu6_becomes_elementwise_ops(imported) -> None:
    before = imported.script()
    assert "R.call_tir(cls.maximum" in before  # the ONNX frontend's Clip: opaque to ConvertLayout
    after = clip_as_elementwise_ops(imported).script()
    assert not re.search(r"R\.call_tir\(cls\.(maximum|minimum)", after)
    assert after.count("R.maximum(") == after.count("R.minimum(") == before.count("R.call_tir(cls.maximum")


def test_cpu_tasks_are_channels_last_with_transposes_only_at_the_edges(imported) -> None:
    spec = resolve_target("host")
    assert spec.data_layout == "NHWC"
    tasks = extract_tasks(lower(imported, spec), spec)
    convs = [t for t in tasks if t.kind in ("depthwise", "pointwise", "conv")]
    assert convs and all("conv2d_nhwc" in t.mod.script() for t in convs)
    transposes = [t.name for t in tasks if "transpose" in t.name]
    assert len(transposes) <= 2, transposes  # the input to NHWC, the head back to NCHW; none around ReLU6


def test_gpu_keeps_nchw(imported) -> None:
    spec = resolve_target("h100")
    assert spec.data_layout == "NCHW"
    assert "NHWC" not in lower(imported, spec).script()


def test_a_graphs_own_transpose_to_nhwc_leaves_no_copy_behind(conv_head, matches_onnxruntime) -> None:
    spec = resolve_target("host")
    model = conv_head(12)
    tasks = extract_tasks(lower(import_onnx(model), spec), spec)
    convs = [t.name for t in tasks if t.kind == "pointwise"]
    assert len(convs) == 1 and "transpose" not in convs[0], convs  # the conv's epilogue is its bias alone
    matches_onnxruntime(model, (1, 8, 5, 5))
