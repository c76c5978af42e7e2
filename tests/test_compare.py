"""``mnv2bench compare`` and the modules it uses on hand-made pytest-benchmark files: pure pandas, no TVM, fast."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bench.compare import RESULTS_DIR, compare, write_results_readme
from bench.labels import column_label
from bench.measurements import kernel_counts, load_results
from bench.plot import plot_latency_vs_madds
from bench.render import render, report
from bench.results import merge_run
from bench.selection import Selection, select
from bench.tables import data_table, latency_table, ratio_table, task_tables, tuned_share
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
        same = (extra["model"], extra["runtime"]) == (model, runtime) and not extra["emulated"]
        if same and schedules_hash in (extra["schedules"] or ""):
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
    with caplog.at_level(logging.WARNING, logger="bench.measurements"):
        load_results([X86])
    assert "1 emulated" in caplog.text
    row = df[(df.hardware == "x86_64-znver4-2c") & (df.model == MNV2) & (df.runtime == "tvm")].iloc[0]
    assert row["file"] == X86.name and row["paper_pixel1_ms"] == 75.0 and row["cpu_model"].startswith("AMD")


def test_latency_table_rows_columns_and_medians(two_machines):
    table = latency_table(two_machines)
    assert list(table.index) == [MNV2, SSD]  # classification before detection, whatever the file order
    assert list(table.columns) == [
        "aarch64-cortex-a72-4c tvm", "aarch64-cortex-a72-4c onnxruntime",
        "x86_64-znver4-2c tvm", "x86_64-znver4-2c onnxruntime",
    ]
    for path, hw in ((X86, "x86_64-znver4-2c"), (ARM, "aarch64-cortex-a72-4c")):
        for model in (MNV2, SSD):
            for runtime in ("tvm", "onnxruntime"):
                assert table.at[model, f"{hw} {runtime}"] == pytest.approx(fixture_median_ms(path, model, runtime))


def test_data_table_carries_the_papers_figures(two_machines):
    table = data_table(two_machines)
    assert list(table.columns[:8]) == [
        "task", "paper accuracy", "metric", "params (M)", "paper params (M)", "MAdds (M)", "paper MAdds (M)",
        "paper Pixel 1 (ms)",
    ]
    assert table.at[MNV2, "paper Pixel 1 (ms)"] == 75.0
    assert table.at[SSD, "metric"] == "mAP"
    assert table.at[MNV2, "params (M)"] == pytest.approx(3.504872)
    assert "x86_64-znver4-2c tvm tuned" in table.columns and "x86_64-znver4-2c TVM/ORT" in table.columns


def test_ratios_are_tvm_over_the_peer(two_machines):
    ratios = ratio_table(two_machines)
    tvm, ort = fixture_median_ms(X86, MNV2, "tvm"), fixture_median_ms(X86, MNV2, "onnxruntime")
    assert ratios.at[MNV2, "x86_64-znver4-2c TVM/ORT"] == pytest.approx(tvm / ort)
    assert ratios.at[MNV2, "x86_64-znver4-2c TVM/ORT"] < 1  # the fixture's TVM is faster: time over time
    arm_tvm, arm_ort = fixture_median_ms(ARM, SSD, "tvm"), fixture_median_ms(ARM, SSD, "onnxruntime")
    assert ratios.at[SSD, "aarch64-cortex-a72-4c TVM/ORT"] == pytest.approx(arm_tvm / arm_ort)
    assert not [c for c in ratios.columns if "Pixel" in c or "vs" in c]


def test_mixed_schedules_become_separate_columns():
    df = load_results([MIXED])
    table = latency_table(df)
    a, b = "x86_64-znver4-2c tvm [0.27.0 @1a2b3c]", "x86_64-znver4-2c tvm [0.27.0 @9f8e7d]"
    assert {a, b, "x86_64-znver4-2c onnxruntime"} <= set(table.columns)
    assert "x86_64-znver4-2c tvm" not in table.columns
    assert table.at[MNV2, a] == pytest.approx(fixture_median_ms(MIXED, MNV2, "tvm", "@1a2b3c"))
    assert table.at[MNV2, b] == pytest.approx(fixture_median_ms(MIXED, MNV2, "tvm", "@9f8e7d"))
    ort = fixture_median_ms(MIXED, MNV2, "onnxruntime")
    assert ratio_table(df).at[MNV2, "x86_64-znver4-2c TVM [0.27.0 @9f8e7d]/ORT"] == pytest.approx(
        table.at[MNV2, b] / ort
    )


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
    table = data_table(two_machines)
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
    assert report(two_machines) in text
    assert "TVM/ORT (median time over median time, lower is better)" in text
    assert "ORT/TVM" not in text and "TVM vs ORT" not in text and "above 1 means TVM is faster" not in text
    assert "![" in text and "(latency_vs_madds.png)" in text
    assert (tmp_path / "latency_vs_madds.png").read_bytes()[:4] == b"\x89PNG"
    assert "### aarch64-cortex-a72-4c" in text and "### x86_64-znver4-2c" in text
    assert "AMD EPYC 9R14 96-Core Processor" in text and "rpc:rpi4" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_results_readme_dates_each_column_and_shows_a_stale_one(two_machines, tmp_path):
    """A column a later run left out keeps its older cells: the page says from which days each column is."""
    df = two_machines.copy()
    stale = (df.hardware == "x86_64-znver4-2c") & (df.runtime == "onnxruntime") & (df.model == SSD)
    df.loc[stale, "datetime"] = "2026-11-02T09:00:00+00:00"
    text = " ".join(write_results_readme(df, tmp_path).read_text().split())  # unwrapped
    assert "**x86_64-znver4-2c tvm**:" in text and "**x86_64-znver4-2c onnxruntime**:" in text
    tvm, ort = (text.split(f"**x86_64-znver4-2c {runtime}**:")[1].split("- **")[0] for runtime in ("tvm", "onnxruntime"))
    assert "measured 2026-11-20" in tvm and " to " not in tvm
    assert "measured 2026-11-02 to 2026-11-20" in ort
    assert "measured 2026-11-21" in text  # the other machine's run


def test_compare_defaults_publish_results_dir(tmp_path):
    for src in (X86, ARM):
        (tmp_path / src.name).write_text(src.read_text())
    out = compare(results_dir=tmp_path)
    assert "znver4-2c TVM/ORT" in out
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


# --- for people: tuned shares, newest schedules, filters, per-task tables -------------------------------
def write_results(path: Path, hardware: str, rows: list[dict], datetime: str = "2026-12-01T00:00:00+00:00") -> Path:
    """A minimal pytest-benchmark file: one benchmark per dict (model, runtime, ms; task, schedules, notes,
    kernels, datetime optional)."""
    benchmarks = []
    for row in rows:
        extra = {"model": row["model"], "runtime": row["runtime"], "task": row.get("task", "classification"),
                 "params": 1, "madds": 1, "hardware": hardware, "schedules": row.get("schedules"),
                 **{k: row[k] for k in ("notes", "kernels", "datetime", "latency_p90_s", "peak_memory_mib", "batch",
                                        "library_cached") if k in row}}
        stats = {"median": row["ms"] / 1e3, **({"data": row["data"]} if "data" in row else {})}
        benchmarks.append({"name": f"test_latency[{row['model']}-{row['runtime']}]", "extra_info": extra,
                           "stats": stats})
    path.write_text(json.dumps({"machine_info": {"hardware": hardware}, "benchmarks": benchmarks,
                                "datetime": datetime}))
    return path


def test_kernel_counts_from_new_and_old_files():
    kernels = {"tuned": 0, "transferred": 32, "default": 2, "tasks": 34, "transferred_from": ["x@1"]}
    assert kernel_counts({"kernels": kernels}) == {"tuned": 0, "transferred": 32, "tasks": 34}
    assert kernel_counts({"notes": "3 tuned, 2 transferred, 29 default of 34 kernels"}) == {
        "tuned": 3, "transferred": 2, "tasks": 34}
    assert kernel_counts({"notes": "34/34 tasks tuned"}) == {"tuned": 34, "transferred": 0, "tasks": 34}
    assert kernel_counts({"notes": ""}) == {"tuned": None, "transferred": None, "tasks": None}
    assert tuned_share(34, 0, 34) == "tuned 34/34"
    assert tuned_share(0, 32, 34) == "tuned 0 + transferred 32 / 34"
    assert tuned_share(None, None, None) == ""


def test_tvm_cells_show_their_tuned_share(tmp_path):
    path = write_results(tmp_path / "hw.json", "hw", [
        {"model": MNV2, "runtime": "tvm", "ms": 4.0, "schedules": "k@aaaaaa", "notes": "34/34 tasks tuned"},
        {"model": SSD, "runtime": "tvm", "ms": 12.0, "task": "detection", "schedules": "k@aaaaaa",
         "kernels": {"tuned": 0, "transferred": 60, "default": 2, "tasks": 62}},
        {"model": MNV2, "runtime": "onnxruntime", "ms": 5.0},
    ])
    tables = task_tables(load_results([path]))
    assert list(tables) == ["classification", "detection"]
    assert tables["classification"].at[MNV2, "hw tvm"] == "4.00 (tuned 34/34)"
    assert tables["classification"].at[MNV2, "hw onnxruntime"] == "5.00"
    assert tables["detection"].at[SSD, "hw tvm"] == "12.00 (tuned 0 + transferred 60 / 62)"
    assert list(tables["detection"].columns) == ["hw tvm"]  # no ORT measurement of a detection model


def test_a_table_split_by_machine_leaves_out_the_models_its_machine_did_not_measure(tmp_path):
    small = "mobilenet_v2_0.35_96"
    files = [write_results(tmp_path / "a.json", "wide-machine-a", [
                 {"model": m, "runtime": r, "ms": 1.0} for m in (MNV2, small) for r in ("tvm", "onnxruntime")]),
             write_results(tmp_path / "b.json", "wide-machine-b", [
                 {"model": MNV2, "runtime": r, "ms": 2.0} for r in ("tvm", "onnxruntime")])]
    df = load_results(files)
    whole = report(df).split("TVM cells")[0]  # the latency tables, not the ratios
    assert whole.count("| mobilenet_v2_0.35_96") == 1 and "–" in whole  # one table: b's missing cells shown as –
    split = report(df, width=80).split("TVM cells")[0]
    assert split.count("| mobilenet_v2_1.0_224") == 2  # one table per machine, both measured it
    assert split.count("| mobilenet_v2_0.35_96") == 1 and "–" not in split  # b's table has no empty row


def test_only_the_newest_schedules_unless_asked(tmp_path):
    path = write_results(tmp_path / "hw.json", "hw", [
        {"model": MNV2, "runtime": "tvm", "ms": 4.0, "schedules": "k@new000", "datetime": "2026-12-02"},
        {"model": SSD, "runtime": "tvm", "ms": 90.0, "task": "detection", "schedules": "k@old000",
         "datetime": "2026-12-01"},
        {"model": SSD, "runtime": "onnxruntime", "ms": 15.0, "task": "detection"},
    ])
    df = load_results([path])
    shown, left_out = select(df)
    assert set(shown.loc[shown.runtime == "tvm", "schedules"]) == {"k@new000"}
    assert list(left_out["model"]) == [SSD]
    assert set(shown["label"]) == {"hw tvm", "hw onnxruntime"}  # one database left: no bracketed builds
    assert "Left out: 1 TVM measurement(s)" in report(shown, left_out) and "@old000" in report(shown, left_out)
    everything, none = select(df, Selection(all_schedules=True))
    assert len(everything) == 3 and none.empty
    assert set(everything.loc[everything.runtime == "tvm", "label"]) == {"hw tvm [@new000]", "hw tvm [@old000]"}


def test_newest_schedules_in_files_without_row_dates(tmp_path):
    """Older files date every row with the file's date: the more tuned database is the newer one."""
    path = write_results(tmp_path / "hw.json", "hw", [
        {"model": MNV2, "runtime": "tvm", "ms": 4.0, "schedules": "k@tuned0", "notes": "34/34 tasks tuned"},
        {"model": SSD, "runtime": "tvm", "ms": 90.0, "task": "detection", "schedules": "k@older0",
         "notes": "2/62 tasks tuned"},
        {"model": "mobilenet_v2_0.5_96", "runtime": "tvm", "ms": 9.0, "schedules": "k@older0",
         "notes": "2/34 tasks tuned"},
    ])
    shown, left_out = select(load_results([path]))
    assert list(shown["schedules"]) == ["k@tuned0"] and len(left_out) == 2


