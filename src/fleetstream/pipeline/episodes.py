"""Alert episodes: the rules' lifecycle per car, on Spark's arbitrary state (``transformWithState``).

A micro-batch query of its own reads ``silver/telemetry`` as a stream (validated, enriched, first
copies only), computes per event whether each rule's condition and clear condition hold (Spark
built-ins), and hands each car's events to :class:`EpisodeProcessor`, which keeps each rule's
pending or open episode in RocksDB state and runs :class:`~fleetstream.rules.lifecycle.Machine`
over them; the same processor keeps each car's last report and opens a ``vehicle_offline`` episode
when the car goes silent (:mod:`fleetstream.pipeline.offline`), and sessionises its reports into
trips (:mod:`fleetstream.pipeline.trips`). Its output, one row per lifecycle step, goes to Kafka
``alert-data`` (``opened``, ``repeated``, ``escalated``, ``resolved``; ``kind: episode``) and to
Delta ``silver/alert_episodes``, one row per episode, upserted (docs/rules.md).

Real-time mode allows no state (Spark 4.2): the per-event alerts stay on their real-time path, and
this is a second consumer, seconds behind silver.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.stateful_processor import (
    ExpiredTimerInfo,
    StatefulProcessor,
    StatefulProcessorHandle,
    TimerValues,
)

from fleetstream.pipeline import DEFAULT_MAX_LATENESS_S, OFFLINE_AFTER_S, gold
from fleetstream.pipeline.clock import StepClock, jvm_pid
from fleetstream.pipeline.offline import CAR_SCHEMA, Car, Offline
from fleetstream.pipeline.trips import TRIP_GAP_S, TRIP_STATE_SCHEMA, OpenTrip, Report, Trips
from fleetstream.pipeline.writer import KAFKA, Writer, local_frame
from fleetstream.rules.engine import Rule
from fleetstream.rules.lifecycle import Episode, Event, Machine, Update

__all__ = [
    "EPISODE_COLUMNS",
    "EpisodeProcessor",
    "EpisodesBatch",
    "episode_input",
    "episode_messages",
    "episode_rows",
    "episodes",
]

#: the episodes query's checkpoint (and writer) name, by the layout of its state; an earlier one
#: (``STATE_LAYOUTS[:-1]``) cannot be read by this processor (Spark refuses a changed state schema)
STATE_LAYOUTS = ("episodes", "episodes-v2", "episodes-v3", "episodes-v4")
#: the checkpoint (and writer) names of earlier versions' stateful queries: the earlier layouts, and
#: the offline query (part of this one since episodes-v3); episodes-v4 keeps a car's open trip with its
#: last report in one value state
RETIRED = ("offline", *STATE_LAYOUTS[:-1])
#: the processor's time mode: event time, for the timers that call a silent car offline and drop
#: the state of a car not seen for ``STATE_TTL_S``. Not ProcessingTime (the mode of Spark's own
#: state TTL): in that mode Spark 4.2 runs a batch at every trigger with or without new rows, and
#: an available-now run never ends.
TIME_MODE = "EventTime"
#: a car's state (open trip, pending and open episodes) is dropped once the fleet's clock (the
#: watermark) is this far past its last report
STATE_TTL_S = 86_400
#: expiry timers fall on whole hours: a car's timer moves once an hour, not at every batch
TTL_STEP_MS = 3_600_000
#: the watermark stays this far behind the newest event time seen: silver accepts reports up to
#: DEFAULT_MAX_LATENESS_S late, and the processor must not drop any of them as late
WATERMARK_S = DEFAULT_MAX_LATENESS_S + 60
STATE_SCHEMA = (
    "episode_id STRING, phase STRING, severity STRING, started_at BIGINT, last_seen_at BIGINT, "
    "last_event_at BIGINT, events BIGINT, peak_speed DOUBLE, peak_rpm BIGINT, peak_coolant DOUBLE, "
    "opened_at BIGINT, clear_since BIGINT, notified_at BIGINT"
)
#: a car's value state: its last report, timers and offline episode (``car``, :class:`Car`) and its
#: open trip (``trip``, :class:`OpenTrip`; NULL: none). One state, so a car costs one state read and
#: at most one write per batch: each state call is a round trip from the Python worker to the JVM
CAR_STATE_SCHEMA = f"car STRUCT<{CAR_SCHEMA}>, trip STRUCT<{TRIP_STATE_SCHEMA}>"
#: one lifecycle step of an episode: alert-data's episode messages and (the newest per episode)
#: silver/alert_episodes' rows
EPISODE_SCHEMA = (
    "episode_id STRING, car_id STRING, rule STRING, severity STRING, message STRING, model STRING, "
    "color STRING, lifecycle STRING, status STRING, started_at BIGINT, opened_at BIGINT, "
    "last_seen_at BIGINT, cleared_at BIGINT, resolved_at BIGINT, events BIGINT, peak_speed DOUBLE, "
    "peak_rpm BIGINT, peak_coolant DOUBLE, as_of BIGINT"
)
#: a trip as it stands (open) or ended (closed): (the newest per trip) gold/trips' rows
TRIP_SCHEMA = (
    "trip_id STRING, car_id STRING, model STRING, color STRING, status STRING, started_at BIGINT, "
    "ended_at BIGINT, start_lat DOUBLE, start_lon DOUBLE, end_lat DOUBLE, end_lon DOUBLE, distance_km DOUBLE, "
    "duration_s DOUBLE, max_speed DOUBLE, mean_speed DOUBLE, fuel_used_pct DOUBLE, harsh_accelerations BIGINT, "
    "harsh_brakings BIGINT, episodes BIGINT, reports BIGINT, as_of BIGINT"
)


def _names(schema: str) -> tuple[str, ...]:
    return tuple(part.strip().split(" ")[0] for part in schema.split(","))


EPISODE_COLUMNS, TRIP_COLUMNS = _names(EPISODE_SCHEMA), _names(TRIP_SCHEMA)
#: the processor's output: an episode step or a trip, told apart by ``kind``
OUTPUT_SCHEMA = f"kind STRING, episode STRUCT<{EPISODE_SCHEMA}>, trip STRUCT<{TRIP_SCHEMA}>"


#: the strings each event carries to the processor, in this order, before its numbers
TEXTS = ("car_id", "event_id", "event_ts", "model", "color")
#: the numbers each event carries to the processor, packed in one array column (``numbers``), in
#: this order; then the reading of each frozen-sensor rule (``reading_<i>``, rule ``i``)
NUMBERS = (
    "event_time", "speed", "rpm", "coolant_temp", "engine_on", "odometer", "lat", "lon", "fuel_level",
    "fires", "clears",
)  # fmt: skip

#: where an input row's fields are (it is a tuple: by position is the fastest)
_ID_AT, _MODEL_AT, _COLOR_AT = (TEXTS.index(name) for name in ("event_id", "model", "color"))
_NUMBERS_AT = len(TEXTS)


def episode_input(silver: DataFrame, rules: list[Rule]) -> DataFrame:
    """What the processor reads per event: ids, time, values, and per rule whether its condition
    (``fires``) and its clear condition (``clears``) hold, as bits (rule ``i``: bit ``i``; a condition
    that is NULL holds neither), and the reading each frozen-sensor rule watches (``reading_<i>``).

    The numbers go as one ``ARRAY<DOUBLE>`` (``NUMBERS``, then the readings; a millisecond time and
    the bits are exact in a double): each row crosses to the Python worker, whose
    ``transformWithState`` reader converts each column of each row on its own (pyarrow's ``as_py``),
    and one array of ten numbers converts about nine times faster than ten columns
    (docs/benchmarks.md, Session 67). The processor unpacks them (:meth:`EpisodeProcessor.events`)."""

    def bits(texts: list[str]) -> Any:
        held = [F.when(F.coalesce(F.expr(t).cast("boolean"), F.lit(False)), F.lit(1 << i)).otherwise(0)
                for i, t in enumerate(texts)]  # fmt: skip
        return sum(held[1:], held[0]).cast("bigint")

    columns = {
        **{name: F.col(name) for name in NUMBERS[:-2]},
        "fires": bits([rule.condition for rule in rules]),
        "clears": bits([rule.clear_expression for rule in rules]),
        **{f"reading_{i}": F.col(rule.unchanged) for i, rule in enumerate(rules) if rule.unchanged},
    }
    return silver.select(*TEXTS, F.array(*[c.cast("double") for c in columns.values()]).alias("numbers"))


class EpisodeProcessor(StatefulProcessor):
    """Per car: each rule's pending or open episode in a map state (rule -> episode; a rule with none
    has no entry), and in a value state (``CAR_STATE_SCHEMA``) its last report
    (:class:`~fleetstream.pipeline.offline.Car`: its timers, its offline episode) with its open trip
    (:class:`~fleetstream.pipeline.trips.Trips`), which also keeps the last reading each
    frozen-sensor rule watches. A car silent for ``offline_after_s`` (None: never) while the fleet
    goes on is offline."""

    def __init__(
        self,
        rules: list[Rule],
        trip_gap_s: float = TRIP_GAP_S,
        ttl_s: float = STATE_TTL_S,
        offline_after_s: float | None = OFFLINE_AFTER_S,
    ) -> None:
        self.ttl_ms = round(ttl_s * 1000)
        self.offline = Offline(offline_after_s, WATERMARK_S)
        self.rules = list(rules)
        self.machines = [Machine(r.name, r.severity, r.lifecycle) for r in self.rules]
        self.watched = [i for i, r in enumerate(self.rules) if r.unchanged is not None]
        self.unwatched = sum(1 << i for i, r in enumerate(self.rules) if r.unchanged is None)  # their bits
        self.names = {r.name for r in self.rules}
        #: the names of an input row's numbers, in their order (:func:`episode_input`)
        self.numbers = (*NUMBERS, *(f"reading_{i}" for i in self.watched))
        self.held_after: int | None = None
        self.trip_gap_ms = round(trip_gap_s * 1000)

    def init(self, handle: StatefulProcessorHandle) -> None:
        _freeze_worker_heap()
        self.handle = handle
        self.state = handle.getMapState("episodes", "rule STRING", STATE_SCHEMA)
        self.car = handle.getValueState("car", CAR_STATE_SCHEMA)

    def handleInputRows(self, key: Any, rows: Iterator[Row], timerValues: TimerValues) -> Iterator[Row]:  # noqa: N802, N803 (Spark's names)
        car_id = key[0]
        events = self.events(rows)
        if not events:
            return
        known = self.car.get()  # (car, open trip or None); None: a car not seen before
        car_before = None if known is None else Car(*known[0])
        offline, car = self.offline.reports(car_id, events, car_before, timerValues.getCurrentWatermarkInMs())
        yield from offline
        held = None if known is None else known[1]  # None when the car has no open trip
        before = None if held is None else OpenTrip(*held)
        unchanged, readings = self._unchanged(events, before)
        opened: list[int] = []
        self.held_after = 0
        # the common case, a driving car with nothing pending or open and nothing firing: its
        # episodes' state is not read (each state call is a round trip to the JVM)
        if before is None or before.held != 0 or self._fires(events, unchanged):
            for update in self._episodes(car_id, events, unchanged):
                if update["lifecycle"] == "opened":
                    opened.append(update["opened_at"])
                yield Row(kind="episode", episode=update, trip=None)
        trips = Trips(car_id, self.trip_gap_ms, before)
        for step in trips.feed(events, sorted(opened)):
            yield Row(kind="trip", episode=None, trip=step)
        trip: tuple[Any, ...] | None = None  # the open trip to keep
        if trips.open is not None:
            if self.watched and (trips.open.reading_at, trips.open.readings) != readings:
                trips.open = replace(trips.open, reading_at=readings[0], readings=readings[1])
                trips.changed = True
            if trips.open.held != self.held_after:
                trips.open = replace(trips.open, held=self.held_after)
                trips.changed = True
            trip = trips.open.as_tuple() if trips.changed else held
        self._keep(car, car_before, trip, moved=trip is not held)

    def events(self, rows: Iterable[Row]) -> list[Report]:
        """The input rows (:func:`episode_input`) as events by name, their numbers unpacked and typed
        (time, bits and rpm whole, engine on a bool), sorted by event time and id."""
        out: list[Report] = []
        for row in rows:
            e = dict(zip(self.numbers, row[_NUMBERS_AT], strict=True))
            e["event_id"], e["model"], e["color"] = row[_ID_AT], row[_MODEL_AT], row[_COLOR_AT]
            e["event_time"], e["fires"], e["clears"] = int(e["event_time"]), int(e["fires"]), int(e["clears"])
            if e["rpm"] is not None:
                e["rpm"] = int(e["rpm"])
            if e["engine_on"] is not None:
                e["engine_on"] = e["engine_on"] != 0
            out.append(e)
        out.sort(key=lambda e: (e["event_time"], e["event_id"]))
        return out

    def _keep(self, car: Car, before: Car | None, trip: tuple[Any, ...] | None, moved: bool) -> None:
        """Write the car's last report and open trip (``moved``: the batch moved the trip), moving
        its timers: the state-expiry one when the hour it falls on moves (an older one finds the car
        seen since, and passes), the offline one when the last report moves. One state write, and
        none when nothing moved."""
        expires = self._expiry(car.last_event_at)
        if car.expires_at != expires:
            self.handle.registerTimer(expires)
            car = replace(car, expires_at=expires)
        was = None if before is None else before.timer_at
        if was != car.timer_at:
            if was is not None:
                self.handle.deleteTimer(was)
            if car.timer_at is not None:
                self.handle.registerTimer(car.timer_at)
        if car != before or moved:
            self.car.update((car.as_tuple(), trip))

    def _expiry(self, last_at: int) -> int:
        """The whole hour at or after ``last_at`` plus the TTL."""
        return -(-(last_at + self.ttl_ms) // TTL_STEP_MS) * TTL_STEP_MS

    def handleExpiredTimer(  # noqa: N802 (Spark's name)
        self,
        key: Any,
        timerValues: TimerValues,  # noqa: N803
        expiredTimerInfo: ExpiredTimerInfo,  # noqa: N803
    ) -> Iterator[Row]:
        """The car's offline timer: it is offline (:mod:`fleetstream.pipeline.offline`). Or the
        fleet's clock is a TTL past its last report: its state goes (its trip and episodes stay in
        the tables as last written; its last report stays while it is offline, for its return to
        resolve, or while its offline timer is yet to fire), unless it reported since (a later
        timer stands)."""
        known = self.car.get()
        if known is None:
            self.state.clear()
            return iter(())
        car, trip = Car(*known[0]), known[1]
        expiry = expiredTimerInfo.getExpiryTimeInMs()
        steps: list[Row] = []
        if car.timer_at == expiry and car.episode_id is None:
            car, opened = self.offline.expired(key[0], car)
            steps.append(opened)
        if self._expiry(car.last_event_at) > expiry:
            if steps:
                self.car.update((car.as_tuple(), trip))
            return iter(steps)
        self.state.clear()
        if car.episode_id is None and car.timer_at is None:
            self.car.clear()
        else:  # (offline, or an offline time longer than the TTL: the car waits for its offline timer)
            self.car.update((car.as_tuple(), None))
        return iter(steps)

    def _unchanged(
        self, events: list[Report], trip: OpenTrip | None
    ) -> tuple[dict[int, list[bool]], tuple[int | None, list[float | None] | None]]:
        """Per frozen-sensor rule (by index): at each event, whether its condition holds and its reading
        equals the previous report's (an event older than the last one seen fires nothing); and the
        last reading of each, with its time, to keep. The readings of the batch before are kept with
        the car's open trip (no state call of their own; a car with no open trip, its engine off,
        starts afresh)."""
        if not self.watched:
            return {}, (None, None)
        last_at: int | None = None
        values: list[float | None] = [None] * len(self.watched)
        if trip is not None and trip.readings is not None and len(trip.readings) == len(self.watched):
            last_at, values = trip.reading_at, list(trip.readings)
        flags: dict[int, list[bool]] = {index: [] for index in self.watched}
        for e in events:
            at = e["event_time"]
            if last_at is not None and at <= last_at:
                for index in self.watched:
                    flags[index].append(False)
                continue
            for k, index in enumerate(self.watched):
                holds, value = bool(e["fires"] >> index & 1), e[f"reading_{index}"]
                flags[index].append(holds and value is not None and value == values[k])
                values[k] = value if holds else None
            last_at = at
        return flags, (last_at, values)

    def _fires(self, events: list[Report], unchanged: dict[int, list[bool]]) -> bool:
        """Whether any rule fires at any of the events (a frozen-sensor rule: where its reading repeats)."""
        return any(any(flags) for flags in unchanged.values()) or any(e["fires"] & self.unwatched for e in events)

    def _episodes(self, car_id: str, events: list[Report], unchanged: dict[int, list[bool]]) -> Iterator[Row]:
        """Each rule's lifecycle over the events; sets ``held_after`` to the episodes still pending or open."""
        held = {k[0]: Episode(*v) for k, v in self.state.iterator()}
        kept = 0
        last = events[-1]
        for index, (rule, machine) in enumerate(zip(self.rules, self.machines, strict=True)):
            before = held.get(rule.name)
            flags = unchanged.get(index)
            bit = 1 << index
            fires = [bool(e["fires"] & bit) for e in events] if flags is None else flags
            if before is None and not any(fires):
                continue  # nothing pending or open, nothing fires
            state, emitted = before, None
            for e, fired in zip(events, fires, strict=True):
                clears = bool(e["clears"] & bit) if flags is None else not fired
                event = Event(
                    e["event_id"], e["event_time"], fired, clears, e["speed"], e["rpm"], e["coolant_temp"],
                )  # fmt: skip
                state, updates = machine.step(state, event, car_id)
                for update in updates:
                    emitted = update.episode if update.lifecycle != "resolved" else None
                    yield _row(update, car_id, rule, last, event.event_time)
            if state is not None and state.phase == "open" and state not in (before, emitted):
                yield _row(Update("updated", state), car_id, rule, last, last["event_time"])
            if state is None:
                if before is not None:
                    self.state.removeKey((rule.name,))
            elif state != before:
                self.state.updateValue((rule.name,), _state_tuple(state))
            kept += state is not None
        self.held_after = kept + sum(1 for name in held if name not in self.names)  # (rules since removed)

    def close(self) -> None:
        pass


