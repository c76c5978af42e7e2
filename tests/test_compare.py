"""``bench.compare`` on hand-made pytest-benchmark files: pure pandas, no TVM, fast."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bench.compare import (
    column_label,
    compare,
    latency_table,
    load_results,
    plot_latency_vs_madds,
    render,
    write_results_readme,
)
from models.errors import UserError

FIXTURES = Path(__file__).with_name("fixtures")
X86 = FIXTURES / "x86_64-znver4-2c.json"
ARM = FIXTURES / "aarch64-cortex-a72-4c.json"
MIXED = FIXTURES / "mixed_schedules.json"
MNV2, SSD = "mobilenet_v2_1.0_224", "ssdlite_mobilenet_v2_320"


def fixture_median_ms(path: Path, model: str, runtime: str, schedules_hash: str = "") -> float:
    """The expected figure, straight from the file's seconds: what the table must show."""
    for bench in json.loads(path.read_text())["benchmarks"]:
        extra = bench["extra_info"]
        if (extra["model"], extra["runtime"]) == (model, runtime) and not extra["emulated"]:
            if schedules_hash in (extra["schedules"] or ""):
                return bench["stats"]["median"] * 1e3
    raise LookupError((path, model, runtime))


@pytest.fixture
def two_machines():
    return load_results([X86, ARM])


def test_rows_and_emulated_dropped(two_machines, caplog):
    df = two_machines
    assert len(df) == 8  # 2 machines x 2 models x 2 runtimes; the emulated entry is gone
    assert not df["emulated"].any()
    assert (df["median_ms"] < 500).all()  # the emulated one took 912 ms
    assert set(df["hardware"]) == {"x86_64-znver4-2c", "aarch64-cortex-a72-4c"}
    with caplog.at_level(logging.WARNING, logger="bench.compare"):
        load_results([X86])
    assert "1 emulated" in caplog.text
    row = df[(df.hardware == "x86_64-znver4-2c") & (df.model == MNV2) & (df.runtime == "tvm")].iloc[0]
    assert row["file"] == X86.name and row["paper_pixel1_ms"] == 75.0 and row["cpu_model"].startswith("AMD")


def test_latency_table_rows_columns_and_medians(two_machines):
    table = latency_table(two_machines)
    assert list(table.index) == [MNV2, SSD]  # classification before detection, whatever the file order
    assert list(table.columns[:8]) == [
        "task", "paper accuracy", "metric", "params (M)", "paper params (M)", "MAdds (M)", "paper MAdds (M)",
        "paper Pixel 1 (ms)",
    ]
    latency = [
        "aarch64-cortex-a72-4c tvm", "aarch64-cortex-a72-4c onnxruntime",
        "x86_64-znver4-2c tvm", "x86_64-znver4-2c onnxruntime",
    ]
    assert list(table.columns[8:12]) == latency
    for path, hw in ((X86, "x86_64-znver4-2c"), (ARM, "aarch64-cortex-a72-4c")):
        for model in (MNV2, SSD):
            for runtime in ("tvm", "onnxruntime"):
                assert table.at[model, f"{hw} {runtime}"] == pytest.approx(fixture_median_ms(path, model, runtime))
    assert table.at[MNV2, "paper Pixel 1 (ms)"] == 75.0
    assert table.at[SSD, "metric"] == "mAP"
    assert table.at[MNV2, "params (M)"] == pytest.approx(3.504872)


def test_speedups(two_machines):
    table = latency_table(two_machines)
    tvm, ort = fixture_median_ms(X86, MNV2, "tvm"), fixture_median_ms(X86, MNV2, "onnxruntime")
    assert table.at[MNV2, "x86_64-znver4-2c TVM vs ORT"] == pytest.approx(ort / tvm)
    assert table.at[MNV2, "x86_64-znver4-2c TVM vs ORT"] > 1  # the fixture's TVM is faster
    assert table.at[MNV2, "x86_64-znver4-2c TVM vs Pixel 1"] == pytest.approx(75.0 / tvm)
    arm_tvm = fixture_median_ms(ARM, SSD, "tvm")
    assert table.at[SSD, "aarch64-cortex-a72-4c TVM vs Pixel 1"] == pytest.approx(200.0 / arm_tvm)


def test_mixed_schedules_become_separate_columns():
    df = load_results([MIXED])
    table = latency_table(df)
    a, b = "x86_64-znver4-2c tvm [0.27.0 @1a2b3c]", "x86_64-znver4-2c tvm [0.27.0 @9f8e7d]"
    assert {a, b, "x86_64-znver4-2c onnxruntime"} <= set(table.columns)
    assert "x86_64-znver4-2c tvm" not in table.columns
    assert table.at[MNV2, a] == pytest.approx(fixture_median_ms(MIXED, MNV2, "tvm", "@1a2b3c"))
    assert table.at[MNV2, b] == pytest.approx(fixture_median_ms(MIXED, MNV2, "tvm", "@9f8e7d"))
    ort = fixture_median_ms(MIXED, MNV2, "onnxruntime")
    assert table.at[MNV2, "x86_64-znver4-2c TVM vs ORT [0.27.0 @9f8e7d]"] == pytest.approx(ort / table.at[MNV2, b])


