"""Parsing and validation: every reason code, on small batch DataFrames."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import SparkSession

from fleetstream import schema
from fleetstream.pipeline.validate import parse_telemetry, split_valid

SENT = schema.EXAMPLE["event_time"]


def payload(**changes: object) -> str:
    event = {**schema.EXAMPLE, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not ...})


CASES = [
    ("valid", payload(), None, None),
    ("valid, integral decimal rpm", payload(rpm=2140.0), None, None),
    ("valid, optional field absent", payload(tyre_wear=...), None, None),
    ("truncated", payload()[:40], "malformed_json", "not a JSON object"),
    ("not an object", "[1, 2, 3]", "malformed_json", "not a JSON object"),
    ("empty", "", "malformed_json", "not a JSON object"),
    ("no speed", payload(speed=...), "missing_field", "speed"),
    ("null car_id and rpm", payload(car_id=None, rpm=None), "missing_field", "car_id,rpm"),
    ("speed as text", payload(speed="fast"), "bad_type", "speed"),
    ("numeric text is not a number", payload(speed="72.5"), "bad_type", "speed"),
    ("numeric event_id is not a string", payload(event_id=123), "bad_type", "event_id"),
    ("NaN as text is not a number", payload(speed="NaN"), "bad_type", "speed"),
    ("integer too large for a long", payload(event_time=10**20), "bad_type", "event_time"),
    ("engine_on as yes", payload(engine_on="yes"), "bad_type", "engine_on"),
    ("fractional gear", payload(gear=2.5), "bad_type", "gear"),
    ("speed 460", payload(speed=460.0), "out_of_range", "speed"),
    ("negative rpm", payload(rpm=-120), "out_of_range", "rpm"),
    ("two out of range", payload(coolant_temp=260.0, fuel_level=140.0), "out_of_range", "coolant_temp,fuel_level"),
    ("two hours late", payload(event_time=SENT - 2 * 3600 * 1000), "too_late", "7200 s after event_time"),
    ("in the future", payload(event_time=SENT + 3600 * 1000), "future_time", "3600 s before event_time"),
    ("late but within bound", payload(event_time=SENT - 300 * 1000), None, None),
]


@pytest.fixture(scope="module")
def parsed(spark: SparkSession) -> dict[str, dict[str, object]]:
    frame = spark.createDataFrame(
        [(name, raw, SENT) for name, raw, _, _ in CASES], "name string, raw string, kafka_ts_ms long"
    )
    return {row["name"]: row.asDict() for row in parse_telemetry(frame).collect()}


@pytest.mark.parametrize(("name", "raw", "reason", "detail"), CASES, ids=[c[0] for c in CASES])
def test_reason_codes(
    parsed: dict[str, dict[str, object]], name: str, raw: str, reason: str | None, detail: str | None
) -> None:
    row = parsed[name]
    assert row["reason"] == reason
    assert row["reason_detail"] == detail


def test_valid_rows_carry_typed_values(parsed: dict[str, dict[str, object]]) -> None:
    row = parsed["valid"]
    for field in schema.FIELDS:
        assert row[field.name] == schema.EXAMPLE[field.name], field.name
    assert parsed["valid, integral decimal rpm"]["rpm"] == 2140
    assert parsed["valid, optional field absent"]["tyre_wear"] is None


def test_split_keeps_every_row(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [(name, raw, SENT) for name, raw, _, _ in CASES], "name string, raw string, kafka_ts_ms long"
    )
    valid, rejected = split_valid(parse_telemetry(frame))
    assert valid.count() + rejected.count() == len(CASES)
    assert valid.count() == sum(1 for c in CASES if c[2] is None)