def _freeze_worker_heap() -> None:
    """In a Spark Python worker, at its first task: what it holds then (pyspark, pandas, pyarrow and
    this package, imported) moved out of the cyclic garbage collector's reach (``gc.freeze``).
    pyspark's daemon runs a full ``gc.collect()`` after every task of a reused worker, which
    otherwise walks all of that each time (docs/benchmarks.md, Session 57). Objects made later are
    collected as before. Not outside a worker (a test's ``TwsTester``)."""
    from pyspark import TaskContext

    if gc.get_freeze_count() == 0 and TaskContext.get() is not None:
        gc.collect()
        gc.freeze()


def _state_tuple(e: Episode) -> tuple[Any, ...]:
    return (e.episode_id, e.phase, e.severity, e.started_at, e.last_seen_at, e.last_event_at, e.events,
            e.peak_speed, e.peak_rpm, e.peak_coolant, e.opened_at, e.clear_since, e.notified_at)  # fmt: skip


def _row(update: Update, car_id: str, rule: Rule, last: Report, as_of: int) -> Row:
    e = update.episode
    return Row(
        episode_id=e.episode_id, car_id=car_id, rule=rule.name, severity=e.severity, message=rule.message,
        model=last["model"], color=last["color"], lifecycle=update.lifecycle,
        status="resolved" if update.lifecycle == "resolved" else "open", started_at=e.started_at,
        opened_at=e.opened_at, last_seen_at=e.last_seen_at, cleared_at=update.cleared_at,
        resolved_at=update.resolved_at, events=e.events, peak_speed=e.peak_speed,
        peak_rpm=None if e.peak_rpm is None else int(e.peak_rpm), peak_coolant=e.peak_coolant, as_of=as_of,
    )  # fmt: skip


