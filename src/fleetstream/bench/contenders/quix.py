"""A Quix Streams application doing the same enrichment and rules: what a Python developer would write.

One process, record at a time: JSON in, a dict lookup for the car's model, color and shift
schedule, the expected gear from ``fleetstream.rules.expected_gear``, the three default rules as
Python comparisons on the thresholds of ``fleetstream.rules.limits``, one JSON alert per rule that
fires. Quix's defaults otherwise (at-least-once, commit every 5 s).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from fleetstream.rules import LIMITS, STOP_KMH, expected_gear
from fleetstream.rules.engine import load_rules

#: the default rules' names and severities (defaults.yaml); their conditions, in Python, are in ``fire``
SEVERITY = {rule.name: rule.severity for rule in load_rules()}


def car_table(dims: str) -> dict[str, dict[str, Any]]:
    """car_id -> model, color, driver profile and its upshift speeds, from the dims folder (JSON lines)."""

    def lines(name: str) -> list[dict[str, Any]]:
        text = (Path(dims) / f"{name}.json").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    models = {m["model_id"]: m for m in lines("car_models")}
    colors = {c["color_id"]: c["color_name"] for c in lines("car_colors")}
    table = {}
    for car in lines("cars"):
        model = models[car["model_id"]]
        table[car["car_id"]] = {
            "model": f"{model['brand']} {model['model']}",
            "color": colors[car["color_id"]],
            "upshift": model["upshift_kmh"][car["driver_profile"]],
        }
    return table


def fire(event: dict[str, Any], cars: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts one telemetry event raises (none for an unknown car or a malformed event)."""
    car = cars.get(event.get("car_id", ""))
    speed, rpm, gear = event.get("speed"), event.get("rpm"), event.get("gear")
    if car is None or speed is None or rpm is None or gear is None:
        return []
    expected = expected_gear(speed, car["upshift"])
    hits = {
        "overspeed": speed > LIMITS.overspeed_kmh,
        "engine_stress": rpm > LIMITS.over_rev_rpm,
        "gear_mismatch": speed >= STOP_KMH and gear != expected,
    }
    now = int(time.time() * 1000)
    return [
        {
            "alert_id": hashlib.sha256(f"{event['event_id']}:{rule}".encode()).hexdigest()[:32],
            "rule": rule,
            "severity": SEVERITY[rule],
            "event_id": event["event_id"],
            "car_id": event["car_id"],
            "model": car["model"],
            "color": car["color"],
            "speed": speed,
            "rpm": rpm,
            "gear": gear,
            "expected_gear": expected,
            "event_time": event["event_time"],
            "detected_at": now,
        }
        for rule, hit in hits.items()
        if hit
    ]


def run() -> int:
    from quixstreams import Application

    from fleetstream.bench.contenders._common import ready
    from fleetstream.clients import quix_kafka
    from fleetstream.config import Settings

    settings = Settings()
    topics = settings.kafka.topics
    cars = car_table(settings.lake.dims)
    app = Application(
        broker_address=quix_kafka(settings.kafka),
        consumer_group=f"bench-quix-{topics.sensors}",
        auto_offset_reset="earliest",
        loglevel="WARNING",
    )
    source = app.topic(topics.sensors, value_deserializer="json")
    sink = app.topic(topics.alerts, value_serializer="json")
    alerts = app.dataframe(source).apply(lambda event: fire(event, cars), expand=True)
    alerts.to_topic(sink, key=lambda alert: alert["car_id"])
    ready()
    app.run()  # stops on SIGTERM / SIGINT
    return 0
