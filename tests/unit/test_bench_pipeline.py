"""The pipeline benchmark's measuring code: percentiles, alert-set scoring, the report."""

from __future__ import annotations

import math

from fleetstream.bench.pipeline import MARK_BEGIN, MARK_END, Result, alert_score, percentiles, report


def test_percentiles_interpolate_and_empty_is_nan() -> None:
    got = percentiles([float(v) for v in range(1, 101)])
    assert got["p50"] == 50.5
    assert math.isclose(got["p95"], 95.05)
    assert math.isclose(got["p99"], 99.01)
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_alert_score_counts_misses_and_false_alarms() -> None:
    expected = {("e1", "overspeed"), ("e2", "overspeed"), ("e3", "gear_mismatch"), ("e4", "engine_stress")}
    assert alert_score(expected, expected) == (1.0, 1.0)
    got = {("e1", "overspeed"), ("e2", "overspeed"), ("e9", "overspeed")}
    assert alert_score(got, expected) == (2 / 3, 0.5)
    assert alert_score(set(), set()) == (1.0, 1.0)
    assert alert_score(set(), expected) == (0.0, 0.0)


def test_report_marks_a_wrong_run_and_quotes_the_median() -> None:
    runs = [
        Result("throughput, a", 100_000, 4.0, 10, 10, 1.0, 1.0, peak_rss_mib=900.0),
        Result("throughput, b", 100_000, 5.0, 10, 10, 1.0, 1.0),
        Result("throughput, c", 100_000, 2.0, 10, 9, 1.0, 0.9),
        Result("latency, realtime, 5,000 events/s", 300_000, 60.0, 50, 50, 1.0, 1.0, {"p50": 12.0, "p95": 30.0,
               "p99": 55.4}, 5000),
    ]  # fmt: skip
    assert [r.correct for r in runs] == [True, True, False, True]
    assert runs[0].rate == 25_000
    text = report(runs, "test machine")
    assert text.startswith(MARK_BEGIN)
    assert text.endswith(MARK_END)
    assert "| latency, realtime, 5,000 events/s | 5,000 | 12 | 30 | 55 | 50 / 50 | 1.000 | 1.000 | - |" in text
    assert "| throughput, c **(wrong alerts)** | 50,000 | - | - | - | 9 / 10 | 1.000 | 0.900 | - |" in text
    assert "median of 3 runs: **25,000 events/s**" in text