def episodes(silver: DataFrame, rules: list[Rule], offline_after_s: float | None = OFFLINE_AFTER_S) -> DataFrame:
    """The lifecycle steps of every car's episodes (its rules' and its offline ones), and its trips,
    from a stream of silver rows."""
    processor = EpisodeProcessor(rules, offline_after_s=offline_after_s)
    return (
        episode_input(silver, rules)
        .withWatermark("event_ts", f"{WATERMARK_S} seconds")
        .groupBy("car_id")
        .transformWithState(processor, OUTPUT_SCHEMA, "Append", TIME_MODE)
    )


def newest(rows: DataFrame, key: str, columns: tuple[str, ...], done: str) -> DataFrame:
    """The newest row per ``key`` by ``as_of``; of rows with the same ``as_of``, one whose status is
    ``done`` (rows read back from silver/pending_upserts; a batch's own are folded in the driver,
    :func:`_newest`)."""
    order = [F.col("as_of"), (F.col("status") == done).alias("done")]
    return rows.groupBy(key).agg(F.max_by(F.struct(*columns), F.struct(*order)).alias("r")).select("r.*")


def episode_rows(steps: DataFrame) -> DataFrame:
    """silver/alert_episodes' rows from a batch of episode steps: the newest step of each episode."""
    return newest(steps, "episode_id", EPISODE_COLUMNS, "resolved")


