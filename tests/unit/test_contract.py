"""The single definitions and what is generated from them stay in step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fleetstream import schema
from fleetstream.ingest.commands import DriverCommand, parse_command
from fleetstream.reference.catalog import MODELS, PROFILES, generate_cars, tables, to_json_lines
from fleetstream.rules import expected_gear, expected_gear_array

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_are_generated_from_the_schema() -> None:
    assert (DOCS / "schema.md").read_text(encoding="utf-8") == schema.markdown(), "run `fleetstream schema --write`"
    on_disk = json.loads((DOCS / "telemetry-v1.schema.json").read_text(encoding="utf-8"))
    assert on_disk == schema.json_schema()


def test_spark_schema_has_every_field_in_order() -> None:
    spark = schema.spark_schema()
    assert [f.name for f in spark.fields] == list(schema.FIELD_NAMES)
    assert {f.name: f.dataType.simpleString() for f in spark.fields}["event_time"] == "bigint"


def test_example_follows_the_schema() -> None:
    assert list(schema.EXAMPLE) == list(schema.FIELD_NAMES)
    for field in schema.FIELDS:
        value = schema.EXAMPLE[field.name]
        assert field.minimum is None or value >= field.minimum
        assert field.maximum is None or value <= field.maximum


def test_expected_gear_python_and_numpy_agree_on_a_grid() -> None:
    speeds = np.round(np.arange(0, 260, 0.01), 2)
    for model in MODELS:
        for profile in PROFILES:
            schedule = model.shift_schedule(profile)
            padded = np.full((len(speeds), 7), np.inf)
            padded[:, : len(schedule)] = schedule
            vectorised = expected_gear_array(speeds, padded)
            assert [expected_gear(float(s), schedule) for s in speeds[::37]] == vectorised[::37].tolist()
            assert vectorised.max() == model.gears


def test_shift_schedules_rise_and_stay_below_the_redline() -> None:
    for model in MODELS:
        for profile in PROFILES:
            schedule = model.shift_schedule(profile)
            assert schedule == sorted(schedule)
            assert len(schedule) == model.gears - 1
        assert model.shift_schedule("calm")[0] < model.shift_schedule("aggressive")[0]


def test_reference_data_is_deterministic_and_joins() -> None:
    cars = generate_cars(500, seed=3)
    assert cars == generate_cars(500, seed=3)
    assert cars != generate_cars(500, seed=4)
    dims = tables(cars)
    model_ids = {m["model_id"] for m in dims["car_models"]}
    color_ids = {c["color_id"] for c in dims["car_colors"]}
    assert all(c["model_id"] in model_ids and c["color_id"] in color_ids for c in dims["cars"])
    assert {c["driver_profile"] for c in dims["cars"]} == set(PROFILES)
    lines = to_json_lines(dims["cars"]).splitlines()
    assert len(lines) == 500
    assert json.loads(lines[0]) == dims["cars"][0]


def test_driver_commands_parse_and_reject() -> None:
    command = parse_command(b'{"car_id": "car-00001", "command": "set_throttle", "value": 0.5}')
    assert command == DriverCommand(car_id="car-00001", command="set_throttle", value=0.5)
    assert parse_command(command.to_bytes()) == command
    for bad in (
        b"not json",
        b'{"car_id": "c", "command": "fly"}',
        b'{"car_id": "c", "command": "set_brake", "value": 3}',
    ):
        with pytest.raises(ValueError, match="not a driver command"):
            parse_command(bad)


def test_public_surface_is_small_and_importable() -> None:
    import fleetstream

    assert sorted(fleetstream.__all__) == ["FleetstreamError", "Settings", "__version__"]
    for name in fleetstream.__all__:
        assert hasattr(fleetstream, name)