def test_merged_rows_keep_their_own_run_date(tmp_path):
    results = tmp_path / "results"
    first = write_results(tmp_path / "a.json", "hw", [
        {"model": SSD, "runtime": "tvm", "ms": 90.0, "task": "detection", "schedules": "k@old000"}],
        datetime="2026-12-01T00:00:00+00:00")
    second = write_results(tmp_path / "b.json", "hw", [
        {"model": MNV2, "runtime": "tvm", "ms": 4.0, "schedules": "k@new000"}], datetime="2026-12-02T00:00:00+00:00")
    merge_run(first, results)
    merged = merge_run(second, results)
    shown, left_out = select(load_results([merged]))
    assert list(shown["schedules"]) == ["k@new000"] and list(left_out["schedules"]) == ["k@old000"]


def test_filters(two_machines, tmp_path):
    def shown(**kwargs) -> set:
        rows, _ = select(two_machines, Selection(**kwargs))
        return set(zip(rows.model, rows.hardware, rows.runtime))

    assert {m for m, _, _ in shown(models=["classification"])} == {MNV2}
    assert {m for m, _, _ in shown(models=["ssdlite*"])} == {SSD}
    assert {m for m, _, _ in shown(models=["headline"])} == {MNV2, SSD}
    assert {h for _, h, _ in shown(machines=["aarch64-*"])} == {"aarch64-cortex-a72-4c"}
    assert {r for _, _, r in shown(runtimes=["onnxruntime"])} == {"onnxruntime"}
    with pytest.raises(UserError, match="no model matches 'resnet50'"):
        select(two_machines, Selection(models=["resnet50"]))
    with pytest.raises(UserError, match="no machine matches 'riscv\\*'.*x86_64-znver4-2c"):
        select(two_machines, Selection(machines=["riscv*"]))
    with pytest.raises(UserError, match="no runtime matches 'tensorrt'"):
        select(two_machines, Selection(runtimes=["tensorrt"]))
    custom = write_results(tmp_path / "hw.json", "hw", [{"model": "my_net", "runtime": "onnxruntime", "ms": 1.0}])
    rows, _ = select(load_results([custom]), Selection(models=["my_*"]))  # only in the results: kept
    assert list(rows["model"]) == ["my_net"]


