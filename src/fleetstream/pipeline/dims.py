"""The reference data in the running pipeline (the car dimension and the speed zones): reloaded in
the background, and the queries that hold it in their plan restarted when it changes.

Silver's ``foreachBatch`` asks :class:`DimsCache` for the dimension at every batch, so a reload
reaches its next batch. The alert-data publisher is a plain Kafka -> Kafka query (no Python per
batch: the cheapest plan there is, and the only kind real-time mode runs): its plan holds the
dimension it started with, so :class:`DimsBoundQuery` restarts it with the new one, right after a
batch ends, so that it resumes from its checkpoint with almost nothing to read again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.errors import StreamingQueryException
from pyspark.errors.exceptions.captured import StreamingQueryException as CapturedStreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from fleetstream.pipeline.enrich import Reference, car_dimension, dims_fingerprint, read_dims, read_zones_at

log = logging.getLogger(__name__)


@dataclass
class DimsCache:
    """The reference data (:class:`Reference`: the car dimension and the zones), reloaded from the
    dims location at most every ``refresh_s`` seconds.

    The first load happens in the caller; later reloads run in a background thread, so that no
    batch waits the second or two a reload takes (reading the files, a Spark job or three): a
    batch gets the dimension loaded last, and the next batch after a reload the new one.
    ``version`` counts the reloads that changed it (the same rows again do not count).

    A reload first lists the files (sizes and modification times): when none changed since the
    last read, it reads nothing. A read runs Spark jobs on the cores the queries use, which
    delayed the alert publisher's batch by up to a second, once a minute (docs/benchmarks.md).
    ``reads`` counts the reads."""

    spark: SparkSession
    location: str
    refresh_s: float = 60.0
    version: int = 0
    reads: int = 0
    _frame: Reference | None = None
    _digest: str = ""
    _fingerprint: str = ""
    _loaded: float = 0.0
    _reload: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> Reference:
        """The reference data; only the first load's failure is raised."""
        with self._lock:
            if self._frame is None:
                fingerprint = dims_fingerprint(self.spark, self.location)
                self._frame, self._digest = self._load()
                self._fingerprint, self._loaded = fingerprint, time.monotonic()
            elif time.monotonic() - self._loaded > self.refresh_s and self._reload is None:
                self._reload = threading.Thread(target=self._reload_now, name="dims-reload", daemon=True)
                self._reload.start()
            return self._frame

    def join(self, timeout: float | None = None) -> None:
        """Wait for a reload under way, if any."""
        reload = self._reload
        if reload is not None:
            reload.join(timeout)

    def _load(self) -> tuple[Reference, str]:
        """The reference data and its rows' digest. (The caller lists the files before: a file rewritten
        during the read then differs from that listing next time, and is read again.)"""
        self.reads += 1
        # Read now, into the driver: a frame over the files would read them again later, when they
        # may have changed or gone. The dimension is small (one row per car).
        loaded = car_dimension(read_dims(self.spark, self.location))
        rows = sorted(loaded.collect(), key=lambda r: str(r["dim_car_id"]))
        zones = read_zones_at(self.spark, self.location)
        digest = hashlib.sha256(repr(([tuple(r) for r in rows], zones)).encode()).hexdigest()
        frame = self.spark.createDataFrame(rows, loaded.schema).cache()
        log.info("reference data loaded from %s: %d cars, %d speed zones", self.location, frame.count(), len(zones))
        return Reference(frame, zones), digest

    def _reload_now(self) -> None:
        """A reload that fails (files half rewritten, store down) keeps the previous dimension and
        is tried again after the interval."""
        frame, digest = None, ""
        try:
            fingerprint = dims_fingerprint(self.spark, self.location)
            if fingerprint != self._fingerprint:  # else nothing changed: nothing is read
                frame, digest = self._load()
        except Exception as exc:  # Spark raises many kinds (analysis, IO, parse)
            log.warning("reference data at %s not reloaded, keeping the previous: %s", self.location, exc)
            fingerprint = self._fingerprint  # so that the next reload reads
        with self._lock:
            self._fingerprint = fingerprint
            if frame is not None and digest == self._digest:
                frame.cars.unpersist()  # the same rows: keep the frame the running plans hold
            elif frame is not None:
                previous, self._frame, self._digest = self._frame, frame, digest
                self.version += 1
                if previous is not None:
                    # a batch still using it recomputes it from its rows, held in the plan
                    previous.cars.unpersist()
            self._loaded, self._reload = time.monotonic(), None


class DimsBoundQuery(StreamingQuery):
    """A stateless streaming query whose plan holds the reference data, restarted with the new data
    when a reload changed it.

    ``build(reference)`` starts the query. The watch thread checks the dimension every ``poll_s``; once
    it changed, it waits until no batch runs or one has ended (at most ``boundary_wait_s``), stops
    the query and starts it again from its checkpoint. The handle
    stays the same: every :class:`StreamingQuery` method answers for the query running now. A
    restart that fails is this query's failure (:meth:`exception`)."""

    def __init__(
        self,
        build: Callable[[Reference], StreamingQuery],
        dims: DimsCache,
        boundary_wait_s: float,
        poll_s: float = 1.0,
    ) -> None:
        self._build, self._dims = build, dims
        self._boundary_wait_s, self._poll_s = boundary_wait_s, poll_s
        self._version = dims.version
        first = build(dims.get())
        super().__init__(first._jsq)
        self.restarts = 0
        self._failure: StreamingQueryException | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._watch = threading.Thread(target=self._watch_dims, name=f"{first.name}-dims", daemon=True)
        self._watch.start()

    def exception(self) -> StreamingQueryException | None:
        return self._failure or super().exception()

    def stop(self) -> None:
        self._closed.set()
        with self._lock:  # not while a restart is under way
            super().stop()
        self._watch.join(10)

    def _batch(self) -> int:
        progress = self.lastProgress
        return -1 if progress is None else int(progress["batchId"])

    def _at_boundary(self, batch: int) -> bool:
        """Between two batches: a batch ended since ``batch``, or none is running (an idle
        micro-batch query; a real-time batch runs all the time)."""
        return self._batch() != batch or not self.status["isTriggerActive"]

    def _watch_dims(self) -> None:
        while not self._closed.wait(self._poll_s):
            self._dims.get()  # starts a reload when one is due
            if self._dims.version == self._version or not self.isActive:
                continue
            batch, until = self._batch(), time.monotonic() + self._boundary_wait_s
            while not self._at_boundary(batch) and time.monotonic() < until and not self._closed.wait(0.05):
                pass
            with self._lock:
                if self._closed.is_set():
                    return
                self._restart()

    def _restart(self) -> None:
        version, reference, name = self._dims.version, self._dims.get(), self.name
        log.info("%s: the reference data changed; restarting it with the new data", name)
        super().stop()
        try:
            query = self._build(reference)
        except Exception as exc:  # whatever start() raises: the query is down, say why
            log.error("%s: not restarted: %s", name, exc)
            self._failure = CapturedStreamingQueryException(
                desc=f"{name} not restarted after a reference data reload: {exc}", stackTrace=traceback.format_exc()
            )
            self._closed.set()
            return
        self._jsq, self._version = query._jsq, version
        self.restarts += 1
