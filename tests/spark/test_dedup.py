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


def _small(
    silver: Silver, recent: RecentIds, batch_id: int, events: list[tuple[str, int]], ids: list[str]
) -> tuple[set[str], bool]:
    """One small batch as silver_batch runs it: look up ``ids`` on the driver, or in Spark when the
    driver cannot tell; append; add the batch's ids on the driver. Returns the answer (checked against
    what a scan of silver gives) and whether the driver gave it."""
    lo, hi = min(t for _, t in events), max(t for _, t in events)
    got = recent.known(batch_id, lo, hi, pa.array(ids))
    if got is not None:
        answer = set(got.to_pylist())
        assert len(got) == len(answer), "distinct"
    else:
        answer = _ids(recent.seen(batch_id, lo, hi)) & set(ids)
    assert answer == silver.expected(batch_id, lo, hi) & set(ids), f"batch {batch_id}"
    silver.rows += [(e, t, batch_id) for e, t in events]
    recent.add(batch_id, None, hi, pa.table({"event_id": [e for e, _ in events], "event_time": [t for _, t in events]}))
    return answer, got is not None


def test_small_batches_look_up_on_the_driver_and_the_ids_move_to_where_the_batch_needs_them(
    spark: SparkSession,
) -> None:
    silver = Silver(spark)
    silver.rows.append(("early", W, -1))  # in silver before this run
    recent = RecentIds(silver.scan, W, merge_every=2, spark=spark)
    step = 3 * 60_000
    # the first batch reads the files once, onto the driver
    assert _small(silver, recent, 0, [("a", W + step)], ["a", "early", "early"]) == ({"early"}, True)
    assert len(silver.scans) == 1
    assert recent.local is not None
    assert not recent.chunks
    assert _small(silver, recent, 1, [("b", W + 2 * step)], ["b", "a"]) == ({"a"}, True)
    # a large batch: the ids go to the executors, and it adds a chunk there
    _write(silver, recent, 2, [("c", W + 3 * step), ("a", W + 3 * step)])
    assert recent.local is None
    assert recent.chunks
    # a small one again: they come back to the driver (one job), with no scan of the files
    assert _small(silver, recent, 3, [("d", W + 4 * step)], ["d", "c", "b"]) == ({"c", "b"}, True)
    assert not recent.chunks
    assert len(silver.scans) == 1
    names = {3: "d"}
    for batch in range(4, 16):  # the ids more than two windows older than the newest are let go
        names[batch] = f"e{batch}"
        # the ids 3 minutes (inside the window) to 12 minutes (outside) before this batch's
        asked = [names[batch], *(names[b] for b in range(batch - 4, batch) if b in names), "early"]
        answer, on_driver = _small(silver, recent, batch, [(names[batch], W + (batch + 1) * step)], asked)
        assert on_driver, f"batch {batch}"
        assert names[batch - 1] in answer
    assert recent.local is not None
    assert "early" not in recent.local["event_id"].to_pylist()
    assert "e15" in recent.local["event_id"].to_pylist()
    # a late event 9 minutes back: its window reaches 19 minutes back, inside the ids kept (20): the
    # driver answers, with the id 18 minutes back
    newest = W + 16 * step
    answer, on_driver = _small(silver, recent, 16, [("late9", newest - 3 * step)], ["e9", "e8"])
    assert on_driver
    assert answer == {"e9"}, "e9 is 18 minutes back, e8 21"
    # an event from long ago reaches further back than the ids kept: the driver cannot tell, the files can
    answer, on_driver = _small(silver, recent, 17, [("late", W), ("now", newest)], ["early", "now"])
    assert answer == {"early"}
    assert not on_driver
    assert len(silver.scans) == 2


def test_ids_too_many_for_the_driver_stay_in_the_executors_until_they_fit(spark: SparkSession) -> None:
    silver = Silver(spark)
    silver.rows += [(f"old{i}", W, -1) for i in range(10)]
    recent = RecentIds(silver.scan, W, merge_every=2, local_max=6, spark=spark)
    # eleven ids in silver's window do not fit in six: the executors answer, and it is not tried again
    assert _small(silver, recent, 0, [("a", W)], ["a", "old1"]) == ({"old1"}, False)
    assert recent.local_blocked
    assert _small(silver, recent, 1, [("b", W)], ["b", "a", "old2"]) == ({"a", "old2"}, False)
    assert len(silver.scans) == 1
    # time moves on: at a merge the old ids fall below the floor, what is left fits, and the next
    # small batch takes the ids to the driver
    step, on_driver = 8 * 60_000, []
    for batch in range(2, 12):
        events = [(f"e{batch}", W + batch * step)]
        answer, driver = _small(silver, recent, batch, events, [f"e{batch}", f"e{batch - 1}"])
        on_driver.append(driver)
        if batch > 2:
            assert answer == {f"e{batch - 1}"}
    assert on_driver[0] is False
    assert on_driver[-1] is True
    assert len(silver.scans) == 1
    # a batch run again after a crash starts from the files, whichever side it asks
    again = RecentIds(silver.scan, W, local_max=6, spark=spark)
    assert again.known(1, W, W, pa.array(["a", "b", "zzz"])) is None, "too many for the driver again"
    assert _ids(again.seen(1, W, W)) & {"a", "b", "zzz"} == {"a"}, "not b, which batch 1 itself wrote"


def test_more_ids_than_the_driver_keeps_go_to_the_executors(spark: SparkSession) -> None:
    silver = Silver(spark)
    recent = RecentIds(silver.scan, W, merge_every=100, local_max=4, spark=spark)
    assert _small(silver, recent, 0, [("a", W), ("b", W)], ["a"]) == (set(), True)
    assert _small(silver, recent, 1, [("c", W), ("d", W)], ["c", "a"]) == ({"a"}, True)
    assert recent.chunks, "five ids (with silver's old one): more than four, moved to the executors"
    assert recent.local is None
    assert recent.local_blocked
    assert _small(silver, recent, 2, [("e", W)], ["e", "b", "d"]) == ({"b", "d"}, False)
    assert len(silver.scans) == 1
