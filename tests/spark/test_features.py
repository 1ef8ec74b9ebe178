"""Driving features: the stream's incremental path (partial sums per car and minute, written one
batch at a time, rolled up into windows) equals the features computed directly from the events."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream.config import MaintenanceSettings
from fleetstream.ml import features as FT
from fleetstream.ml import maintenance as MT
from fleetstream.pipeline import gold
from fleetstream.pipeline.medallion import LakeBatch
from fleetstream.pipeline.plan import LakeQuery
from fleetstream.pipeline.silver import with_event_time
from fleetstream.pipeline.writer import Lake, Writer

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
            "fuel_rate": rng.uniform(0.5, 12.0, n).round(2),
            "odometer": 1000.0 + np.cumsum(speed) / 3600.0,
            "tyre_wear": 20.0 + np.cumsum(speed) / 3600.0 * 0.003,
            "brake_wear": 30.0 + np.cumsum(speed) / 3600.0 * 0.004,
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
              "fuel_level double, engine_on boolean, fuel_rate double, odometer double, tyre_wear double, "
              "brake_wear double")  # fmt: skip
    return with_event_time(spark.createDataFrame(rows, schema))


def test_features_from_minutes_written_batch_by_batch_equal_the_direct_definition(spark: SparkSession) -> None:
    rows = events()
    frame = silver(spark, rows)
    # four batches by arrival: each its own partial rows, the motion carried over from the cars' last report
    cuts = [T0, T0 + 3 * MIN + 5_500, T0 + 3 * MIN + 30_000, T0 + 7 * MIN + 200, T0 + 20 * MIN]
    minutes = _minutes_batch_by_batch(frame, cuts)
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
        "coolant_temp": 90.0, "oil_temp": 95.0, "fuel_level": 50.0, "engine_on": True, "fuel_rate": 3.0,
        "odometer": 100.0, "tyre_wear": 1.0, "brake_wear": 1.0,
    }))  # fmt: skip
    previous = batch.sparkSession.createDataFrame(
        [("a", T0, 18.0, 2, 2500.0)], "car_id string, event_time long, speed double, gear long, rpm double"
    )
    got = {r["event_id"]: (r["accel"], r["upshift_rpm"]) for r in FT.with_motion(batch, previous).collect()}
    assert got == {"2": (pytest.approx(5.0), None), "3": (pytest.approx(10.0), 3000.0)}
    alone = {r["event_id"]: r["accel"] for r in FT.with_motion(batch).collect()}
    assert alone == {"2": None, "3": pytest.approx(10.0)}


def _minutes_batch_by_batch(frame: DataFrame, cuts: list[int]) -> DataFrame:
    """gold/car_minutes as the stream writes it: one batch at a time, motion carried across."""
    minutes, previous = None, None
    for lo, hi in itertools.pairwise(cuts):
        batch = frame.where((F.col("event_time") >= lo) & (F.col("event_time") < hi))
        part = gold.car_minutes(batch, None, previous).localCheckpoint()
        minutes = part if minutes is None else minutes.unionByName(part)
        last = F.max_by(F.struct("event_time", "speed", "gear", "rpm"), "event_time")
        previous = batch.groupBy("car_id").agg(last.alias("s")).select("car_id", "s.*").localCheckpoint()
    assert minutes is not None
    return minutes


def test_maintenance_from_minutes_written_batch_by_batch_equals_its_definition(spark: SparkSession) -> None:
    rows = events()
    minutes = _minutes_batch_by_batch(silver(spark, rows), [T0, T0 + 3 * MIN + 5_500, T0 + 7 * MIN + 200,
                                                            T0 + 20 * MIN])  # fmt: skip
    # car b's windows ending 6 to 9 minutes in are scored aggressive: its minutes 5 to 8
    styles = spark.createDataFrame(
        [("b", pd.Timestamp(T0 + k * MIN, unit="ms").to_pydatetime(), "aggressive") for k in range(6, 10)],
        "car_id string, window_end timestamp, style string",
    )
    limits = MaintenanceSettings(service_interval_km=1000.0)
    got = {r["car_id"]: r.asDict() for r in MT.maintenance(minutes, styles, limits).collect()}
    assert set(got) == {"a", "b"}
    for car, r in rows.sort_values("event_time").groupby("car_id"):
        dt = r["event_time"].diff() / 1000.0
        dt = dt.where((dt > 0) & (dt <= FT.MAX_GAP_S))
        km_each, fuel_each = r["speed"] / 3600.0 * dt, r["fuel_rate"] / 3600.0 * dt
        km, fuel = km_each.sum(), fuel_each.sum()
        minute = (r["event_time"] - T0) // MIN
        days = (minute.max() - minute.min() + 1) / 1440.0
        enough = km >= MT.MIN_KM  # under it, no rates (car a barely moves)
        tyre_rate = (r["tyre_wear"].max() - r["tyre_wear"].min()) / km * 1000
        brake_rate = (r["brake_wear"].max() - r["brake_wear"].min()) / km * 1000
        want = {
            "km_seen": km, "days_seen": days, "odometer": r["odometer"].max(), "tyre_wear": r["tyre_wear"].max(),
            "km_to_service": 1000.0 - r["odometer"].max() % 1000.0,
        }  # fmt: skip
        rates = {
            "km_per_day": km / days, "tyre_wear_per_1000km": tyre_rate, "brake_wear_per_1000km": brake_rate,
            "km_to_tyres": (80.0 - r["tyre_wear"].max()) / tyre_rate * 1000,
            "km_to_brakes": (80.0 - r["brake_wear"].max()) / brake_rate * 1000,
            "fuel_l_per_100km": fuel / km * 100,
            "days_to_tyres": (80.0 - r["tyre_wear"].max()) / tyre_rate * 1000 / (km / days),
        }  # fmt: skip
        for name, value in want.items():
            assert got[car][name] == pytest.approx(value, rel=1e-9), (car, name)
        for name, value in rates.items():
            if enough:
                assert got[car][name] == pytest.approx(value, rel=1e-9), (car, name)
            else:
                assert got[car][name] is None, (car, name)
        scored = minute.between(5, 8) if car == "b" else minute < 0
        by_style = {"aggressive": (fuel_each[scored].sum(), km_each[scored].sum()),
                    "unscored": (fuel_each[~scored].sum(), km_each[~scored].sum())}  # fmt: skip
        want_styles = {k: f / d * 100 for k, (f, d) in by_style.items() if d >= MT.MIN_KM}
        if want_styles:
            assert got[car]["fuel_l_per_100km_by_style"] == pytest.approx(want_styles, rel=1e-9)
        else:
            assert got[car]["fuel_l_per_100km_by_style"] is None
    assert set(got["b"]["fuel_l_per_100km_by_style"]) == {"aggressive", "unscored"}
    assert got["a"]["km_seen"] < MT.MIN_KM <= got["b"]["km_seen"]


def test_tyres_replaced_in_the_lookback_count_from_the_new_set(spark: SparkSession) -> None:
    """Car r's tyres wear from 60 to 64 % over 4 minutes (1 km a minute), are replaced during minute 4
    (that minute reads 64.2 and 0.5), then wear to 1.1 %; its brakes are not replaced. Car k's tyres
    are never replaced. Two batches wrote partial rows of minute 4 (car_minutes' layout)."""
    schema = ("car_id string, minute timestamp, model string, color string, km double, fuel_l double, "
              "max_odometer double, min_tyre_wear double, max_tyre_wear double, min_brake_wear double, "
              "max_brake_wear double")  # fmt: skip

    def at(k: int) -> object:
        return pd.Timestamp(T0 + k * MIN, unit="ms").to_pydatetime()

    rows = []
    for k in range(4):
        tyre = 60.0 + k
        rows.append(("r", at(k), "M", "Red", 1.0, 0.1, 100.0 + k, tyre, tyre + 1.0, 30.0 + k / 10, 30.0 + (k + 1) / 10))
        rows.append(("k", at(k), "M", "Red", 1.0, 0.1, 200.0 + k, 10.0 + k, 11.0 + k, 5.0, 5.1))
    rows.append(("r", at(4), "M", "Red", 0.5, 0.05, 104.0, 64.0, 64.2, 30.4, 30.45))  # the old set, first batch
    rows.append(("r", at(4), "M", "Red", 0.5, 0.05, 104.5, 0.5, 0.5, 30.45, 30.5))  # the new set, second batch
    for k in range(5, 8):
        rows.append(("r", at(k), "M", "Red", 1.0, 0.1, 100.0 + k, 0.5 + (k - 5) * 0.2, 0.7 + (k - 5) * 0.2,
                     30.5 + (k - 5) / 10, 30.6 + (k - 5) / 10))  # fmt: skip
    minutes = spark.createDataFrame(rows, schema)
    got = {r["car_id"]: r.asDict() for r in MT.maintenance(minutes, None, MaintenanceSettings()).collect()}

    r = got["r"]
    assert r["tyres_replaced_at"] == at(4)
    assert r["tyre_wear"] == pytest.approx(1.1)  # the new set's newest reading, not the old set's 64.2
    km_since = 0.5 + 0.5 + 3 * 1.0  # minute 4's two rows and minutes 5 to 7
    assert r["tyre_wear_per_1000km"] == pytest.approx((1.1 - 0.5) / km_since * 1000)
    assert r["km_to_tyres"] == pytest.approx((80.0 - 1.1) / ((1.1 - 0.5) / km_since * 1000) * 1000)
    assert r["brakes_replaced_at"] is None
    assert r["brake_wear"] == pytest.approx(30.8)
    assert r["brake_wear_per_1000km"] == pytest.approx((30.8 - 30.0) / 8.0 * 1000)
    k = got["k"]
    assert k["tyres_replaced_at"] is None
    assert (k["tyre_wear"], k["tyre_wear_per_1000km"]) == pytest.approx((14.0, (14.0 - 10.0) / 4.0 * 1000))


def test_overheat_warning_comes_before_the_limit_and_never_in_normal_driving(spark: SparkSession) -> None:
    """Three cars at 1 Hz for 10 minutes: one overheats from 200 s on (the simulator's curve: 90 °C
    towards 124 °C with a 90 s time constant, crossing 110 °C 80 s later), one starts cold and warms
    to 95 °C, one steps from light load to full load (88 °C towards 97 °C)."""
    t = np.arange(600.0)
    rng = np.random.default_rng(3)
    heating = np.clip(t - 200, 0, None)
    curves = {
        "hot": np.where(t < 200, 90.0, 124.0 - 34.0 * np.exp(-heating / 90.0)),
        "cold": 95.0 - 75.0 * np.exp(-t / 90.0),
        "busy": np.where(t < 100, 88.0, 97.0 - 9.0 * np.exp(-np.clip(t - 100, 0, None) / 90.0)),
    }
    frames = [
        pd.DataFrame({"event_id": [f"{car}{i}" for i in range(len(t))], "car_id": car, "model": "M", "color": "red",
                      "event_time": T0 + (t * 1000).astype("int64"), "speed": 50.0, "rpm": 2500.0, "gear": 3,
                      "throttle": 40.0, "brake": 0.0, "coolant_temp": (c + rng.normal(0, 0.05, len(t))).round(1),
                      "oil_temp": (c + 6).round(1), "fuel_level": 50.0, "engine_on": True, "fuel_rate": 5.0,
                      "odometer": 100.0, "tyre_wear": 1.0, "brake_wear": 1.0})
        for car, c in curves.items()
    ]  # fmt: skip
    warned = MT.overheat_warnings(silver(spark, pd.concat(frames, ignore_index=True)), 110.0).collect()
    assert {r["car_id"] for r in warned} == {"hot"}
    crossed = T0 + int(t[curves["hot"] > 110.0][0] * 1000)
    first = min(r["event_time"] for r in warned)
    assert T0 + 200_000 < first < crossed
    assert crossed - first >= 30_000, "warned at least 30 s before the coolant crossed the limit"
    assert all(r["coolant_temp"] <= 110.0 and r["coolant_slope"] >= MT.WARN_MIN_SLOPE for r in warned)
    assert all(0 <= r["seconds_to_limit"] <= MT.WARN_HORIZON_S for r in warned)
    # a live lake's gold updates every 20 s: each update's trends start from the readings before it
    # (maintenance.trend_context), so the warnings are those of all the rows at once
    hot_car = frames[0]
    updates, context, live = [hot_car.iloc[i : i + 20] for i in range(0, len(t), 20)], None, []
    for update in updates:
        rows = silver(spark, update)
        # (as the lake's batch hands them to Spark: an Arrow frame of the silver rows' types)
        earlier = LakeBatch._trend_context(SimpleNamespace(hot_context=context, spark=spark), rows)  # type: ignore[arg-type]
        live += MT.overheat_warnings(rows, 110.0, earlier).collect()
        context = MT.trend_context([context, MT.hot_readings(rows, int(update["event_time"].max()))])
    assert sorted(r["event_id"] for r in live) == sorted(r["event_id"] for r in warned)
    slopes = {r["event_id"]: r["coolant_slope"] for r in warned}
    assert all(r["coolant_slope"] == pytest.approx(slopes[r["event_id"]]) for r in live)
    # without the readings before, an update's first 10 s have too few readings for a trend
    alone = [r for update in updates for r in MT.overheat_warnings(silver(spark, update), 110.0).collect()]
    assert len(alone) < len(warned)


def test_feature_windows_wait_for_their_minutes_then_close_the_same_windows(
    spark: SparkSession, tmp_path: Path
) -> None:
    """`stream --features-every-minutes 3`: the fleet's windows close every minute, the driving
    features' once three minutes of them are due, into the same rows as a roll-up every minute."""
    minutes = _minutes_batch_by_batch(silver(spark, events(minutes=18)), [T0, T0 + 20 * MIN]).localCheckpoint()
    closed: dict[int, list[bool]] = {}
    rows: dict[int, dict[tuple[str, int], tuple[object, ...]]] = {}
    for every in (1, 3):
        lake = Lake(str(tmp_path / f"lake-{every}"))
        minutes.write.format("delta").save(lake.table("gold/car_minutes"))
        writer = Writer(spark, lake, "lake", {})
        batch = LakeBatch(spark, lake, LakeQuery(("gold",)), [], None, writer, None, features_every_min=every)  # type: ignore[arg-type]
        closed[every] = []
        for batch_id, newest in enumerate(range(12, 18)):  # the newest report at minutes 12 to 17
            batch.newest_ms = T0 + newest * MIN
            written = batch._roll_up(batch_id)
            assert "gold/speed_by_model" in written  # a fleet window ends every minute
            closed[every].append("gold/driving_features" in written)
        table = spark.read.format("delta").load(lake.table("gold/driving_features"))
        rows[every] = {(r["car_id"], int(r["window_end"].timestamp() * 1000)): tuple(r) for r in table.collect()}
    # window ends due (10 minutes of lateness): 1-2 at minute 12, then one more each minute
    assert closed == {1: [True] * 6, 3: [False, True, False, False, True, False]}
    ends = {end for _, end in rows[3]}
    assert ends == {T0 + m * MIN for m in range(1, 7)}  # 7 waits for two more
    assert set(rows[3]) == {key for key in rows[1] if key[1] in ends}
    for key, row in rows[3].items():  # (floating sums in another order may differ in the last digits)
        for got, want in zip(row, rows[1][key], strict=True):
            assert got == (pytest.approx(want, rel=1e-9, nan_ok=True) if isinstance(want, float) else want), key
