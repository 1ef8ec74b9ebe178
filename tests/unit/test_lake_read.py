"""The dashboard's lake readers (delta-rs through Polars) on small tables written with delta-rs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import write_deltalake

from fleetstream.bench import dashboard as bench
from fleetstream.config import LakeSettings, Settings
from fleetstream.lake import read

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def settings_for(root: Path) -> Settings:
    return Settings().model_copy(update={"lake": LakeSettings(root=str(root))})


def test_a_missing_table_reads_as_none(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert read.car_state(settings) is None
    assert read.recent_quarantine(settings, NOW) is None
    assert read.car_history(settings, "car-00001", NOW, ["event_ts"]) is None


def test_car_history_reads_one_car_since_a_time_oldest_first(tmp_path: Path) -> None:
    # two files in time order, as the stream appends them: 10 and 5 minutes ago, one report of each
    # of 900 cars in each
    rng = np.random.default_rng(1)
    for ago_ms in (600_000, 300_000):
        chunk = bench._silver_chunk(NOW_MS - ago_ms, 900, rng)
        write_deltalake(
            str(tmp_path / "silver" / "telemetry"), chunk.to_arrow(), mode="append", partition_by=["event_date"]
        )
    settings = settings_for(tmp_path)
    since = NOW - dt.timedelta(minutes=5)
    got = read.car_history(settings, "car-00042", since, ["event_ts", "speed"])
    assert got is not None
    assert got.height == 1  # car-00042 reported once in each file; only the second file is recent
    assert got["event_ts"].min() >= since
    everything = pl.read_delta(str(tmp_path / "silver" / "telemetry"))
    assert everything.filter(pl.col("car_id") == "car-00042").height == 2


def test_table_uri_maps_s3a_to_s3_for_delta_rs() -> None:
    settings = Settings().model_copy(update={"lake": LakeSettings(root="s3a://bucket/lake/")})
    assert read.table_uri(settings, "gold/car_state") == "s3://bucket/lake/gold/car_state"
    assert read.storage_options(settings_for(Path("/tmp/x"))) is None


def test_report_has_markers_and_every_panel() -> None:
    timings = [bench.Timing("overview", "gold", 12.5, 20.0, 20), bench.Timing("cockpit", "silver", 40.0, 55.5, 20)]
    section = bench.report(timings, [800.0, 900.0, 1000.0], "2 cores")
    lines = section.splitlines()
    assert lines[0] == bench.MARK_BEGIN
    assert lines[-1] == bench.MARK_END
    assert "| overview | gold | 12.5 | 20.0 | 20 |" in section
    assert "**900 ms**" in section
