"""When a live lake's small batches update gold (pipeline/medallion.py's ``LakeBatch._gold_input``):
the cars' state every ``gold_every_s`` from the rows on the driver, and gold/car_minutes with one of
those updates at most every ``minutes_every_s``, from every batch's rows since its last one. A batch
whose rows are not on the driver makes the next update whole."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession

from fleetstream.pipeline import medallion
from fleetstream.pipeline.medallion import LakeBatch, OnDriver
from fleetstream.pipeline.plan import LakeQuery
from fleetstream.pipeline.writer import Lake, Writer


def test_state_every_update_minutes_every_third_and_a_batch_off_the_driver_makes_one_whole(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    batch = LakeBatch(spark, lake, LakeQuery(("silver", "alerts", "gold")), [], None, Writer(spark, lake, "lake", {}),  # type: ignore[arg-type]
                      None, gold_every_s=20, minutes_every_s=60)  # fmt: skip
    now = [0.0]
    monkeypatch.setattr(medallion.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(medallion, "alerts", lambda rows, rules: rows)  # (the rows stand for their alerts)

    def rows(b: int) -> DataFrame:
        return spark.createDataFrame([(f"e{b}",)], "event_id string")

    def on_driver(b: int) -> OnDriver:
        return OnDriver(pa.table({"car_id": ["c1"], "event_id": [f"e{b}"], "event_time": [b]}), float(b))

    def step(at: float, b: int, kept: str) -> tuple[str, list[str] | None, list[str] | None]:
        """Batch ``b`` at time ``at``: its rows (``kept``: "driver", "spark" alone, "none": no row);
        returns what is updated, the event ids of the rows gold/car_minutes takes in, and those of
        the latest reports gold/car_state takes from the driver."""
        now[0] = 1000 + at  # (a monotonic clock: far from 0, where the last update is said to be)
        given = None if kept == "none" else rows(b)
        got, fired, driver, how = batch._gold_input(b, given, given, on_driver(b) if kept == "driver" else None)
        if how == "all":
            batch.car_state = batch.minutes_state = pa.table({"car_id": ["c1"]})  # (as the update makes it)
        batch._gold_done(how, b)
        ids = sorted(r[0] for r in got.collect()) if got is not None else None
        assert (sorted(r[0] for r in fired.collect()) if fired is not None else None) == ids
        return how, ids, driver.latest["event_id"].to_pylist() if driver is not None else None

    assert step(0, 0, "driver") == ("all", ["e0"], ["e0"])  # the run's first batch: whole
    assert step(5, 1, "driver") == ("", None, None)
    assert step(20, 2, "driver") == ("state", None, ["e2"])  # (batches 1 and 2: the newest report)
    assert step(25, 3, "driver") == ("", None, None)
    assert step(40, 4, "none") == ("state", None, ["e3"])  # batch 3's, which waited for it
    assert step(45, 5, "none") == ("", None, None)
    assert step(50, 6, "driver") == ("", None, None)
    # a minute since the last whole update: every batch's rows since it, their state on the driver
    assert step(60, 7, "none") == ("all", ["e1", "e2", "e3", "e6"], ["e6"])
    assert batch.gold_covered == 7
    assert step(65, 8, "driver") == ("", None, None)
    assert step(70, 9, "spark") == ("", None, None)  # (a batch whose rows are not on the driver)
    assert step(85, 10, "driver") == ("all", ["e10", "e8", "e9"], None)  # whole: the state through Spark
    assert step(105, 11, "driver") == ("state", None, ["e11"])
    assert step(125, 12, "none") == ("", None, None)  # (no row since the state's last update)
    assert step(126, 13, "driver") == ("state", None, ["e13"])
    assert step(145, 14, "driver") == ("", None, None)
    assert step(146, 15, "driver") == ("all", ["e11", "e13", "e14", "e15"], ["e15"])
    assert batch.gold_covered == 15
