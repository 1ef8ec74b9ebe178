"""One lake query's micro-batch: its layers computed from one read of the source, written at once.

For the whole medallion the source is Kafka, parsed and validated in the streaming query's plan
(:func:`~fleetstream.pipeline.stream.Streams.source`): the batch's rows are materialised once and
give bronze, silver (enriched, deduplicated), alerts and gold, with no second stream reading bronze
back from Delta. A query of fewer layers reads the table of the layer before its first (a replay
reads bronze; ``--only alerts,gold`` reads silver).

Phase one writes the layers' frames at once (:class:`~fleetstream.pipeline.writer.Writer`); phase
two, only when windows have closed, rolls the gold windows up from what phase one wrote.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from fleetstream.config import MaintenanceSettings
from fleetstream.errors import first_line
from fleetstream.ml import features, maintenance
from fleetstream.ml.score import Scorer
from fleetstream.pipeline import gold
from fleetstream.pipeline.alerts import alert_messages, alerts
from fleetstream.pipeline.clock import StepClock, jvm_pid
from fleetstream.pipeline.dedup import RecentIds
from fleetstream.pipeline.dims import DimsCache
from fleetstream.pipeline.plan import LakeQuery
from fleetstream.pipeline.silver import dlq_messages, enriched_messages, silver_batch
from fleetstream.pipeline.writer import KAFKA, Lake, Writer, arrow_cast, arrow_frame, delta_exists, delta_version
from fleetstream.quality.hold import HoldGate
from fleetstream.rules.engine import Rule, fires
from fleetstream.rules.limits import LIMITS

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)
DEDUP_WINDOW_MS = 10 * 60 * 1000  # a copy of an event up to this far apart in event time is a duplicate
#: Spark's limit on the size of a generated method for batches after one of at most this many rows,
#: and after a larger one. Above the limit, the validation's part of the plan runs outside whole-stage
#: code generation: every task generates its projections' code anew, tenths of a second per small
#: batch; within it, the JVM runs that huge method interpreted, microseconds more per record
#: (docs/benchmarks.md). Spark's own advice on HotSpot is 8,000.
SMALL_BATCH = 20_000
CODEGEN_LIMIT = {"small": "65535", "large": "8000"}
#: Adaptive query execution for a small batch: off. Its shuffles have one partition (nothing to
#: coalesce or split), and it plans each stage again after the one before; a quiet 50-car fleet's
#: stack used 0.91 core with it off in the whole lake against 0.95 with it on (two runs each,
#: alternated; docs/benchmarks.md, session 64). A large batch keeps the session's setting.
ADAPTIVE = "spark.sql.adaptive.enabled"
ROLLUPS = ("gold/speed_by_model", "gold/cars_by_color", "gold/alerts_per_minute", "gold/driving_features")
ML_ROLLUPS = ("gold/driving_features",)  # (gold/maintenance follows them)


def _ms(column: str) -> Column:
    return F.unix_millis(F.col(column))


@dataclass(frozen=True)
class OnDriver:
    """What the driver holds of silver rows gold takes in (small batches' rows, fetched with their
    keys: ``SilverBatch.first_state``): each car's latest report among them (:func:`gold.latest_local`),
    their hottest coolant with the engine on (None: no such row) and their hot readings (what later
    overheat trends start from: :func:`maintenance.hot_local`). With it, a gold update makes the
    cars' state, and decides that no overheat warning is possible, without a Spark job."""

    latest: pa.Table
    hottest_c: float | None
    hot: pa.Table

    @staticmethod
    def of(first_state: pa.Table, alerting_ids: pa.Array) -> OnDriver:
        """A batch's, from its first copies' state columns and the event_ids its alerts fired on."""
        import pyarrow.compute as pc

        running = pc.fill_null(first_state["engine_on"], False)
        hottest = pc.max(pc.filter(first_state["coolant_temp"], running)).as_py()
        return OnDriver(gold.latest_local(first_state, alerting_ids), hottest, maintenance.hot_local(first_state))

    @staticmethod
    def joined(batches: Sequence[OnDriver | None]) -> OnDriver | None:
        """Several batches' in order, as one; None when one of them is not on the driver (or none is given)."""
        import pyarrow as pa

        if not batches or any(b is None for b in batches):
            return None
        known = [b for b in batches if b is not None]
        hottest = [b.hottest_c for b in known if b.hottest_c is not None]
        latest = gold.newest_local([b.latest for b in known])
        assert latest is not None
        hot = pa.concat_tables([b.hot for b in known], promote_options="permissive")
        return OnDriver(latest, max(hottest) if hottest else None, hot)


