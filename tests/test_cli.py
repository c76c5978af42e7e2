"""The command line: listings, and one-line errors with exit code 2 for every kind of bad input."""

from __future__ import annotations

import json

import pytest
import torch

from models.registry import create_model


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mnv2bench: error:"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_models_json(cli) -> None:
    result = cli("models", "mobilenet_v2_1.0_224", "ssdlite_mobilenet_v2_320", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    mnv2 = rows["mobilenet_v2_1.0_224"]
    assert mnv2["task"] == "classification" and mnv2["input_shape"] == [1, 3, 224, 224]
    assert mnv2["params"] == 3_504_872 and abs(mnv2["madds"] - 300.8e6) < 0.1e6
    assert mnv2["paper_pixel1_ms"] == 75.0 and mnv2["paper_accuracy"] == 72.0 and mnv2["paper_madds_m"] == 300.0
    assert rows["ssdlite_mobilenet_v2_320"]["paper_params_m"] == 4.3


def test_targets_listing(cli) -> None:
    result = cli("targets", "--json")
    assert result.returncode == 0, result.stderr
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"host", "rpi4", "rpi5", "a53", "pixel1", "a100", "h100", "x86_64-linux-gnu", "aarch64-linux-gnu"} <= names


def test_unknown_model(cli) -> None:
    assert_one_line_error(cli("export", "mobilenet_v9", "-o", "x.onnx"), "unknown model 'mobilenet_v9'")
    assert_one_line_error(cli("models", "resnet50"), "unknown model 'resnet50'")


def test_unknown_target(cli) -> None:
    result = cli("compile", "mobilenet_v2_0.35_96", "--target", "sparc-sun-solaris", "-o", "x.so")
    assert_one_line_error(result, "unknown target 'sparc-sun-solaris'", "aarch64-linux-gnu", "rpi4")


def test_missing_and_garbage_onnx(cli, tmp_path) -> None:
    assert_one_line_error(cli("compile", str(tmp_path / "nope.onnx"), "-o", "x.so"), "ONNX file not found")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf at all \x00\xff")
    assert_one_line_error(cli("compile", str(garbage), "-o", "x.so"), "garbage.onnx", "not a valid ONNX model")


def test_missing_weights(cli, tmp_path) -> None:
    result = cli("export", "mobilenet_v2_0.35_96", "-o", "x.onnx", "--weights", str(tmp_path / "none.pth"))
    assert_one_line_error(result, "weights file not found")


def test_weights_that_do_not_fit(cli, tmp_path) -> None:
    wrong = tmp_path / "wide.pth"
    torch.save(create_model("mobilenet_v2_0.5_96").state_dict(), wrong)  # a 0.5 checkpoint for a 0.35 model
    result = cli("export", "mobilenet_v2_0.35_96", "-o", "x.onnx", "--weights", str(wrong))
    assert_one_line_error(result, "don't fit the model", "wrong shape")
    not_a_checkpoint = tmp_path / "text.pth"
    not_a_checkpoint.write_text("hello")
    result = cli("export", "mobilenet_v2_0.35_96", "-o", "x.onnx", "--weights", str(not_a_checkpoint))
    assert_one_line_error(result, "cannot read weights file")


@pytest.mark.slow
def test_export_command(cli, tmp_path) -> None:
    out = tmp_path / "m.onnx"
    result = cli("export", "mobilenet_v2_0.35_96", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1_000_000
