from __future__ import annotations

from pathlib import Path

from fleetstream.bench.sim import MARK_BEGIN, MARK_END, Measure, report, write_report


def test_median_and_report_section() -> None:
    measures = [Measure("generator", [3.0, 1.0, 2.0], 600, 120.0), Measure("broker", [5.0, 4.0], 600)]
    assert measures[0].median == 2.0
    assert measures[1].median == 4.5
    section = report(measures, cars=10, ticks=60, repeat=3)
    assert section.startswith(MARK_BEGIN)
    assert section.endswith(MARK_END)
    assert "| generator | 2 | 3, 1, 2 | 120 MiB |" in section


def test_report_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# Benchmarks\n\nintro\n\n{MARK_BEGIN}\nold figures\n{MARK_END}\n\n## Pipeline\nkept\n")
    write_report(f"{MARK_BEGIN}\nnew figures\n{MARK_END}", path)
    text = path.read_text()
    assert "old figures" not in text
    assert "new figures" in text
    assert text.startswith("# Benchmarks\n\nintro")
    assert text.endswith("## Pipeline\nkept\n")
    write_report(f"{MARK_BEGIN}\nnewer\n{MARK_END}", tmp_path / "fresh.md")
    assert (tmp_path / "fresh.md").read_text().startswith("# Benchmarks")
