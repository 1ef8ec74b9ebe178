"""RecentIds, silver's dedup lookup kept in memory: every answer equals what a scan of silver gives."""

from __future__ import annotations

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
