"""Driving features: what the driving-style model sees of a car over a few minutes of driving.

Two steps, both pure DataFrame functions (Spark built-ins only), so that the stream computes them
incrementally without state and a backfill computes the same from silver:

1. :func:`minute_partials` adds, to the per-car and minute partial aggregates of
   ``gold/car_minutes`` (one row per batch), the sums every feature is made of: counts, sums and
   sums of squares, maxima, counts per RPM bin, harsh events, and the sums of a least-squares line
   through the temperatures. Sums add up across batches, so a minute spread over several batches is
   the sum of its rows. :func:`with_motion` first gives each report the acceleration and the gear
   change since the car's previous report (the previous batch's last report included), so the
   speed differences that cross a batch boundary are not lost.
2. :func:`driving_features` rolls the minutes up into windows of ``WINDOW_MIN`` minutes ending every
   minute (``gold/driving_features``, written once a window has closed) and turns the sums into
   features: means, standard deviations, shares, slopes. docs/ml.md gives each formula.

Why 5 minutes: a driving style shows in how a car accelerates, brakes and shifts, and a city car
does each a few times a minute; one minute holds too few of them (a red light can fill it), 15
minutes would leave a new car unscored for a quarter of an hour. Windows ending every minute give
the live score a fresh value each minute (a live stream writes and scores them
``--features-every-minutes``, 5, at a time).
"""

from __future__ import annotations

import itertools

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

WINDOW_MIN = 5
MINUTE_S = 60
#: the gap between two reports of a car above which no acceleration is computed between them (s)
MAX_GAP_S = 5.0
#: harsh acceleration and braking, m/s² (about 0.3 g and 0.35 g: common telematics thresholds)
HARSH_ACCEL = 3.0
HARSH_BRAKE = -3.5
#: moving: above this speed (km/h); idling: engine on and not moving
MOVING_KMH = 1.0
#: the upper bounds of the RPM bins (the last bin has none): share of engine-on time in each
RPM_BINS = (1500, 2500, 3500)
#: a window is scored (and used in training) when the car moved in at least this many reports
MIN_MOVING_REPORTS = 60

#: the columns the model is trained on, in order (``gold/driving_features`` holds more: keys, counts)
FEATURES = (
    "speed_mean", "speed_max", "speed_std",
    "rpm_mean", "rpm_max", "rpm_std",
    "throttle_mean", "throttle_max", "throttle_std",
    "brake_mean", "brake_max", "brake_std",
    "accel_mean", "accel_std", "accel_max", "decel_max",
    "harsh_accels", "harsh_brakes",
    "rpm_bin_0", "rpm_bin_1", "rpm_bin_2", "rpm_bin_3",
    "upshift_rpm",
    "coolant_slope", "oil_slope",
    "power_factor",
    "idle_share", "moving_share",
)  # fmt: skip

_MOTION = ("car_id", "event_time", "speed", "gear", "rpm")


def with_motion(silver: DataFrame, previous: DataFrame | None = None) -> DataFrame:
    """``silver`` with ``accel`` (m/s², from the speed change since the car's previous report, None
    after a gap over ``MAX_GAP_S``), ``dt_s`` (the seconds since that report, None after such a gap)
    and ``upshift_rpm`` (the rpm of the previous report when the gear went up from a driving gear).
    ``previous``: each car's last report before these (``car_id``, ``event_time``, ``speed``,
    ``gear``, ``rpm``; for example gold/car_state), or None."""
    rows = silver.withColumn("_prev", F.lit(False))
    if previous is not None:
        earlier = previous.select(*_MOTION).withColumn("_prev", F.lit(True))
        rows = rows.unionByName(earlier, allowMissingColumns=True)
    order = Window.partitionBy("car_id").orderBy("event_time", "_prev")
    dt_s = (F.col("event_time") - F.lag("event_time").over(order)) / 1000.0
    dv = (F.col("speed") - F.lag("speed").over(order)) / 3.6
    gear_before, rpm_before = F.lag("gear").over(order), F.lag("rpm").over(order)
    close = (dt_s > 0) & (dt_s <= MAX_GAP_S)
    return (
        rows.withColumn("accel", F.when(close, dv / dt_s))
        .withColumn("dt_s", F.when(close, dt_s))
        .withColumn("upshift_rpm", F.when((F.col("gear") > gear_before) & (gear_before >= 1), rpm_before))
        .where(~F.col("_prev"))
        .drop("_prev")
    )


