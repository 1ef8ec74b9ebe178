"""Enrichment, expected gear (Spark twin = Python rule) and the alert rules, on batch DataFrames."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream import schema
from fleetstream.errors import FleetstreamError
from fleetstream.pipeline.enrich import Reference, car_dimension, enrich, expected_gear_col, read_dims, zone_columns
from fleetstream.pipeline.validate import parse_telemetry
from fleetstream.reference.catalog import MODELS, PROFILES, generate_cars, model_by_id, tables, to_json_lines
from fleetstream.reference.zones import ZONES_FILE, Zone, generate_zones, to_geojson, zone_index
from fleetstream.rules import expected_gear
from fleetstream.rules.engine import Lifecycle, Rule, alerts, check_rules, load_rules


def test_expected_gear_spark_twin_agrees_with_python_on_a_grid(spark: SparkSession) -> None:
    speeds = [float(s) for s in np.round(np.concatenate([np.arange(0, 240, 0.37), [1.99, 2.0, 2.01]]), 2)]
    rows, want = [], []
    for model in MODELS:
        for profile in PROFILES:
            schedule = model.shift_schedule(profile)
            # the exact boundaries too: at a threshold the higher gear is selected
            for speed in [*speeds, *schedule]:
                rows.append((speed, schedule))
                want.append(expected_gear(speed, schedule))
    frame = spark.createDataFrame(rows, "speed double, upshift array<double>")
    got = [r[0] for r in frame.select(expected_gear_col(F.col("speed"), F.col("upshift"))).collect()]
    assert len(got) > 20_000
    assert got == want


@pytest.fixture(scope="module")
def dims_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dims")
    for name, records in tables(generate_cars(10, seed=1)).items():
        (directory / f"{name}.json").write_bytes(to_json_lines(records))
    return directory


def raw_rows(spark: SparkSession, events: list[dict[str, object]]) -> DataFrame:
    """The example event overridden by each of ``events``, as payloads to parse."""
    import json

    return spark.createDataFrame(
        [(json.dumps({**schema.EXAMPLE, **e}), schema.EXAMPLE["event_time"]) for e in events],
        "raw string, kafka_ts_ms long",
    )


def silver_rows(spark: SparkSession, dims_dir: Path, events: list[dict[str, object]]) -> DataFrame:
    reference = Reference(car_dimension(read_dims(spark, str(dims_dir))), tuple(generate_zones()))
    return enrich(parse_telemetry(raw_rows(spark, events)), reference)


def test_enrichment_joins_cars_models_and_colors(spark: SparkSession, dims_dir: Path) -> None:
    cars = {c.car_id: c for c in generate_cars(10, seed=1)}
    [row] = silver_rows(spark, dims_dir, [{"car_id": "car-00004", "speed": 55.0}]).collect()
    car = cars["car-00004"]
    model = model_by_id()[car.model_id]
    assert row["reason"] is None
    assert row["model"] == f"{model.brand} {model.model}"
    assert row["driver_profile"] == car.driver_profile
    assert row["color_id"] == car.color_id
    assert row["color"]
    assert list(row["upshift_kmh"]) == model.shift_schedule(car.driver_profile)
    assert row["expected_gear"] == expected_gear(55.0, model.shift_schedule(car.driver_profile))


def test_unknown_car_is_marked_not_dropped(spark: SparkSession, dims_dir: Path) -> None:
    [row] = silver_rows(spark, dims_dir, [{"car_id": "car-99999"}]).collect()
    assert row["reason"] == "unknown_car"
    assert row["reason_detail"] == "car_id car-99999 not in the reference data"
    assert row["expected_gear"] is None


def test_default_rules_fire_exactly_on_their_conditions(spark: SparkSession, dims_dir: Path) -> None:
    cars = {c.car_id: c for c in generate_cars(10, seed=1)}
    car = cars["car-00002"]
    schedule = model_by_id()[car.model_id].shift_schedule(car.driver_profile)
    right_gear = expected_gear(130.0, schedule)
    events = [
        {"event_id": "calm", "car_id": car.car_id, "speed": 50.0, "rpm": 2000, "gear": expected_gear(50.0, schedule)},
        {"event_id": "fast", "car_id": car.car_id, "speed": 130.0, "rpm": 3000, "gear": right_gear},
        {"event_id": "rev", "car_id": car.car_id, "speed": 0.0, "rpm": 6500, "gear": 0},
        {"event_id": "edge", "car_id": car.car_id, "speed": 120.0, "rpm": 6000, "gear": expected_gear(120.0, schedule)},
        {
            "event_id": "lug",
            "car_id": car.car_id,
            "speed": 50.0,
            "rpm": 1200,
            "gear": expected_gear(50.0, schedule) + 1,
        },
        {"event_id": "all", "car_id": car.car_id, "speed": 150.0, "rpm": 6400, "gear": right_gear - 1},
    ]
    fired = alerts(silver_rows(spark, dims_dir, events), load_rules()).collect()
    got = sorted((r["event_id"], r["rule"]) for r in fired)
    assert got == [
        ("all", "engine_stress"), ("all", "gear_mismatch"), ("all", "overspeed"),
        ("fast", "overspeed"), ("lug", "gear_mismatch"), ("rev", "engine_stress"),
    ]  # fmt: skip
    by_key = {(r["event_id"], r["rule"]): r for r in fired}
    assert by_key[("fast", "overspeed")]["severity"] == "high"
    assert by_key[("fast", "overspeed")]["speed"] == 130.0
    assert by_key[("fast", "overspeed")]["model"]
    ids = [r["alert_id"] for r in fired]
    assert len(set(ids)) == len(ids)
    again = alerts(silver_rows(spark, dims_dir, events), load_rules()).collect()
    assert sorted(r["alert_id"] for r in again) == sorted(ids), "alert ids are deterministic"


def test_rules_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: x\n    condition: speed > 1\n    severity: urgent\n    message: m\n")
    with pytest.raises(FleetstreamError, match="rule 'x' has severity 'urgent'"):
        load_rules(bad)
    bad.write_text("rules:\n  - name: x\n    condition: speed > 1\n")
    with pytest.raises(FleetstreamError, match="lacks message, severity"):
        load_rules(bad)
    bad.write_text("just text")
    with pytest.raises(FleetstreamError, match="not a rules file"):
        load_rules(bad)


def test_a_condition_that_does_not_compile_is_refused_naming_the_rule_and_key(
    spark: SparkSession, dims_dir: Path
) -> None:
    columns = silver_rows(spark, dims_dir, []).schema
    check_rules(spark, load_rules(), columns)  # the defaults compile
    for key, text in (("condition", "speed >"), ("clear_condition", "coolant < 100")):
        rule = Rule("hot", "speed > 1", "low", "m", Lifecycle(clear_condition="coolant_temp < 1"))
        rule = replace(
            rule, **({"condition": text} if key == "condition" else {"lifecycle": Lifecycle(clear_condition=text)})
        )
        with pytest.raises(FleetstreamError, match=f"rule 'hot', key '{key}' does not compile"):
            check_rules(spark, [rule], columns)


def test_a_rejected_row_of_an_unknown_car_keeps_its_first_reason(spark: SparkSession, dims_dir: Path) -> None:
    [row] = silver_rows(spark, dims_dir, [{"car_id": "car-99999", "speed": "fast"}]).collect()
    assert (row["reason"], row["reason_detail"]) == ("bad_type", "speed")


def test_changed_dims_are_picked_up_at_the_refresh_interval(spark: SparkSession, tmp_path: Path) -> None:
    import os
    import time

    from fleetstream.pipeline.dims import DimsCache

    def publish(count: int) -> None:
        for name, records in tables(generate_cars(count, seed=1)).items():
            (tmp_path / f"{name}.json").write_bytes(to_json_lines(records))

    def reload() -> None:
        time.sleep(3.1)
        cache.get()
        cache.join(60)

    publish(3)
    cache = DimsCache(spark, str(tmp_path), refresh_s=3.0)
    assert cache.get().cars.count() == 3
    assert cache.get().zones == (), "no zones file: no zones"
    publish(5)
    assert cache.get().cars.count() == 3, "within the interval the loaded dims are kept"
    time.sleep(3.1)
    assert cache.get().cars.count() == 3, "a batch does not wait for the reload"
    cache.join(60)
    assert sorted(r["dim_car_id"] for r in cache.get().cars.collect())[-1] == "car-00004"
    assert (cache.version, cache.reads) == (1, 2), "a reload that changed the cars counts"
    reload()
    assert (cache.version, cache.reads) == (1, 2), "files listed unchanged are not read again"
    cars = tmp_path / "cars.json"
    cars.write_bytes(cars.read_bytes())
    os.utime(cars, (time.time() + 5, time.time() + 5))  # rewritten, whatever the clock's resolution
    reload()
    assert (cache.version, cache.reads) == (1, 3), "a rewritten file is read; the same rows do not count"
    cars.unlink()
    reload()
    assert cache.get().cars.count() == 5, "a failed reload keeps the dims it had"
    assert cache.version == 1
    publish(4)
    reload()
    assert (cache.get().cars.count(), cache.version) == (4, 2), "after a failed reload, the next one reads"
    zones = generate_zones()[:2]
    (tmp_path / ZONES_FILE).write_bytes(to_geojson(zones))
    reload()
    assert (cache.get().zones, cache.version) == (tuple(zones), 3), "new zones are a change"
    (tmp_path / ZONES_FILE).write_text('{"type": "FeatureCollection", "features": [{"geometry": null}]}')
    reload()
    assert (cache.get().zones, cache.version) == (tuple(zones), 3), "a bad zones file keeps the zones it had"


def test_the_publisher_session_has_its_own_sql_settings_and_joins_the_cached_dimension(
    spark: SparkSession, dims_dir: Path
) -> None:
    from fleetstream.pipeline.dims import DimsCache
    from fleetstream.pipeline.session import PUBLISHER_SQL_CONF, publisher_session

    before = {key: spark.conf.get(key) for key in PUBLISHER_SQL_CONF}
    assert before != PUBLISHER_SQL_CONF
    session = publisher_session(spark)
    assert {key: session.conf.get(key) for key in PUBLISHER_SQL_CONF} == PUBLISHER_SQL_CONF
    assert {key: spark.conf.get(key) for key in PUBLISHER_SQL_CONF} == before, "the pipeline's session is unchanged"
    reference = DimsCache(spark, str(dims_dir)).get()  # cached in the pipeline's session, as the publisher finds it
    raw = raw_rows(session, [{"car_id": "car-00004", "speed": 55.0}, {"car_id": "car-99999"}])
    rows = enrich(parse_telemetry(raw), reference)
    plan = rows._jdf.queryExecution().executedPlan().toString()
    assert "AdaptiveSparkPlan" not in plan, plan
    assert "InMemoryTableScan" in plan, plan
    assert sorted((r["car_id"], r["reason"]) for r in rows.collect()) == [
        ("car-00004", None),
        ("car-99999", "unknown_car"),
    ]


def test_zone_columns_agree_with_the_python_zone_index(spark: SparkSession) -> None:
    """The Spark twin of zone_index, on random points, every vertex and points on edges."""
    square = Zone("sq", "square", 30.0, (32.0, 32.0, 32.01, 32.01), (34.9, 34.91, 34.91, 34.9))
    zones = [*generate_zones(), square]
    rng = np.random.default_rng(5)
    lat = np.concatenate([rng.uniform(32.0, 32.13, 40_000), *[np.array(z.lats) for z in zones], [32.005, 32.01]])
    lon = np.concatenate([rng.uniform(34.69, 34.92, 40_000), *[np.array(z.lons) for z in zones], [34.9, 34.905]])
    lat, lon = np.round(lat, 6), np.round(lon, 6)
    want = zone_index(zones, lat, lon)
    frame = spark.createDataFrame(
        [(float(a), float(o)) for a, o in zip(lat, lon, strict=True)], "lat double, lon double"
    )
    zone_id, zone_limit = zone_columns(F.col("lat"), F.col("lon"), zones)
    got = frame.select(zone_id.alias("zone_id"), zone_limit.alias("zone_limit")).collect()
    assert [r["zone_id"] for r in got] == [zones[k].zone_id if k >= 0 else None for k in want]
    assert [r["zone_limit"] for r in got] == [zones[k].limit_kmh if k >= 0 else None for k in want]
    assert (want >= 0).sum() > 1_000
    # the stream's reference data builds the expressions once, and they serve every batch's frame
    reference = Reference(spark.createDataFrame([], "dim_car_id string"), tuple(zones))
    assert reference.zone_columns is reference.zone_columns
    cached_id, cached_limit = reference.zone_columns
    for batch in (frame, frame.withColumn("lat", F.col("lat") + 0.0)):  # two frames, as two batches
        again = batch.select(cached_id.alias("zone_id"), cached_limit.alias("zone_limit")).collect()
        assert again == got


def test_zone_overspeed_fires_in_a_zone_above_its_limit(spark: SparkSession, dims_dir: Path) -> None:
    zone = generate_zones()[0]
    lat, lon = zone.center
    events = [
        {"event_id": "in-fast", "car_id": "car-00001", "lat": lat, "lon": lon, "speed": 45.0},
        {"event_id": "in-slow", "car_id": "car-00001", "lat": lat, "lon": lon, "speed": 29.0},
        {"event_id": "out-fast", "car_id": "car-00001", "lat": lat + 0.05, "lon": lon, "speed": 45.0},
    ]
    silver = silver_rows(spark, dims_dir, events)
    tagged = {r["event_id"]: (r["zone_id"], r["zone_limit"]) for r in silver.collect()}
    assert tagged == {"in-fast": (zone.zone_id, 30.0), "in-slow": (zone.zone_id, 30.0), "out-fast": (None, None)}
    fired = alerts(silver, [r for r in load_rules() if r.name == "zone_overspeed"])
    got = {(r["event_id"], r["rule"], r["zone_id"], r["zone_limit"]) for r in fired.collect()}
    assert got == {("in-fast", "zone_overspeed", zone.zone_id, 30.0)}
