"""The episodes query's batch writer: the tables upserted in the run's first batch and then at most
every interval, the rows in between held in the driver and in silver/pending_upserts (newest per
episode and trip), notifications and counts in their own batch; what a stopped run left waiting
upserted at the next start, and read with the tables meanwhile."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from fleetstream.config import LakeSettings, Settings
from fleetstream.lake import read
from fleetstream.pipeline.episodes import (
    EPISODE_COLUMNS,
    EPISODE_MINUTES_TABLE,
    OUTPUT_SCHEMA,
    PENDING_TABLE,
    TRIP_COLUMNS,
    TRIPS_TABLE,
    EpisodesBatch,
    upsert_waiting,
)
from fleetstream.pipeline.writer import KAFKA, Lake, Writer

EPISODES = EpisodesBatch.TABLE


class Recorded:
    """A writer that keeps what each batch would write: table -> rows, by key."""

    writer = "episodes"

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.emptied: list[str] = []  # the pending tables whose partition was emptied, in turn
        self.batches: dict[int, dict[str, Any]] = {}
        self.rows: dict[int, dict[str, dict[str, Any]]] = {}  # batch -> table -> key -> the whole row

    def write(self, batch_id: int, outputs: dict[str, DataFrame | None], small: bool = False) -> list[str]:
        assert small  # (the batch's rows are local: its appends go from the driver)
        got: dict[str, Any] = {}
        for name, frame in outputs.items():
            if frame is None:
                continue
            rows = frame.collect()
            if name in (KAFKA, EPISODE_MINUTES_TABLE):
                got[name] = len(rows)
                continue
            if name == PENDING_TABLE:  # (query, kind, episode, trip): by the episode's or trip's id
                assert {r["query"] for r in rows} == {self.writer}
                rows = [r[r["kind"]] for r in rows]
            self.rows.setdefault(batch_id, {})[name] = {r[0]: r.asDict() for r in rows}
            got[name] = {r[0]: (r["as_of"], r["status"]) for r in rows}
        self.batches.setdefault(batch_id, {}).update(got)
        return list(got)

    def empty(self, name: str, schema: str) -> None:
        self.emptied.append(name)


def step(episode_id: str, lifecycle: str, as_of: int) -> dict[str, Any]:
    values = dict.fromkeys(EPISODE_COLUMNS)
    values.update(episode_id=episode_id, car_id="c1", rule="overspeed", lifecycle=lifecycle, as_of=as_of,
                  status="resolved" if lifecycle == "resolved" else "open", started_at=0, opened_at=0,
                  resolved_at=as_of if lifecycle == "resolved" else None)  # fmt: skip
    return {"kind": "episode", "episode": values, "trip": None}


def trip(trip_id: str, status: str, as_of: int, reports: int = 1) -> dict[str, Any]:
    values = dict.fromkeys(TRIP_COLUMNS)
    values.update(trip_id=trip_id, car_id="c1", status=status, started_at=0, ended_at=as_of, as_of=as_of,
                  reports=reports)  # fmt: skip
    return {"kind": "trip", "episode": None, "trip": values}


def test_rows_wait_between_upserts_and_go_with_the_next_one(spark: SparkSession) -> None:
    writer = Recorded(spark)
    batch = EpisodesBatch(writer, "alert-data", progress_every_s=3600)  # type: ignore[arg-type]

    def run(batch_id: int, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        batch(spark.createDataFrame(rows, OUTPUT_SCHEMA), batch_id)
        return writer.batches.get(batch_id)

    # the run's first batch upserts at once
    first = run(0, [step("e1", "opened", 1000), step("e1", "updated", 1500), trip("t1", "open", 1500)])
    assert first == {
        KAFKA: 1, EPISODE_MINUTES_TABLE: 1, EPISODES: {"e1": (1500, "open")}, TRIPS_TABLE: {"t1": (1500, "open")}
    }  # fmt: skip
    # then the rows wait in the driver, each batch's newest appended to the query's partition of
    # silver/pending_upserts (no Kafka record for progress: "updated" is no notification)
    assert run(1, [step("e1", "updated", 2000), trip("t1", "open", 2000), trip("t2", "open", 2000)]) == {
        PENDING_TABLE: {"e1": (2000, "open"), "t1": (2000, "open"), "t2": (2000, "open")}
    }
    assert run(2, [trip("t1", "open", 3000)]) == {PENDING_TABLE: {"t1": (3000, "open")}}
    # a trip that ends and an episode that opens wait too; the notification and the count do not
    assert run(3, [trip("t1", "closed", 3500), step("e1", "updated", 3500)]) == {
        PENDING_TABLE: {"t1": (3500, "closed"), "e1": (3500, "open")}
    }
    assert run(4, [step("e2", "opened", 4000)]) == {
        KAFKA: 1, EPISODE_MINUTES_TABLE: 1, PENDING_TABLE: {"e2": (4000, "open")}
    }  # fmt: skip
    assert writer.emptied == []
    # a batch with no rows writes nothing
    assert run(5, []) is None
    # the interval passed: every row held back is upserted, the newest of each, with the batch's
    batch.upserted_at -= 3600  # type: ignore[operator]
    sixth = run(6, [step("e2", "resolved", 6000), trip("t3", "open", 6000)])
    assert sixth == {
        KAFKA: 1,
        EPISODE_MINUTES_TABLE: 1,
        EPISODES: {"e1": (3500, "open"), "e2": (6000, "resolved")},
        TRIPS_TABLE: {"t1": (3500, "closed"), "t2": (2000, "open"), "t3": (6000, "open")},
    }
    assert writer.emptied == [PENDING_TABLE]  # the partition emptied once they are upserted
    assert tuple(writer.rows[6][TRIPS_TABLE]["t1"]) == TRIP_COLUMNS  # the table's columns, no other
    assert batch.pending == {EPISODES: {}, TRIPS_TABLE: {}}
    # and the partition starts again from the rows since
    assert run(7, [trip("t3", "open", 7000)]) == {PENDING_TABLE: {"t3": (7000, "open")}}


def test_of_two_rows_at_the_same_time_the_ended_then_the_later_batchs_wins(spark: SparkSession) -> None:
    """A report at the same event time as the car's last one, in a later batch (a second report in
    one millisecond, a late sender): the trip's row from that batch is kept, not the one held back;
    unless the one held back ended the trip."""
    writer = Recorded(spark)
    batch = EpisodesBatch(writer, None, progress_every_s=3600)  # type: ignore[arg-type]

    def run(batch_id: int, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        batch(spark.createDataFrame(rows, OUTPUT_SCHEMA), batch_id)
        return writer.batches.get(batch_id)

    run(0, [trip("t1", "open", 1000)])
    for held, fresh in ((5, 6), (6, 5)):  # whichever figure is larger: the batch's own row
        run(1, [trip("t1", "open", 2000, reports=held)])
        run(2, [trip("t1", "open", 2000, reports=fresh)])
        assert writer.rows[2][PENDING_TABLE]["t1"]["reports"] == fresh
        batch.upserted_at -= 3600  # type: ignore[operator]
        run(3, [trip("t2", "open", 2000)])
        assert writer.rows[3][TRIPS_TABLE]["t1"]["reports"] == fresh
    run(4, [trip("t1", "closed", 2500)])
    assert run(5, [trip("t1", "open", 2500)]) == {PENDING_TABLE: {"t1": (2500, "open")}}  # (the batch's row)
    assert batch.pending[TRIPS_TABLE]["t1"][TRIP_COLUMNS.index("status")] == "closed"  # what the upsert gets


def test_rows_left_waiting_are_read_with_the_tables_and_upserted_at_the_next_start(
    spark: SparkSession, tmp_path: Path
) -> None:
    """With the real writer: rows held back are in the query's partition of silver/pending_upserts,
    the dashboard's readers see them (the newest per episode and trip, beside the tables' rows);
    after a stop, :func:`upsert_waiting` upserts the query's rows and empties its partition, not
    another query's (but an earlier version's of the query, named); a batch run again after a crash
    writes its partition once."""
    lake = Lake(str(tmp_path / "lake"))
    settings = Settings(lake=LakeSettings(root=lake.root))
    writer = Writer(spark, lake, "episodes", {})
    batch = EpisodesBatch(writer, None, progress_every_s=3600)

    def run(batch_id: int, rows: list[dict[str, Any]]) -> None:
        batch(spark.createDataFrame(rows, OUTPUT_SCHEMA), batch_id)

    run(0, [step("e1", "opened", 1000), step("e2", "opened", 1000), trip("t1", "open", 1000)])
    assert table(spark, lake, EPISODES) == {"e1": (1000, "open"), "e2": (1000, "open")}
    run(1, [step("e1", "resolved", 2000), trip("t1", "closed", 2000), trip("t2", "open", 2000)])
    offline = Writer(spark, lake, "offline", {})  # the offline query of an earlier version
    offline_row = ("offline", *step("e3", "opened", 1500).values())
    offline.write(0, {PENDING_TABLE: spark.createDataFrame([offline_row], f"query STRING, {OUTPUT_SCHEMA}")})
    run(2, [step("e2", "updated", 2500)])
    run(2, [step("e2", "updated", 2500)])  # run again after a crash: the partition is not written twice
    # created by Spark (with the table's properties), appended to by the earlier version's query
    # (another writer, by Spark); the query's next append by delta-rs, from the driver
    assert engines(spark, lake, PENDING_TABLE) == [("WRITE", "delta-rs"), ("WRITE", "Apache-Spark"),
                                                   ("WRITE", "Apache-Spark")]  # fmt: skip
    assert table(spark, lake, EPISODES) == {"e1": (1000, "open"), "e2": (1000, "open")}  # not upserted yet
    assert waiting(spark, lake) == {"episodes": 4, "offline": 1}

    seen = read.episodes(settings, dt.datetime.fromtimestamp(0, dt.UTC))
    assert seen is not None
    assert dict(zip(seen["episode_id"], zip(seen["as_of"], seen["status"], strict=True), strict=True)) == {
        "e1": (2000, "resolved"), "e2": (2500, "open"), "e3": (1500, "open")
    }  # fmt: skip
    # an episode resolved before the slice is not shown, though the table still has it open
    recent = read.episodes(settings, dt.datetime.fromtimestamp(3, dt.UTC))
    assert recent is not None
    assert sorted(recent["episode_id"]) == ["e2", "e3"]
    trips = read.car_trips(settings, "c1")
    assert trips is not None
    assert sorted(trips.select("trip_id", "status").rows()) == [("t1", "closed"), ("t2", "open")]

    # the next start: the query's rows are upserted and its partition emptied; another query's stay,
    # unless named as the query's own under an earlier version
    assert upsert_waiting(spark, Writer(spark, lake, "episodes", {})) == 4
    assert table(spark, lake, EPISODES) == {"e1": (2000, "resolved"), "e2": (2500, "open")}
    assert table(spark, lake, TRIPS_TABLE) == {"t1": (2000, "closed"), "t2": (2000, "open")}
    assert waiting(spark, lake) == {"offline": 1}
    assert upsert_waiting(spark, Writer(spark, lake, "episodes", {})) == 0
    assert upsert_waiting(spark, Writer(spark, lake, "episodes", {}), retired=("offline",)) == 1
    assert table(spark, lake, EPISODES)["e3"] == (1500, "open")
    assert waiting(spark, lake) == {}


def test_an_upsert_empties_the_partition_and_a_stale_row_never_undoes_an_ended_one(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A trip held open, then closed at the same report time by the next upsert: the query's
    partition is emptied after the upsert, and a stale copy of the open row (a crash between the
    two) upserted again later leaves the trip closed; the readers prefer the ended row too."""
    lake = Lake(str(tmp_path / "lake"))
    settings = Settings(lake=LakeSettings(root=lake.root))
    writer = Writer(spark, lake, "episodes", {})
    batch = EpisodesBatch(writer, None, progress_every_s=3600)

    def run(batch_id: int, rows: list[dict[str, Any]]) -> None:
        batch(spark.createDataFrame(rows, OUTPUT_SCHEMA), batch_id)

    run(0, [trip("t0", "open", 500)])
    run(1, [trip("t1", "open", 1000, reports=5)])
    assert waiting(spark, lake) == {"episodes": 1}
    batch.upserted_at -= 3600  # type: ignore[operator]
    run(2, [trip("t1", "closed", 1000, reports=5)])
    assert table(spark, lake, TRIPS_TABLE)["t1"] == (1000, "closed")
    assert waiting(spark, lake) == {}
    assert engines(spark, lake, PENDING_TABLE)[0] == ("DELETE", "delta-rs")  # the partition emptied from the driver
    # the table created by Spark at the first upsert (with its properties), upserted from the driver after
    assert engines(spark, lake, TRIPS_TABLE) == [("MERGE", "delta-rs"), ("WRITE", "Apache-Spark")]
    stale = ("episodes", *trip("t1", "open", 1000, reports=5).values())
    Writer(spark, lake, "episodes", {}).write(
        3, {PENDING_TABLE: spark.createDataFrame([stale], f"query STRING, {OUTPUT_SCHEMA}")}
    )
    trips = read.car_trips(settings, "c1")
    assert trips is not None
    assert dict(trips.select("trip_id", "status").rows()) == {"t0": "open", "t1": "closed"}
    assert upsert_waiting(spark, Writer(spark, lake, "episodes", {})) == 1
    assert table(spark, lake, TRIPS_TABLE)["t1"] == (1000, "closed")


