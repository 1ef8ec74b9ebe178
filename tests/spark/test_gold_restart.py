"""Gold after a kill between a gold update's commits (pipeline/medallion.py's ``LakeBatch``):
gold/car_state committed, gold/car_minutes not. The restarted run takes in again every row after the
last batch both hold; gold/car_minutes' motion features continue from the cars' state as of that
batch, and the cars' state itself from the newest."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession

from fleetstream.pipeline.medallion import LakeBatch
from fleetstream.pipeline.plan import LakeQuery
from fleetstream.pipeline.writer import Lake, Writer


def test_the_state_before_the_rows_taken_in_again_and_the_newest(spark: SparkSession, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))

    def state(*ids: int) -> DataFrame:
        return spark.createDataFrame(
            [(f"c{i}", f"e{i}", i) for i in ids], "car_id string, event_id string, event_time long"
        )

    def minutes(b: int) -> DataFrame:
        return spark.createDataFrame([(b, "c1", 1)], "minute long, car_id string, events long")

    writer = Writer(spark, lake, "lake", {})
    writer.write(3, {"gold/car_state": state(1, 2), "gold/car_minutes": minutes(3)})
    writer.write(5, {"gold/car_state": state(1, 2, 5)})  # batch 5's update, killed before car_minutes' commit

    def restarted() -> LakeBatch:
        again = Writer(spark, lake, "lake", {})
        batch = LakeBatch(spark, lake, LakeQuery(("silver", "alerts", "gold")), [], None, again, None,  # type: ignore[arg-type]
                          gold_every_s=20)  # fmt: skip
        batch.gold_covered = min(again.committed(t) for t in ("gold/car_state", "gold/car_minutes"))
        return batch

    batch = restarted()
    assert batch.gold_covered == 3  # (batches 4 and 5 are taken in again)
    before = batch._current_state()
    assert before is not None
    assert sorted(before["event_id"].to_pylist()) == ["e1", "e2"]  # as of batch 3
    newest = batch._newest_state()
    assert newest is not None
    assert sorted(newest["event_id"].to_pylist()) == ["e1", "e2", "e5"]

    # that version gone (vacuumed, or its log entry expired): the features start afresh, the state
    # is still the newest
    batch = restarted()
    batch.writer.version_of = lambda table, batch_id: None  # type: ignore[method-assign]
    assert batch._current_state() is None
    newest = batch._newest_state()
    assert newest is not None
    assert newest.num_rows == 3


def test_the_cars_state_is_rewritten_from_the_driver_and_by_spark_when_delta_rs_cannot(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gold/car_state handed to the writer as Arrow (in the table's types: ``arrow_cast``): created
    by Spark with the table's properties, then rewritten by delta-rs (no Spark job) with the batch's
    marker, which a restarted writer reads as Spark's; a batch written again is skipped; a run's first
    rewrite takes the columns of its version; Spark reads the table past delta-rs's checkpoint and
    an older version of it; when delta-rs fails, Spark writes the table for the rest of the run."""
    import deltalake
    import pyarrow as pa
    from deltalake import DeltaTable
    from pyspark.sql.types import BooleanType, LongType, StringType, StructField, StructType

    from fleetstream.pipeline.writer import arrow_cast

    lake = Lake(str(tmp_path / "lake"))
    path = lake.table("gold/car_state")
    struct = StructType([StructField("car_id", StringType()), StructField("event_time", LongType())])
    wider = StructType([*struct.fields, StructField("alerting", BooleanType())])

    def state(at: int, schema: StructType) -> pa.Table:
        rows = pa.table(
            {"car_id": ["c0", "c1", "c2"], "event_time": [at, at + 1, at + 2], "alerting": [True, None, False]}
        )
        return arrow_cast(rows, schema)

    def engine() -> str:
        return str(spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["engineInfo"])  # type: ignore[index]

    assert Writer(spark, lake, "lake", {}).write(0, {"gold/car_state": state(0, struct)}) == ["gold/car_state"]
    assert not engine().startswith("delta-rs")  # (created by Spark)
    configured = DeltaTable(path).metadata().configuration
    assert configured["delta.dataSkippingStatsColumns"] == "car_id,event_time"

    writer = Writer(spark, lake, "lake", {})  # (a restart: this version's columns)
    for batch_id in range(1, 56):  # (past delta-rs's checkpoint, every 50 commits)
        assert writer.write(batch_id, {"gold/car_state": state(batch_id, wider)}) == ["gold/car_state"]
    assert writer.write(55, {"gold/car_state": state(0, wider)}) == []  # (batch 55 is in: not written again)
    assert engine().startswith("delta-rs")
    assert any(p.name.endswith(".checkpoint.parquet") for p in Path(path, "_delta_log").iterdir())
    newest = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
    assert newest is not None
    assert newest["userMetadata"].startswith("fleetstream lake batch 55")
    again = Writer(spark, lake, "lake", {})
    assert again.committed("gold/car_state") == 55
    assert DeltaTable(path).metadata().configuration == configured
    rows = spark.read.format("delta").load(path).orderBy("car_id").collect()
    assert [(r["car_id"], r["event_time"], r["alerting"]) for r in rows] == [("c0", 55, True), ("c1", 56, None),
                                                                              ("c2", 57, False)]  # fmt: skip
    version = again.version_of("gold/car_state", 30)
    assert version is not None
    older = spark.read.format("delta").option("versionAsOf", version).load(path)
    assert sorted(r[0] for r in older.select("event_time").collect()) == [30, 31, 32]

    def refused(*args: object, **kwargs: object) -> None:
        raise deltalake.exceptions.DeltaProtocolError("a table feature this delta-rs cannot write")

    monkeypatch.setattr(deltalake, "write_deltalake", refused)
    for batch_id in (56, 57):
        assert again.write(batch_id, {"gold/car_state": state(batch_id, wider)}) == ["gold/car_state"]
        assert not engine().startswith("delta-rs")  # (Spark's, with the batch's marker)
    assert Writer(spark, lake, "lake", {}).committed("gold/car_state") == 57


