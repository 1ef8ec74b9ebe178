"""RecentIds, silver's dedup lookup kept in memory: every answer equals what a scan of silver gives."""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream.pipeline.dedup import RecentIds

W = 600_000  # the dedup window, ms


class Silver:
    """A silver table in a list: the rows (event_id, event_time, silver_batch) the batches wrote."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark, self.rows = spark, [("old", 0, -1)]
        self.scans: list[tuple[int, int | None, int]] = []

    def frame(self) -> DataFrame:
        return self.spark.createDataFrame(self.rows, "event_id string, event_time long, silver_batch long")

    def scan(self, lo: int, hi: int | None, batch_id: int) -> DataFrame:
        self.scans.append((lo, hi, batch_id))
        rows = self.frame().where((F.col("event_time") >= lo) & (F.col("silver_batch") != batch_id))
        return rows.where(F.col("event_time") <= hi) if hi is not None else rows

    def expected(self, batch_id: int, lo: int, hi: int) -> set[str]:
        return {e for e, t, b in self.rows if lo - W <= t <= hi + W and b != batch_id}


def _ids(frame: DataFrame) -> set[str]:
    return {r["event_id"] for r in frame.collect()}


def _write(silver: Silver, recent: RecentIds, batch_id: int, events: list[tuple[str, int]]) -> set[str]:
    """One silver batch: look up, append, add its chunk. Returns what the lookup answered."""
    lo, hi = min(t for _, t in events), max(t for _, t in events)
    got = _ids(recent.seen(batch_id, lo, hi))
    assert got == silver.expected(batch_id, lo, hi), f"batch {batch_id}"
    silver.rows += [(e, t, batch_id) for e, t in events]
    first = silver.spark.createDataFrame(events, "event_id string, event_time long")
    recent.add(batch_id, RecentIds.chunk(first), hi)
    return got


def test_the_lookup_answers_as_the_scan_does_through_merges_and_late_batches(spark: SparkSession) -> None:
    silver = Silver(spark)
    recent = RecentIds(silver.scan, W, merge_every=2)
    step = 3 * 60_000
    for batch in range(8):  # a batch every 3 minutes: chunks merge, the ids beyond two windows are let go
        t = W + batch * step
        _write(silver, recent, batch, [(f"e{batch}", t), (f"e{batch}b", t + 1000)])
    assert len(silver.scans) == 1, "the files are read at the first batch only"
    assert len(recent.chunks) <= 3
    kept = set().union(*(_ids(chunk) for chunk in recent.chunks))
    assert "e0" not in kept, "ids older than two windows are let go"
    assert "e7" in kept
    # a batch holding an event from long ago reaches back past the ids kept: it reads the files
    got = _write(silver, recent, 8, [("late", W), ("now", W + 8 * step)])
    assert "e0" in got
    assert len(silver.scans) == 2
    _write(silver, recent, 9, [("e9", W + 9 * step)])
    assert len(silver.scans) == 2


def test_a_batch_run_again_starts_from_the_files_without_its_own_rows(spark: SparkSession) -> None:
    silver = Silver(spark)
    recent = RecentIds(silver.scan, W)
    _write(silver, recent, 0, [("a", W)])
    # batch 1 wrote silver, then the process died before the batch was committed: a new process runs
    # batch 1 again, and its own rows do not count as seen
    silver.rows.append(("b", W, 1))
    again = RecentIds(silver.scan, W)
    assert _ids(again.seen(1, W, W)) == {"a", "old"}
    # the same in one process: a batch that failed after its writes runs again with the same id
    recent.add(1, None, W)
    assert _ids(recent.seen(1, W, W)) == {"a", "old"}
    assert len(silver.scans) == 3


def test_an_empty_batch_keeps_the_ids(spark: SparkSession) -> None:
    silver = Silver(spark)
    recent = RecentIds(silver.scan, W)
    recent.add(0)  # nothing kept yet: the next batch reads the files
    _write(silver, recent, 1, [("a", W)])
    recent.add(2)  # a batch without a valid row
    _write(silver, recent, 3, [("b", W)])
    assert len(silver.scans) == 1


def _known(
    silver: Silver, recent: RecentIds, batch_id: int, events: list[tuple[str, int]], ids: list[str]
) -> set[str] | None:
    """One small batch deduplicated on the driver: look up ``ids`` there, append, add its ids there."""
    lo, hi = min(t for _, t in events), max(t for _, t in events)
    got = recent.known(batch_id, lo, hi, pa.array(ids))
    if got is not None:
        assert set(got.to_pylist()) == silver.expected(batch_id, lo, hi) & set(ids), f"batch {batch_id}"
        assert len(got) == len(set(got.to_pylist())), "distinct"
    silver.rows += [(e, t, batch_id) for e, t in events]
    recent.add(batch_id, None, hi, pa.table({"event_id": [e for e, _ in events], "event_time": [t for _, t in events]}))
    return None if got is None else set(got.to_pylist())


def test_small_batches_look_up_on_the_driver_and_the_ids_move_to_where_the_batch_needs_them(
    spark: SparkSession,
) -> None:
    silver = Silver(spark)
    silver.rows.append(("early", W, -1))  # in silver before this run
    recent = RecentIds(silver.scan, W, merge_every=2, spark=spark)
    step = 3 * 60_000
    # the first batch reads the files once, onto the driver
    assert _known(silver, recent, 0, [("a", W + step)], ["a", "early", "early"]) == {"early"}
    assert len(silver.scans) == 1
    assert recent.local is not None
    assert not recent.chunks
    assert _known(silver, recent, 1, [("b", W + 2 * step)], ["b", "a"]) == {"a"}
    # a large batch: the ids go to the executors, and it adds a chunk there
    _write(silver, recent, 2, [("c", W + 3 * step), ("a", W + 3 * step)])
    assert recent.local is None
    assert recent.chunks
    # a small one again: they come back to the driver (one job), with no scan of the files
    assert _known(silver, recent, 3, [("d", W + 4 * step)], ["d", "c", "b"]) == {"c", "b"}
    assert not recent.chunks
    assert len(silver.scans) == 1
    for batch in range(4, 12):  # the ids more than two windows older than the newest are let go
        _known(silver, recent, batch, [(f"e{batch}", W + (batch + 1) * step)], [f"e{batch}"])
    assert recent.local is not None
    assert "early" not in recent.local["event_id"].to_pylist()
    assert "e11" in recent.local["event_id"].to_pylist()
    # a batch reaching further back than the ids kept: the driver cannot tell, the files can
    assert _known(silver, recent, 12, [("late", W), ("now", W + 13 * step)], ["early", "now"]) is None
    lo, hi = W, W + 13 * step
    assert "early" in _ids(recent.seen(12, lo, hi)), "the scan answers"
    assert len(silver.scans) == 2


def test_ids_too_many_for_the_driver_stay_in_the_executors(spark: SparkSession) -> None:
    silver = Silver(spark)
    silver.rows += [(f"old{i}", W, -1) for i in range(5)]
    recent = RecentIds(silver.scan, W, merge_every=2, local_max=3, spark=spark)

    def small(batch_id: int, event: tuple[str, int], ids: list[str]) -> set[str]:
        """A small batch as silver_batch runs it: the driver first, then Spark when it cannot tell."""
        got = recent.known(batch_id, event[1], event[1], pa.array(ids))
        answer = set(got.to_pylist()) if got is not None else _ids(recent.seen(batch_id, event[1], event[1])) & set(ids)
        assert answer == silver.expected(batch_id, event[1], event[1]) & set(ids), f"batch {batch_id}"
        silver.rows.append((*event, batch_id))
        recent.add(batch_id, None, event[1], pa.table({"event_id": [event[0]], "event_time": [event[1]]}))
        return answer

    assert recent.known(0, W, W, pa.array(["a"])) is None, "six ids do not fit in three"
    assert recent.local is None
    assert recent.chunks
    assert small(0, ("a", W), ["a", "old1"]) == {"old1"}
    assert small(1, ("b", W), ["b", "a"]) == {"a"}, "the chunks and the driver's ids both count"
    assert recent.local_blocked, "tried once, then not until a merge"
    assert small(2, ("c", W), ["c", "b", "old2"]) == {"b", "old2"}
    assert len(silver.scans) == 1
    # a batch run again after a crash starts from the files, whichever side it asks
    again = RecentIds(silver.scan, W, spark=spark)
    found = again.known(1, W, W, pa.array(["a", "b", "zzz"]))
    assert found is not None
    assert set(found.to_pylist()) == {"a"}, "not b, which batch 1 itself wrote"
