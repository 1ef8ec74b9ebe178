"""Driving features: the stream's incremental path (partial sums per car and minute, written one
batch at a time, rolled up into windows) equals the features computed directly from the events."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream.ml import features as FT
from fleetstream.pipeline import gold
from fleetstream.pipeline.silver import with_event_time

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000


def events(seed: int = 7, minutes: int = 12) -> pd.DataFrame:
    """Two cars at 1 Hz with varied speed, gears, pedals and warming temperatures; car b loses its
    connection for 20 s (no acceleration across the gap)."""
    rng = np.random.default_rng(seed)
    frames = []
    for car, offset in (("a", 0), ("b", 400)):
        t = T0 + offset + np.arange(minutes * 60) * 1000
        if car == "b":
            t = t[(t < T0 + 3 * MIN) | (t > T0 + 3 * MIN + 20_000)]
        n = len(t)
        speed = np.clip(np.cumsum(rng.normal(0, 4, n)) + 40, 0, None).round(1)
        speed[50:70] = 0.0  # a stop
        gear = np.clip((speed // 20).astype(int) + 1, 1, 6)
        gear[speed == 0] = 0
        frames.append(pd.DataFrame({
            "event_id": [f"{car}{i}" for i in range(n)], "car_id": car, "model": "M", "color": "red",
            "event_time": t, "speed": speed, "rpm": rng.integers(800, 5200, n).astype(float), "gear": gear,
            "throttle": rng.uniform(0, 100, n).round(1), "brake": rng.uniform(0, 30, n).round(1),
            "coolant_temp": 80 + np.arange(n) * 0.01 + rng.normal(0, 0.2, n),
            "oil_temp": 90 - np.arange(n) * 0.02 + rng.normal(0, 0.2, n),
            "fuel_level": 50.0, "engine_on": np.arange(n) % 97 != 0,
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def expected(rows: pd.DataFrame, first_end: int, last_end: int) -> dict[tuple[str, int], dict[str, float]]:
    """The features of every window by their definitions (docs/ml.md), in pandas."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    for car, car_rows in rows.sort_values("event_time").groupby("car_id"):
        r = car_rows.reset_index(drop=True)
        dt = r["event_time"].diff() / 1000.0
        r["accel"] = np.where((dt > 0) & (dt <= FT.MAX_GAP_S), r["speed"].diff() / 3.6 / dt, np.nan)
        up = (r["gear"] > r["gear"].shift()) & (r["gear"].shift() >= 1)
        r["upshift_rpm"] = np.where(up, r["rpm"].shift(), np.nan)
        for end in range(first_end, last_end + 1, MIN):
            w = r[(r["event_time"] >= end - FT.WINDOW_MIN * MIN) & (r["event_time"] < end)]
            if w.empty:
                continue
            on = w[w["engine_on"]]
            t = (w["event_time"] - (end - FT.WINDOW_MIN * MIN)) / 1000.0
            bins = [0, *FT.RPM_BINS, math.inf]
            f = {
                **{f"{c}_{k}": getattr(w[c], k)() for c in ("speed", "rpm", "throttle", "brake")
                   for k in ("mean", "max", "std")},
                "accel_mean": w["accel"].mean(), "accel_std": w["accel"].std(), "accel_max": w["accel"].max(),
                "decel_max": -w["accel"].min(),
                "harsh_accels": float((w["accel"] >= FT.HARSH_ACCEL).sum()),
                "harsh_brakes": float((w["accel"] <= FT.HARSH_BRAKE).sum()),
                **{f"rpm_bin_{i}": float(((on["rpm"] >= lo) & (on["rpm"] < hi)).mean())
                   for i, (lo, hi) in enumerate(itertools.pairwise(bins))},
                "upshift_rpm": w["upshift_rpm"].mean(),
                "coolant_slope": np.polyfit(t, w["coolant_temp"], 1)[0] * 60,
                "oil_slope": np.polyfit(t, w["oil_temp"], 1)[0] * 60,
                "power_factor": (w["throttle"] / 100 * w["rpm"] / 1000).mean(),
                "idle_share": float((on["speed"] < FT.MOVING_KMH).mean()),
                "moving_share": float((w["speed"] >= FT.MOVING_KMH).mean()),
            }  # fmt: skip
            out[(str(car), end)] = f
    return out