def trip_rows(trips: DataFrame) -> DataFrame:
    """gold/trips' rows from a batch of trip updates: the newest of each trip."""
    return newest(trips, "trip_id", TRIP_COLUMNS, "closed")


def episode_messages(steps: DataFrame, topic: str) -> DataFrame:
    """alert-data records of the steps worth a notification (not ``updated``), keyed by car_id."""
    notified = steps.where(F.col("lifecycle") != "updated")
    return notified.select(
        F.lit(topic).alias("topic"),
        F.col("car_id").alias("key"),
        F.to_json(F.struct(F.lit("episode").alias("kind"), *EPISODE_COLUMNS)).alias("value"),
    )


def episodes_session(spark: SparkSession, partitions: int) -> SparkSession:
    """A session of the application for the episodes query: RocksDB state (transformWithState
    needs it) on ``partitions`` state partitions (fixed in the checkpoint at the first start)."""
    session = spark.newSession()
    session.conf.set(
        "spark.sql.streaming.stateStore.providerClass",
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    )
    session.conf.set("spark.sql.shuffle.partitions", str(partitions))
    return session


TRIPS_TABLE = "gold/trips"
EPISODE_MINUTES_TABLE = "gold/episodes_per_minute"
#: the rows a stateful query has not upserted yet, in a partition per query (its writer's name)
PENDING_TABLE = "silver/pending_upserts"
PENDING_SCHEMA = f"query STRING, {OUTPUT_SCHEMA}"
#: the key and the status that ends each upserted table's rows
_KEYS = {"silver/alert_episodes": ("episode_id", "resolved"), TRIPS_TABLE: ("trip_id", "closed")}


