"""`fleetstream quality check` on a small real lake: a clean batch passes every critical expectation;
a crafted bad batch fails the expectations it breaks, and the failures reach gold/dq_results and the
HTML report."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetstream import schema
from fleetstream.config import LakeSettings, Settings
from fleetstream.quality.check import RESULTS_TABLE, check, load_suites, parse_suites, write_results
from fleetstream.quality.report import html_report
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.rules.engine import SEVERITIES


def _report(car_id: str, event_id: str, speed: float, model: str | None = "Model") -> dict[str, object]:
    now = int(time.time() * 1000)
    row: dict[str, object] = {f.name: (f.minimum if f.minimum is not None else 1) for f in schema.FIELDS}
    row.update(schema_version=1, event_id=event_id, car_id=car_id, event_time=now, speed=speed, engine_on=True)
    row.update(model=model, color="White", driver_profile="calm")
    return row


def _silver(spark: SparkSession, settings: Settings, rows: list[dict[str, object]]) -> None:
    frame = spark.createDataFrame(rows)
    fields = schema.spark_schema().fields
    frame = frame.select(*(F.col(f.name).cast(f.dataType) for f in fields), "model", "color", "driver_profile")
    frame = (
        frame.withColumn("event_ts", F.timestamp_millis("event_time"))
        .withColumn("event_date", F.to_date("event_ts"))
        .withColumn("ingest_time", F.current_timestamp())
    )
    frame.write.format("delta").mode("append").save(f"{settings.lake.root}/silver/telemetry")


def test_a_clean_batch_passes_and_a_bad_batch_fails_what_it_breaks(spark: SparkSession, tmp_path: Path) -> None:
    settings = Settings(lake=LakeSettings(root=str(tmp_path / "lake")), state_dir=tmp_path / "state")
    cars = generate_cars(5, seed=1)
    publish(settings, settings.lake.dims, cars)
    suites = load_suites()
    assert set(suites["silver/alerts"].expectations[2].args["values"]) == set(SEVERITIES)

    _silver(spark, settings, [_report(c.car_id, f"e-{i}", 50.0) for i, c in enumerate(cars)])
    clean = check(spark, settings, suites, dt.timedelta(hours=1), ["silver/telemetry"])
    assert clean.results
    assert not clean.critical_failed, [(r.expectation, r.observed) for r in clean.failed]
    assert {r.rows for r in clean.results} == {5}
    # two ranges on one column (pandera reports a failing column and kind): only the broken one fails
    two = [{"in_range": {"column": "speed", "min": 0, "max": 400}}, {"in_range": {"column": "speed", "max": 10}}]
    ranges = parse_suites({"silver/telemetry": {"expectations": two}})
    both = check(spark, settings, ranges, dt.timedelta(hours=1), ["silver/telemetry"])
    assert [(r.expectation, r.passed) for r in both.results] == [
        ("in_range(speed, 0, 400)", True), ("in_range(speed, -inf, 10)", False)]  # fmt: skip

    # the bad batch: a speed out of range, a repeated event id, a car not in the fleet, a missing model
    bad_rows = [
        _report(cars[0].car_id, "e-bad", 999.0),
        _report(cars[1].car_id, "e-0", 40.0),
        _report("car-99999", "e-ghost", 30.0),
        _report(cars[2].car_id, "e-nomodel", 20.0, None),
    ]
    _silver(spark, settings, bad_rows)
    bad = check(spark, settings, suites, dt.timedelta(hours=1), ["silver/telemetry"])
    failed = {r.expectation: r.observed for r in bad.failed}
    assert set(failed) == {
        "in_range(speed, 0, 400)",
        "unique(event_id)",
        "references(car_id -> dims/cars.car_id)",
        "not_null(model, color, event_ts, event_date)",
    }, failed
    assert failed["unique(event_id)"] == "1 rows repeat another's event_id"
    assert failed["in_range(speed, 0, 400)"] == "1 rows with speed outside 0 .. 400 (values from 20.0 to 999.0)"
    assert failed["not_null(model, color, event_ts, event_date)"] == "1 null model"
    assert "car-99999" in failed["references(car_id -> dims/cars.car_id)"]
    assert {r.severity for r in bad.failed} == {"critical"}

    write_results(spark, settings, clean)
    write_results(spark, settings, bad)
    stored = spark.read.format("delta").load(f"{settings.lake.root}/{RESULTS_TABLE}")
    assert stored.select("run_id").distinct().count() == 2
    assert stored.where(~F.col("passed")).count() == 4
    assert stored.where(~F.col("passed")).select("run_id").distinct().first()[0] == bad.run_id  # type: ignore[index]

    page = html_report(bad)
    assert "4 of " in page
    assert page.count("FAIL") == 4
    assert "all " in html_report(clean)
