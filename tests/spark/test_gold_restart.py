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