class EpisodesBatch:
    """The episodes query's ``foreachBatch``: the steps' newest rows upserted into
    silver/alert_episodes and the trips' into gold/trips, the opened and resolved episodes counted
    into gold/episodes_per_minute, the notifications published to alert-data, at once.

    An upsert (a Delta MERGE) costs about 1.2 s of CPU whatever its size, five times an append
    (docs/benchmarks.md), so the two tables are upserted at most every ``progress_every_s`` (0:
    every batch) and in the run's first batch. In between, the rows wait in the driver (the newest
    per episode and trip) and, so that a stop or a crash loses none of them, each batch's newest
    rows are appended to this query's partition of silver/pending_upserts, which each upsert
    empties after its MERGEs. The dashboard reads that table with the two (``lake.read``); the
    notifications and gold/episodes_per_minute are written in the batch itself. What a stopped run
    left waiting is upserted at the next start (:func:`upsert_waiting`).
    """

    TABLE = "silver/alert_episodes"

    def __init__(
        self, writer: Writer, alerts_topic: str | None, progress_every_s: float = 0.0, name: str = "episodes"
    ) -> None:
        self.writer, self.alerts_topic = writer, alerts_topic
        self.progress_every_s = progress_every_s
        self.upserted_at: float | None = None  # when this run last upserted the tables (monotonic)
        self.pending: dict[str, dict[str, tuple[Any, ...]]] = {self.TABLE: {}, TRIPS_TABLE: {}}  # table -> key -> row
        self.waiting_written = False  # this query's partition of silver/pending_upserts written since the upsert
        self.__name__ = name  # what Spark and stoppable() call it
        self.jvm_pid: int | None = None  # the driver JVM's, for the step log (taken at the first batch)
        self.clock_ended: tuple[float, float | None] | None = None  # the last batch's step clock's end

    def __call__(self, output: DataFrame, batch_id: int) -> None:
        if self.jvm_pid is None:
            self.jvm_pid = jvm_pid(output.sparkSession)
        clock = StepClock(f"{self.__name__} batch {batch_id}", self.jvm_pid, self.clock_ended)
        # The batch's output (a step per episode that moved, a row per trip that moved: small) is
        # collected once, running the stateful step; the rest is done here and written from local
        # rows (each Spark job over the state's output would run it again, or cache it).
        rows = output.collect()
        clock.mark("state")
        session = output.sparkSession
        steps = [tuple(r["episode"]) for r in rows if r["kind"] == "episode"]
        fresh = {self.TABLE: steps, TRIPS_TABLE: [tuple(r["trip"]) for r in rows if r["kind"] == "trip"]}
        outputs: dict[str, DataFrame | None] = {}
        lifecycle = EPISODE_COLUMNS.index("lifecycle")
        notified = [s for s in steps if s[lifecycle] != "updated"]
        if notified:  # a lifecycle step: notified, and counted if it opens or resolves
            frame = local_frame(session, notified, EPISODE_SCHEMA)
            if self.alerts_topic is not None:
                outputs[KAFKA] = episode_messages(frame, self.alerts_topic)
            if any(s[lifecycle] in ("opened", "resolved") for s in notified):
                outputs[EPISODE_MINUTES_TABLE] = gold.episodes_per_minute(frame)
        own = {table: _newest(table, {}, got) for table, got in fresh.items()}  # this batch's newest
        for table, got in own.items():
            _newest(table, self.pending[table], got.values())
        last = self.upserted_at
        due = self.progress_every_s <= 0 or last is None or time.monotonic() - last >= self.progress_every_s
        if due:
            for table, held in self.pending.items():
                if held:
                    outputs[table] = local_frame(session, list(held.values()), _SCHEMAS[table])
        elif any(own.values()):
            outputs[PENDING_TABLE] = self._waiting(session, own)
            self.waiting_written = True
        if any(frame is not None for frame in outputs.values()):
            written = self.writer.write(batch_id, outputs, small=True)  # (local rows: appended from the driver)
            clock.mark(f"write {'+'.join(written)}")
        if due:
            self.upserted_at = time.monotonic()
            for kept in self.pending.values():
                kept.clear()
            if self.waiting_written:  # emptied once upserted (after: a crash between loses nothing)
                self.writer.empty(PENDING_TABLE, PENDING_SCHEMA)
                self.waiting_written = False
                clock.mark("write emptied")
        clock.log()
        self.clock_ended = clock.ended

    def _waiting(self, session: SparkSession, own: dict[str, dict[str, tuple[Any, ...]]]) -> DataFrame:
        """Rows of this query's partition of silver/pending_upserts: this batch's newest ones."""
        query = self.writer.writer
        rows: list[tuple[str, str, tuple[Any, ...] | None, tuple[Any, ...] | None]]
        rows = [(query, "episode", row, None) for row in own[self.TABLE].values()]
        rows += [(query, "trip", None, row) for row in own[TRIPS_TABLE].values()]
        return local_frame(session, rows, PENDING_SCHEMA).coalesce(1)  # (one file)


