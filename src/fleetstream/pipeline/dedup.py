"""The event_ids silver has taken in recently, kept in Spark's memory: silver's dedup lookup.

Silver's batch asks which of its event_ids silver already holds within the dedup window around the
batch's event times (``DEDUP_WINDOW_MS`` either side). Reading that from silver's own files costs a
scan of every event of the window (ten minutes and more of traffic) in every batch, which grows with
the input rate: at a few thousand events/s the scan alone outlasts the trigger interval.

:class:`RecentIds` reads the window from silver once, at the stream's first batch (or when a batch
is run again), then keeps each batch's first copies (``event_id``, ``event_time``) as a small chunk
in the executors' memory (spilled to disk when short of it). Every ``merge_every`` batches the chunks
are merged into one and the ids more than two windows older than the newest event are let go. A
batch that reaches further back than the ids kept (an event older than that) falls back to the
scan, so the answer is always the one the scan gives.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fleetstream.pipeline.runtime import with_values

# (lo_ms, hi_ms or None for no upper bound, batch_id) -> silver's event_id and event_time between two
# event times, leaving out the rows the batch itself wrote (a batch run again after a crash may have
# written some already)
Scan = Callable[[int, int | None, int], DataFrame]


class RecentIds:
    def __init__(self, scan: Scan, window_ms: int, merge_every: int = 16) -> None:
        self.scan, self.window_ms, self.merge_every = scan, window_ms, merge_every
        self.chunks: list[DataFrame] = []
        self.floor_ms = 0  # the ids kept reach back to this event time
        self.newest_ms = 0  # the newest event_time of the batches added
        self.next_batch: int | None = None  # the batch the chunks are ready for

    def seen(self, batch_id: int, lo_ms: int, hi_ms: int) -> DataFrame:
        """The event_ids silver holds within the dedup window of a batch whose events run from
        ``lo_ms`` to ``hi_ms``, written by the batches before ``batch_id``."""
        lo, hi = lo_ms - self.window_ms, hi_ms + self.window_ms
        if self.next_batch != batch_id:  # the first batch here, or a batch run again: start from the files
            first = self.scan(lo, None, batch_id).select("event_id", "event_time")
            self.chunks = [first.localCheckpoint(eager=True)]
            self.floor_ms, self.newest_ms, self.next_batch = lo, hi_ms, batch_id
        elif lo < self.floor_ms:  # further back than the ids kept: read the files
            return self.scan(lo, hi, batch_id).select("event_id")
        return _between(reduce(DataFrame.unionByName, self.chunks), lo, hi).select("event_id")

    @staticmethod
    def chunk(first: DataFrame) -> DataFrame:
        """A batch's first copies, materialised (run it beside the batch's writes, then :meth:`add` it)."""
        return first.select("event_id", "event_time").localCheckpoint(eager=True)

    def add(self, batch_id: int, chunk: DataFrame | None = None, hi_ms: int = 0) -> None:
        """Batch ``batch_id`` is written, with ``chunk`` its first copies (none when it had no valid row)."""
        if self.next_batch != batch_id:  # no ids kept yet (nothing valid so far): the next batch reads the files
            self.next_batch = None
            return
        self.next_batch = batch_id + 1
        if chunk is None:
            return
        self.chunks.append(chunk)
        self.newest_ms = max(self.newest_ms, hi_ms)
        if len(self.chunks) > self.merge_every:
            floor = max(self.floor_ms, self.newest_ms - 2 * self.window_ms)
            merged = _between(reduce(DataFrame.unionByName, self.chunks), floor, None)
            self.chunks, self.floor_ms = [merged.localCheckpoint(eager=True)], floor


def _between(ids: DataFrame, lo_ms: int, hi_ms: int | None) -> DataFrame:
    """The rows of ``ids`` whose event_time lies between two times (``hi_ms`` None: no upper bound),
    the bounds given as per-batch values (:mod:`fleetstream.pipeline.runtime`), not literals."""
    inside = (F.col("event_time") >= F.col("_lo")) & (F.col("_hi").isNull() | (F.col("event_time") <= F.col("_hi")))
    return with_values(ids, _lo=lo_ms, _hi=hi_ms).where(inside).drop("_lo", "_hi")
