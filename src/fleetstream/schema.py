"""The telemetry contract, version 1: one definition, rendered to JSON Schema, Spark and docs.

Every Kafka message on ``sensors-sample`` is one JSON object with these fields; the key is
``car_id``. The simulator emits them, the pipeline validates against them, docs/schema.md and
docs/telemetry-v1.schema.json are generated from them (`fleetstream schema`).

>>> [f.name for f in FIELDS][:4]
['schema_version', 'event_id', 'car_id', 'event_time']
>>> json_schema()["required"][:3]
['schema_version', 'event_id', 'car_id']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

SCHEMA_VERSION = 1
FieldType = Literal["string", "integer", "number", "boolean"]


@dataclass(frozen=True)
class Field:
    """One telemetry field: JSON type, unit, valid range, COVESA VSS path, meaning."""

    name: str
    type: FieldType
    unit: str
    description: str
    vss: str = "-"
    minimum: float | None = None
    maximum: float | None = None
    required: bool = True

    @property
    def range_text(self) -> str:
        if self.minimum is None and self.maximum is None:
            return "-"
        return f"{_num(self.minimum)} .. {_num(self.maximum)}"


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


FIELDS: tuple[Field, ...] = (
    Field("schema_version", "integer", "-", "Version of this contract; 1.", minimum=1, maximum=1),
    Field("event_id", "string", "-", "Unique id of the event; duplicates of an id are the same event."),
    Field("car_id", "string", "-", "Vehicle id, as in the reference data (cars.json); also the Kafka key.",
          "Vehicle.VehicleIdentification.VIN"),
    Field("event_time", "integer", "ms since epoch (UTC)", "When the vehicle measured the values.",
          minimum=0),
    Field("speed", "number", "km/h", "Vehicle speed over ground.", "Vehicle.Speed", 0, 400),
    Field("rpm", "integer", "rpm", "Engine speed.", "Vehicle.Powertrain.CombustionEngine.Speed", 0, 12000),
    Field("gear", "integer", "-", "Engaged gear; 0 is neutral.",
          "Vehicle.Powertrain.Transmission.CurrentGear", 0, 10),
    Field("lat", "number", "degrees", "Latitude (WGS 84).", "Vehicle.CurrentLocation.Latitude", -90, 90),
    Field("lon", "number", "degrees", "Longitude (WGS 84).", "Vehicle.CurrentLocation.Longitude", -180, 180),
    Field("heading", "number", "degrees", "Direction of travel, clockwise from north.",
          "Vehicle.CurrentLocation.Heading", 0, 360),
    Field("throttle", "number", "%", "Accelerator pedal position.",
          "Vehicle.Chassis.Accelerator.PedalPosition", 0, 100),
    Field("brake", "number", "%", "Brake pedal position.", "Vehicle.Chassis.Brake.PedalPosition", 0, 100),
    Field("coolant_temp", "number", "°C", "Engine coolant temperature.",
          "Vehicle.Powertrain.CombustionEngine.ECT", -40, 150),
    Field("oil_temp", "number", "°C", "Engine oil temperature.",
          "Vehicle.Powertrain.CombustionEngine.EOT", -40, 180),
    Field("fuel_level", "number", "%", "Fuel left in the tank.",
          "Vehicle.Powertrain.FuelSystem.RelativeLevel", 0, 100),
    Field("fuel_rate", "number", "l/h", "Instantaneous fuel consumption.",
          "Vehicle.Powertrain.FuelSystem.InstantConsumption", 0, 200),
    Field("odometer", "number", "km", "Total distance travelled.", "Vehicle.TraveledDistance", 0, 2_000_000),
    Field("engine_on", "boolean", "-", "Whether the engine runs.",
          "Vehicle.Powertrain.CombustionEngine.IsRunning"),
    Field("tyre_wear", "number", "%", "Tread worn away, average of the four tyres.",
          "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.TreadWear", 0, 100, required=False),
    Field("brake_wear", "number", "%", "Brake pad worn away, average of the four wheels.",
          "Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.PadWear", 0, 100, required=False),
)  # fmt: skip

FIELD_NAMES = tuple(f.name for f in FIELDS)
REQUIRED = tuple(f.name for f in FIELDS if f.required)
BY_NAME = {f.name: f for f in FIELDS}


def json_schema() -> dict[str, Any]:
    """The contract as JSON Schema (draft 2020-12)."""
    properties: dict[str, Any] = {}
    for f in FIELDS:
        prop: dict[str, Any] = {"type": f.type, "description": f.description}
        if f.unit != "-":
            prop["x-unit"] = f.unit
        if f.vss != "-":
            prop["x-vss"] = f.vss
        if f.minimum is not None:
            prop["minimum"] = f.minimum
        if f.maximum is not None:
            prop["maximum"] = f.maximum
        properties[f.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fleetstream.dev/schema/telemetry-v1.json",
        "title": "fleetstream telemetry event v1",
        "type": "object",
        "properties": properties,
        "required": list(REQUIRED),
        "additionalProperties": True,
    }


def spark_schema() -> StructType:
    """The contract as a Spark StructType (every field nullable: validation reports what is missing)."""
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType

    spark_types = {"string": StringType(), "integer": LongType(), "number": DoubleType(), "boolean": BooleanType()}
    return StructType([StructField(f.name, spark_types[f.type], nullable=True) for f in FIELDS])


def markdown() -> str:
    """docs/schema.md."""
    lines = [
        "# Telemetry event v1",
        "",
        "One JSON object per Kafka message on `sensors-sample`, key = `car_id` (UTF-8). Generated from",
        "`src/fleetstream/schema.py` by `fleetstream schema --write`; do not edit by hand. The same",
        "definition gives the JSON Schema ([telemetry-v1.schema.json](telemetry-v1.schema.json)) and the",
        "Spark schema the pipeline parses with. Fields not listed are allowed and ignored.",
        "",
        "| field | type | unit | range | required | COVESA VSS | meaning |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in FIELDS:
        lines.append(
            f"| `{f.name}` | {f.type} | {f.unit} | {f.range_text} | {'yes' if f.required else 'no'} "
            f"| {'`' + f.vss + '`' if f.vss != '-' else '-'} | {f.description} |"
        )
    lines += ["", "Example:", "", "```json", json.dumps(EXAMPLE, indent=2), "```", ""]
    return "\n".join(lines)


EXAMPLE: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "7f3a-000042-00000017",
    "car_id": "car-00042",
    "event_time": 1767225617000,
    "speed": 52.31,
    "rpm": 2140,
    "gear": 3,
    "lat": 32.081234,
    "lon": 34.781567,
    "heading": 87.5,
    "throttle": 23.0,
    "brake": 0.0,
    "coolant_temp": 91.2,
    "oil_temp": 97.8,
    "fuel_level": 64.12,
    "fuel_rate": 4.35,
    "odometer": 48213.402,
    "engine_on": True,
    "tyre_wear": 12.41,
    "brake_wear": 8.03,
}
