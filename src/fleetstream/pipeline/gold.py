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
- ``gold/car_state``: each car's latest report, kept on the driver (one row per car, Arrow) and
  written whole at every gold update (no read, join or MERGE of the table; on a local lake, by
  delta-rs from the driver: :meth:`~fleetstream.pipeline.writer.Writer.write`). A small batch's rows
  come to the driver with its keys, so the update runs no Spark job for it (:func:`latest_local`);
  a large one's latest reports come back from one job (:func:`latest_per_car`).
- ``gold/driving_features`` (5-minute windows ending every minute) are rolled up from the partial
  sums ``car_minutes`` also holds (:mod:`fleetstream.ml.features`), and ``gold/driver_style`` scores
  them (:mod:`fleetstream.ml.score`).
- ``gold/maintenance`` (one row per car: wear, service and fuel; rewritten every few minutes) is
  computed from ``car_minutes`` too, and ``gold/overheat_warnings`` (the reports a car was warned on)
  from each batch's rows (:mod:`fleetstream.ml.maintenance`).

The pure functions below take and return DataFrames (the car state's, Arrow tables on the driver);
:class:`Windows` decides which windows close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StructField, StructType

from fleetstream.ml import features, maintenance
from fleetstream.pipeline import DEFAULT_MAX_LATENESS_S

if TYPE_CHECKING:
    import pyarrow as pa

MINUTE_MS = 60_000
FLEET_WINDOW_MIN = 15  # the sliding windows' length in minutes (they slide every minute)
LATENESS_MS = DEFAULT_MAX_LATENESS_S * 1000
#: what gold/car_state keeps of each car's latest report, after ``car_id`` and before ``alerting``
STATE_COLUMNS = ("event_time", "event_id", "lat", "lon", "heading", "speed", "rpm", "gear", "expected_gear",
                 "coolant_temp", "fuel_level", "engine_on", "model", "color")  # fmt: skip
CAR_STATE_COLUMNS = ("car_id", *STATE_COLUMNS, "alerting")


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
    state = F.struct(*STATE_COLUMNS)
    latest = silver.groupBy("car_id").agg(F.max_by(state, F.col("event_time")).alias("s")).select("car_id", "s.*")
    if fired is None:
        return latest.withColumn("alerting", F.lit(False))
    flagged = fired.select("event_id").distinct().withColumn("alerting", F.lit(True))
    return latest.join(flagged, "event_id", "left").withColumn("alerting", F.coalesce("alerting", F.lit(False)))


def state_schema(silver: StructType) -> StructType:
    """gold/car_state's schema (``CAR_STATE_COLUMNS``) for silver rows of schema ``silver``."""
    return StructType(
        [StructField(c, silver[c].dataType) for c in ("car_id", *STATE_COLUMNS)]
        + [StructField("alerting", BooleanType())]
    )


def latest_local(rows: pa.Table, alerting_ids: pa.Array) -> pa.Table:
    """:func:`latest_per_car` on the driver, for a small batch's silver rows already there (``car_id``
    and ``STATE_COLUMNS``): each car's latest report (on a tie, the later row), flagged ``alerting``
    when its event_id is among ``alerting_ids``. No Spark job.

    >>> import pyarrow as pa
    >>> rows = pa.table({"car_id": ["c1", "c1", "c2"], "event_id": ["old", "new", "only"], "event_time": [1, 2, 1]})
    >>> rows = rows.append_column("model", pa.array(["A"] * 3))
    >>> latest_local(rows, pa.array(["new"])).select(["car_id", "event_id", "alerting"]).to_pylist()
    [{'car_id': 'c1', 'event_id': 'new', 'alerting': True}, {'car_id': 'c2', 'event_id': 'only', 'alerting': False}]
    """
    import pyarrow.compute as pc

    latest = _last_per_car(rows.select([c for c in ("car_id", *STATE_COLUMNS) if c in rows.column_names]))
    ids = latest["event_id"].combine_chunks()
    flag = pc.fill_null(pc.is_in(ids, value_set=alerting_ids.cast(ids.type)), False)
    return latest.append_column("alerting", flag)


def newest_local(states: Sequence[pa.Table | None]) -> pa.Table | None:
    """The cars' state after batches, on the driver: over any number of car states, oldest first (the
    table's, then each batch's :func:`latest_per_car` or :func:`latest_local`), one row per car, the
    newest event_time winning and the later state winning a tie. A column one of them lacks (a table
    an earlier version wrote) is null there. None when every state is None.

    >>> import pyarrow as pa
    >>> def state(*rows):
    ...     return pa.table({k: [r[i] for r in rows] for i, k in enumerate(("car_id", "event_id", "event_time"))})
    >>> current = state(("c1", "kept", 5), ("c2", "replaced", 0), ("c3", "tie-old", 0))
    >>> batch = state(("c1", "older", 0), ("c2", "newer", 1), ("c3", "tie-new", 0), ("c4", "new", 0))
    >>> newest_local([current, None, batch])["event_id"].to_pylist()
    ['kept', 'newer', 'tie-new', 'new']
    """
    import pyarrow as pa

    parts = [s.select([c for c in CAR_STATE_COLUMNS if c in s.column_names]) for s in states if s is not None]
    if not parts:
        return None
    return _last_per_car(pa.concat_tables(parts, promote_options="permissive"))


def _last_per_car(rows: pa.Table) -> pa.Table:
    """Each car's last row by event_time, then by position (the later row wins a tie), by car_id."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = rows.num_rows
    at = rows.append_column("_at", pa.array(np.arange(n, dtype=np.int64)))
    ordered = at.take(pc.sort_indices(at, [("car_id", "ascending"), ("event_time", "ascending"), ("_at", "ascending")]))
    if n < 2:
        return ordered.drop_columns(["_at"])
    ids = ordered["car_id"].combine_chunks()
    changes = pc.fill_null(pc.not_equal(ids.slice(0, n - 1), ids.slice(1)), True)
    last = pa.concat_arrays([changes, pa.array([True])])
    return ordered.filter(last).drop_columns(["_at"])


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
