"""`fleetstream stream`: the queries of a :class:`~fleetstream.pipeline.plan.RunPlan`, started.

- the lake: one checkpointed query per source (:mod:`fleetstream.pipeline.medallion`); for the whole
  medallion one query reads Kafka and writes bronze, silver, quarantine, duplicates, alerts and gold;
- the alert-data publisher (:mod:`fleetstream.pipeline.alerts`), when the plan runs it here.

Live, the Kafka lake query adapts its batches to the input: Spark checks for records every
``lake_s`` seconds, but starts a batch only when ``min_records`` are waiting or ``max_delay_s`` has
passed since the last one; a quiet fleet thus costs one batch every few seconds, a busy one gets
a batch as soon as the last ends (docs/operations.md).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery

from fleetstream.clients import spark_kafka
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.lake.repair import refuse_damaged
from fleetstream.lake.tables import TABLES
from fleetstream.ml.score import Champion, Scorer
from fleetstream.pipeline import (
    ALERTS_TRIGGER_S,
    EPISODE_PARTITIONS,
    EPISODES_PROGRESS_S,
    EPISODES_TRIGGER_S,
    FEATURES_EVERY_MIN,
    LAKE_GOLD_S,
    LAKE_MAX_DELAY_S,
    LAKE_MAX_RECORDS,
    LAKE_MIN_RECORDS,
    LAKE_ROLLUP_MIN,
    LAKE_TRIGGER_S,
    OFFLINE_AFTER_S,
    REALTIME_BATCH_S,
    gold,
)
from fleetstream.pipeline.alerts import publisher
from fleetstream.pipeline.bronze import KAFKA_SCHEMA, to_bronze
from fleetstream.pipeline.dims import DimsCache
from fleetstream.pipeline.enrich import Reference
from fleetstream.pipeline.episodes import (
    EPISODE_MINUTES_TABLE,
    EPISODE_SCHEMA,
    PENDING_SCHEMA,
    PENDING_TABLE,
    RETIRED,
    STATE_LAYOUTS,
    TRIP_SCHEMA,
    EpisodesBatch,
    episodes,
    episodes_session,
    upsert_waiting,
)
from fleetstream.pipeline.medallion import LakeBatch
from fleetstream.pipeline.plan import LakeQuery, RunPlan
from fleetstream.pipeline.silver import SILVER_COLUMNS, check_telemetry, parse_bronze
from fleetstream.pipeline.writer import (
    CHECKPOINT_INTERVAL,
    Lake,
    Writer,
    at_once,
    delta_exists,
    delta_version,
    hadoop_path,
    read_text,
    write_text,
)
from fleetstream.quality.hold import HoldGate
from fleetstream.rules.engine import Rule, check_rules, load_rules

log = logging.getLogger(__name__)
#: a live start's stateful queries wait for the lake's first batch at most this long, in seconds
DEFER_MAX_S = 120.0
#: checkpoints of the layout before one Kafka read per application: a lake that has them was
#: written by an earlier version, whose queries' progress the new query cannot take over
OLD_CHECKPOINTS = ("bronze", "silver", "gold_fleet", "gold_alerts_per_minute", "gold_car_state")


@dataclass(frozen=True)
class Triggers:
    """How often the queries run (docs/operations.md)."""

    lake_s: float = LAKE_TRIGGER_S  # the lake queries look for new input this often
    min_records: int = LAKE_MIN_RECORDS  # a Kafka lake batch starts once this many records wait...
    max_delay_s: float = LAKE_MAX_DELAY_S  # ...or this long after the last batch started
    max_records: int | None = LAKE_MAX_RECORDS  # Kafka records per lake batch at most (None: no cap)
    alerts_s: float = ALERTS_TRIGGER_S  # the micro-batch publisher's interval
    realtime_batch_s: float = REALTIME_BATCH_S  # a real-time publisher batch's length
    gold_s: float = LAKE_GOLD_S  # while batches are small, gold is updated this often
    rollup_min: int = LAKE_ROLLUP_MIN  # gold's windows are closed once this many minutes of them are due
    features_min: int = FEATURES_EVERY_MIN  # the driving-feature windows: closed and scored this often
    episodes_s: float = EPISODES_TRIGGER_S  # the episodes query looks for new silver rows this often
    progress_s: float = EPISODES_PROGRESS_S  # the stateful queries' tables are upserted at most this often
    offline_s: float = OFFLINE_AFTER_S  # a car silent this long is offline


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


def kafka_options(settings: Settings) -> dict[str, str]:
    """Spark's Kafka source and sink options for the configured cluster."""
    return spark_kafka(settings.kafka)


