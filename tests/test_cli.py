"""The command line: listings, and one-line errors with exit code 2 for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from bench.cli import build_parser, main
from models.registry import create_model

REPO = Path(__file__).resolve().parent.parent


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
    assert_one_line_error(cli("run", "--models", "mobilenet_v2_1.0_224", "resnet50"), "unknown model 'resnet50'")


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


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"mnv2bench {version('mnv2bench')} ") and f"TVM {version('apache-tvm')}" in out


def test_every_subcommand_has_a_description_and_examples() -> None:
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert {"models", "compile", "tune", "run", "compare", "profile"} <= set(subcommands)
    for name, parser in subcommands.items():
        assert parser.description and parser.epilog.startswith("examples:"), name
        assert f"mnv2bench {name}" in parser.epilog, name
        assert f"mnv2bench {name}" in parser.format_help(), name  # shown as written, not re-wrapped


@pytest.mark.parametrize("command", ["run", "tune", "schedules"])
def test_models_given_with_spaces_or_commas(command) -> None:
    parse = build_parser().parse_args
    spaced = parse([command, "--models", "mobilenet_v2_1.0_224", "ssdlite_mobilenet_v2_320"])
    with_commas = parse([command, "--models", "mobilenet_v2_1.0_224,ssdlite_mobilenet_v2_320"])
    assert spaced.models == with_commas.models == ["mobilenet_v2_1.0_224", "ssdlite_mobilenet_v2_320"]
    # tune resolves its default (headline) itself: without --models, --remeasure re-times every workload.
    assert parse([command]).models == (None if command == "tune" else ["headline"])
    if command == "run":  # the second name is not taken for a pytest option
        assert spaced.pytest_args == []


THREADS_ERROR = "--threads must be at least 1 (got 0)"


@pytest.mark.parametrize("args", [("run", "--threads", "0"), ("profile", "mobilenet_v2_1.0_224", "--threads", "0")])
def test_zero_threads_rejected_by_the_cli(cli, args) -> None:
    assert_one_line_error(cli(*args, timeout=120), THREADS_ERROR)


def test_zero_threads_rejected_by_pytest_bench(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench"), "--threads", "0",
                             "-p", "no:cacheprovider", "--rootdir", str(REPO)],
                            check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 4, result.stderr[-2000:]  # pytest's usage error
    assert f"ERROR: {THREADS_ERROR}" in result.stderr and "Traceback" not in result.stderr


def test_zero_threads_rejected_by_perf_vs_ort(tmp_path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "perf_vs_ort.py"), "--threads", "0"],
                            check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"perf_vs_ort: error: {THREADS_ERROR}; leave it out to use every core"


def test_compare_headline_fits_160_columns(cli) -> None:
    files = sorted((REPO / "results").glob("*.json"))
    result = cli("compare", *files, "--models", "headline", timeout=120)
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 160
    assert "TVM/ORT" in result.stdout and "lower is better" in result.stdout
    assert_one_line_error(cli("compare", *files, "--machines", "riscv*", timeout=120), "no machine matches")


@pytest.mark.slow
def test_export_command(cli, tmp_path) -> None:
    out = tmp_path / "m.onnx"
    result = cli("export", "mobilenet_v2_0.35_96", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1_000_000