def test_every_batch_upserting_writes_no_waiting_rows(spark: SparkSession, tmp_path: Path) -> None:
    """``progress_every_s`` 0 (`stream --available-now`): every batch upserts, nothing waits."""
    lake = Lake(str(tmp_path / "lake"))
    batch = EpisodesBatch(Writer(spark, lake, "episodes", {}), None, progress_every_s=0)
    for batch_id in range(3):
        batch(spark.createDataFrame([trip("t1", "open", 1000 * (batch_id + 1))], OUTPUT_SCHEMA), batch_id)
        assert table(spark, lake, TRIPS_TABLE) == {"t1": (1000 * (batch_id + 1), "open")}
    assert not (tmp_path / "lake" / "silver" / "pending_upserts").exists()
    assert [engine for _, engine in engines(spark, lake, TRIPS_TABLE)] == ["delta-rs", "delta-rs", "Apache-Spark"]


def table(spark: SparkSession, lake: Lake, name: str) -> dict[str, tuple[int, str]]:
    return {r[0]: (r["as_of"], r["status"]) for r in spark.read.format("delta").load(lake.table(name)).collect()}


def waiting(spark: SparkSession, lake: Lake) -> dict[str, int]:
    """Rows per query in silver/pending_upserts."""
    rows = spark.read.format("delta").load(lake.table(PENDING_TABLE)).groupBy("query").count().collect()
    return {r["query"]: r["count"] for r in rows}


def engines(spark: SparkSession, lake: Lake, name: str) -> list[tuple[str, str]]:
    """Each commit's operation and the engine that made it (its name without the version), newest first."""
    history = spark.sql(f"DESCRIBE HISTORY delta.`{lake.table(name)}`").collect()
    return [(r["operation"], re.split(r"[/: ]", str(r["engineInfo"]))[0]) for r in history]


def test_a_commit_conflict_sends_one_write_to_spark_another_failure_the_rest(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A delta-rs write from the driver that loses a commit race (`lake maintain`'s OPTIMIZE on the
    table) is done by Spark that once; any other failure leaves the table to Spark for the run."""
    from deltalake.exceptions import CommitFailedError

    writer = Writer(spark, Lake(str(tmp_path / "lake")), "episodes", {})
    writer._driver_failed(TRIPS_TABLE, " not upserted", CommitFailedError("Transaction failed: version already exists"))
    assert TRIPS_TABLE not in writer._by_spark
    writer._driver_failed(TRIPS_TABLE, " not upserted", ValueError("Schema error: a type delta-rs cannot write"))
    assert TRIPS_TABLE in writer._by_spark
