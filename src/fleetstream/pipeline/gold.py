"""Gold: per-car minute aggregates, the windows rolled up from them, and each car's latest state.

Incremental, without streaming state:

- ``gold/car_minutes``: each batch appends one row per car and event-time minute it holds (partial
  aggregates: a minute spread over several batches has a row from each; readers sum and max them).
- ``gold/speed_by_model``, ``gold/cars_by_color`` (15-minute windows sliding every minute) and
  ``gold/alerts_per_minute`` (1-minute windows) are rolled up once a window is closed, that is once
  the newest event time is ``LATENESS_MS`` past its end (validation rejects events later than that),
  from ``car_minutes`` (a car's minute is one row, not one per event) and ``silver/alerts``.
- ``gold/episodes_per_minute``: alert episodes opened and resolved per 1-minute window, rule,
  color and model, appended by the episodes query (partial counts per batch; readers sum them).
- ``gold/car_state``: each car's latest report, kept in memory and written whole every batch (one
  row per car; no read, join or MERGE of the table).
- ``gold/driving_features`` (5-minute windows ending every minute) are rolled up from the partial
  sums ``car_minutes`` also holds (:mod:`fleetstream.ml.features`), and ``gold/driver_style`` scores
  them (:mod:`fleetstream.ml.score`).
- ``gold/maintenance`` (one row per car: wear, service and fuel; rewritten every few minutes) is
  computed from ``car_minutes`` too, and ``gold/overheat_warnings`` (the reports a car was warned on)
  from each batch's rows (:mod:`fleetstream.ml.maintenance`).

The pure functions below take and return DataFrames; :class:`Windows` decides which windows close.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fleetstream.ml import features, maintenance
from fleetstream.pipeline import DEFAULT_MAX_LATENESS_S

MINUTE_MS = 60_000
FLEET_WINDOW_MIN = 15  # the sliding windows' length in minutes (they slide every minute)
LATENESS_MS = DEFAULT_MAX_LATENESS_S * 1000


def car_minutes(silver: DataFrame, fired: DataFrame | None = None, previous: DataFrame | None = None) -> DataFrame:
    """One row per car and event-time minute of a batch of silver rows: events, speed and rpm sums
    and maxima, the hottest coolant, the lowest fuel level, the alerts raised (``fired``), and the
    partial sums the driving features and the maintenance figures are made of
    (:func:`fleetstream.ml.features.minute_partials`, :func:`fleetstream.ml.maintenance.minute_partials`;
    ``previous``: each car's report before the batch, for the changes across batches)."""
    rows = (
        features.with_motion(silver, previous)
        .withColumn("minute", F.date_trunc("minute", F.col("event_ts")))
        .groupBy("minute", "car_id", "model", "color")
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.sum("speed").alias("sum_speed"),
            F.max("speed").alias("max_speed"),
            F.sum("rpm").alias("sum_rpm"),
            F.max("rpm").alias("max_rpm"),
            F.max("coolant_temp").alias("max_coolant_temp"),
            F.min("fuel_level").alias("min_fuel_level"),
            *features.minute_partials(),
            *maintenance.minute_partials(),
        )
    )
    if fired is None:
        return rows.withColumn("alerts", F.lit(0).cast("long"))
    raised = fired.groupBy(F.date_trunc("minute", F.timestamp_millis("event_time")).alias("minute"), "car_id").agg(
        F.count(F.lit(1)).alias("alerts")
    )
    return rows.join(raised, ["minute", "car_id"], "left").withColumn("alerts", F.coalesce("alerts", F.lit(0)))


def car_windows(silver: DataFrame) -> DataFrame:
    """15-minute windows sliding every minute over silver rows, one row per car: model, color, top
    and summed speed, events. The definition the roll-up from ``car_minutes`` must equal (tests)."""
    return (
        silver.groupBy(F.window("event_ts", f"{FLEET_WINDOW_MIN} minutes", "1 minute").alias("w"), "car_id", "model",
                       "color")
        .agg(F.max("speed").alias("max_speed"), F.sum("speed").alias("sum_speed"), F.count("*").alias("events"))
        .select(F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "*")
        .drop("w")
    )  # fmt: skip


def car_windows_from_minutes(minutes: DataFrame, first_end: Column, last_end: Column) -> DataFrame:
    """The 15-minute windows ending from ``first_end`` to ``last_end`` (timestamps, minute-aligned),
    one row per car, rolled up from ``car_minutes`` rows: a minute falls in the 15 windows that end
    1 to 15 minutes after it starts."""
    ends = F.sequence(
        F.col("minute") + F.expr("INTERVAL 1 MINUTE"),
        F.col("minute") + F.expr(f"INTERVAL {FLEET_WINDOW_MIN} MINUTES"),
        F.expr("INTERVAL 1 MINUTE"),
    )
    return (
        minutes.withColumn("window_end", F.explode(ends))
        .where(F.col("window_end").between(first_end, last_end))
        .groupBy("window_end", "car_id", "model", "color")
        .agg(F.max("max_speed").alias("max_speed"), F.sum("sum_speed").alias("sum_speed"),
             F.sum("events").alias("events"))
        .withColumn("window_start", F.col("window_end") - F.expr(f"INTERVAL {FLEET_WINDOW_MIN} MINUTES"))
    )  # fmt: skip


def speed_by_model(per_car: DataFrame) -> DataFrame:
    """Max and mean speed per model and window, from per-car windows (``car_windows``)."""
    return per_car.groupBy("window_start", "window_end", "model").agg(
        F.max("max_speed").alias("max_speed"),
        (F.sum("sum_speed") / F.sum("events")).alias("avg_speed"),
        F.sum("events").alias("events"),
    )


