"""`fleetstream stream`: one Spark application, several checkpointed queries, each runnable alone.

- bronze:  Kafka sensors-sample -> Delta bronze/telemetry (append, exactly once through the checkpoint)
- silver:  bronze -> parse, validate, enrich, deduplicate -> silver/telemetry + samples-enriched;
           rejected -> quarantine/telemetry + sensors-dlq; later copies of an event -> silver/duplicates
- alerts:  silver -> rules -> silver/alerts + alert-data
- gold:    silver and alerts -> windowed KPIs and each car's latest state

When silver runs in the same application as alerts (and gold), the alerts and each car's latest
state are computed inside silver's micro-batch, from the rows it has just written: one read of the
data and two streaming queries fewer. Started alone, alerts and the car state run as their own
queries on the silver table, which is how they scale out to another application.

The alert-data publisher (the latency path: Kafka sensors -> rules -> Kafka alert-data, micro-batch
or real-time) is a query of its own, named ``alert-data`` in ``--only``. It can run in a Spark
application of its own (``--separate-alert-app``), so that the lake queries' jobs never hold it up.

Delta writes inside foreachBatch carry the batch id as a Delta transaction version, so a batch that
is retried after a crash is not written twice. Kafka writes are at least once; their ids (event_id,
alert_id) let consumers drop repeats.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.streaming.readwriter import DataStreamWriter
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType, TimestampType

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.pipeline import ALERTS_TRIGGER_S
from fleetstream.pipeline import transforms as T
from fleetstream.pipeline.dedup import RecentIds
from fleetstream.pipeline.dims import DimsBoundQuery, DimsCache
from fleetstream.pipeline.enrich import enrich
from fleetstream.pipeline.session import publisher_session
from fleetstream.rules.engine import Rule, alerts, load_rules

log = logging.getLogger(__name__)
QUERIES = ("bronze", "silver", "alerts", "gold")
PUBLISHER = "alert-data"  # the alert-data publisher alone (part of "alerts" unless it runs elsewhere)
ALERT_MODES = ("microbatch", "realtime")  # who publishes alert-data: the micro-batch query, or a real-time one
WATERMARK = "10 minutes"
DEDUP_WINDOW_MS = 10 * 60 * 1000  # a copy of an event up to this far apart in event time is a duplicate


def wants_publisher(chosen: set[str], alerts_mode: str, separate: bool, fused: bool, publish: bool) -> bool:
    """Whether an application running the ``chosen`` queries starts the alert-data publisher query:
    asked for by name, or as part of "alerts" (unless another application runs it). A micro-batch
    alerts query without silver beside it (not ``fused``) publishes from its own batch instead.

    >>> wants_publisher({"bronze", "silver", "alerts"}, "microbatch", False, True, True)
    True
    >>> wants_publisher({"bronze", "silver", "alerts"}, "microbatch", True, True, True)
    False
    """
    if PUBLISHER in chosen:
        return True
    if "alerts" not in chosen or separate:
        return False
    return alerts_mode == "realtime" or (fused and publish)


@dataclass(frozen=True)
class Lake:
    """Where the tables and checkpoints live. ``bronze_root``, when set, is where bronze is read
    from instead (a replay rebuilds everything after bronze into a fresh root)."""

    root: str
    bronze_root: str | None = None

    def table(self, name: str) -> str:
        root = self.bronze_root if name.startswith("bronze/") and self.bronze_root else self.root
        return f"{root.rstrip('/')}/{name}"

    def checkpoint(self, query: str) -> str:
        return f"{self.root.rstrip('/')}/_checkpoints/{query}"


class _StepClock:
    """Durations of the steps of one micro-batch, logged at debug level (``fleetstream -v stream``)."""

    def __init__(self, what: str) -> None:
        self.what, self.last = what, time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.steps.append((step, now - self.last))
        self.last = now

    def log(self) -> None:
        log.debug("%s: %s", self.what, ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.steps))


class BatchInterruptedError(Exception):
    """A micro-batch cut short because its query is being stopped (Ctrl-C, SIGTERM, a test).

    Spark recognises an interrupted Python ``foreachBatch`` by matching the error's text with a
    regular expression (``StreamExecution.PROXY_ERROR``, SPARK-39218) that recurses once per
    character after its first words. The text of an interrupted Delta write, with its Java stack
    trace, is long enough to overflow the stream thread's stack: the thread then dies with a
    ``StackOverflowError`` printed to stderr instead of stopping quietly. This exception's text
    is short and ends with the words Spark looks for, so the stop is recognised as one. The
    batch is not committed and runs again on restart; its Delta writes are idempotent.
    """

    def __init__(self, function: str, batch_id: int) -> None:
        super().__init__(function, batch_id)
        self.function, self.batch_id = function, batch_id

    def __str__(self) -> str:
        return f"{self.function} batch {self.batch_id} stopped; {_SPARK_INTERRUPTED}"


# the words Spark's PROXY_ERROR pattern needs, with nothing after them to recurse over
_SPARK_INTERRUPTED = (
    "py4j.protocol.Py4JJavaError: An error occurred while calling foreachBatch: java.lang.InterruptedException"
)
_INTERRUPTIONS = ("java.lang.InterruptedException", "java.io.InterruptedIOException",
                  "java.nio.channels.ClosedByInterruptException", "cancelled part of cancelled job group")  # fmt: skip


def stoppable(function: Callable[[DataFrame, int], None]) -> Callable[[DataFrame, int], None]:
    """A foreachBatch function whose interruption by a query stop reads as one (:class:`BatchInterruptedError`)."""
    from py4j.protocol import Py4JError  # type: ignore[import-untyped]

    @functools.wraps(function)
    def run(batch: DataFrame, batch_id: int) -> None:
        try:
            function(batch, batch_id)
        except Py4JError as exc:
            try:
                text = str(exc)
            except Exception:  # the gateway may be going away too
                text = ""
            if any(word in text for word in _INTERRUPTIONS):
                raise BatchInterruptedError(getattr(function, "__name__", "foreachBatch"), batch_id) from None
            raise

    return run


Trigger = dict[str, object]  # processingTime="2 seconds" | availableNow=True


def _start(writer: DataStreamWriter, trigger: Trigger, path: str | None = None) -> StreamingQuery:
    """Apply the trigger and start (one place for the keyword-only trigger overloads)."""
    started = writer.trigger(**trigger)  # type: ignore[call-overload]
    query: StreamingQuery = started.start(path) if path else started.start()
    return query


def _kafka_options(settings: Settings) -> dict[str, str]:
    conf = settings.kafka.client_config()
    return {f"kafka.{k}": v for k, v in conf.items() if k in ("bootstrap.servers", "security.protocol")}


def _write_kafka(df: DataFrame, settings: Settings) -> None:
    """Write ``topic``, ``key``, ``value`` rows to Kafka."""
    df.write.format("kafka").options(**_kafka_options(settings)).save()


def _append_delta(df: DataFrame, path: str, app_id: str, batch_id: int, partition: str | None = None) -> None:
    writer = df.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", batch_id)
    if partition:
        writer = writer.partitionBy(partition)
    writer.save(path)


def at_once(steps: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Run independent steps of one micro-batch (writes to different tables) at the same time, and
    return each step's result by its name.

    Each step runs in a thread of its own, so Spark schedules their jobs side by side: a step's
    fixed costs (planning, a Delta commit) overlap the others' work when a core is free. (With
    every core busy, as when a backlog drains, it measured the same as one after the other.) The
    threads inherit the batch's Spark local properties (its job group), so stopping the query
    cancels their jobs too.
    Every step is waited for; then the first failure, if any, is raised, which fails the batch: it
    runs again on restart and its writes are idempotent (Delta transaction versions).
    """
    from pyspark import InheritableThread

    results: dict[str, object] = {}
    failures: list[BaseException] = []

    def guarded(name: str, step: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                results[name] = step()
            except BaseException as exc:  # raised in the batch's thread below
                failures.append(exc)

        return run

    named = list(steps.items())
    threads = [InheritableThread(target=guarded(name, step), daemon=True) for name, step in named[1:]]
    for thread in threads:
        thread.start()
    if named:
        guarded(*named[0])()  # the first in this thread
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


class Pipeline:
    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        rules: list[Rule] | None = None,
        max_offsets: int | None = None,
        bronze_from: str | None = None,
        publish: bool = True,
        alerts_mode: str = "microbatch",
        separate_publisher: bool = False,
        realtime_checkpoint_s: float = 300.0,
        alerts_trigger_s: float = ALERTS_TRIGGER_S,
    ) -> None:
        self.spark = spark
        self.max_offsets = max_offsets
        self.settings = settings
        self.lake = Lake(settings.lake.root, bronze_from)
        self.rules = rules or load_rules()
        self.dims = DimsCache(spark, settings.lake.dims, settings.lake.dims_refresh_s)
        self.recent_ids = RecentIds(self._silver_seen, DEDUP_WINDOW_MS)  # silver's dedup lookup
        self.publish = publish
        if alerts_mode not in ALERT_MODES:
            raise FleetstreamError(f"alerts mode {alerts_mode!r}: choose {' or '.join(ALERT_MODES)}")
        self.alerts_mode = alerts_mode
        # True when another application runs the alert-data publisher: "alerts" here then means
        # the Delta alerts table only.
        self.separate_publisher = separate_publisher
        # Real-time mode's batch length: its offsets are checkpointed (and its progress reported)
        # at each batch end, and the next batch's start holds alerts up for a moment (docs/rules.md).
        self.realtime_checkpoint_s = realtime_checkpoint_s
        # Micro-batch mode: the alert-data publisher's interval (the lake queries' is start()'s).
        self.alerts_trigger_s = alerts_trigger_s
        self.topics = settings.kafka.topics
        # Set by start(): when silver runs in this application, the alerts and the cars' latest
        # state are computed inside silver's batch (no second read of silver, one query fewer).
        self.fused_alerts = False
        self.fused_state = False
        # Whether silver's batch publishes the alerts it computes to alert-data: in catch-up runs
        # (available-now, replay). A running stream publishes them from a query of their own.
        self.publish_in_batch = False

    def _sensors(self, session: SparkSession | None = None, /, **options: str) -> DataFrame:
        """The sensors-sample topic as a stream (in ``session``, by default the pipeline's), with the
        given Kafka source options."""
        reader = (session or self.spark).readStream.format("kafka").options(**_kafka_options(self.settings))
        return reader.option("subscribe", self.topics.sensors).options(**options).load()

    # --- bronze ------------------------------------------------------------------------------
    def bronze(self, trigger: Trigger) -> StreamingQuery:
        cap = {"maxOffsetsPerTrigger": str(self.max_offsets)} if self.max_offsets else {}
        source = self._sensors(startingOffsets="earliest", failOnDataLoss="true", **cap)
        return _start(
            T.to_bronze(source)
            .writeStream.format("delta")
            .queryName("bronze")
            .option("checkpointLocation", self.lake.checkpoint("bronze"))
            .partitionBy("ingest_date"),
            trigger,
            self.lake.table("bronze/telemetry"),
        )

    # --- silver ------------------------------------------------------------------------------
    def process_silver(self, batch: DataFrame, batch_id: int) -> None:
        """One micro-batch of parsed bronze rows (``T.parse_bronze``): enrich, deduplicate, write.

        Parsing is part of the streaming query (``silver``), so its large plan is analysed once
        when the query starts, not again in every batch.

        When the alerts ride in this batch, it writes them to the Delta alerts table (first copies
        only, after deduplication); in catch-up runs (available-now, replay) it also publishes them
        to alert-data, with the enriched and dead-letter records. A running stream publishes them
        from a query of its own (``alerts_published``), which does not wait for this batch.
        """
        clock = _StepClock(f"silver batch {batch_id}")
        # Materialised once (lineage cut), so that each action below plans a small tree.
        # The payload is kept once, as text, and only where the quarantine needs it (rejected rows).
        checked = enrich(batch, self.dims.get()).drop("value")
        checked = checked.withColumn("raw", F.when(F.col("reason").isNotNull(), F.col("raw")))
        checked = checked.localCheckpoint(eager=True)
        clock.mark("parse")
        # Valid rows keep silver's columns only: every later step reads them, some several times.
        valid = checked.where(F.col("reason").isNull()).select(*[c for c in T.SILVER_COLUMNS if c != "silver_batch"])
        stats = checked.agg(
            F.min(F.when(F.col("reason").isNull(), F.col("event_time"))).alias("lo"),
            F.max(F.when(F.col("reason").isNull(), F.col("event_time"))).alias("hi"),
            F.count("reason").alias("rejected"),
        ).first()
        if stats is None or (stats["lo"] is None and not stats["rejected"]):
            self.recent_ids.add(batch_id)
            clock.log()
            return  # nothing at all in this batch
        silver_path = self.lake.table("silver/telemetry")
        seen = None
        if stats["lo"] is not None:
            seen = self.recent_ids.seen(batch_id, stats["lo"], stats["hi"])
        # Only the copies' coordinates are materialised; the rows are read from ``checked`` again.
        copies_at = T.later_copies(valid, seen).localCheckpoint(eager=True)
        copies = copies_at.count()
        clock.mark("dedup")
        first, later = T.split_copies(valid, copies_at) if copies else (valid, None)
        first = first.withColumn("silver_batch", F.lit(batch_id).cast("long")).select(*T.SILVER_COLUMNS)
        quarantined = T.quarantine_rows(checked.where(F.col("reason").isNotNull()))
        # The writes below depend only on the frames above, not on each other: they run at once.
        writes: dict[str, Callable[[], object]] = {
            "silver": lambda: _append_delta(first, silver_path, "silver", batch_id, "event_date")
        }
        fired = alerts(first, self.rules) if self.fused_alerts or self.fused_state else None
        if self.fused_alerts and fired is not None:
            writes["alerts"] = lambda: _append_delta(
                fired, self.lake.table("silver/alerts"), "alerts-in-silver", batch_id
            )
        if self.fused_state and fired is not None:
            writes["car_state"] = lambda: self._write_car_state(first, fired, batch_id)
        if stats["rejected"]:
            writes["quarantine"] = lambda: _append_delta(
                quarantined, self.lake.table("quarantine/telemetry"), "quarantine", batch_id, "quarantine_date"
            )
        if later is not None:
            duplicates = T.duplicate_rows(later)
            writes["duplicates"] = lambda: _append_delta(
                duplicates, self.lake.table("silver/duplicates"), "duplicates", batch_id
            )
        if self.publish:
            messages = T.enriched_messages(first, self.topics.enriched).unionByName(
                T.dlq_messages(quarantined, self.topics.dlq)
            )
            if self.fused_alerts and self.publish_in_batch and fired is not None:
                messages = messages.unionByName(T.alert_messages(fired, self.topics.alerts))
            writes["kafka"] = lambda: _write_kafka(messages, self.settings)
        if stats["lo"] is not None:  # this batch's first copies, for the next batches' dedup
            writes["dedup ids"] = lambda: self.recent_ids.chunk(first)
        chunk = at_once(writes).get("dedup ids")
        self.recent_ids.add(batch_id, chunk if isinstance(chunk, DataFrame) else None, stats["hi"] or 0)
        clock.mark(f"write {'+'.join(writes)}")
        clock.log()

    def _silver_seen(self, lo_ms: int, hi_ms: int | None, batch_id: int) -> DataFrame:
        """Silver's event_ids and event times between two event times (``hi_ms`` None: no upper
        bound), read from its files: what :class:`RecentIds` starts from.

        The version read is pinned: the frames built on it may be evaluated lazily, after this
        batch's own append. Rows this batch id wrote are left out: after a crash the batch is run
        again, its silver append may already be in, and it must not count itself as a duplicate.
        Delta's file statistics on event_ts skip the files outside the window.
        """
        path = self.lake.table("silver/telemetry")
        lo = F.timestamp_millis(F.lit(lo_ms))
        rows = (
            self.spark.read.format("delta")
            .option("versionAsOf", _delta_version(self.spark, path))
            .load(path)
            .where((F.col("event_date") >= F.to_date(lo)) & (F.col("event_ts") >= lo))
            .where(F.col("silver_batch") != F.lit(batch_id))
        )
        if hi_ms is not None:
            hi = F.timestamp_millis(F.lit(hi_ms))
            rows = rows.where((F.col("event_date") <= F.to_date(hi)) & (F.col("event_ts") <= hi))
        return rows.select("event_id", "event_time")

    def silver(self, trigger: Trigger) -> StreamingQuery:
        bronze = self.spark.readStream.format("delta").load(self.lake.table("bronze/telemetry"))
        return _start(
            T.parse_bronze(bronze)
            .writeStream.queryName("silver")
            .option("checkpointLocation", self.lake.checkpoint("silver"))
            .foreachBatch(stoppable(self.process_silver)),
            trigger,
            None,
        )

    # --- alerts ------------------------------------------------------------------------------
    def process_alerts(self, batch: DataFrame, batch_id: int) -> None:
        fired = alerts(batch, self.rules).persist()
        _append_delta(fired, self.lake.table("silver/alerts"), "alerts", batch_id)
        if self.publish and self.alerts_mode == "microbatch" and not self.separate_publisher:
            _write_kafka(T.alert_messages(fired, self.topics.alerts), self.settings)
        fired.unpersist()

    def alerts(self, trigger: Trigger) -> StreamingQuery:
        return _start(
            self.spark.readStream.format("delta")
            .load(self.lake.table("silver/telemetry"))
            .writeStream.queryName("alerts")
            .option("checkpointLocation", self.lake.checkpoint("alerts"))
            .foreachBatch(stoppable(self.process_alerts)),
            trigger,
            None,
        )

    def alert_data(self, sensors: DataFrame, cars: DataFrame, detected_at: Column | None = None) -> DataFrame:
        """The publisher's plan over the sensors stream: validate -> join the broadcast car
        dimension -> rules -> alert-data messages. Stateless, no Python per batch."""
        checked = T.check_telemetry(T.to_bronze(sensors), cars).where(F.col("reason").isNull())
        return T.alert_messages(alerts(checked, self.rules, detected_at=detected_at), self.topics.alerts)

    def alerts_published(self, trigger: Trigger) -> StreamingQuery:
        """alert-data from a stateless micro-batch query of its own: Kafka sensors -> parse ->
        enrich -> rules -> Kafka. This is the latency path of micro-batch mode: it does not wait
        for bronze, silver's Delta commits or gold; its jobs run in a scheduler pool of their own
        (``alerts``), so that they are not queued behind the other queries' jobs, and its offsets
        are checkpointed in the background (Spark's asynchronous progress tracking, Kafka sinks
        only), not between batches. The Delta alerts table is still written by silver's batch,
        after deduplication; here a repeated event publishes its alert again, with the same
        alert_id. It reads the topic from its start on the first run, as bronze does, then resumes
        from its checkpoint. A reference data reload that changes the cars restarts it
        (:class:`~fleetstream.pipeline.dims.DimsBoundQuery`). It is planned in a session of its own,
        with the SQL settings of :data:`~fleetstream.pipeline.session.PUBLISHER_SQL_CONF`."""
        sensors = self._sensors(publisher_session(self.spark), startingOffsets="earliest", failOnDataLoss="false")

        def build(cars: DataFrame) -> StreamingQuery:
            context = self.spark.sparkContext
            context.setLocalProperty("spark.scheduler.pool", "alerts")  # the query's thread inherits it
            try:
                return _start(
                    self.alert_data(sensors, cars)
                    .writeStream.format("kafka")
                    .queryName("alerts")
                    .options(**_kafka_options(self.settings))
                    .option("checkpointLocation", self.lake.checkpoint("alerts_kafka"))
                    .option("asyncProgressTrackingEnabled", "true"),
                    trigger,
                )
            finally:
                context.setLocalProperty("spark.scheduler.pool", None)  # type: ignore[arg-type]

        return DimsBoundQuery(build, self.dims, boundary_wait_s=30.0)

    def alerts_realtime(self) -> StreamingQuery:
        """The stateless alert path in Spark's real-time mode: Kafka sensors -> validate -> join the
        broadcast car dimension -> rules -> Kafka alert-data, record by record.

        It starts at the latest offsets on its first run (a new alerting path does not replay
        history), then resumes from its checkpoint. A reference data reload that changes the cars
        restarts it at its next batch end (so it reads nothing twice). What it gives up against
        micro-batch is in docs/rules.md: no dedup against silver, new reference data only from the
        next real-time batch, Kafka only (Delta alerts stay with the micro-batch query).
        """
        sensors = self._sensors(startingOffsets="latest", failOnDataLoss="false")
        # a real-time batch lasts minutes: the batch's start time (current_timestamp) would be stale
        wall_clock = F.timestamp_millis(F.expr("reflect('java.lang.System', 'currentTimeMillis')").cast("long"))

        def build(cars: DataFrame) -> StreamingQuery:
            return _start(
                self.alert_data(sensors, cars, detected_at=wall_clock)
                .writeStream.format("kafka")
                .queryName("alerts_realtime")
                .options(**_kafka_options(self.settings))
                .option("checkpointLocation", self.lake.checkpoint("alerts_realtime"))
                .outputMode("update"),
                {"realTime": f"{self.realtime_checkpoint_s:g} seconds"},
            )

        return DimsBoundQuery(build, self.dims, boundary_wait_s=self.realtime_checkpoint_s + 60)

    # --- gold --------------------------------------------------------------------------------
    def gold(self, trigger: Trigger) -> list[StreamingQuery]:
        silver = self.spark.readStream.format("delta").load(self.lake.table("silver/telemetry"))
        per_car = T.car_windows(silver.withWatermark("event_ts", WATERMARK))
        queries = [
            _start(
                per_car.writeStream.queryName("gold_fleet")
                .outputMode("append")
                .option("checkpointLocation", self.lake.checkpoint("gold_fleet"))
                .foreachBatch(stoppable(self.process_fleet_windows)),
                trigger,
            )
        ]
        alerts_stream = self.spark.readStream.format("delta").load(self.lake.table("silver/alerts"))
        alerts_stream = alerts_stream.withColumn("event_ts", F.timestamp_millis("event_time")).withWatermark(
            "event_ts", WATERMARK
        )
        queries.append(
            _start(
                T.alerts_per_minute(alerts_stream)
                .writeStream.format("delta")
                .queryName("gold_alerts_per_minute")
                .outputMode("append")
                .option("checkpointLocation", self.lake.checkpoint("gold_alerts_per_minute")),
                trigger,
                self.lake.table("gold/alerts_per_minute"),
            )
        )
        if not self.fused_state:
            queries.append(
                _start(
                    self.spark.readStream.format("delta")
                    .load(self.lake.table("silver/telemetry"))
                    .writeStream.queryName("gold_car_state")
                    .option("checkpointLocation", self.lake.checkpoint("gold_car_state"))
                    .foreachBatch(stoppable(self.process_car_state)),
                    trigger,
                )
            )
        return queries

    def process_fleet_windows(self, closed: DataFrame, batch_id: int) -> None:
        """Windows the watermark has closed, one row per car: both fleet tables from them."""
        closed = closed.persist()
        for name, frame in (
            ("speed_by_model", T.speed_by_model(closed, closed)),
            ("cars_by_color", T.cars_by_color(closed, closed)),
        ):
            _append_delta(frame, self.lake.table(f"gold/{name}"), f"gold-{name}", batch_id)
        closed.unpersist()

    def process_car_state(self, batch: DataFrame, batch_id: int) -> None:
        self._write_car_state(batch, alerts(batch, self.rules), batch_id)

    def _write_car_state(self, silver: DataFrame, fired: DataFrame, batch_id: int) -> None:
        """Each car's latest report into gold/car_state: the table is small (one row per car), so it
        is rewritten whole from its last version and this batch's latest rows, a newer report
        winning. One job and one commit, where a MERGE costs several jobs; the batch id as Delta
        transaction version makes a retried batch a no-op."""
        latest = T.latest_per_car(silver, fired)
        path = self.lake.table("gold/car_state")
        app_id = "car-state-" + ("silver" if self.fused_state else "query")
        if _delta_exists(self.spark, path):
            latest = T.newest_per_car(self.spark.read.format("delta").load(path), latest)
            mode = "overwrite"
        else:
            mode = "append"
        latest.write.format("delta").mode(mode).option("txnAppId", app_id).option("txnVersion", batch_id).save(path)

    def bronze_exists(self) -> bool:
        return _delta_exists(self.spark, self.lake.table("bronze/telemetry"))

    def table_counts(self) -> dict[str, int]:
        """Rows in each table of the lake (and in the bronze it reads)."""
        names = ["bronze/telemetry", "silver/telemetry", "quarantine/telemetry", "silver/duplicates", "silver/alerts"]
        names += [f"gold/{g}" for g in ("speed_by_model", "cars_by_color", "alerts_per_minute", "car_state")]
        return {
            name: self.spark.read.format("delta").load(self.lake.table(name)).count()
            for name in names
            if _delta_exists(self.spark, self.lake.table(name))
        }

    def gold_snapshot(self, limit: int = 12) -> dict[str, list[dict[str, object]]]:
        """The newest complete window of each gold table, and the cars' state summed up (for --console)."""
        views: dict[str, list[dict[str, object]]] = {}
        for name, order in (
            ("speed_by_model", F.desc("max_speed")),
            ("cars_by_color", F.desc("cars")),
            ("alerts_per_minute", F.desc("alerts")),
        ):
            path = self.lake.table(f"gold/{name}")
            if not _delta_exists(self.spark, path):
                continue
            table = self.spark.read.format("delta").load(path)
            newest = table.agg(F.max("window_start")).first()
            if newest is None or newest[0] is None:
                views[f"gold/{name}"] = []
                continue
            recent = table.where(F.col("window_start") == newest[0]).drop("window_end").orderBy(order).limit(limit)
            views[f"gold/{name}"] = [r.asDict() for r in recent.collect()]
        path = self.lake.table("gold/car_state")
        if _delta_exists(self.spark, path):
            state = self.spark.read.format("delta").load(path)
            summary = state.agg(
                F.count("*").alias("cars"),
                F.sum(F.col("alerting").cast("int")).alias("alerting"),
                F.max("speed").alias("top_speed"),
                F.timestamp_millis(F.max("event_time")).alias("newest_event"),
            )
            views["gold/car_state"] = [r.asDict() for r in summary.collect()]
        return views

    # --- tables ------------------------------------------------------------------------------
    def create_tables(self) -> None:
        """Create every table the queries read or write, empty, with the schema the transforms give.

        A query can then start on a fresh lake (or alone) before its upstream has written anything.
        """
        try:
            cars = self.dims.get()
        except Exception as exc:  # Spark raises AnalysisException subclasses for missing paths
            raise FleetstreamError(
                f"No reference data at {self.settings.lake.dims} ({exc.__class__.__name__}). Publish it with "
                "`fleetstream reference publish` (`fleetstream run` does this), then start the stream again."
            ) from exc
        kafka_schema = StructType(
            [
                StructField("key", BinaryType()), StructField("value", BinaryType()),
                StructField("topic", StringType()), StructField("partition", IntegerType()),
                StructField("offset", LongType()), StructField("timestamp", TimestampType()),
                StructField("timestampType", IntegerType()),
            ]
        )  # fmt: skip
        bronze = T.to_bronze(self.spark.createDataFrame([], kafka_schema))
        parsed = T.check_telemetry(bronze, cars)
        silver = parsed.withColumn("silver_batch", F.lit(0).cast("long")).select(*T.SILVER_COLUMNS)
        empty = {
            "bronze/telemetry": (bronze, "ingest_date"),
            "silver/telemetry": (silver, "event_date"),
            "quarantine/telemetry": (T.quarantine_rows(parsed), "quarantine_date"),
            "silver/duplicates": (T.duplicate_rows(parsed), None),
            "silver/alerts": (alerts(silver, self.rules), None),
        }
        for name, (frame, partition) in empty.items():
            path = self.lake.table(name)
            if not _delta_exists(self.spark, path):
                writer = frame.limit(0).write.format("delta").mode("ignore")
                (writer.partitionBy(partition) if partition else writer).save(path)

    # --- running -----------------------------------------------------------------------------
    def _fuse(self, only: Iterable[str]) -> list[str]:
        """The queries to start: alerts and the cars' state ride in silver's batch when silver runs
        here too (``--only alerts`` or ``--only gold`` in another application keep their own query)."""
        chosen = [name for name in QUERIES if name in set(only)]
        self.fused_alerts = "silver" in chosen and "alerts" in chosen
        self.fused_state = "silver" in chosen and "gold" in chosen
        return chosen

    def publisher(self) -> StreamingQuery:
        """The alert-data publisher of the chosen alerts mode."""
        if self.alerts_mode == "realtime":
            return self.alerts_realtime()
        return self.alerts_published({"processingTime": f"{self.alerts_trigger_s:g} seconds"})

    def start(self, only: Iterable[str], trigger: Trigger) -> list[StreamingQuery]:
        chosen = set(only)
        if chosen - {PUBLISHER}:
            # (the publisher alone writes no table: it must not race the lake's application here)
            self.create_tables()
        queries: list[StreamingQuery] = []
        self.publish_in_batch = False
        for name in self._fuse(chosen):
            if name == "alerts" and self.fused_alerts:
                continue
            started = getattr(self, name)(trigger)
            queries.extend(started if isinstance(started, list) else [started])
        if wants_publisher(chosen, self.alerts_mode, self.separate_publisher, self.fused_alerts, self.publish):
            queries.append(self.publisher())
        return queries

    def run_available_now(self, only: Iterable[str], on_query: Callable[[str], None] | None = None) -> None:
        """Process everything available, query after query in dependency order, then return."""
        self.create_tables()
        self.publish_in_batch = self.alerts_mode == "microbatch"
        for name in self._fuse(only):
            if name == "alerts" and self.fused_alerts:
                continue
            if on_query:
                on_query(name)
            started = getattr(self, name)({"availableNow": True})
            for query in started if isinstance(started, list) else [started]:
                query.awaitTermination()
                if query.exception() is not None:
                    raise RuntimeError(f"query {query.name} failed: {query.exception()}")


def _delta_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    latest = DeltaTable.forPath(spark, path).history(1).select("version").first()
    if latest is None:
        raise FleetstreamError(f"Delta table {path} has no history")
    return int(latest[0])


def _delta_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))
