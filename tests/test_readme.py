"""The project README: small enough to read, and its results block generated (``bench.readme``). Fast, no TVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare import RESULTS_DIR
from bench.measurements import load_results
from bench.readme import BEGIN, END, RATIO_COLUMN, results_block, update_readme
from models.errors import UserError
from models.registry import HEADLINE

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_is_a_short_guide_with_a_results_block():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < 12_000
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END)


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n", encoding="utf-8")
    assert update_readme(readme, "new table\n") is True
    assert readme.read_text(encoding="utf-8") == f"# title\n\nbefore\n\n{BEGIN}\nnew table\n{END}\n\nafter\n"
    assert update_readme(readme, "new table") is False  # unchanged: not rewritten
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("text", ["# no markers\n", f"only the start {BEGIN}\n", f"{END}\nreversed\n{BEGIN}\n",
                                  f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"])
def test_update_readme_refuses_a_file_without_one_pair_of_markers(tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match="no results block") as caught:
        update_readme(readme, "table")
    assert "\n" not in str(caught.value)  # one line for the command line
    assert readme.read_text(encoding="utf-8") == text


def test_results_block_of_the_committed_results_names_each_headline_model():
    df = load_results(sorted(RESULTS_DIR.glob("*.json")))
    block = results_block(df)
    for model in HEADLINE:
        assert f"| {model} |" in block
    assert RATIO_COLUMN in block
    assert "results/README.md" in block
    rows = [line.split(" | ") for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
    for machine in df["hardware"].unique():
        assert f"- **{machine}**" in block  # the line that says what it is and where its figures come from
        assert any(row[1] == machine for row in rows)
    order = list(HEADLINE)
    assert [order.index(row[0][2:]) for row in rows] == sorted(order.index(row[0][2:]) for row in rows)
    assert BEGIN not in block and END not in block


def test_results_block_without_a_tvm_measurement_says_so():
    df = load_results(sorted(RESULTS_DIR.glob("*.json")))
    block = results_block(df[df["runtime"] != "tvm"])
    assert "TVM has not been measured on a headline model yet" in block and "results/README.md" in block


def test_results_block_dates_a_machine_by_its_runs():
    """One date where every figure of a machine's line comes from one day's runs, the span where a peer's is older."""
    df = load_results(sorted(RESULTS_DIR.glob("*.json")))
    machine = df["hardware"].iloc[0]
    on_machine = df["hardware"] == machine
    one_day = results_block(df.assign(datetime=df["datetime"].where(~on_machine, "2026-11-20T10:00:00+00:00")))
    line = next(line for line in one_day.splitlines() if line.startswith(f"- **{machine}**"))
    assert line.endswith("Run of 2026-11-20.") or "Run of 2026-11-20. From" in line
    peer = on_machine & (df["runtime"] != "tvm")
    two_days = df.assign(datetime=df["datetime"].where(~on_machine, "2026-11-20T10:00:00+00:00").where(~peer, "2026-11-18"))
    line = next(line for line in results_block(two_days).splitlines() if line.startswith(f"- **{machine}**"))
    assert "Runs of 2026-11-18 to 2026-11-20." in line


def test_results_block_says_where_the_runtimes_took_turns():
    """A machine's line says "runtimes taking turns" only where every figure shown was timed in alternating blocks."""
    from bench.interleave import LATENCY_SOURCE

    df = load_results(sorted(RESULTS_DIR.glob("*.json")))
    machine = df["hardware"].iloc[0]
    on_machine = df["hardware"] == machine

    def line(frame) -> str:
        return next(l for l in results_block(frame).splitlines() if l.startswith(f"- **{machine}**"))

    alternated = df["latency_source"].mask(on_machine, LATENCY_SOURCE)
    assert "runtimes taking turns" in line(df.assign(latency_source=alternated))
    one_not = on_machine & (df["runtime"] != "tvm")
    assert "runtimes taking turns" not in line(df.assign(latency_source=alternated.mask(one_not, "pytest-benchmark")))