def cars_by_color(per_car: DataFrame) -> DataFrame:
    """Distinct cars seen per color and window, from per-car windows (``car_windows``)."""
    return per_car.groupBy("window_start", "window_end", "color").agg(
        F.count_distinct("car_id").alias("cars"), F.sum("events").alias("events")
    )


def alerts_per_minute(alerts: DataFrame) -> DataFrame:
    """1-minute tumbling windows: alert counts by rule, severity, color and model."""
    return (
        alerts.groupBy(
            F.window(F.timestamp_millis("event_time"), "1 minute").alias("w"), "rule", "severity", "color", "model"
        )
        .agg(F.count("*").alias("alerts"))
        .select(F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "*")
        .drop("w")
    )


def episodes_per_minute(steps: DataFrame) -> DataFrame:
    """1-minute tumbling windows: alert episodes opened (by ``opened_at``) and resolved (by
    ``resolved_at``) per rule, color and model, from a batch of lifecycle steps. Partial counts: each
    batch appends the steps it holds (a step is in exactly one batch); readers sum them."""
    marks = steps.where(F.col("lifecycle").isin("opened", "resolved")).select(
        "rule", "color", "model", "lifecycle",
        F.timestamp_millis(
            F.when(F.col("lifecycle") == "opened", F.col("opened_at")).otherwise(F.col("resolved_at"))
        ).alias("at"),
    )  # fmt: skip
    return (
        marks.groupBy(F.window("at", "1 minute").alias("w"), "rule", "color", "model")
        .agg(
            F.count_if(F.col("lifecycle") == "opened").alias("opened"),
            F.count_if(F.col("lifecycle") == "resolved").alias("resolved"),
        )
        .select(F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "*")
        .drop("w")
    )


def latest_per_car(silver: DataFrame, fired: DataFrame | None = None) -> DataFrame:
    """Each car's latest report (position, speed, rpm, gear) in a batch of silver rows, flagged
    ``alerting`` when a rule fired on that report."""
    state = F.struct("event_time", "event_id", "lat", "lon", "heading", "speed", "rpm", "gear", "expected_gear",
                     "coolant_temp", "fuel_level", "engine_on", "model", "color")  # fmt: skip
    latest = silver.groupBy("car_id").agg(F.max_by(state, F.col("event_time")).alias("s")).select("car_id", "s.*")
    if fired is None:
        return latest.withColumn("alerting", F.lit(False))
    flagged = fired.select("event_id").distinct().withColumn("alerting", F.lit(True))
    return latest.join(flagged, "event_id", "left").withColumn("alerting", F.coalesce("alerting", F.lit(False)))


def newest_per_car(current: DataFrame, batch: DataFrame) -> DataFrame:
    """The cars' state after a batch: one row per car, from the ``current`` state and a batch's
    ``latest_per_car`` rows, the newest event_time winning and the batch's row winning a tie."""
    order = Window.partitionBy("car_id").orderBy(F.desc("event_time"), F.desc("_newer"))
    both = current.withColumn("_newer", F.lit(0)).unionByName(batch.withColumn("_newer", F.lit(1)))
    return both.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1).drop("_newer", "_rank")


def ripe(due: Mapping[str, tuple[int, int]], every_min: int) -> bool:
    """Whether a roll-up closes the windows ``due`` (table -> (first end, last end), from
    :meth:`Windows.due`) now: once one table has ``every_min`` window ends due (they all close then).

    >>> ripe({"a": (60_000, 180_000), "b": (120_000, 180_000)}, 3), ripe({"a": (60_000, 120_000)}, 3)
    (True, False)
    >>> ripe({"a": (60_000, 60_000)}, 1), ripe({}, 1)
    (True, False)
    """
    return bool(due) and max(last - first for first, last in due.values()) >= (every_min - 1) * MINUTE_MS


def closing(due: Mapping[str, tuple[int, int]], every_min: int, waits: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The windows a roll-up closes now (table -> (first end, last end)): those ``due``, less the
    tables of ``waits`` (table -> minutes) with fewer window ends due than that; nothing unless
    what is left is :func:`ripe` for ``every_min``.

    >>> closing({"fleet": (60_000, 60_000), "features": (60_000, 180_000)}, 1, {"features": 5})
    {'fleet': (60000, 60000)}
    >>> closing({"fleet": (60_000, 60_000), "features": (60_000, 300_000)}, 1, {"features": 5})
    {'fleet': (60000, 60000), 'features': (60000, 300000)}
    >>> closing({"features": (60_000, 180_000)}, 1, {"features": 5}), closing({"fleet": (0, 0)}, 3, {})
    ({}, {})
    """
    kept = {name: span for name, span in due.items() if ripe({name: span}, waits.get(name, 1))}
    return kept if ripe(kept, every_min) else {}


@dataclass
class Windows:
    """Which window ends a roll-up closes: minute-aligned ends after the last one closed
    (``closed_ms``; None before the first) up to the newest event time minus ``lateness_ms``.

    >>> w = Windows(closed_ms=None)
    >>> w.due(first_minute_ms=0, newest_ms=LATENESS_MS + 150_000)  # ends at 1 and 2 minutes
    (60000, 120000)
    >>> w.closed_ms = 120000
    >>> w.due(0, LATENESS_MS + 170_000) is None
    True
    """

    closed_ms: int | None
    lateness_ms: int = LATENESS_MS

    def due(self, first_minute_ms: int, newest_ms: int) -> tuple[int, int] | None:
        """(first end, last end) in epoch ms to close now, or None."""
        last = (newest_ms - self.lateness_ms) // MINUTE_MS * MINUTE_MS
        first = (self.closed_ms if self.closed_ms is not None else first_minute_ms) + MINUTE_MS
        return (first, last) if first <= last else None
