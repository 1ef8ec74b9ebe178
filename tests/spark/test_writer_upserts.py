"""Two writers of one application upserting the same table (the episodes query's batch and a
restarted run's upsert of the rows left waiting, both into silver/alert_episodes): their MERGEs
take turns, so neither fails on the other's commit and runs again, and every row lands. Each MERGE
is held a moment longer than it takes, so that without the turns two would surely overlap."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from fleetstream.pipeline.episodes import EPISODE_SCHEMA, PENDING_SCHEMA, TRIP_SCHEMA, EpisodesBatch
from fleetstream.pipeline.writer import Lake, Writer, local_frame

TABLE = EpisodesBatch.TABLE
ROUNDS = 3
HELD_S = 0.3  # each MERGE is held this much longer


def _episodes(spark: SparkSession, prefix: str, n: int, as_of: int):  # type: ignore[no-untyped-def]
    rows = [
        (f"{prefix}-{i}", f"c{i}", "overspeed", "high", "", "m", "red", "opened", "open", 0, 0, as_of, None, None,
         1, 130.0, 3000, 90.0, as_of)
        for i in range(n)
    ]  # fmt: skip
    return spark.createDataFrame(rows, EPISODE_SCHEMA)


def test_two_writers_upserting_one_table_take_turns(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, most, guard = [0], [0], threading.Lock()
    merge = Writer._merge_retried

    def held(self: Writer, *args: Any) -> None:
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(HELD_S)
            merge(self, *args)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(Writer, "_merge_retried", held)
    lake = Lake(str(tmp_path / "lake"))
    episodes, other = Writer(spark, lake, "episodes", {}), Writer(spark, lake, "other", {})
    episodes.write(0, {TABLE: _episodes(spark, "e", 5, 1)})  # the table's creation: an append
    failures: list[BaseException] = []

    def upsert(writer: Writer, prefix: str) -> None:
        try:
            for k in range(ROUNDS):  # new episodes and newer rows of the earlier ones, each round
                writer.write(k + 1, {TABLE: _episodes(spark, prefix, 5 + k, 10 + k)})
        except BaseException as exc:
            failures.append(exc)

    caplog.set_level(logging.INFO, logger="fleetstream.pipeline.writer")
    threads = [threading.Thread(target=upsert, args=(w, p)) for w, p in ((episodes, "e"), (other, "o"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert most[0] == 1, f"{most[0]} upserts of the table at once"
    retried = [r.getMessage() for r in caplog.records if "changed under the upsert" in r.getMessage()]
    assert not retried, retried  # no MERGE failed on the other's commit

    rows = spark.read.format("delta").load(lake.table(TABLE)).collect()
    got = {r["episode_id"]: r["as_of"] for r in rows}
    expected = {f"e-{i}": 12 for i in range(7)} | {f"o-{i}": 12 for i in range(7)}
    assert got == expected
    assert len(rows) == len(got)  # one row per episode


def _lineage(frame: Any) -> str:
    return str(frame._jdf.queryExecution().toRdd().toDebugString())


def test_a_local_frame_holds_the_rows_and_runs_no_python_task(spark: SparkSession) -> None:
    """The episodes batch's frames of driver rows (nested structs, NULLs) reach the JVM as Arrow:
    the same rows and schema as ``createDataFrame`` of the list, without its Python worker tasks."""
    episode = ("e1", "c1", "overspeed", "high", "", "m", "red", "opened", "open", 0, 5, 7, None, None, 3, 131.5,
               3100, None, 7)  # fmt: skip
    trip = ("t1", "c1", "m", "red", "open", 0, None, 1.0, 2.0, 1.5, 2.5, 0.4, 30.0, 90.0, 60.0, 0.1, 1, 0, 1, 31, 7)
    rows = [("episodes", "episode", episode, None), ("episodes", "trip", None, trip)]
    frame = local_frame(spark, rows, PENDING_SCHEMA)
    listed = spark.createDataFrame(rows, PENDING_SCHEMA)
    assert frame.schema == listed.schema
    assert frame.collect() == listed.collect()
    assert "PythonRDD" in _lineage(listed)  # (what the helper avoids)
    assert "PythonRDD" not in _lineage(frame)
    empty = local_frame(spark, [], TRIP_SCHEMA)
    assert empty.count() == 0
    assert empty.schema == spark.createDataFrame([], TRIP_SCHEMA).schema