def silver(spark: SparkSession, rows: pd.DataFrame) -> DataFrame:
    schema = ("event_id string, car_id string, model string, color string, event_time long, speed double, "
              "rpm double, gear long, throttle double, brake double, coolant_temp double, oil_temp double, "
              "fuel_level double, engine_on boolean")  # fmt: skip
    return with_event_time(spark.createDataFrame(rows, schema))


def test_features_from_minutes_written_batch_by_batch_equal_the_direct_definition(spark: SparkSession) -> None:
    rows = events()
    frame = silver(spark, rows)
    # four batches by arrival: each its own partial rows, the motion carried over from the cars' last report
    cuts = [T0, T0 + 3 * MIN + 5_500, T0 + 3 * MIN + 30_000, T0 + 7 * MIN + 200, T0 + 20 * MIN]
    minutes, previous = None, None
    for lo, hi in itertools.pairwise(cuts):
        batch = frame.where((F.col("event_time") >= lo) & (F.col("event_time") < hi))
        part = gold.car_minutes(batch, None, previous).localCheckpoint()
        minutes = part if minutes is None else minutes.unionByName(part)
        last = F.max_by(F.struct("event_time", "speed", "gear", "rpm"), "event_time")
        previous = batch.groupBy("car_id").agg(last.alias("s")).select("car_id", "s.*").localCheckpoint()
    assert minutes is not None
    first, last = T0 + MIN, T0 + 12 * MIN
    got = {
        (r["car_id"], int(r["window_end"].timestamp() * 1000)): r.asDict()
        for r in FT.driving_features(
            minutes, F.timestamp_millis(F.lit(first)), F.timestamp_millis(F.lit(last))
        ).collect()
    }
    want = expected(rows, first, last)
    assert set(got) == set(want)
    assert len(want) == 24
    for key, features in want.items():
        row = got[key]
        assert row["events"] == len(rows[(rows.car_id == key[0]) & (rows.event_time >= key[1] - 5 * MIN)
                                         & (rows.event_time < key[1])])  # fmt: skip
        for name in FT.FEATURES:
            value, reference = row[name], features[name]
            if reference is None or (isinstance(reference, float) and math.isnan(reference)):
                assert value is None, (key, name)
            else:
                assert value == pytest.approx(reference, rel=1e-6, abs=1e-6), (key, name, value, reference)
    # the gap: car b's first report after 20 s of silence has no acceleration
    assert got[("b", T0 + 4 * MIN)]["accel_mean"] == pytest.approx(want[("b", T0 + 4 * MIN)]["accel_mean"])


def test_acceleration_and_upshifts_continue_from_the_previous_report(spark: SparkSession) -> None:
    batch = silver(spark, pd.DataFrame({
        "event_id": ["2", "3"], "car_id": "a", "model": "M", "color": "red", "event_time": [T0 + 1000, T0 + 2000],
        "speed": [36.0, 72.0], "rpm": [3000.0, 2000.0], "gear": [2, 3], "throttle": 50.0, "brake": 0.0,
        "coolant_temp": 90.0, "oil_temp": 95.0, "fuel_level": 50.0, "engine_on": True,
    }))  # fmt: skip
    previous = batch.sparkSession.createDataFrame(
        [("a", T0, 18.0, 2, 2500.0)], "car_id string, event_time long, speed double, gear long, rpm double"
    )
    got = {r["event_id"]: (r["accel"], r["upshift_rpm"]) for r in FT.with_motion(batch, previous).collect()}
    assert got == {"2": (pytest.approx(5.0), None), "3": (pytest.approx(10.0), 3000.0)}
    alone = {r["event_id"]: r["accel"] for r in FT.with_motion(batch).collect()}
    assert alone == {"2": None, "3": pytest.approx(10.0)}
