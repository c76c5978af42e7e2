"""``mnv2bench profile``: both runtimes' kernels, sorted into the same kinds."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.kernel_profile import by_kind, ort_kind

TINY = "mobilenet_v2_0.35_96"


@pytest.mark.parametrize(
    ("op", "shapes", "kind"),
    [
        ("Conv", [[1, 32, 112, 112], [32, 1, 3, 3]], "depthwise"),
        ("Conv", [[1, 32, 112, 112], [16, 32, 1, 1]], "pointwise"),
        ("Conv", [[1, 3, 224, 224], [32, 3, 3, 3]], "conv"),
        ("Conv", [[1, 1, 8, 8], [1, 1, 3, 3]], "conv"),  # one channel: not depthwise
        ("Gemm", [[1, 1280], [1000, 1280]], "dense"),
        ("ReduceMean", [[1, 1280, 7, 7]], "other"),
    ],
)
def test_ort_nodes_take_the_tuners_kinds(op, shapes, kind) -> None:
    assert ort_kind(op, shapes) == kind


def test_by_kind_sums_each_side_and_compares() -> None:
    tvm = pd.DataFrame({"kernel": ["a", "b", "c"], "kind": ["depthwise", "pointwise", "pointwise"],
                        "calls": [1, 2, 1], "ms": [1.0, 2.0, 1.0]})
    ort = pd.DataFrame({"kernel": ["x", "y", "z"], "kind": ["depthwise", "pointwise", "other"],
                        "calls": [1, 3, 1], "ms": [0.5, 2.0, 0.5]})
    table = by_kind(tvm, ort)
    assert list(table.index) == ["depthwise", "pointwise", "other", "total"]
    assert table.loc["pointwise", "tvm/ort"] == pytest.approx(1.5)
    assert table.loc["other", "ms_tvm"] == 0.0
    assert table.loc["total"].tolist()[:4] == [4.0, 4, 3.0, 5]


@pytest.mark.slow
def test_profile_command_sees_the_same_network_on_both_sides(cli) -> None:
    result = cli("profile", TINY, "--untuned", "--runs", "3", "--threads", "1", "--top", "3")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()}
    # MobileNetV2: 17 depthwise, 34 pointwise, one full conv and one classifier on both sides
    for kind, calls in [("depthwise", "17"), ("pointwise", "34"), ("conv", "1"), ("dense", "1")]:
        _, ms_tvm, calls_tvm, ms_ort, calls_ort, _ = rows[kind]
        assert (calls_tvm, calls_ort) == (calls, calls), rows[kind]
        assert float(ms_tvm) > 0 and float(ms_ort) > 0
    assert "TVM's 3 slowest kernels:" in result.stdout


def test_profile_refuses_bad_counts(cli) -> None:
    result = cli("profile", TINY, "--runs", "0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
