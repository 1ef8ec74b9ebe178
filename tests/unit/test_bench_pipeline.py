"""The pipeline benchmark's measuring code: percentiles, alert-set scoring, checkpoints, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from fleetstream.bench.common import alert_score, percentiles
from fleetstream.bench.pipeline import (
    MARK_BEGIN,
    MARK_END,
    Options,
    Result,
    checkpoint_offsets,
    report,
    stateful_lag,
)
from fleetstream.config import LakeSettings, Settings
from fleetstream.pipeline.episodes import STATE_LAYOUTS


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


def test_checkpoint_offsets_are_the_newest_committed_batchs(tmp_path: Path) -> None:
    assert checkpoint_offsets(tmp_path) == {}
    for batch, ends in ((0, {"0": 5, "1": 7}), (1, {"0": 9, "1": 12}), (2, {"0": 20, "1": 30})):
        (tmp_path / "offsets").mkdir(exist_ok=True)
        (tmp_path / "offsets" / str(batch)).write_text(f'v1\n{{"batchWatermarkMs":0}}\n{json.dumps({"t": ends})}\n')
    (tmp_path / "commits").mkdir()
    for batch in (0, 1):  # batch 2 was planned, not committed
        (tmp_path / "commits" / str(batch)).write_text("v1\n{}\n")
    assert checkpoint_offsets(tmp_path) == {0: 9, 1: 12}


def test_report_quotes_medians_and_marks_wrong_runs() -> None:
    runs = [
        Result("ceiling", "fleetstream", {"events": 600_000, "rate": 10_000.0, "wall_s": 70.0}),
        Result("ceiling", "minimal", {"events": 600_000, "rate": 12_000.0, "wall_s": 60.0}),
        Result("ceiling", "fleetstream", {"events": 600_000, "rate": 11_000.0, "wall_s": 65.0}, False, "alerts differ"),
        Result("ceiling", "minimal", {"events": 600_000, "rate": 13_000.0, "wall_s": 58.0}),
        Result("small", "1,500 events", {"events": 1500, "wall_s": 21.0, "drain_s": 6.0}),
        Result(
            "steady",
            "realtime, 10,000 events/s",
            {"p50": 12.0, "p95": 40.0, "p99": 61.0, "lag_s": 1.5, "stateful_lag_s": 12.3, "cores": 1.4},
        ),
        Result(
            "steady",
            "realtime, 10,000 events/s, without the stateful queries",
            {"p50": 11.0, "p95": 30.0, "p99": 50.0, "lag_s": 1.0, "cores": 1.2},
        ),
    ]
    text = report(runs, "test machine", Options(repeat=2))
    assert text.startswith(MARK_BEGIN)
    assert text.endswith(MARK_END)
    assert "| fleetstream **(alerts differ)** | 10,500 | 68 | 10,000, 11,000 |" in text
    assert "| minimal | 12,500 | 59 | 12,000, 13,000 |" in text
    assert "drains at **84%** of the minimal medallion's rate" in text
    assert "Wall time, median: **21.0 s**" in text
    assert "| realtime, 10,000 events/s | 12 | 40 | 61 | 1.5 | 12.3 | 1.40 | 61; 1.5 |" in text
    assert "| realtime, 10,000 events/s, without the stateful queries | 11 | 30 | 50 | 1.0 | - | 1.20 |" in text


def test_stateful_lag_counts_silver_rows_after_the_version_its_newest_batch_read_to(tmp_path: Path) -> None:
    settings = Settings().model_copy(update={"lake": LakeSettings(root=str(tmp_path))})
    assert stateful_lag(settings) is None  # no silver, no stateful query
    for rows in (10, 20, 30):  # versions 0, 1 and 2: 10, 30 and 60 rows
        write_deltalake(
            str(tmp_path / "silver" / "telemetry"), pl.DataFrame({"x": range(rows)}).to_arrow(), mode="append"
        )
    assert stateful_lag(settings) is None  # without the stateful queries: no checkpoint
    checkpoint = tmp_path / "_checkpoints" / STATE_LAYOUTS[-1]
    (checkpoint / "commits").mkdir(parents=True)
    (checkpoint / "offsets").mkdir()
    assert stateful_lag(settings) == 60  # started, no batch committed yet

    def batch(n: int, version: int, index: int, committed: bool = True) -> None:
        offset = {"sourceVersion": 1, "reservoirId": "r", "reservoirVersion": version, "index": index,
                  "isStartingVersion": False}  # fmt: skip
        (checkpoint / "offsets" / str(n)).write_text(f'v1\n{{"batchWatermarkMs":0}}\n{json.dumps(offset)}\n')
        if committed:
            (checkpoint / "commits" / str(n)).write_text("v1\n{}\n")

    batch(0, 0, -100)  # nothing of version 0 read yet (Delta's base index)
    assert stateful_lag(settings) == 60
    batch(1, 1, 0)  # into version 1: counted as read
    assert stateful_lag(settings) == 30
    batch(2, 3, -100, committed=False)  # planned (to the end of version 2), not committed
    assert stateful_lag(settings) == 30
    (checkpoint / "commits" / "2").write_text("v1\n{}\n")
    assert stateful_lag(settings) == 0


def test_report_puts_the_cluster_beside_local_mode() -> None:
    runs = [
        Result("cluster", "local mode", {"events": 600_000, "rate": 10_000.0, "wall_s": 74.0}),
        Result("cluster", "standalone cluster", {"events": 600_000, "rate": 6_000.0, "wall_s": 112.0}),
        Result("cluster", "standalone cluster", {"events": 600_000, "rate": 7_000.0, "wall_s": 100.0}, False, "bronze"),
    ]
    text = report(runs, "test machine", Options(repeat=2))
    assert "on a local Spark standalone cluster: a backlog of 600,000 events" in text
    assert "| local mode | 10,000 | 74 | 10,000 |" in text
    assert "| standalone cluster **(bronze)** | 6,500 | 106 | 6,000, 7,000 |" in text


def test_report_shows_the_lake_jvms_profile_beside_the_processes() -> None:
    values = {
        "cores": 0.7,
        "cores[stream JVM]": 0.5,
        "profile:total": 0.49,
        "profile:thread:HotSpot's compilers": 0.09,
        "profile:activity:the Delta log (snapshots, commits)": 0.03,
    }
    text = report(
        [Result("quiet", "50 cars at 1 Hz, as `make run` starts it", values)], "test machine", Options(repeat=1)
    )
    assert "| - stream JVM, cores | 0.500 | 0.500 |" in text
    assert "| - the lake JVM's profile: total, cores | 0.490 | 0.490 |" in text
    assert "| - the lake JVM's profile: thread, HotSpot's compilers, cores | 0.090 | 0.090 |" in text
    assert "| - the lake JVM's profile: activity, the Delta log (snapshots, commits), cores | 0.030 | 0.030 |" in text