def test_a_small_batchs_appends_go_from_the_driver_a_large_ones_and_a_spark_writers_by_spark(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends (silver/telemetry: partitioned, statistics on named columns): the table's creation by
    Spark; a small batch's rows appended by delta-rs with the batch's marker and the table's
    partitioning and statistics, a column this version adds merged in at the run's first append; a
    batch written again skipped; a delta-rs write that fails after its commit (a checkpoint, the
    log's cleanup) counted as written, not written again by Spark; a large batch, and every batch of
    a writer made with ``from_driver`` False, appended by Spark; Spark reads every row once."""
    import json

    from deltalake import DeltaTable

    lake = Lake(str(tmp_path / "lake"))
    path = lake.table("silver/telemetry")

    def rows(batch_id: int, wider: bool = False) -> DataFrame:
        extra = ", 'x' AS added" if wider else ""
        return spark.sql(
            f"SELECT concat('e{batch_id}-', id) AS event_id, 'c' || (id % 3) AS car_id, {batch_id} * 1000 + id AS "
            f"event_time, timestamp_millis({batch_id} * 1000 + id) AS event_ts, DATE'2026-12-07' + CAST(id % 2 AS INT) "
            f"AS event_date, {batch_id} AS silver_batch, 1.5 AS speed{extra} FROM range(4)"
        )

    def engine() -> str:
        return str(spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["engineInfo"])  # type: ignore[index]

    assert Writer(spark, lake, "lake", {}).write(0, {"silver/telemetry": rows(0)}, small=True) == ["silver/telemetry"]
    assert not engine().startswith("delta-rs")  # (created by Spark, with the table's properties)
    writer = Writer(spark, lake, "lake", {})  # (a restart: the first append merges this version's columns)
    for batch_id in (1, 2):
        assert writer.write(batch_id, {"silver/telemetry": rows(batch_id, wider=True)}, small=True) == [
            "silver/telemetry"
        ]
        assert engine().startswith("delta-rs")
    assert writer.write(2, {"silver/telemetry": rows(2, wider=True)}, small=True) == []  # (in already)
    newest = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
    assert newest is not None
    assert newest["userMetadata"] == "fleetstream lake batch 2"
    assert DeltaTable(path).metadata().partition_columns == ["event_date"]
    log = sorted(Path(path, "_delta_log").glob("*.json"))[-1].read_text().splitlines()
    added = [json.loads(line)["add"] for line in log if '"add"' in line]
    assert {a["partitionValues"]["event_date"] for a in added} == {"2026-12-07", "2026-12-08"}
    assert set(json.loads(added[0]["stats"])["minValues"]) == {"event_ts", "event_time", "car_id", "silver_batch"}
    # delta-rs failing after its commit (a checkpoint, the log's cleanup): the batch is in, not written again
    import deltalake

    committed_then_failed = deltalake.write_deltalake

    def after_commit(*args: object, **kwargs: object) -> None:
        committed_then_failed(*args, **kwargs)  # type: ignore[arg-type]
        raise OSError("No space left on device (the checkpoint)")

    monkeypatch.setattr(deltalake, "write_deltalake", after_commit)
    assert writer.write(3, {"silver/telemetry": rows(3, wider=True)}, small=True) == ["silver/telemetry"]
    monkeypatch.undo()
    assert writer.write(4, {"silver/telemetry": rows(4, wider=True)}, small=True) == ["silver/telemetry"]
    assert engine().startswith("delta-rs")  # (still by delta-rs: nothing failed before the commit)
    assert writer.write(5, {"silver/telemetry": rows(5, wider=True)}) == ["silver/telemetry"]  # a large batch
    assert not engine().startswith("delta-rs")
    by_spark = Writer(spark, lake, "lake", {}, from_driver=False)
    assert by_spark.write(6, {"silver/telemetry": rows(6, wider=True)}, small=True) == ["silver/telemetry"]
    assert not engine().startswith("delta-rs")
    assert Writer(spark, lake, "lake", {}).committed("silver/telemetry") == 6
    read = spark.read.format("delta").load(path)
    assert sorted(r[0] for r in read.select("silver_batch").collect()) == sorted([0, 1, 2, 3, 4, 5, 6] * 4)
    assert read.where("added IS NULL").count() == 4  # (batch 0's, before the column)
