"""The episodes query's batch writer: lifecycle steps and closed trips upserted at once, progress
alone held back in the driver between upserts and written, newest first, with the next one."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession

from fleetstream.pipeline.episodes import (
    EPISODE_COLUMNS,
    EPISODE_MINUTES_TABLE,
    FRESH,
    OUTPUT_SCHEMA,
    TRIP_COLUMNS,
    TRIPS_TABLE,
    EpisodesBatch,
)
from fleetstream.pipeline.writer import KAFKA

EPISODES = EpisodesBatch.TABLE


class Recorded:
    """A writer that keeps what each batch would write: table -> rows, by key."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.batches: dict[int, dict[str, Any]] = {}
        self.rows: dict[int, dict[str, dict[str, Any]]] = {}  # batch -> table -> key -> the whole row

    def write(self, batch_id: int, outputs: dict[str, DataFrame | None]) -> list[str]:
        got: dict[str, Any] = {}
        for name, frame in outputs.items():
            if frame is None:
                continue
            rows = frame.collect()
            if name not in (KAFKA, EPISODE_MINUTES_TABLE):
                self.rows.setdefault(batch_id, {})[name] = {r[0]: r.asDict() for r in rows}
            got[name] = len(rows) if name in (KAFKA, EPISODE_MINUTES_TABLE) else {
                r[0]: (r["as_of"], r["status"]) for r in rows
            }  # fmt: skip
        self.batches[batch_id] = got
        return list(got)


def step(episode_id: str, lifecycle: str, as_of: int) -> dict[str, Any]:
    values = dict.fromkeys(EPISODE_COLUMNS)
    values.update(episode_id=episode_id, car_id="c1", rule="overspeed", lifecycle=lifecycle, as_of=as_of,
                  status="resolved" if lifecycle == "resolved" else "open", started_at=0, opened_at=0)  # fmt: skip
    return {"kind": "episode", "episode": values, "trip": None}


def trip(trip_id: str, status: str, as_of: int, reports: int = 1) -> dict[str, Any]:
    values = dict.fromkeys(TRIP_COLUMNS)
    values.update(trip_id=trip_id, car_id="c1", status=status, started_at=0, ended_at=as_of, as_of=as_of,
                  reports=reports)  # fmt: skip
    return {"kind": "trip", "episode": None, "trip": values}


def test_progress_alone_waits_in_the_driver_and_goes_with_the_next_upsert(spark: SparkSession) -> None:
    writer = Recorded(spark)
    batch = EpisodesBatch(writer, "alert-data", progress_every_s=3600)  # type: ignore[arg-type]

    def run(batch_id: int, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        batch(spark.createDataFrame(rows, OUTPUT_SCHEMA), batch_id)
        return writer.batches.get(batch_id)

    # the run's first batch writes at once, progress or not
    first = run(0, [step("e1", "opened", 1000), step("e1", "updated", 1500), trip("t1", "open", 1500)])
    assert first == {
        KAFKA: 1, EPISODE_MINUTES_TABLE: 1, EPISODES: {"e1": (1500, "open")}, TRIPS_TABLE: {"t1": (1500, "open")}
    }  # fmt: skip
    # progress alone: nothing is written (no Kafka record either: "updated" is no notification)
    assert run(1, [step("e1", "updated", 2000), trip("t1", "open", 2000), trip("t2", "open", 2000)]) is None
    assert run(2, [trip("t1", "open", 3000)]) is None
    # a trip that ends is written at once, with the trips held back (the newest of each)
    third = run(3, [trip("t1", "closed", 3500), step("e1", "updated", 3500)])
    assert third == {TRIPS_TABLE: {"t1": (3500, "closed"), "t2": (2000, "open")}}
    # a lifecycle step is written at once, with the episode's progress held back before it
    fourth = run(4, [step("e2", "opened", 4000)])
    assert fourth is not None
    assert fourth[EPISODES] == {"e1": (3500, "open"), "e2": (4000, "open")}
    assert fourth[KAFKA] == 1
    # the interval passed: progress held back is written with no new rows of that table
    assert run(5, [step("e2", "updated", 5000)]) is None
    batch.written_at[EPISODES] -= 3600
    assert run(6, [trip("t3", "open", 6000)]) == {EPISODES: {"e2": (5000, "open")}}
    assert batch.pending[EPISODES] == {}
    assert list(batch.pending[TRIPS_TABLE]) == ["t3"]


def test_of_two_rows_at_the_same_time_the_later_batchs_wins(spark: SparkSession) -> None:
    """A report at the same event time as the car's last one, in a later batch (a second report in
    one millisecond, a late sender): the trip's row from that batch is written, not the one held back."""
    writer = Recorded(spark)
    batch = EpisodesBatch(writer, None, progress_every_s=3600)  # type: ignore[arg-type]

    def run(batch_id: int, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        batch(spark.createDataFrame(rows, OUTPUT_SCHEMA), batch_id)
        return writer.batches.get(batch_id)

    run(0, [trip("t1", "open", 1000)])
    for held, fresh in ((5, 6), (6, 5)):  # whichever figure is larger: the batch's own row
        assert run(1, [trip("t1", "open", 2000, reports=held)]) is None  # progress alone: held back
        assert run(2, [trip("t1", "open", 2000, reports=fresh), trip("t2", "closed", 2000)]) is not None
        assert writer.rows[2][TRIPS_TABLE]["t1"]["reports"] == fresh
        assert FRESH not in writer.rows[2][TRIPS_TABLE]["t1"]  # the order's column is not written
        assert batch.pending[TRIPS_TABLE] == {}