def _sq(column: str) -> Column:
    return F.col(column) * F.col(column)


def minute_partials() -> list[Column]:
    """The aggregates :func:`driving_features` needs, per car and minute, over rows from
    :func:`with_motion` with a ``minute`` column (the event time's minute, a timestamp). All are
    sums, counts or extrema: a minute's rows from several batches combine by sum (max, min)."""
    on = F.col("engine_on")
    t = F.col("event_time") / 1000.0 - F.unix_seconds(F.col("minute"))  # seconds into the minute
    bins = [F.col("rpm") < RPM_BINS[0]]
    bins += [(F.col("rpm") >= lo) & (F.col("rpm") < hi) for lo, hi in itertools.pairwise(RPM_BINS)]
    bins += [F.col("rpm") >= RPM_BINS[-1]]
    return [
        F.sum(_sq("speed")).alias("sum_speed2"),
        F.sum(_sq("rpm")).alias("sum_rpm2"),
        *(agg for c in ("throttle", "brake") for agg in (
            F.sum(c).alias(f"sum_{c}"), F.sum(_sq(c)).alias(f"sum_{c}2"), F.max(c).alias(f"max_{c}"))),
        F.count("accel").alias("accel_n"),
        F.sum("accel").alias("sum_accel"),
        F.sum(_sq("accel")).alias("sum_accel2"),
        F.max("accel").alias("max_accel"),
        F.min("accel").alias("min_accel"),
        F.count_if(F.col("accel") >= HARSH_ACCEL).alias("harsh_accels"),
        F.count_if(F.col("accel") <= HARSH_BRAKE).alias("harsh_brakes"),
        F.count("upshift_rpm").alias("upshifts"),
        F.sum("upshift_rpm").alias("sum_upshift_rpm"),
        F.count_if(on).alias("engine_on_events"),
        *(F.count_if(on & b).alias(f"rpm_bin_{i}_events") for i, b in enumerate(bins)),
        F.count_if(on & (F.col("speed") < MOVING_KMH)).alias("idle_events"),
        F.count_if(F.col("speed") >= MOVING_KMH).alias("moving_events"),
        F.sum(t).alias("sum_t"),
        F.sum(t * t).alias("sum_t2"),
        *(agg for c, name in (("coolant_temp", "coolant"), ("oil_temp", "oil")) for agg in (
            F.sum(c).alias(f"sum_{name}"), F.sum(t * F.col(c)).alias(f"sum_t_{name}"))),
        F.sum(F.col("throttle") / 100.0 * F.col("rpm") / 1000.0).alias("sum_power"),
    ]  # fmt: skip


#: the partial columns that add up (every other partial is a max or a min)
_SUMS = (
    "events", "sum_speed", "sum_speed2", "sum_rpm", "sum_rpm2", "sum_throttle", "sum_throttle2", "sum_brake",
    "sum_brake2", "accel_n", "sum_accel", "sum_accel2", "harsh_accels", "harsh_brakes", "upshifts",
    "sum_upshift_rpm", "engine_on_events", *(f"rpm_bin_{i}_events" for i in range(len(RPM_BINS) + 1)),
    "idle_events", "moving_events", "sum_coolant", "sum_oil", "sum_power",
)  # fmt: skip
_MAXES = ("max_speed", "max_rpm", "max_throttle", "max_brake", "max_accel")


def _std(n: Column, total: Column, squares: Column) -> Column:
    """Sample standard deviation from a count, a sum and a sum of squares (None under two values)."""
    return F.when(n >= 2, F.sqrt(F.greatest(F.lit(0.0), (squares - total * total / n) / (n - 1))))


def _slope(n: Column, st: Column, stt: Column, sy: Column, sty: Column) -> Column:
    """Least-squares slope per minute from the sums of t, t², y and t·y (t in seconds)."""
    denominator = n * stt - st * st
    return F.when((n >= 2) & (denominator > 0), (n * sty - st * sy) / denominator * MINUTE_S)