class LakeBatch:
    """The ``foreachBatch`` function of one :class:`~fleetstream.pipeline.plan.LakeQuery`."""

    def __init__(
        self,
        spark: SparkSession,
        lake: Lake,
        query: LakeQuery,
        rules: list[Rule],
        dims: DimsCache,
        writer: Writer,
        topics: Mapping[str, str] | None,
        alerts_in_batch: bool = False,
        gold_every_s: float = 0.0,
        rollup_every_min: int = 1,
        features_every_min: int = 1,
        scorer: Scorer | None = None,
        upkeep: MaintenanceSettings | None = None,
        hold: HoldGate | None = None,
        ml: bool = True,
    ) -> None:
        """``topics`` (enriched, dlq, alerts by name) when the batch writes Kafka records, else None;
        ``alerts_in_batch``: it also publishes its alerts to alert-data (catch-up runs);
        ``gold_every_s``: how often small batches update gold (0: every batch; see :meth:`_gold_input`);
        ``rollup_every_min``: gold's windows are closed once this many minutes of them are due;
        ``features_every_min``: the driving-feature windows wait until this many minutes of them
        are due (counted on their own), then close with the roll-up;
        ``scorer``: scores the feature windows gold closes (``gold/driver_style``), or None;
        ``upkeep``: the service thresholds of ``gold/maintenance``;
        ``hold``: while it says so, gold is left as it is (:mod:`fleetstream.quality.hold`);
        ``ml``: gold also writes the ML tables (driving features, maintenance, overheat warnings)."""
        self.spark, self.lake, self.query, self.rules, self.dims = spark, lake, query, rules, dims
        self.writer, self.topics, self.alerts_in_batch = writer, topics, alerts_in_batch
        self.gold_every_s, self.rollup_every_min, self.scorer = gold_every_s, rollup_every_min, scorer
        self.features_every_min = features_every_min
        #: whether a rule fires on a row (fetched with a small batch's keys), built once
        self.fires = fires(rules) if "alerts" in query.layers else None
        self.upkeep, self.hold = upkeep or MaintenanceSettings(), hold
        self.ml, self.rollups = ml, ROLLUPS if ml else tuple(n for n in ROLLUPS if n not in ML_ROLLUPS)
        self.upkeep_ms: int | None = None  # the feature window end gold/maintenance was last computed at
        self.gold_at = 0.0  # when gold was last updated (monotonic)
        self.gold_covered: int | None = None  # the last batch whose silver rows gold holds
        #: the silver rows of the batches since ``pending_since`` that gold has not taken in yet
        #: (materialised in each batch: holding the frames keeps their blocks)
        self.gold_pending: list[DataFrame] = []
        self.driver_pending: list[OnDriver | None] = []  # the same batches' rows on the driver, when there
        self.pending_since: int | None = None
        self.__name__ = query.name  # what Spark and stoppable() call it
        self.recent_ids = RecentIds(self._silver_seen, DEDUP_WINDOW_MS, spark=spark)
        #: the cars' latest state after the last batch gold took in (``gold.CAR_STATE_COLUMNS``,
        #: on the driver: one row per car), and its Spark schema
        self.car_state: pa.Table | None = None
        self.state_struct: StructType | None = None
        self.windows: dict[str, gold.Windows] = {}
        self.newest_ms: int | None = None  # the newest event time seen
        self.last_rows = 0  # rows in the last batch: small batches and large ones are planned apart
        self.adaptive = spark.conf.get(ADAPTIVE, "true") or "true"  # (the session's, for large batches)
        #: the driver JVM's process id, for the step log's CPU times (None: not started by this process)
        self.jvm_pid = jvm_pid(spark)
        self.clock_ended: tuple[float, float | None] | None = None  # the last batch's step clock's end
        #: the hot readings of the last 30 s before the rows of gold's next update, each car's: its
        #: overheat trends start from them (None: none, or none seen by this run yet)
        self.hot_context: pa.Table | None = None

    def __call__(self, rows: DataFrame, batch_id: int) -> None:
        layers = self.query.layers
        clock = StepClock(f"{self.query.name} batch {batch_id}", self.jvm_pid, self.clock_ended)
        outputs: dict[str, DataFrame | pa.Table | None] = {}
        messages: list[DataFrame] = []
        held: list[DataFrame] = []  # persisted for the batch, released at its end
        silver_rows, event_range, first_ids, first_state, fired_ids = None, None, None, None, None
        if layers == ("bronze",):
            outputs["bronze/telemetry"] = rows
        if "silver" in layers:
            size = "small" if self.last_rows <= SMALL_BATCH else "large"
            if size == "small":  # one task for all: a small batch's cost is per task
                rows = rows.coalesce(1)
            rows.sparkSession.conf.set("spark.sql.codegen.hugeMethodLimit", CODEGEN_LIMIT[size])
            rows.sparkSession.conf.set("spark.sql.shuffle.partitions", "1" if size == "small" else "4")
            rows.sparkSession.conf.set(ADAPTIVE, "false" if size == "small" else self.adaptive)
            seen = functools.partial(self.recent_ids.seen, batch_id)
            known = functools.partial(self.recent_ids.known, batch_id)
            made = silver_batch(rows, self.dims.get(), seen, batch_id, bronze="bronze" in layers,
                                small=SMALL_BATCH if size == "small" else 0, mark=clock.mark, known=known,
                                fires=self.fires)  # fmt: skip
            clock.mark("silver")
            outputs |= {"bronze/telemetry": made.bronze, "silver/telemetry": made.silver,
                        "quarantine/telemetry": made.quarantine, "silver/duplicates": made.duplicates}  # fmt: skip
            if self.topics is not None:
                if made.silver is not None:
                    messages.append(enriched_messages(made.silver, self.topics["enriched"]))
                if made.quarantine is not None:
                    messages.append(dlq_messages(made.quarantine, self.topics["dlq"]))
            silver_rows, event_range, self.last_rows = made.silver, made.event_range, made.rows
            first_ids, first_state, fired_ids = made.first_ids, made.first_state, made.fired_ids
        elif self.query.source == "silver/telemetry":
            silver_rows = rows
        fired = None  # this batch's alerts (None: none fired, or the query has no alerts layer)
        on_driver = None
        if silver_rows is not None and "alerts" in layers:
            if fired_ids is None or len(fired_ids):  # (none fires on a small batch's rows: no job, no alerts)
                fired = alerts(silver_rows, self.rules).persist()
                held.append(fired)
                # a large batch's: counted (computes and keeps every partition, which isEmpty would not)
                if fired_ids is None and fired.count() == 0:
                    fired = None
            if first_state is not None and fired_ids is not None:
                on_driver = OnDriver.of(first_state, fired_ids)
            clock.mark("alerts")
            outputs["silver/alerts"] = fired
            if fired is not None and self.alerts_in_batch and self.topics is not None:
                messages.append(alert_messages(fired, self.topics["alerts"]))
        gold_now = False
        hot = None  # the hot readings of the rows gold takes in (maintenance.trend_context)
        if "gold" in layers:
            if event_range is None and silver_rows is not None:  # the silver rows came from the silver table
                event_range = self._event_range(silver_rows)
            gold_rows, gold_fired, on_driver, gold_now = self._gold_input(batch_id, silver_rows, fired, on_driver)
            if gold_rows is not None:
                before = self._current_state()  # each car's last report before these rows
                outputs["gold/car_minutes"] = gold.car_minutes(
                    gold_rows, gold_fired, self._state_frame(before, gold_rows)
                )
                if on_driver is not None:
                    latest = on_driver.latest
                else:  # (one job: a row per car comes back)
                    latest = gold.latest_per_car(gold_rows, gold_fired).toArrow()
                # (the newest state, not ``before``: after a kill between the update's commits the
                # table is ahead of these rows, and its version ``before`` is of may be gone)
                self.car_state = gold.newest_local([self._newest_state(), latest])
                outputs["gold/car_state"] = self._state_arrow(self.car_state, gold_rows)  # (written from the driver)
                clock.mark("gold: car state")
                if self.ml and (on_driver is None or maintenance.may_warn(on_driver.hottest_c)):
                    context = self._trend_context(gold_rows)
                    warned = maintenance.overheat_warnings(gold_rows, LIMITS.overheat_c, context).persist()
                    held.append(warned)
                    outputs["gold/overheat_warnings"] = warned if warned.count() else None
                    clock.mark("gold: overheat warnings")
                if self.ml:  # (kept once the batch is written, below)
                    newest = event_range[1] if event_range is not None else self.newest_ms
                    if on_driver is not None:
                        hot = on_driver.hot
                    elif newest is not None:
                        hot = maintenance.hot_readings(gold_rows, newest)
        outputs[KAFKA] = reduce(DataFrame.unionByName, messages) if messages else None
        dedup_ids = None  # (a small batch's first copies are on the driver already: first_ids)
        if "silver" in layers and silver_rows is not None and first_ids is None:
            dedup_ids = RecentIds.chunk(silver_rows)
        clock.mark("plan")
        written = self.writer.write(batch_id, outputs, small="silver" in layers and self.last_rows <= SMALL_BATCH)
        clock.mark(f"write {'+'.join(written)}")
        if "silver" in layers:
            self.recent_ids.add(batch_id, dedup_ids, event_range[1] if event_range else 0, first_ids)
        if event_range is not None:
            self.newest_ms = max(self.newest_ms or event_range[1], event_range[1])
        if gold_now:
            self.gold_at, self.gold_covered = time.monotonic(), batch_id
            rolled = self._roll_up(batch_id)
            if rolled:
                clock.mark(f"roll up {'+'.join(rolled)}")
        for frame in held:
            frame.unpersist()
        if gold_now and hot is not None:  # (last: a batch that failed before is run again without them)
            self.hot_context = maintenance.trend_context([self.hot_context, hot])
        clock.log()
        self.clock_ended = clock.ended

    # --- silver ------------------------------------------------------------------------------
    def _silver_seen(self, lo_ms: int, hi_ms: int | None, batch_id: int) -> DataFrame:
        """Silver's event_ids and event times between two event times (``hi_ms`` None: no upper
        bound), read from its files: what :class:`RecentIds` starts from.

        The version read is pinned: the frames built on it may be evaluated lazily, after this
        batch's own append. Rows this batch id wrote are left out: after a crash the batch is run
        again, its silver append may already be in, and it must not count itself as a duplicate.
        Delta's file statistics on event_ts skip the files outside the window.
        """
        path = self.lake.table("silver/telemetry")
        version = delta_version(self.spark, path)
        if version < 0:  # no table yet
            return self.spark.createDataFrame([], "event_id string, event_time long")
        lo = F.timestamp_millis(F.lit(lo_ms))
        rows = (
            self.spark.read.format("delta")
            .option("versionAsOf", version)
            .load(path)
            .where((F.col("event_date") >= F.to_date(lo)) & (F.col("event_ts") >= lo))
            .where(F.col("silver_batch") != F.lit(batch_id))
        )
        if hi_ms is not None:
            hi = F.timestamp_millis(F.lit(hi_ms))
            rows = rows.where((F.col("event_date") <= F.to_date(hi)) & (F.col("event_ts") <= hi))
        return rows.select("event_id", "event_time")

    # --- gold --------------------------------------------------------------------------------
    def _gold_input(
        self, batch_id: int, silver_rows: DataFrame | None, fired: DataFrame | None, on_driver: OnDriver | None
    ) -> tuple[DataFrame | None, DataFrame | None, OnDriver | None, bool]:
        """The silver rows (and their alerts) gold takes in this batch, the same on the driver when
        every batch among them had its rows there (``on_driver``: this batch's), and whether gold is
        updated.

        A query that reads silver updates gold every batch. One that computes silver updates it at
        most every ``gold_every_s`` while its batches are small (a quiet fleet: each update costs a
        second of CPU or two), then from every batch's rows since the last update, kept in memory
        (each batch's silver rows are materialised in the batch). Large batches (a busy fleet, a
        backlog) and catch-up runs update it every batch. After a restart, the last batch gold holds
        is the last one committed to both gold/car_state and gold/car_minutes (a kill can land
        between their commits), and the rows of the batches after it that this run did not see are
        read back from silver by ``silver_batch``: nothing is skipped or counted twice.
        """
        if silver_rows is not None and "alerts" not in self.query.layers:
            fired = alerts(silver_rows, self.rules)
        if "silver" not in self.query.layers:
            return silver_rows, fired, None, silver_rows is not None
        if self.hold is not None and self.hold.held():
            # nothing kept in memory: the first update after the hold reads every batch since the last
            # one gold holds from silver's table (``since`` None below)
            self.gold_pending, self.driver_pending, self.pending_since = [], [], None
            return None, None, None, False
        large = self.last_rows > SMALL_BATCH
        if not (self.gold_every_s <= 0 or large or time.monotonic() - self.gold_at >= self.gold_every_s):
            if self.pending_since is None:
                self.pending_since = batch_id
            if silver_rows is not None:
                self.gold_pending.append(silver_rows)
                self.driver_pending.append(on_driver)
            return None, None, None, False
        pending, since, on_driver_pending = self.gold_pending, self.pending_since, self.driver_pending
        self.gold_pending, self.driver_pending, self.pending_since = [], [], None
        if self.gold_covered is None:
            # (the tables of one update commit in parallel: a kill may land between their commits, and
            # the one behind must get every row since its last batch; one ahead skips the batch)
            self.gold_covered = min(self.writer.committed(t) for t in ("gold/car_state", "gold/car_minutes"))
        if self.gold_covered >= batch_id - 1:  # nothing waiting from earlier batches
            return silver_rows, fired, on_driver, True
        if since is not None and since <= self.gold_covered + 1:  # every batch waiting is in memory
            # (a filter on silver_batch would write the batch ids into generated code: code compiled
            # anew at every update)
            now = [silver_rows] if silver_rows is not None else []
            kept = [*pending, *now]
            if not kept:
                return None, None, None, True
            kept_on_driver = OnDriver.joined([*on_driver_pending, *([on_driver] if now else [])])
            if len(kept) == 1 and silver_rows is not None:
                return silver_rows, fired, kept_on_driver, True
            rows = reduce(DataFrame.unionByName, kept)
            return rows, alerts(rows, self.rules), kept_on_driver, True
        path = self.lake.table("silver/telemetry")
        waiting = (
            self.spark.read.format("delta")
            .load(path)
            .where((F.col("silver_batch") > self.gold_covered) & (F.col("silver_batch") < batch_id))
        )
        rows = waiting if silver_rows is None else waiting.unionByName(silver_rows)
        return rows, alerts(rows, self.rules), None, True

    def _trend_context(self, rows: DataFrame) -> DataFrame | None:
        """The hot readings before ``rows`` (:attr:`hot_context`) as a frame of their types, or None."""
        if self.hot_context is None:
            return None
        struct = StructType([rows.schema[c] for c in maintenance.TREND_COLUMNS])
        return arrow_frame(self.spark, self.hot_context, struct)

    def _current_state(self) -> pa.Table | None:
        """The cars' state after the last batch gold took in, which gold/car_minutes' motion features
        start from (read from the table to the driver at the first batch of a run; None before there
        is one)."""
        if self.car_state is not None:
            return self.car_state
        path = self.lake.table("gold/car_state")
        if not delta_exists(self.spark, path):
            return None
        covered = self.gold_covered
        if covered is None or self.writer.committed("gold/car_state") <= covered:
            return self._newest_state()
        # killed between the update's commits: car_state is ahead of the rows gold now takes in
        # again; the state before them is the one written with batch `covered`
        version = self.writer.version_of("gold/car_state", covered)
        try:
            if version is None:
                raise LookupError(f"no version of gold/car_state holds batch {covered}")
            return self.spark.read.format("delta").option("versionAsOf", version).load(path).toArrow()
        except Exception as exc:  # (vacuumed, or its log entry expired: the features start again)
            log.warning("%s: the cars' state at batch %s cannot be read (%s); gold/car_minutes' motion features "
                        "start again from each car's next report", self.query.name, covered,
                        first_line(exc))  # fmt: skip
            return None

    def _newest_state(self) -> pa.Table | None:
        """The cars' state gold/car_state holds now (read from the table at the first batch of a run;
        None before there is one)."""
        if self.car_state is None:
            path = self.lake.table("gold/car_state")
            if delta_exists(self.spark, path):
                self.car_state = self.spark.read.format("delta").load(path).toArrow()
        return self.car_state

    def _state_arrow(self, state: pa.Table | None, silver_rows: DataFrame) -> pa.Table | None:
        """A car state held on the driver in gold/car_state's columns and types (:meth:`_state_frame`)."""
        if state is None:
            return None
        if self.state_struct is None:
            self.state_struct = gold.state_schema(silver_rows.schema)
        return arrow_cast(state, self.state_struct)

    def _state_frame(self, state: pa.Table | None, silver_rows: DataFrame) -> DataFrame | None:
        """A car state held on the driver as a Spark frame of gold/car_state's schema (handed over as
        Arrow: no job), for the write and for gold/car_minutes; None for None. A column the state
        lacks (read from a table an earlier version wrote) is null."""
        arrow = self._state_arrow(state, silver_rows)
        return None if arrow is None else self.spark.createDataFrame(arrow, self.state_struct)

    def _event_range(self, silver_rows: DataFrame) -> tuple[int, int] | None:
        row = silver_rows.agg(F.min("event_time"), F.max("event_time")).first()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def _table_ms(self, name: str, column: str, how: str = "max") -> int | None:
        """The newest (or oldest) time in a table's column, in epoch ms; None when it has none."""
        path = self.lake.table(name)
        if not delta_exists(self.spark, path):
            return None
        pick = F.max(_ms(column)) if how == "max" else F.min(_ms(column))
        row = self.spark.read.format("delta").load(path).agg(pick).first()
        return None if row is None or row[0] is None else int(row[0])

    def _maintenance(self, end_ms: int) -> DataFrame:
        """gold/maintenance over the lookback ending at ``end_ms`` (car_minutes, and the scored
        windows for fuel per style)."""
        since = end_ms - int(self.upkeep.lookback_days * 86_400_000)
        minutes = (
            self.spark.read.format("delta")
            .load(self.lake.table("gold/car_minutes"))
            .where(_ms("minute").between(since, end_ms - 1))
        )
        styles = None
        if delta_exists(self.spark, self.lake.table("gold/driver_style")):
            styles = (
                self.spark.read.format("delta")
                .load(self.lake.table("gold/driver_style"))
                .where(_ms("window_end") > since)
            )
        return maintenance.maintenance(minutes, styles, self.upkeep)

    def _roll_up(self, batch_id: int) -> list[str]:
        """Write the gold windows that have closed (phase two, after gold/car_minutes is written);
        returns the tables written."""
        if self.newest_ms is None:
            return []
        for name in self.rollups:
            if name not in self.windows:
                self.windows[name] = gold.Windows(self._table_ms(name, "window_end"))
        first_minute = 0
        if any(w.closed_ms is None for w in self.windows.values()):
            first_minute = self._table_ms("gold/car_minutes", "minute", "min") or self.newest_ms
        due = {name: w.due(first_minute, self.newest_ms) for name, w in self.windows.items()}
        ranges = gold.closing(
            {name: span for name, span in due.items() if span is not None},
            self.rollup_every_min,
            {"gold/driving_features": self.features_every_min},  # (the windows left wait for a later roll-up)
        )
        if not ranges:
            return []
        hi = max(span[1] for span in ranges.values())

        def between(span: tuple[int, int]) -> Column:
            return F.col("window_end").between(F.timestamp_millis(F.lit(span[0])), F.timestamp_millis(F.lit(span[1])))

        outputs: dict[str, DataFrame | None] = {}
        fleet = [n for n in ("gold/speed_by_model", "gold/cars_by_color") if n in ranges]
        # the minutes each closing window covers: back from its first end by its length
        starts = [ranges[n][0] - gold.FLEET_WINDOW_MIN * gold.MINUTE_MS for n in fleet]
        if "gold/driving_features" in ranges:
            starts.append(ranges["gold/driving_features"][0] - features.WINDOW_MIN * gold.MINUTE_MS)
        if starts:
            minutes = (
                self.spark.read.format("delta")
                .load(self.lake.table("gold/car_minutes"))
                .where(_ms("minute").between(min(starts), hi - 1))
            )
        if "gold/driving_features" in ranges:
            span = ranges["gold/driving_features"]
            closed = features.driving_features(
                minutes, F.timestamp_millis(F.lit(span[0])), F.timestamp_millis(F.lit(span[1]))
            )
            if self.scorer is not None and self.scorer.ready():  # (computed once for both writes)
                closed = closed.localCheckpoint(eager=True)
                try:
                    outputs["gold/driver_style"] = self.scorer(closed)
                except Exception:  # scoring is an extra: the lake goes on without it
                    log.exception("%s: scoring the driving-feature windows failed; they stay unscored", self.query.name)
            outputs["gold/driving_features"] = closed
        if fleet:  # (over the fleet tables' own window ends: driving features waiting may go further back)
            fleet_lo, fleet_hi = min(ranges[n][0] for n in fleet), max(ranges[n][1] for n in fleet)
            per_car = gold.car_windows_from_minutes(
                minutes, F.timestamp_millis(F.lit(fleet_lo)), F.timestamp_millis(F.lit(fleet_hi))
            ).localCheckpoint(eager=True)
            if "gold/speed_by_model" in ranges:
                outputs["gold/speed_by_model"] = gold.speed_by_model(
                    per_car.where(between(ranges["gold/speed_by_model"]))
                )
            if "gold/cars_by_color" in ranges:
                outputs["gold/cars_by_color"] = gold.cars_by_color(per_car.where(between(ranges["gold/cars_by_color"])))
        if "gold/alerts_per_minute" in ranges and delta_exists(self.spark, self.lake.table("silver/alerts")):
            span = ranges["gold/alerts_per_minute"]
            fired = (
                self.spark.read.format("delta")
                .load(self.lake.table("silver/alerts"))
                .where(F.col("event_time").between(span[0] - gold.MINUTE_MS, span[1] - 1))
            )
            outputs["gold/alerts_per_minute"] = gold.alerts_per_minute(fired).where(between(span))
        # (from the driver only when the rows are few: a quiet fleet's roll-up closes a minute or a few
        # for each car; the first after a long stop, or a query without silver, may close hours)
        ends = max((span[1] - span[0]) // gold.MINUTE_MS + 1 for span in ranges.values())
        cars = self.car_state.num_rows if self.car_state is not None else SMALL_BATCH
        small = "silver" in self.query.layers and self.last_rows <= SMALL_BATCH
        written = self.writer.write(batch_id, outputs, small=small and ends * cars * 5 <= SMALL_BATCH)
        for name, span in ranges.items():
            self.windows[name].closed_ms = span[1]
        upkeep_span = ranges.get("gold/driving_features")
        if upkeep_span is not None and (
            self.upkeep_ms is None or upkeep_span[1] - self.upkeep_ms >= self.upkeep.every_min * gold.MINUTE_MS
        ):  # after the windows' scores are in: fuel per style counts them
            written += self.writer.write(batch_id, {"gold/maintenance": self._maintenance(upkeep_span[1])})
            self.upkeep_ms = upkeep_span[1]
        return written