def test_filters_publish_nothing(tmp_path):
    (tmp_path / X86.name).write_text(X86.read_text())
    out = compare(results_dir=tmp_path, selection=Selection(models=["headline"]))
    assert "znver4-2c TVM/ORT" in out
    assert not (tmp_path / "README.md").exists() and not (tmp_path / "latency_vs_madds.png").exists()


def test_headline_tables_fit_160_columns_on_the_committed_results():
    files = sorted(RESULTS_DIR.glob("*.json"))
    before = {path: path.stat().st_mtime_ns for path in RESULTS_DIR.iterdir()}
    out = compare(files, selection=Selection(models=["headline"]))
    assert {path: path.stat().st_mtime_ns for path in RESULTS_DIR.iterdir()} == before  # nothing rewritten
    widest = max(out.splitlines(), key=len)
    assert len(widest) <= 160, widest
    for task in ("classification", "detection", "segmentation"):
        assert f"## {task}: median latency (ms)" in out
    assert "TVM/ORT" in out and "(median time over median time, lower is better)" in out and "(tuned " in out
    assert "ORT/TVM" not in out and "TVM vs ORT" not in out


def test_percentiles_and_memory_as_the_tabulated_statistic(tmp_path):
    path = write_results(tmp_path / "hw.json", "hw", [
        {"model": MNV2, "runtime": "tvm", "ms": 4.0, "latency_p90_s": 0.0045, "peak_memory_mib": 30.0},
        {"model": MNV2, "runtime": "onnxruntime", "ms": 5.0, "latency_p90_s": 0.0090, "peak_memory_mib": 20.0},
    ])
    df = load_results([path])
    p90, _ = select(df, Selection(statistic="p90"))
    assert latency_table(p90).at[MNV2, "hw tvm"] == pytest.approx(4.5)
    assert ratio_table(p90).iloc[0, 0] == pytest.approx(0.5)
    assert "90th-percentile latency (ms)" in report(p90) and "p90 time over p90 time" in report(p90)
    memory, _ = select(df, Selection(statistic="memory"))
    assert ratio_table(memory).iloc[0, 0] == pytest.approx(1.5)
    assert "peak memory" in report(memory) and "TVM needs less" in " ".join(report(memory).split())
    with pytest.raises(UserError, match="none of the selected results records the p99"):
        select(df, Selection(statistic="p99"))