def _newest(
    table: str, kept: dict[str, tuple[Any, ...]], rows: Iterable[tuple[Any, ...]]
) -> dict[str, tuple[Any, ...]]:
    """Fold ``rows`` (in the order they came) into ``kept`` (key -> row), the newest per key by
    ``as_of`` (the last column); of two with the same ``as_of``, the ended one, else the one that
    came later (a report at the same event time as the car's last one, arriving in a later batch,
    still counts); returns ``kept``.

    >>> kept = _newest(TRIPS_TABLE, {}, [("t1",) + (None,) * 19 + (5,)])
    >>> closed = ("t1", None, None, None, "closed") + (None,) * 15 + (5,)
    >>> _newest(TRIPS_TABLE, kept, [closed])["t1"][4]
    'closed'
    >>> _newest(TRIPS_TABLE, kept, [("t1", None, None, None, "open") + (None,) * 15 + (5,)])["t1"][4]
    'closed'
    """
    done = _KEYS[table][1]
    key, status = _INDEX[table]
    for row in rows:
        was = kept.get(row[key])
        if was is None or (row[-1], row[status] == done) >= (was[-1], was[status] == done):
            kept[row[key]] = row
    return kept


#: each upserted table's schema, and where its key and status are in its rows (as held in the driver)
_SCHEMAS = {EpisodesBatch.TABLE: EPISODE_SCHEMA, TRIPS_TABLE: TRIP_SCHEMA}
_INDEX = {
    table: (_names(schema).index(_KEYS[table][0]), _names(schema).index("status")) for table, schema in _SCHEMAS.items()
}


def upsert_waiting(spark: SparkSession, writer: Writer, retired: tuple[str, ...] = ()) -> int:
    """Upsert the rows a stopped run of ``writer``'s query left in its partition of
    silver/pending_upserts into their tables, then empty the partition (before the query starts);
    with the partitions of the ``retired`` names of the query (an earlier version's); returns how
    many rows there were."""
    from fleetstream.pipeline.writer import delta_exists

    path = writer.lake.table(PENDING_TABLE)
    if not delta_exists(spark, path):
        return 0
    mine = F.col("query").isin(writer.writer, *retired)
    waiting = spark.read.format("delta").load(path).where(mine).persist()
    try:
        count = waiting.count()
        if count:
            for table, kind, newest_rows in (
                (EpisodesBatch.TABLE, "episode", episode_rows),
                (TRIPS_TABLE, "trip", trip_rows),
            ):
                rows = waiting.where(F.col("kind") == kind).select(f"{kind}.*")
                if not rows.isEmpty():
                    writer.upsert(table, newest_rows(rows))
            names = {r["query"] for r in waiting.select("query").distinct().collect()}
            for name in sorted(names):
                writer.empty(PENDING_TABLE, PENDING_SCHEMA, partition=name)
    finally:
        waiting.unpersist()
    return count
