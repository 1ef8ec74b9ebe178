"""The seed-style contender's three stages on small batch DataFrames: the chain fires the same alerts
as fleetstream's rules, with the expected gear from the per-row Python UDF."""

from __future__ import annotations

import json
from pathlib import Path

from pyspark.sql import SparkSession

from fleetstream.bench.contenders.seedstyle import aggregate_frame, detect_frame, enrich_frame
from fleetstream.config import Settings
from fleetstream.pipeline.enrich import read_dims
from fleetstream.reference.catalog import generate_cars, model_by_id
from fleetstream.reference.publish import publish
from fleetstream.rules import expected_gear


def test_enrich_detect_aggregate_chain(spark: SparkSession, tmp_path: Path) -> None:
    cars = generate_cars(5, seed=4)
    publish(Settings(), str(tmp_path), cars)
    dims = read_dims(spark, str(tmp_path))
    car = cars[0]
    upshift = model_by_id()[car.model_id].shift_schedule(car.driver_profile)
    right = expected_gear(60.0, upshift)

    def event(event_id: str, speed: float, rpm: int, gear: int, car_id: str = car.car_id) -> tuple[str, bytes]:
        body = {"schema_version": 1, "event_id": event_id, "car_id": car_id, "event_time": 1_700_000_000_000,
                "speed": speed, "rpm": rpm, "gear": gear}  # fmt: skip
        return car_id, json.dumps(body).encode()

    raw = spark.createDataFrame(
        [
            event("ok", 60.0, 2500, right),
            event("fast", 130.0, 2500, expected_gear(130.0, upshift)),
            event("rev", 60.0, 6500, right),
            event("gear", 60.0, 2500, right + 1),
            event("stranger", 130.0, 2500, 1, car_id="nobody"),  # the seeds' inner join drops it
        ],
        "key string, value binary",
    )
    enriched = enrich_frame(raw, dims.cars, dims.models, dims.colors)
    rows = {json.loads(r["value"])["event_id"]: json.loads(r["value"]) for r in enriched.collect()}
    assert set(rows) == {"ok", "fast", "rev", "gear"}
    assert rows["ok"]["expected_gear"] == right
    assert rows["ok"]["model"] == f"{model_by_id()[car.model_id].brand} {model_by_id()[car.model_id].model}"

    alerts = [json.loads(r["value"]) for r in detect_frame(enriched).collect()]
    assert sorted((a["event_id"], a["rule"]) for a in alerts) == [
        ("fast", "overspeed"), ("gear", "gear_mismatch"), ("rev", "engine_stress"),
    ]  # fmt: skip
    assert all(a["event_time"] == 1_700_000_000_000 for a in alerts)

    alert_values = spark.createDataFrame([(json.dumps(a),) for a in alerts], "value string")
    counts = {r["rule"]: r["alerts"] for r in aggregate_frame(alert_values).collect()}
    assert counts == {"overspeed": 1, "gear_mismatch": 1, "engine_stress": 1}