def driving_features(minutes: DataFrame, first_end: Column, last_end: Column) -> DataFrame:
    """The feature windows ending from ``first_end`` to ``last_end`` (minute-aligned timestamps),
    one row per car, from ``gold/car_minutes`` rows (partial: several rows per car and minute add
    up). A minute falls in the ``WINDOW_MIN`` windows that end 1 to ``WINDOW_MIN`` minutes after it
    starts. The temperature sums are per minute (t from the minute's start); moved to the window's
    start, a minute ``o`` seconds into the window adds ``o`` to each t: Σt + n·o, Σt² + 2o·Σt + n·o²,
    Σt·y + o·Σy."""
    ends = F.sequence(
        F.col("minute") + F.expr("INTERVAL 1 MINUTE"),
        F.col("minute") + F.expr(f"INTERVAL {WINDOW_MIN} MINUTES"),
        F.expr("INTERVAL 1 MINUTE"),
    )
    rows = minutes.withColumn("window_end", F.explode(ends)).where(F.col("window_end").between(first_end, last_end))
    o = (F.unix_seconds(F.col("minute")) - F.unix_seconds(F.col("window_end")) + WINDOW_MIN * MINUTE_S).cast("double")
    n = F.col("events")
    shifted = rows.withColumns({
        "w_t": F.col("sum_t") + n * o,
        "w_t2": F.col("sum_t2") + 2 * o * F.col("sum_t") + n * o * o,
        "w_t_coolant": F.col("sum_t_coolant") + o * F.col("sum_coolant"),
        "w_t_oil": F.col("sum_t_oil") + o * F.col("sum_oil"),
    })  # fmt: skip
    summed = shifted.groupBy("window_end", "car_id", "model", "color").agg(
        *(F.sum(c).alias(c) for c in (*_SUMS, "w_t", "w_t2", "w_t_coolant", "w_t_oil")),
        *(F.max(c).alias(c) for c in _MAXES),
        F.min("min_accel").alias("min_accel"),
    )
    c = F.col
    on = c("engine_on_events")
    features = {
        "speed_mean": c("sum_speed") / c("events"),
        "speed_max": c("max_speed"),
        "speed_std": _std(c("events"), c("sum_speed"), c("sum_speed2")),
        "rpm_mean": c("sum_rpm") / c("events"),
        "rpm_max": c("max_rpm").cast("double"),
        "rpm_std": _std(c("events"), c("sum_rpm"), c("sum_rpm2")),
        **{f"{x}_{k}": v for x in ("throttle", "brake") for k, v in (
            ("mean", c(f"sum_{x}") / c("events")), ("max", c(f"max_{x}")),
            ("std", _std(c("events"), c(f"sum_{x}"), c(f"sum_{x}2"))))},
        "accel_mean": c("sum_accel") / c("accel_n"),
        "accel_std": _std(c("accel_n"), c("sum_accel"), c("sum_accel2")),
        "accel_max": c("max_accel"),
        "decel_max": -c("min_accel"),
        "harsh_accels": c("harsh_accels").cast("double"),
        "harsh_brakes": c("harsh_brakes").cast("double"),
        **{f"rpm_bin_{i}": F.when(on > 0, c(f"rpm_bin_{i}_events") / on) for i in range(len(RPM_BINS) + 1)},
        "upshift_rpm": c("sum_upshift_rpm") / c("upshifts"),
        "coolant_slope": _slope(c("events"), c("w_t"), c("w_t2"), c("sum_coolant"), c("w_t_coolant")),
        "oil_slope": _slope(c("events"), c("w_t"), c("w_t2"), c("sum_oil"), c("w_t_oil")),
        "power_factor": c("sum_power") / c("events"),
        "idle_share": F.when(on > 0, c("idle_events") / on),
        "moving_share": c("moving_events") / c("events"),
    }  # fmt: skip
    return summed.select(
        (c("window_end") - F.expr(f"INTERVAL {WINDOW_MIN} MINUTES")).alias("window_start"),
        "window_end", "car_id", "model", "color",
        c("events"), c("moving_events"), c("upshifts"),
        *(v.cast("double").alias(k) for k, v in features.items()),
    )  # fmt: skip


def scorable(features: DataFrame) -> DataFrame:
    """The feature windows a model is trained on and scores: the car moved in at least
    ``MIN_MOVING_REPORTS`` reports (a parked car has no driving style)."""
    return features.where(F.col("moving_events") >= MIN_MOVING_REPORTS)