def test_mixing_is_decided_across_all_inputs():
    """The x86 file alone has one schedule database; with the mixed file beside it, its TVM column splits."""
    df = load_results([X86, MIXED])
    labels = set(df.loc[df.runtime == "tvm", "label"])
    assert labels == {"x86_64-znver4-2c tvm [0.27.0 @1a2b3c]", "x86_64-znver4-2c tvm [0.27.0 @9f8e7d]"}
    assert latency_table(df).at[SSD, "x86_64-znver4-2c tvm [0.27.0 @1a2b3c]"] == pytest.approx(
        fixture_median_ms(X86, SSD, "tvm")
    )


def test_column_label():
    row = {"hardware": "hw", "runtime": "tvm", "tvm_version": "0.27.0", "schedules": "t@abcdef123456",
           "runtime_version": "0.27.0", "threads": 2}
    assert column_label(row) == "hw tvm"
    assert column_label(row, ["schedules"]) == "hw tvm [0.27.0 @abcdef]"
    assert column_label({**row, "runtime": "onnxruntime", "runtime_version": "1.20.1"}, ["runtime_version"]) == (
        "hw onnxruntime [1.20.1]"
    )


def test_render_formats(two_machines):
    table = latency_table(two_machines)
    tvm_ms = fixture_median_ms(X86, MNV2, "tvm")
    md = render(table, "markdown")
    assert md.splitlines()[0].startswith("| model")
    assert "x86_64-znver4-2c tvm" in md and f"{tvm_ms:.2f}" in md and "nan" not in md
    csv = render(table, "csv")
    assert csv.splitlines()[0].startswith("model,task,")
    assert MNV2 in csv
    records = json.loads(render(table, "json"))
    assert [r["model"] for r in records] == [MNV2, SSD]
    assert records[0]["x86_64-znver4-2c tvm"] == pytest.approx(tvm_ms)
    with pytest.raises(UserError, match="unknown format 'html'"):
        render(table, "html")


def test_plot_written(two_machines, tmp_path):
    path = plot_latency_vs_madds(two_machines, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


def test_results_readme(two_machines, tmp_path):
    readme = write_results_readme(two_machines, tmp_path)
    text = readme.read_text()
    assert readme == tmp_path / "README.md"
    assert text.startswith("<!-- Generated")
    assert "Sandler et al." in text and "Pixel 1" in text
    assert render(latency_table(two_machines), "markdown") in text
    assert "![" in text and "(latency_vs_madds.png)" in text
    assert (tmp_path / "latency_vs_madds.png").read_bytes()[:4] == b"\x89PNG"
    assert "### aarch64-cortex-a72-4c" in text and "### x86_64-znver4-2c" in text
    assert "AMD EPYC 9R14 96-Core Processor" in text and "rpc:rpi4" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_compare_defaults_publish_results_dir(tmp_path):
    for src in (X86, ARM):
        (tmp_path / src.name).write_text(src.read_text())
    out = compare(results_dir=tmp_path)
    assert "x86_64-znver4-2c TVM vs ORT" in out
    assert (tmp_path / "README.md").exists() and (tmp_path / "latency_vs_madds.png").exists()


def test_compare_explicit_paths_publish_nothing(tmp_path):
    out = compare([X86], fmt="csv", plot=tmp_path / "p.png", results_dir=tmp_path / "results")
    assert out.startswith("model,")
    assert (tmp_path / "p.png").exists() and not (tmp_path / "results").exists()


def test_compare_without_inputs(tmp_path):
    with pytest.raises(UserError, match="no result files"):
        compare(results_dir=tmp_path)
    with pytest.raises(UserError, match="unknown format"):
        compare([X86], fmt="xml")


def _bad_files(tmp: Path) -> dict[str, Path]:
    doc = json.loads(X86.read_text())
    no_model = json.loads(X86.read_text())
    del no_model["benchmarks"][1]["extra_info"]["model"]
    files = {
        "missing": tmp / "missing.json",
        "not_json": tmp / "not_json.json",
        "no_benchmarks": tmp / "no_benchmarks.json",
        "no_machine_info": tmp / "no_machine_info.json",
        "no_model": tmp / "no_model.json",
    }
    files["not_json"].write_text("{ this is not json")
    files["no_benchmarks"].write_text(json.dumps({"machine_info": doc["machine_info"], "version": "5.1.0"}))
    files["no_machine_info"].write_text(json.dumps({"benchmarks": doc["benchmarks"]}))
    files["no_model"].write_text(json.dumps(no_model))
    return files


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such result file"),
        ("not_json", "not JSON"),
        ("no_benchmarks", "no 'benchmarks' list"),
        ("no_machine_info", "no 'machine_info'"),
        ("no_model", "lacks extra_info model"),
    ],
)
def test_bad_files_raise_user_error_naming_the_file(tmp_path, case, message):
    path = _bad_files(tmp_path)[case]
    with pytest.raises(UserError, match=message) as info:
        load_results([X86, path])
    assert path.name in str(info.value)
    assert "\n" not in str(info.value)