class Streams:
    """The queries of one application: what they share (session, settings, rules, reference data)."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        plan: RunPlan,
        rules: list[Rule] | None = None,
        triggers: Triggers | None = None,
        bronze_from: str | None = None,
    ) -> None:
        self.spark, self.settings, self.plan = spark, settings, plan
        self.triggers = triggers or Triggers()
        self.lake = Lake(settings.lake.root, bronze_from)
        self.rules = rules or load_rules()
        self.dims = DimsCache(spark, settings.lake.dims, settings.lake.dims_refresh_s)
        self.kafka = kafka_options(settings)
        self.batches: dict[str, LakeBatch] = {}
        self.episode_batches: dict[str, EpisodesBatch] = {}  # by query: their progress held back
        self.waiting_upserted: set[str] = set()  # the stateful queries whose rows left waiting were upserted
        # the stateful queries a live start holds back until the lake's first batch (start_deferred)
        self.deferred: list[LakeQuery] = []
        self._deferred_since = 0.0
        self._lake_queries: list[StreamingQuery] = []
        # silver's newest version before this run's lake queries wrote, on a lake whose stateful state
        # is of a retired layout (-1: no silver yet); see _note_silver_before
        self.silver_before: int | None = None
        self._retired, self._upgrade_source = "", ""

    def reference(self) -> Reference:
        """The reference data (cars and speed zones); a clear error when there is none."""
        try:
            return self.dims.get()
        except FleetstreamError:
            raise  # the zones file is refused: its message names the zone
        except Exception as exc:  # Spark raises AnalysisException subclasses for missing paths
            raise FleetstreamError(
                f"No reference data at {self.settings.lake.dims} ({exc.__class__.__name__}). Publish it with "
                "`fleetstream reference publish` (`fleetstream run` does this), then start the stream again."
            ) from exc

    def _check_rules(self) -> None:
        """Refuse rules whose conditions do not compile over silver's columns, before any query starts."""
        silver = check_telemetry(to_bronze(self.spark.createDataFrame([], KAFKA_SCHEMA)), self.reference())
        silver = silver.withColumn("silver_batch", F.lit(0).cast("long")).select(*SILVER_COLUMNS)
        check_rules(self.spark, self.rules, silver.schema)

    def _check_layout(self) -> None:
        """Refuse a lake whose checkpoints come from the layout before one Kafka read per application."""
        if not any(q.source == "kafka" for q in self.plan.lake):
            return
        old = [name for name in OLD_CHECKPOINTS if self._exists(self.lake.checkpoint(name))]
        if old and not self._exists(self.lake.checkpoint("lake")):
            raise FleetstreamError(
                f"The lake at {self.settings.lake.root} was written by an earlier version of fleetstream (its "
                f"checkpoints: {', '.join(old)}), whose progress this version cannot take over. Point "
                "FLEETSTREAM_LAKE__ROOT at a new folder; `fleetstream replay` rebuilds silver and gold there "
                "from the old bronze."
            )

    def _note_silver_before(self) -> None:
        """Where silver stands before this run's lake queries write, when the stateful queries must
        start afresh (their state's layout is retired: :data:`RETIRED`). They then read silver from the
        next version on: neither its history (whose episodes are in the tables already; counted again,
        they would double gold/episodes_per_minute) nor, as ``startingVersion latest`` would once the
        lake had written, this run's first rows. Only then is silver's version read (a Spark job).

        The version is kept beside the new checkpoint (``<checkpoint>.start``) until the new state's
        first batch is planned (its ``offsets/0``, which records where it starts): a run stopped before
        that, even by ``kill -9``, leaves the next one the same start, so the killed run's rows count."""
        stateful = [q for q in self.plan.lake if q.stateful]
        if not stateful:
            return
        checkpoint = self.lake.checkpoint(STATE_LAYOUTS[-1])
        noted = f"{checkpoint}.start"
        if self._exists(f"{checkpoint}/offsets/0"):  # begun: its checkpoint holds where it started
            if self._exists(noted):
                write_text(self.spark, noted, None)
            return
        retired = [n for n in RETIRED if self._exists(self.lake.checkpoint(n))]
        if not retired:
            return
        self._retired, self._upgrade_source = retired[-1], stateful[0].source
        saved = read_text(self.spark, noted)
        if saved is not None:
            self.silver_before = int(saved)
        else:
            self.silver_before = delta_version(self.spark, self.lake.table(self._upgrade_source))
            write_text(self.spark, noted, f"{self.silver_before}\n")

    def _upgrade_written(self) -> bool:
        """Whether silver has the first version an upgrade's stateful queries start at (Delta refuses
        a ``startingVersion`` that is not there)."""
        assert self.silver_before is not None
        log_dir = f"{self.lake.table(self._upgrade_source)}/_delta_log"
        return self._exists(f"{log_dir}/{self.silver_before + 1:020d}.json")

    def _exists(self, location: str) -> bool:
        """Whether a file or folder exists (a local path or an s3a:// key), through Hadoop's FileSystem."""
        path, fs = hadoop_path(self.spark, location)
        return bool(fs.exists(path))

    def _create_source_tables(self, queries: tuple[LakeQuery, ...] | None = None) -> None:
        """A query reading a table another application writes can start before that table has rows
        (``queries``: the plan's, by default). The empty tables are written at once (each is a Delta
        commit, a second or two in a JVM still cold)."""
        queries = self.plan.lake if queries is None else queries
        frames: dict[str, DataFrame] = {}
        for query in queries:
            name = query.source
            if name == "kafka" or name in frames or delta_exists(self.spark, self.lake.table(name)):
                continue
            bronze = to_bronze(self.spark.createDataFrame([], KAFKA_SCHEMA))
            frames[name] = bronze
            if name == "silver/telemetry":
                parsed = check_telemetry(bronze, self.reference())
                frames[name] = parsed.withColumn("silver_batch", F.lit(0).cast("long")).select(*SILVER_COLUMNS)
        if any(q.stateful for q in queries):  # upserted by two queries: there before either starts
            steps = self.spark.createDataFrame([], EPISODE_SCHEMA)
            episode_tables = {
                "silver/alert_episodes": steps,
                "gold/trips": self.spark.createDataFrame([], TRIP_SCHEMA),
                EPISODE_MINUTES_TABLE: gold.episodes_per_minute(steps),
                PENDING_TABLE: self.spark.createDataFrame([], PENDING_SCHEMA),
            }
            frames |= {n: f for n, f in episode_tables.items() if not delta_exists(self.spark, self.lake.table(n))}

        def create(name: str, frame: DataFrame) -> None:
            table = TABLES[name]
            empty = frame.limit(0).write.format("delta").mode("ignore").options(**table.properties(CHECKPOINT_INTERVAL))
            (empty.partitionBy(table.partition) if table.partition else empty).save(self.lake.table(name))

        at_once({name: functools.partial(create, name, frame) for name, frame in frames.items()})

    def source(self, query: LakeQuery) -> DataFrame:
        """The query's input as a stream: Kafka records as bronze rows, or a table's rows; parsed and
        validated here (once per query, not per batch) when the query computes silver."""
        rows = self._read(query)
        if query.source == "kafka":
            rows = to_bronze(rows)
        return parse_bronze(rows) if "silver" in query.layers else rows

    def _read(self, query: LakeQuery) -> DataFrame:
        if query.source != "kafka":
            return self.spark.readStream.format("delta").load(self.lake.table(query.source))
        t = self.triggers
        reader = self.spark.readStream.format("kafka").options(**self.kafka)
        reader = reader.option("subscribe", self.settings.kafka.topics.sensors)
        reader = reader.option("startingOffsets", "earliest").option("failOnDataLoss", "true")
        if t.max_records:
            reader = reader.option("maxOffsetsPerTrigger", str(t.max_records))
        if not self.plan.available_now and t.min_records > 1:
            # (Spark refuses a minimum above the maximum)
            least = min(t.min_records, t.max_records) if t.max_records else t.min_records
            reader = reader.option("minOffsetsPerTrigger", str(least))
            reader = reader.option("maxTriggerDelay", f"{int(t.max_delay_s * 1000)}ms")
        return reader.load()

    def _batch(self, query: LakeQuery) -> LakeBatch:
        topics = self.settings.kafka.topics
        batch = LakeBatch(
            self.spark,
            self.lake,
            query,
            self.rules,
            self.dims,
            Writer(self.spark, self.lake, query.name, self.kafka, from_driver=self.settings.lake.driver_writes),
            {"enriched": topics.enriched, "dlq": topics.dlq, "alerts": topics.alerts} if self.plan.publish else None,
            alerts_in_batch=self.plan.alerts_in_batch,
            gold_every_s=0.0 if self.plan.available_now else self.triggers.gold_s,
            rollup_every_min=1 if self.plan.available_now else self.triggers.rollup_min,
            features_every_min=1 if self.plan.available_now else self.triggers.features_min,
            scorer=Scorer(Champion(self.settings.mlflow)) if "gold" in query.layers and self.plan.ml else None,
            upkeep=self.settings.maintenance,
            hold=HoldGate(self.spark, self.settings) if self.settings.quality.hold_gold else None,
            ml=self.plan.ml,
        )
        self.batches[query.name] = batch
        return batch

    def _start_episodes(self, query: LakeQuery) -> StreamingQuery:
        """The alert episodes, offline cars and trips: a stateful query over silver's table (its own
        session: RocksDB state)."""
        session = episodes_session(self.spark, EPISODE_PARTITIONS)
        reader = session.readStream.format("delta")
        name = STATE_LAYOUTS[-1]
        if self.silver_before is not None:
            # Its state cannot be carried over: start after silver's history (_note_silver_before)
            start = self.silver_before + 1
            log.warning(
                "episodes: the state at %s was written by an earlier version of fleetstream, whose layout "
                "this one cannot read; starting afresh (%s) at silver's rows from version %d, this run's. "
                "Episodes (offline ones too) and trips open at the upgrade stay as last written; a condition "
                "still holding opens a new episode.",
                self.lake.checkpoint(self._retired), self.lake.checkpoint(name), start,
            )  # fmt: skip
            # A version number must be there: a live start waits for it (start_deferred); an available-now
            # run whose lake wrote nothing has no writer beside it, and "latest" is the one after the newest.
            # (Spark reads the option only while the checkpoint has no offsets.)
            reader = reader.option("startingVersion", str(start) if self._upgrade_written() else "latest")
        silver = reader.load(self.lake.table(query.source))
        out = Writer(self.spark, self.lake, name, self.kafka)
        if name not in self.waiting_upserted:  # once per process (a restarted query's rows are in its batch)
            waited = upsert_waiting(self.spark, out, retired=RETIRED)
            if waited:
                log.info("%s: %d rows an earlier run left in silver/pending_upserts upserted", query.name, waited)
            self.waiting_upserted.add(name)
        batch = EpisodesBatch(
            out,
            self.settings.kafka.topics.alerts if self.plan.publish else None,
            progress_every_s=0.0 if self.plan.available_now else self.triggers.progress_s,
            name=query.name,
        )
        earlier = self.episode_batches.get(query.name)
        if earlier is not None:  # a restart: the rows the stopped query held back go with its first upsert
            batch.pending, batch.waiting_written = earlier.pending, earlier.waiting_written
        self.episode_batches[query.name] = batch
        steps = episodes(silver, self.rules, self.triggers.offline_s)
        writer = (
            steps.writeStream.queryName(query.name)
            .option("checkpointLocation", self.lake.checkpoint(name))
            .foreachBatch(stoppable(batch))
        )
        if self.plan.available_now:
            started: StreamingQuery = writer.trigger(availableNow=True).start()
        else:
            started = writer.trigger(processingTime=f"{self.triggers.episodes_s:g} seconds").start()
        return started

    def _start_lake(self, query: LakeQuery) -> StreamingQuery:
        if query.stateful:
            return self._start_episodes(query)
        writer = (
            self.source(query)
            .writeStream.queryName(query.name)
            .option("checkpointLocation", self.lake.checkpoint(query.name))
            .foreachBatch(stoppable(self._batch(query)))
        )
        if self.plan.available_now:
            started: StreamingQuery = writer.trigger(availableNow=True).start()
        else:
            started = writer.trigger(processingTime=f"{self.triggers.lake_s:g} seconds").start()
        return started

    def publisher(self) -> StreamingQuery:
        """The alert-data publisher of the plan's alerts mode."""
        topics = self.settings.kafka.topics
        mode = self.plan.alerts_mode
        checkpoint = self.lake.checkpoint("alerts_realtime" if mode == "realtime" else "alerts_kafka")
        return publisher(
            self.spark, self.kafka, (topics.sensors, topics.alerts), self.rules, self.dims, checkpoint, mode,
            self.triggers.alerts_s, self.triggers.realtime_batch_s,
        )  # fmt: skip

    def start(self) -> list[StreamingQuery]:
        """Start every query of the plan (live); returns them."""
        refuse_damaged(self.spark, self.lake.root)
        if self.plan.lake or self.plan.publisher == "here":  # (the publisher alone too: nothing starts)
            self._check_rules()
        if self.plan.lake:
            self._check_layout()
            self._note_silver_before()
            self._create_source_tables()
        lake = [query for query in self.plan.lake if not query.stateful]
        upgrade = self.silver_before is not None  # (the stateful queries wait for their first version)
        self.deferred = [query for query in self.plan.lake if query.stateful] if lake or upgrade else []
        self._lake_queries = [self._start_lake(query) for query in lake]
        queries = list(self._lake_queries)
        if self.deferred:
            self._deferred_since = time.monotonic()
            names = "+".join(q.name for q in self.deferred)
            if upgrade:
                log.info("%s: starts once silver has the first version this run writes (after an upgrade)", names)
            else:
                log.info(
                    "%s: starts once the lake has written its first batch (at most %.0f s from now): both start "
                    "cold, and together they would share the cores", names, DEFER_MAX_S,
                )  # fmt: skip
        else:
            queries += [self._start_lake(query) for query in self.plan.lake if query.stateful]
        if self.plan.publisher == "here":
            queries.append(self.publisher())
        return queries

    def start_deferred(self) -> list[StreamingQuery]:
        """Start the stateful queries :meth:`start` held back once a lake query has finished its
        first batch, or :data:`DEFER_MAX_S` after the start (their input, silver, is empty before,
        and each query's first batch is a cold start of seconds of CPU: together, the dashboard's
        first data came 20 s later; docs/benchmarks.md); returns those it started now (the
        supervisor calls it at every turn)."""
        if not self.deferred:
            return []
        if self.silver_before is not None:  # an upgrade: from silver's first version this run writes
            if not self._upgrade_written():
                return []
        else:
            wrote = any(q.lastProgress is not None for q in self._lake_queries)
            if not wrote and time.monotonic() - self._deferred_since < DEFER_MAX_S:
                return []
        started = [self._start_lake(query) for query in self.deferred]
        self.deferred = []
        return started

    def restart(self, query: StreamingQuery) -> StreamingQuery:
        """Start a stopped or failed query of the plan again, from its checkpoint."""
        for lake_query in self.plan.lake:
            if lake_query.name == query.name:
                return self._start_lake(lake_query)
        return self.publisher()

    def run_available_now(self, on_query: Callable[[str], None] | None = None) -> None:
        """Process everything available, query after query in dependency order, then return."""
        refuse_damaged(self.spark, self.lake.root)
        self.reference()
        self._check_rules()
        self._check_layout()
        self._note_silver_before()
        # The lake's queries one after the other, then the stateful ones together (they read silver;
        # their upserts of the same table are retried on a conflict). Each group's source tables just
        # before it starts: an empty one only where the queries before wrote none.
        lake = tuple(q for q in self.plan.lake if not q.stateful)
        stateful = tuple(q for q in self.plan.lake if q.stateful)
        for group, together in ((lake, False), (stateful, True)):
            if not group:
                continue
            self._create_source_tables(group)
            for run in [group] if together else [(q,) for q in group]:
                self._run_together(run, on_query)

    def _run_together(self, queries: tuple[LakeQuery, ...], on_query: Callable[[str], None] | None) -> None:
        """Start the queries (available-now) and wait for them all; the first failure stops the others
        and is raised."""
        pending: list[StreamingQuery] = []
        try:
            for query in queries:
                if on_query:
                    on_query(query.name)
                pending.append(self._start_lake(query))
            while pending:  # (awaitTermination raises a query's failure)
                pending = [each for each in pending if not each.awaitTermination(1)]
        finally:
            for each in pending:
                each.stop()

    # --- reading the lake back (replay's summary, --console) ---------------------------------
    def table_counts(self) -> dict[str, int]:
        """Rows in each table of the lake (and in the bronze it reads)."""
        return {
            name: self.spark.read.format("delta").load(self.lake.table(name)).count()
            for name in TABLES
            if delta_exists(self.spark, self.lake.table(name))
        }

    def gold_snapshot(self, limit: int = 12) -> dict[str, list[dict[str, object]]]:
        """The newest closed window of each gold window table, and the cars' state summed up (--console)."""
        views: dict[str, list[dict[str, object]]] = {}
        for name, order in (
            ("speed_by_model", F.desc("max_speed")),
            ("cars_by_color", F.desc("cars")),
            ("alerts_per_minute", F.desc("alerts")),
        ):
            path = self.lake.table(f"gold/{name}")
            if not delta_exists(self.spark, path):
                continue
            table = self.spark.read.format("delta").load(path)
            newest = table.agg(F.max("window_start")).first()
            if newest is None or newest[0] is None:
                views[f"gold/{name}"] = []
                continue
            recent = table.where(F.col("window_start") == newest[0]).drop("window_end").orderBy(order).limit(limit)
            views[f"gold/{name}"] = [r.asDict() for r in recent.collect()]
        path = self.lake.table("gold/car_state")
        if delta_exists(self.spark, path):
            state = self.spark.read.format("delta").load(path)
            summary = state.agg(
                F.count("*").alias("cars"),
                F.sum(F.col("alerting").cast("int")).alias("alerting"),
                F.max("speed").alias("top_speed"),
                F.timestamp_millis(F.max("event_time")).alias("newest_event"),
            )
            views["gold/car_state"] = [r.asDict() for r in summary.collect()]
        return views
