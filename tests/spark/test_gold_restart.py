"""Gold after a kill between a gold update's commits (pipeline/medallion.py's ``LakeBatch``):
gold/car_state committed, gold/car_minutes not. The restarted run takes in again every row after the
last batch both hold; gold/car_minutes' motion features continue from the cars' state as of that
batch, and the cars' state itself from the newest."""

from __future__ import annotations

from pathlib import Path

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


def test_the_cars_state_is_rewritten_from_the_driver_once_per_batch(spark: SparkSession, tmp_path: Path) -> None:
    """gold/car_state handed to the writer as Arrow: created by Spark with the table's properties,
    then rewritten by delta-rs (no Spark job) with the batch's marker, which a restarted writer
    reads as Spark's; a batch written again is skipped, and a run's first rewrite takes the columns
    of its version."""
    import pyarrow as pa
    from deltalake import DeltaTable

    lake = Lake(str(tmp_path / "lake"))
    path = lake.table("gold/car_state")
    before = pa.table({"car_id": ["c0", "c1"], "event_time": pa.array([0, 1], pa.int64())})
    assert Writer(spark, lake, "lake", {}).write(0, {"gold/car_state": before}) == ["gold/car_state"]
    configured = DeltaTable(path).metadata().configuration
    assert configured["delta.dataSkippingStatsColumns"] == "car_id,event_time"

    writer = Writer(spark, lake, "lake", {})  # (a restart)
    after = pa.table({"car_id": ["c0", "c1", "c2"], "event_time": pa.array([5, 6, 7], pa.int64()),
                      "alerting": pa.array([True, None, False])})  # fmt: skip
    assert writer.write(1, {"gold/car_state": after}) == ["gold/car_state"]
    assert writer.write(1, {"gold/car_state": before}) == []  # (batch 1 is in: not written again)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("userMetadata", "engineInfo").collect()
    assert history[0]["engineInfo"].startswith("delta-rs")
    assert history[0]["userMetadata"].startswith("fleetstream lake batch 1")
    assert Writer(spark, lake, "lake", {}).committed("gold/car_state") == 1
    assert DeltaTable(path).metadata().configuration == configured
    rows = spark.read.format("delta").load(path).orderBy("car_id").collect()
    assert [(r["car_id"], r["event_time"], r["alerting"]) for r in rows] == [("c0", 5, True), ("c1", 6, None),
                                                                              ("c2", 7, False)]  # fmt: skip
