"""Maintenance: wear, service and fuel per car (``gold/maintenance``), and the overheating early
warning (``gold/overheat_warnings``). Pure DataFrame functions, Spark built-ins only.

Wear and fuel come from partial sums ``gold/car_minutes`` holds (:func:`minute_partials`: distance
and fuel integrated over the time between a car's reports, the lowest and highest tyre and brake wear
and odometer of the minute), so :func:`maintenance` reads one row per car and minute, not every
report. docs/ml.md gives each formula.

The early warning is a trend model: a car whose coolant is above every engine's normal operating
temperature and rising fast enough to cross the overheat limit within ``WARN_HORIZON_S`` is warned,
per report, from the least-squares slope of its last ``TREND_MS`` of coolant readings. Why 30
seconds and not minutes: the simulator's overheating (like a failing water pump or fan) takes a
coolant from normal to the limit in about 80 seconds; a slope over minutes would still be averaging
the normal readings when the limit is crossed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fleetstream.config import MaintenanceSettings

if TYPE_CHECKING:
    import pyarrow as pa

#: the trend: a least-squares line through a car's coolant readings of the last 30 s
TREND_MS = 30_000
#: a trend needs at least this many readings (a car's first reports in a batch have few)
TREND_MIN_READINGS = 10
#: reports at or below this coolant temperature are not looked at (°C): no engine warns from there
HOT_FROM_C = 90.0
#: warn from this coolant temperature (°C): above the hottest normal operating point of every model
#: (88 °C plus 9 °C at full load)
WARN_FROM_C = 97.0
#: warn when the coolant rises at least this fast (°C per minute) ...
WARN_MIN_SLOPE = 6.0
#: ... and the line crosses the limit within this many seconds
WARN_HORIZON_S = 120.0
#: wear rates and fuel use need at least this many kilometres in the lookback
MIN_KM = 1.0
#: a wear counter that falls by more than this many percentage points from one minute to a later
#: one was reset: the tyres or the brake pads were replaced
REPLACED_DROP = 10.0


def minute_partials() -> list[Column]:
    """The aggregates :func:`maintenance` needs, per car and minute, over rows from
    :func:`fleetstream.ml.features.with_motion` (``dt_s``: seconds since the car's previous report):
    distance (km) and fuel (litres) integrated over those seconds, and the extremes of the odometer
    and the wear counters."""
    dt = F.col("dt_s")
    return [
        F.sum(F.col("speed") / 3600.0 * dt).alias("km"),
        F.sum(F.col("fuel_rate") / 3600.0 * dt).alias("fuel_l"),
        F.max("odometer").alias("max_odometer"),
        F.min("tyre_wear").alias("min_tyre_wear"),
        F.max("tyre_wear").alias("max_tyre_wear"),
        F.min("brake_wear").alias("min_brake_wear"),
        F.max("brake_wear").alias("max_brake_wear"),
    ]


def _left(limit: Column | float, now: Column, rate_per_1000km: Column) -> Column:
    """Kilometres until a wear counter reaches its limit at the rate seen (None: no wear seen)."""
    return F.when(rate_per_1000km > 0, F.greatest(F.lit(0.0), (limit - now) / rate_per_1000km * 1000.0))


def _since_replaced(minutes: DataFrame, part: str) -> DataFrame:
    """Per car, one wear counter (``tyre`` or ``brake``) since its last replacement in the lookback:
    the minute it was replaced (None: not replaced), the wear then and now, and the kilometres since.

    A replacement is a minute whose lowest reading is more than ``REPLACED_DROP`` under the lowest of
    the minute before it (the highest could be the old part's, when it was replaced during that
    minute). That minute's lowest reading is the new part's first; its highest may still be the old
    part's, so "now" is the highest reading of the minutes after it (or that first reading when
    there are none yet)."""
    c = F.col
    lo, hi = f"min_{part}_wear", f"max_{part}_wear"
    per_minute = minutes.groupBy("car_id", "minute").agg(F.min(lo).alias("lo"), F.max(hi).alias("hi"),
                                                         F.sum("km").alias("km"))  # fmt: skip
    order = Window.partitionBy("car_id").orderBy("minute")
    whole = order.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    replaced = c("lo") < F.lag("lo").over(order) - REPLACED_DROP
    marked = per_minute.withColumn("replaced_at", F.max(F.when(replaced, c("minute"))).over(whole))
    since = marked.where(c("replaced_at").isNull() | (c("minute") >= c("replaced_at")))
    after = c("replaced_at").isNull() | (c("minute") > c("replaced_at"))
    return since.groupBy("car_id").agg(
        F.first("replaced_at").alias(f"{part}s_replaced_at"),
        F.min("lo").alias(f"{part}_wear_first"),
        F.coalesce(F.max(F.when(after, c("hi"))), F.min("lo")).alias(f"{part}_wear"),
        F.sum("km").alias(f"{part}_km"),
    )


def maintenance(minutes: DataFrame, styles: DataFrame | None, limits: MaintenanceSettings) -> DataFrame:
    """One row per car from its ``gold/car_minutes`` rows of the lookback (and its scored windows,
    ``gold/driver_style``, for fuel use per style): distance and days seen, the odometer and wear
    now, wear per 1,000 km, kilometres and days left until each service threshold, fuel per 100 km
    overall and per driving style (``unscored``: minutes no window scored). Tyres or brake pads
    replaced in the lookback (:func:`_since_replaced`): their wear and rate count from the new part."""
    c = F.col
    per_car = minutes.groupBy("car_id").agg(
        F.max("model").alias("model"),
        F.max("color").alias("color"),
        F.min("minute").alias("first_minute"),
        F.max("minute").alias("last_minute"),
        F.sum("km").alias("km"),
        F.sum("fuel_l").alias("fuel_l"),
        F.max("max_odometer").alias("odometer"),
    )
    for part in ("tyre", "brake"):
        per_car = per_car.join(_since_replaced(minutes, part), "car_id")
    days = (F.unix_seconds(c("last_minute")) - F.unix_seconds(c("first_minute")) + 60) / 86_400.0
    enough = c("km") >= MIN_KM
    per_day = F.when(enough, c("km") / days)
    rate = {
        part: F.when(
            c(f"{part}_km") >= MIN_KM, (c(f"{part}_wear") - c(f"{part}_wear_first")) / c(f"{part}_km") * 1000.0
        )
        for part in ("tyre", "brake")
    }
    tyre_rate, brake_rate = rate["tyre"], rate["brake"]
    service_left = limits.service_interval_km - F.pmod(c("odometer"), F.lit(limits.service_interval_km))
    out = per_car.select(
        "car_id", "model", "color", "first_minute", "last_minute",
        c("km").alias("km_seen"),
        days.alias("days_seen"),
        per_day.alias("km_per_day"),
        "odometer", "tyre_wear", "brake_wear", "tyres_replaced_at", "brakes_replaced_at",
        tyre_rate.alias("tyre_wear_per_1000km"),
        brake_rate.alias("brake_wear_per_1000km"),
        _left(limits.tyre_wear_limit_pct, c("tyre_wear"), tyre_rate).alias("km_to_tyres"),
        _left(limits.brake_wear_limit_pct, c("brake_wear"), brake_rate).alias("km_to_brakes"),
        service_left.alias("km_to_service"),
        F.when(enough, c("fuel_l") / c("km") * 100.0).alias("fuel_l_per_100km"),
    )  # fmt: skip
    for what in ("tyres", "brakes", "service"):
        out = out.withColumn(f"days_to_{what}", F.when(c("km_per_day") > 0, c(f"km_to_{what}") / c("km_per_day")))
    by_style = _fuel_by_style(minutes, styles)
    return out.join(by_style, "car_id", "left")


def _fuel_by_style(minutes: DataFrame, styles: DataFrame | None) -> DataFrame:
    """Per car: a map from driving style to litres per 100 km (styles with at least ``MIN_KM``). A
    minute's style is that of the scored window ending one minute after the minute starts (the
    window holds the minute and the four before it)."""
    rows = minutes.select("car_id", "minute", "km", "fuel_l")
    if styles is not None:
        scored = styles.select("car_id", (F.col("window_end") - F.expr("INTERVAL 1 MINUTE")).alias("minute"), "style")
        rows = rows.join(scored.dropDuplicates(["car_id", "minute"]), ["car_id", "minute"], "left")
    else:
        rows = rows.withColumn("style", F.lit(None).cast("string"))
    per_style = (
        rows.withColumn("style", F.coalesce("style", F.lit("unscored")))
        .groupBy("car_id", "style")
        .agg(F.sum("km").alias("km"), F.sum("fuel_l").alias("fuel_l"))
        .where(F.col("km") >= MIN_KM)
    )
    return per_style.groupBy("car_id").agg(
        F.map_from_entries(F.collect_list(F.struct("style", (F.col("fuel_l") / F.col("km") * 100.0).alias("l")))).alias(
            "fuel_l_per_100km_by_style"
        )
    )


def may_warn(hottest_c: float | None) -> bool:
    """Whether :func:`overheat_warnings` can warn on rows whose hottest coolant with the engine on is
    ``hottest_c`` (None: no such row): only a report at ``WARN_FROM_C`` or more is warned on.

    >>> may_warn(None), may_warn(WARN_FROM_C - 0.1), may_warn(WARN_FROM_C)
    (False, False, True)
    """
    return hottest_c is not None and hottest_c >= WARN_FROM_C


#: what a trend needs of a report before the rows it is computed on (:func:`trend_context`)
TREND_COLUMNS = ("car_id", "event_time", "coolant_temp", "oil_temp")


def _hot(engine_on: Column, coolant_c: Column) -> Column:
    return engine_on & (coolant_c > HOT_FROM_C)


def overheat_warnings(silver: DataFrame, limit_c: float, context: DataFrame | None = None) -> DataFrame:
    """The reports on which a car is warned of overheating: the coolant is between ``WARN_FROM_C``
    and ``limit_c``, and the least-squares line through the car's readings of the last ``TREND_MS``
    (at least ``TREND_MIN_READINGS`` of them, all above ``HOT_FROM_C``) rises at ``WARN_MIN_SLOPE``
    or more and reaches ``limit_c`` within ``WARN_HORIZON_S``. Slopes in °C per minute; the oil's
    trend is given beside the coolant's.

    ``context``: hot readings from before ``silver``'s rows (``TREND_COLUMNS``; a live lake's
    earlier gold updates, :func:`trend_context`): they count in the trends, and are not warned on.
    Without it a trend starts at ``silver``'s first row: a live lake updating gold every 20 s would
    see at most 20 s of a car's readings, and none at all in an update's first 10 s."""
    hot = silver.where(_hot(F.col("engine_on"), F.col("coolant_temp")))
    if context is not None:
        earlier = context.select(*TREND_COLUMNS).withColumn("_context", F.lit(True))
        hot = hot.withColumn("_context", F.lit(False)).unionByName(earlier, allowMissingColumns=True)
    trend = Window.partitionBy("car_id").orderBy("event_time").rangeBetween(-TREND_MS, 0)
    per_min = 60_000.0  # the slopes are per ms of event time
    rows = hot.select(
        "car_id", "event_id", "event_time", "event_ts", "model", "color", "coolant_temp", "oil_temp", "speed", "rpm",
        (F.regr_slope("coolant_temp", "event_time").over(trend) * per_min).alias("coolant_slope"),
        (F.regr_slope("oil_temp", "event_time").over(trend) * per_min).alias("oil_slope"),
        F.count("coolant_temp").over(trend).alias("readings"),
        *(["_context"] if context is not None else []),
    )  # fmt: skip
    eta = (F.lit(limit_c) - F.col("coolant_temp")) / F.col("coolant_slope") * 60.0
    return (
        rows.withColumn("seconds_to_limit", eta)
        .where(
            (F.col("readings") >= TREND_MIN_READINGS)
            & (F.col("coolant_temp") >= WARN_FROM_C)
            & (F.col("coolant_temp") <= limit_c)
            & (F.col("coolant_slope") >= WARN_MIN_SLOPE)
            & (F.col("seconds_to_limit") <= WARN_HORIZON_S)
            & (~F.col("_context") if context is not None else F.lit(True))
        )
        .drop("readings", "_context")
    )


def hot_readings(silver: DataFrame, newest_ms: int) -> pa.Table:
    """The readings of ``silver`` (``TREND_COLUMNS``) a later update's trends start from: those
    :func:`overheat_warnings` looks at, within ``TREND_MS`` of ``newest_ms`` (the rows' newest event
    time; one job, no shuffle: :func:`trend_context` keeps each car's last ``TREND_MS``). Few: in
    normal operation a coolant stays under ``HOT_FROM_C``."""
    hot = _hot(F.col("engine_on"), F.col("coolant_temp")) & (F.col("event_time") >= newest_ms - TREND_MS)
    return silver.where(hot).select(*TREND_COLUMNS).toArrow()


def hot_local(rows: pa.Table) -> pa.Table:
    """:func:`hot_readings` of rows held in the driver (``TREND_COLUMNS`` and ``engine_on``), all
    of them: :func:`trend_context` keeps the last ``TREND_MS``."""
    import pyarrow.compute as pc

    keep = pc.fill_null(pc.and_(rows["engine_on"], pc.greater(rows["coolant_temp"], HOT_FROM_C)), False)
    return rows.filter(keep).select(list(TREND_COLUMNS))


def trend_context(parts: Sequence[pa.Table | None]) -> pa.Table | None:
    """The hot readings a next update's trends start from: of ``parts`` (earlier context, then the
    newer updates' :func:`hot_readings` or :func:`hot_local`), those within ``TREND_MS`` of their
    car's newest; None when there are none.

    >>> import pyarrow as pa
    >>> rows = pa.table({"car_id": ["a", "a", "a", "b"], "event_time": [0, 20_000, 40_000, 5_000],
    ...                  "coolant_temp": [95.0, 96.0, 97.0, 99.0], "oil_temp": [100.0] * 4})
    >>> sorted(zip(*trend_context([None, rows]).select(["car_id", "event_time"]).to_pydict().values()))
    [('a', 20000), ('a', 40000), ('b', 5000)]
    >>> trend_context([None, rows.slice(0, 0)]) is None
    True
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    known = [p.select(list(TREND_COLUMNS)) for p in parts if p is not None and p.num_rows]
    if not known:
        return None
    rows = pa.concat_tables(known, promote_options="permissive")
    newest = rows.group_by("car_id").aggregate([("event_time", "max")])
    rows = rows.join(newest, "car_id")
    recent = pc.greater_equal(rows["event_time"], pc.subtract(rows["event_time_max"], TREND_MS))
    return rows.filter(recent).select(list(TREND_COLUMNS))
