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

A quiet fleet's batches are small and deduplicated on the driver (:func:`~fleetstream.pipeline.silver.
later_copies_local`); for them the ids are kept on the driver too, as an Arrow table, and looked up
there (:meth:`RecentIds.known`): no Spark job, where the executors' chunks cost one to look up (a
union, a broadcast join, a shuffle: about 0.8 s of CPU per batch on a quiet fleet,
docs/benchmarks.md "Session 54") and one to keep. The ids move to wherever the batch at hand
needs them: to the driver when a small batch comes and they fit (``local_max`` rows), to the
executors when a large batch comes or they outgrow the driver (a fleet of more than about 800
events/s in small batches); from there they come back only once a merge has cut them to a size
that fits.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream.pipeline.runtime import with_values

if TYPE_CHECKING:
    import pyarrow as pa

# (lo_ms, hi_ms or None for no upper bound, batch_id) -> silver's event_id and event_time between two
# event times, leaving out the rows the batch itself wrote (a batch run again after a crash may have
# written some already)
Scan = Callable[[int, int | None, int], DataFrame]


#: ids kept on the driver at most (event_id and event_time: about 50 bytes each): two dedup windows
#: of up to about 800 events/s
LOCAL_MAX = 1_000_000


class RecentIds:
    def __init__(
        self,
        scan: Scan,
        window_ms: int,
        merge_every: int = 16,
        local_max: int = LOCAL_MAX,
        spark: SparkSession | None = None,
    ) -> None:
        """``spark``: the session the driver's ids go back to the executors by (default: the active one)."""
        self.scan, self.window_ms, self.merge_every, self.local_max = scan, window_ms, merge_every, local_max
        self.spark = spark
        self.chunks: list[DataFrame] = []  # ids kept in the executors' memory
        self.local: pa.Table | None = None  # ids kept on the driver (event_id, event_time)
        self.local_blocked = False  # the ids did not fit on the driver: not tried again until they do
        self.local_adds = 0  # batches added to the driver's ids since they were last cut to the floor
        self.floor_ms = 0  # the ids kept reach back to this event time
        self.newest_ms = 0  # the newest event_time of the batches added
        self.next_batch: int | None = None  # the batch the ids kept are ready for

    def seen(self, batch_id: int, lo_ms: int, hi_ms: int) -> DataFrame:
        """The event_ids silver holds within the dedup window of a batch whose events run from
        ``lo_ms`` to ``hi_ms``, written by the batches before ``batch_id``."""
        lo, hi = lo_ms - self.window_ms, hi_ms + self.window_ms
        if self.next_batch != batch_id:  # the first batch here, or a batch run again: start from the files
            first = self.scan(lo, None, batch_id).select("event_id", "event_time")
            self._restart([first.localCheckpoint(eager=True)], lo, hi_ms, batch_id)
        elif lo < self.floor_ms:  # further back than the ids kept: read the files
            return self.scan(lo, hi, batch_id).select("event_id")
        elif self.local is not None:
            self._to_executors()
        return _between(reduce(DataFrame.unionByName, self.chunks), lo, hi).select("event_id")

    def known(self, batch_id: int, lo_ms: int, hi_ms: int, ids: pa.Array) -> pa.Array | None:
        """The distinct ``ids`` (the event_ids of a small batch's valid rows, whose events run from
        ``lo_ms`` to ``hi_ms``) that silver holds within the dedup window, written by the batches
        before ``batch_id``, looked up on the driver; None when the ids kept do not fit there (or the
        batch reaches further back than they do): then :meth:`seen` answers."""
        import pyarrow as pa
        import pyarrow.compute as pc

        lo, hi = lo_ms - self.window_ms, hi_ms + self.window_ms
        if self.next_batch != batch_id:
            first = self.scan(lo, None, batch_id).select("event_id", "event_time")
            table = first.limit(self.local_max + 1).toArrow()
            if table.num_rows > self.local_max:
                self._restart([first.localCheckpoint(eager=True)], lo, hi_ms, batch_id)
                self.local_blocked = True
                return None
            self._restart([], lo, hi_ms, batch_id)
            self.local = _ids_table(table)
        elif lo < self.floor_ms:
            return None
        elif self.chunks:  # to the driver, when they fit
            if self.local_blocked:
                return None
            table = reduce(DataFrame.unionByName, self.chunks).limit(self.local_max + 1).toArrow()
            if table.num_rows > self.local_max:
                self.local_blocked = True
                return None
            held = [_ids_table(table), *([self.local] if self.local is not None else [])]
            self.chunks, self.local = [], pa.concat_tables(held)
        if self.local is None or self.local.num_rows == 0:
            return pa.array([], pa.string())
        times = self.local["event_time"]
        near = self.local["event_id"].filter(pc.and_(pc.greater_equal(times, lo), pc.less_equal(times, hi)))
        # (the batch's few ids hashed, the ids kept probed: not a hash of up to a million per batch)
        return pc.unique(near.filter(pc.is_in(near, value_set=pc.unique(ids.cast(pa.string())))).combine_chunks())

    def _restart(self, chunks: list[DataFrame], floor_ms: int, newest_ms: int, batch_id: int) -> None:
        self.chunks, self.local, self.local_blocked, self.local_adds = chunks, None, False, 0
        self.floor_ms, self.newest_ms, self.next_batch = floor_ms, newest_ms, batch_id

    def _to_executors(self) -> None:
        """The ids kept on the driver moved to the executors' memory (one chunk)."""
        if self.local is not None and self.local.num_rows:
            spark = self.spark or SparkSession.active()
            self.chunks.append(spark.createDataFrame(self.local).localCheckpoint(eager=True))
        self.local, self.local_adds = None, 0

    @staticmethod
    def chunk(first: DataFrame) -> DataFrame:
        """A batch's first copies, materialised (run it beside the batch's writes, then :meth:`add` it)."""
        return first.select("event_id", "event_time").localCheckpoint(eager=True)

    def add(self, batch_id: int, chunk: DataFrame | None = None, hi_ms: int = 0, local: pa.Table | None = None) -> None:
        """Batch ``batch_id`` is written, with ``chunk`` its first copies (:meth:`chunk`), or ``local``
        the same on the driver (event_id, event_time; a small batch's); neither when it had no valid row."""
        if self.next_batch != batch_id:  # no ids kept yet (nothing valid so far): the next batch reads the files
            self.next_batch = None
            return
        self.next_batch = batch_id + 1
        if chunk is None and local is None:
            return
        self.newest_ms = max(self.newest_ms, hi_ms)
        floor = max(self.floor_ms, self.newest_ms - 2 * self.window_ms)
        if local is not None:
            self._add_local(_ids_table(local), floor)
        if chunk is not None:
            self.chunks.append(chunk)
        if len(self.chunks) > self.merge_every:
            merged = _between(reduce(DataFrame.unionByName, self.chunks), floor, None).localCheckpoint(eager=True)
            self.chunks, self.floor_ms = [merged], floor
            if self.local_blocked:  # (counting the merged chunk is a small job; fetching it is not)
                on_driver = self.local.num_rows if self.local is not None else 0
                self.local_blocked = merged.count() + on_driver > self.local_max

    def _add_local(self, ids: pa.Table, floor: int) -> None:
        """A small batch's ids kept on the driver (beside the chunks when there are any). Every
        ``merge_every`` batches the ids more than two windows older than the newest event are let go
        (and the floor raised to them); more than ``local_max`` ids go to the executors."""
        import pyarrow as pa
        import pyarrow.compute as pc

        held = pa.concat_tables([self.local, ids]) if self.local is not None else ids
        self.local, self.local_adds = held, self.local_adds + 1
        if self.local_adds >= self.merge_every:
            # (the chunks, when there are any, are cut at their merge; until then they hold older ids
            # than the floor says, which no look-up asks for)
            self.local = held.filter(pc.greater_equal(held["event_time"], floor)).combine_chunks()
            self.floor_ms, self.local_adds = max(self.floor_ms, floor), 0
        if self.local.num_rows > self.local_max:  # a fleet too busy for the driver: to the executors
            self._to_executors()
            self.local_blocked = True


def _ids_table(table: pa.Table) -> pa.Table:
    """``table``'s event_id (as text) and event_time (int64), the columns the driver keeps."""
    import pyarrow as pa

    return pa.table(
        {"event_id": table["event_id"].cast(pa.string()), "event_time": table["event_time"].cast(pa.int64())}
    )


def _between(ids: DataFrame, lo_ms: int, hi_ms: int | None) -> DataFrame:
    """The rows of ``ids`` whose event_time lies between two times (``hi_ms`` None: no upper bound),
    the bounds given as per-batch values (:mod:`fleetstream.pipeline.runtime`), not literals."""
    inside = (F.col("event_time") >= F.col("_lo")) & (F.col("_hi").isNull() | (F.col("event_time") <= F.col("_hi")))
    return with_values(ids, _lo=lo_ms, _hi=hi_ms).where(inside).drop("_lo", "_hi")
