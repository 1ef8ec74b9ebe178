"""`fleetstream lake maintain` on a small real lake: a dry run changes nothing, a retention shorter
than safe is refused before anything changes, and a run compacts, Z-orders the closed day and
vacuums, with the tables' rows unchanged."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetstream.config import LakeSettings, Settings
from fleetstream.errors import FleetstreamError
from fleetstream.lake import maintain as M
from fleetstream.lake.tables import TABLES
from fleetstream.pipeline.writer import CHECKPOINT_INTERVAL

DAYS = ("2026-01-01", "2099-01-01")  # a closed day, and one that is still open


def _lake(spark: SparkSession, root: Path) -> Settings:
    """silver/telemetry in six small appends over two days; gold/car_state overwritten twice."""
    silver = str(root / "silver" / "telemetry")
    for i in range(6):
        rows = (
            spark.range(i * 100, i * 100 + 100)
            .select(
                F.concat(F.lit("car-"), (F.col("id") % 7).cast("string")).alias("car_id"),
                F.timestamp_millis(F.lit(1_767_225_600_000) + F.col("id") * 1000).alias("event_ts"),
                (F.lit(1_767_225_600_000) + F.col("id") * 1000).alias("event_time"),
                F.lit(i).cast("long").alias("silver_batch"),
                F.to_date(F.lit(DAYS[i % 2])).alias("event_date"),
                F.col("id").alias("speed"),
            )
            .coalesce(1)
        )
        writer = rows.write.format("delta").mode("append").partitionBy("event_date")
        if i == 0:
            writer = writer.options(**TABLES["silver/telemetry"].properties(CHECKPOINT_INTERVAL))
        writer.save(silver)
    for i in range(2):
        spark.range(7).withColumn("speed", F.lit(i)).coalesce(1).write.format("delta").mode("overwrite").save(
            str(root / "gold" / "car_state")
        )
    return Settings(lake=LakeSettings(root=str(root)))


def _rows(spark: SparkSession, settings: Settings, name: str) -> tuple[int, int]:
    frame = spark.read.format("delta").load(f"{settings.lake.root}/{name}")
    return frame.count(), int(frame.agg(F.sum("speed")).first()[0])  # type: ignore[index]


def test_dry_run_refusal_then_maintenance(spark: SparkSession, tmp_path: Path) -> None:
    settings = _lake(spark, tmp_path / "lake")
    silver = f"{settings.lake.root}/silver/telemetry"
    versions = {n: DeltaTable.forPath(spark, f"{settings.lake.root}/{n}").history(1).first()[0]  # type: ignore[index]
                for n in ("silver/telemetry", "gold/car_state")}  # fmt: skip
    before = {n: _rows(spark, settings, n) for n in versions}

    # a streaming query that still reads silver from version 1: the offsets of its two newest batches
    table_id = spark.sql(f"DESCRIBE DETAIL delta.`{silver}`").first()["id"]  # type: ignore[index]
    offsets = tmp_path / "lake" / "_checkpoints" / "episodes" / "offsets"
    offsets.mkdir(parents=True)
    for batch, version in ((4, 1), (5, 3)):
        entry = {"sourceVersion": 1, "reservoirId": table_id, "reservoirVersion": version, "index": -1}
        (offsets / str(batch)).write_text(f'v1\n{{"batchWatermarkMs":0}}\n{json.dumps(entry)}\n')
    assert M.reservoir_versions(M._checkpoint_lines(spark, settings.lake.root)) == {table_id: 1}
    floors = M.retention_floor(spark, settings, ["silver/telemetry", "gold/car_state"])
    assert floors == {"silver/telemetry": M.FLOOR_HOURS, "gold/car_state": M.FLOOR_HOURS}  # minutes-old versions

    lines: list[str] = []
    dry = M.maintain(settings, spark, retain_hours=0, dry_run=True, say=lines.append, floor=lambda *_: {})
    by_name = {o.table: o for o in dry}
    assert set(by_name) == {"silver/telemetry", "gold/car_state"}
    assert by_name["silver/telemetry"].compacted
    assert by_name["silver/telemetry"].zordered == [DAYS[0]]
    assert by_name["silver/telemetry"].before.small == 6
    assert by_name["gold/car_state"].vacuumed == 1
    assert not by_name["gold/car_state"].compacted
    assert all("would" in line for line in lines)

    with pytest.raises(FleetstreamError, match=r"shorter than safe for gold/car_state, silver/telemetry.*Nothing"):
        M.maintain(settings, spark, retain_hours=0.5)
    with pytest.raises(FleetstreamError, match="unknown tables"):
        M.maintain(settings, spark, tables=["silver/nope"])
    for name, version in versions.items():  # neither the dry run nor the refusals committed anything
        assert DeltaTable.forPath(spark, f"{settings.lake.root}/{name}").history(1).first()[0] == version  # type: ignore[index]

    done = {o.table: o for o in M.maintain(settings, spark, retain_hours=0, say=lines.append, floor=lambda *_: {})}
    s = done["silver/telemetry"]
    assert s.after is not None
    assert (s.after.files, s.after.small) == (2, 2)  # one file per day
    assert (s.zordered, s.vacuumed) == ([DAYS[0]], 6)
    files = sorted((tmp_path / "lake" / "silver" / "telemetry").rglob("*.parquet"))
    assert len(files) == 2
    for file in files:  # timestamps as INT64 microseconds, with the row-group min/max readers skip by
        column = pq.ParquetFile(file).metadata.row_group(0).column(1)
        assert (column.path_in_schema, column.physical_type) == ("event_ts", "INT64"), column
        assert column.statistics is not None, column
        assert column.statistics.has_min_max, column
    assert done["gold/car_state"].vacuumed == 1
    assert {n: _rows(spark, settings, n) for n in versions} == before
    operations = [r[0] for r in DeltaTable.forPath(spark, silver).history().select("operation").collect()]
    assert operations.count("OPTIMIZE") == 2  # the compaction, then the closed day's Z-order
    # a second run finds nothing to do: the closed day is Z-ordered once
    again = M.maintain(settings, spark, retain_hours=0, tables=["silver/telemetry"], floor=lambda *_: {})
    assert (again[0].compacted, again[0].zordered, again[0].vacuumed) == (False, [], 0)


def test_vacuum_applies_the_retention_asked_for(spark: SparkSession, tmp_path: Path) -> None:
    """Delta 4 ignores VACUUM's RETAIN n HOURS unless n is 0 (it keeps 7 days): maintain turns that
    off, so a file left by a failed write 3 hours ago goes with a 2-hour retention, and one left an
    hour ago stays."""
    settings = _lake(spark, tmp_path / "lake")
    table = tmp_path / "lake" / "gold" / "car_state"
    now = time.time()
    for name, age_h in (("part-00000-old-orphan.parquet", 3), ("part-00000-new-orphan.parquet", 1)):
        (table / name).write_bytes(b"not committed")
        os.utime(table / name, (now - age_h * 3600, now - age_h * 3600))
    [done] = M.maintain(settings, spark, retain_hours=2, tables=["gold/car_state"], floor=lambda *_: {})
    assert done.vacuumed == 1  # the file the second overwrite removed is minutes old: it stays too
    assert not (table / "part-00000-old-orphan.parquet").exists()
    assert (table / "part-00000-new-orphan.parquet").exists()
    assert _rows(spark, settings, "gold/car_state") == (7, 7)