def test_percentiles_of_older_files_come_from_their_stored_rounds(tmp_path):
    rounds = [i / 1e3 for i in range(1, 101)]  # 1 to 100 ms
    path = write_results(tmp_path / "hw.json", "hw", [{"model": MNV2, "runtime": "tvm", "ms": 50.0, "data": rounds}])
    row = load_results([path]).iloc[0]
    assert row["p90_ms"] == pytest.approx(90.1) and row["p99_ms"] == pytest.approx(99.01)


def test_batch_rows_are_rows_of_their_own(tmp_path):
    path = write_results(tmp_path / "hw.json", "hw", [
        {"model": MNV2, "runtime": "tvm", "ms": 4.0},
        {"model": MNV2, "runtime": "tvm", "ms": 40.0, "batch": 32},
    ])
    table = latency_table(load_results([path]))
    assert table.at[MNV2, "hw tvm"] == pytest.approx(4.0)
    assert table.at[f"{MNV2} batch 32", "hw tvm"] == pytest.approx(40.0)


def test_run_summary_fits_100_columns_and_says_its_direction(tmp_path):
    from bench.summary import run_summary

    path = write_results(tmp_path / "run.json", "x86_64-rocketlake-2c", [
        {"model": "deeplabv3_mobilenet_v2_os16_aspp", "runtime": "tvm", "ms": 38.0, "task": "segmentation",
         "kernels": {"tuned": 30, "transferred": 8, "default": 0, "tasks": 38}, "library_cached": True},
        *({"model": "deeplabv3_mobilenet_v2_os16_aspp", "runtime": r, "ms": ms, "task": "segmentation"}
          for r, ms in (("onnxruntime", 40.0), ("openvino", 30.0), ("executorch", 50.0), ("torch", 90.0))),
    ])
    summary = run_summary(path)
    assert max(map(len, summary.splitlines())) <= 100, summary
    assert "1.27 OV" in summary and "below 1.00, TVM is faster" in summary and "OV = OpenVINO" in summary
    assert "30+8/38" in summary
    assert "0 compiled, 1 reused from the cache" in summary
