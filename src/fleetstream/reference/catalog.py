"""Reference data (dimensions): car models, colors and the fleet's cars, generated deterministically.

These are what the pipeline joins telemetry with (cars -> models -> colors). Models carry what the
simulator needs to drive them (gear ratios, torque, mass, drag) and their automatic gearbox's shift
schedule per driver profile, from which :func:`fleetstream.rules.expected_gear` derives the gear.

>>> cars = generate_cars(3, seed=7)
>>> [c.car_id for c in cars]
['car-00000', 'car-00001', 'car-00002']
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PROFILES = ("calm", "normal", "aggressive")
PROFILE_WEIGHTS = (0.35, 0.45, 0.20)
# Engine speed at which each profile's gearbox mode shifts up (capped below the model's redline).
UPSHIFT_RPM = {"calm": 2100.0, "normal": 2700.0, "aggressive": 3800.0}


@dataclass(frozen=True)
class CarModel:
    model_id: int
    brand: str
    model: str
    fuel: str
    gear_ratios: tuple[float, ...]
    final_drive: float
    tyre_radius_m: float
    idle_rpm: int
    redline_rpm: int
    max_torque_nm: float
    peak_torque_rpm: int
    mass_kg: float
    drag_area_m2: float
    max_speed_kmh: float
    tank_l: float
    upshift_kmh: dict[str, list[float]] = field(default_factory=dict)

    @property
    def gears(self) -> int:
        return len(self.gear_ratios)

    def speed_at_rpm(self, rpm: float, gear: int) -> float:
        """Road speed (km/h) at which the engine turns ``rpm`` in ``gear`` without slip."""
        wheel_rps = rpm / 60.0 / (self.gear_ratios[gear - 1] * self.final_drive)
        return wheel_rps * 2 * math.pi * self.tyre_radius_m * 3.6

    def shift_schedule(self, profile: str) -> list[float]:
        """Upshift speeds (km/h, one decimal) for a driver profile's gearbox mode."""
        rpm = min(UPSHIFT_RPM[profile], 0.8 * self.redline_rpm)
        return [round(self.speed_at_rpm(rpm, g), 1) for g in range(1, self.gears)]

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["gear_ratios"] = list(self.gear_ratios)
        out["gears"] = self.gears
        out["upshift_kmh"] = {p: self.shift_schedule(p) for p in PROFILES}
        return out


def _model(*args: Any) -> CarModel:
    return CarModel(*args)


MODELS: tuple[CarModel, ...] = (
    _model(1, "Toyota", "Corolla", "petrol", (3.30, 1.90, 1.31, 1.03, 0.82, 0.69), 4.06, 0.31, 750, 6500,
           190, 4000, 1300, 0.62, 190, 50),
    _model(2, "Volkswagen", "Golf", "petrol", (3.76, 2.27, 1.53, 1.13, 0.92, 0.78, 0.64), 3.45, 0.315, 800,
           6500, 250, 2000, 1350, 0.64, 210, 50),
    _model(3, "Ford", "Transit", "diesel", (4.71, 2.49, 1.57, 1.15, 0.88, 0.69), 3.55, 0.35, 750, 4800,
           385, 1750, 2300, 1.55, 165, 80),
    _model(4, "BMW", "330i", "petrol", (5.25, 3.36, 2.17, 1.72, 1.32, 1.00, 0.82, 0.64), 2.81, 0.33, 700,
           7000, 400, 1550, 1550, 0.60, 250, 59),
    _model(5, "Hyundai", "i20", "petrol", (3.64, 1.96, 1.30, 1.03, 0.84), 4.27, 0.30, 800, 6500, 130, 4000,
           1100, 0.60, 180, 40),
    _model(6, "Mazda", "MX-5", "petrol", (5.09, 2.99, 2.03, 1.53, 1.00, 0.84), 2.87, 0.30, 850, 7500, 205,
           4000, 1050, 0.55, 215, 45),
    _model(7, "Renault", "Clio", "petrol", (3.73, 2.05, 1.39, 1.03, 0.79), 4.21, 0.30, 750, 6300, 160, 3500,
           1150, 0.61, 185, 42),
    _model(8, "Kia", "Sportage", "petrol", (4.21, 2.64, 1.80, 1.39, 1.00, 0.77), 3.51, 0.35, 750, 6300, 265,
           1500, 1550, 0.85, 200, 54),
    _model(9, "Fiat", "Ducato", "diesel", (5.38, 2.78, 1.72, 1.16, 0.87, 0.70), 4.35, 0.35, 800, 4500, 380,
           1500, 2500, 1.60, 160, 90),
    _model(10, "Porsche", "911", "petrol", (4.89, 3.17, 2.15, 1.56, 1.18, 0.94, 0.76, 0.62), 3.59, 0.34,
           900, 7500, 450, 2000, 1500, 0.62, 293, 64),
    _model(11, "Dacia", "Logan", "petrol", (3.73, 2.05, 1.32, 0.97, 0.76), 4.50, 0.30, 750, 6200, 140, 3500,
           1100, 0.66, 175, 50),
    _model(12, "Volvo", "XC90", "petrol", (5.25, 3.03, 1.95, 1.46, 1.22, 1.00, 0.81, 0.67), 3.08, 0.36, 700,
           6000, 400, 1500, 2100, 0.85, 230, 71),
)  # fmt: skip

COLORS: tuple[tuple[int, str, str, float], ...] = (
    # color_id, name, hex, share of the fleet
    (1, "White", "#F5F5F5", 0.22),
    (2, "Black", "#111111", 0.18),
    (3, "Silver", "#C0C0C0", 0.14),
    (4, "Grey", "#808080", 0.14),
    (5, "Blue", "#1F4E9A", 0.09),
    (6, "Red", "#B22222", 0.08),
    (7, "Green", "#2E7D32", 0.03),
    (8, "Yellow", "#F2C200", 0.02),
    (9, "Orange", "#E66A00", 0.02),
    (10, "Brown", "#6D4C41", 0.03),
    (11, "Beige", "#D8C8A8", 0.03),
    (12, "Purple", "#5E35B1", 0.02),
)


@dataclass(frozen=True)
class Car:
    car_id: str
    model_id: int
    color_id: int
    driver_profile: str
    year: int


def generate_cars(count: int, seed: int) -> list[Car]:
    """The fleet: ``count`` cars with model, color, driver profile and year, fixed by ``seed``."""
    rng = np.random.default_rng([seed, 0xCA25])
    model_ids = rng.choice([m.model_id for m in MODELS], size=count)
    shares = np.array([c[3] for c in COLORS])
    color_ids = rng.choice([c[0] for c in COLORS], size=count, p=shares / shares.sum())
    profiles = rng.choice(len(PROFILES), size=count, p=PROFILE_WEIGHTS)
    years = rng.integers(2012, 2027, size=count)
    return [
        Car(f"car-{i:05d}", int(model_ids[i]), int(color_ids[i]), PROFILES[int(profiles[i])], int(years[i]))
        for i in range(count)
    ]


def model_by_id() -> dict[int, CarModel]:
    return {m.model_id: m for m in MODELS}


def tables(cars: Sequence[Car]) -> dict[str, list[dict[str, Any]]]:
    """The three dimension tables as lists of records."""
    return {
        "car_models": [m.record() for m in MODELS],
        "car_colors": [{"color_id": c[0], "color_name": c[1], "hex": c[2]} for c in COLORS],
        "cars": [asdict(c) for c in cars],
    }


def to_json_lines(records: Sequence[dict[str, Any]]) -> bytes:
    """Newline-delimited JSON, the format Spark and delta-rs readers take without options."""
    return b"".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for r in records)
