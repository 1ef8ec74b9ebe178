"""Driver profiles: how hard a driver accelerates and brakes and how fast they cruise.

The profile is assigned per car in the reference data and is the label the driving-style model
learns. Shift points come with it through the gearbox mode (see reference.catalog.UPSHIFT_RPM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleetstream.reference.catalog import PROFILES


@dataclass(frozen=True)
class DriverProfile:
    accel_max: float  # m/s², the hardest the driver asks the car to accelerate
    decel_max: float  # m/s², the hardest the driver brakes in normal driving
    response_s: float  # time constant of closing the gap to the target speed
    throttle_max: float  # fraction of the pedal the driver uses at most
    cruise_factor: float  # multiplies the road's speed limit for the driver's target
    stop_probability: float  # chance a road segment ends at a stop (light, junction)


DRIVERS: dict[str, DriverProfile] = {
    "calm": DriverProfile(1.2, 1.8, 8.0, 0.55, 0.90, 0.30),
    "normal": DriverProfile(2.2, 3.0, 5.0, 0.80, 1.00, 0.25),
    "aggressive": DriverProfile(3.8, 5.5, 2.5, 1.00, 1.12, 0.15),
}


def profile_arrays(profile_index: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.float64]]:
    """Per-car arrays of every profile parameter, indexed like ``profile_index``."""
    table = [DRIVERS[p] for p in PROFILES]
    return {
        name: np.array([getattr(d, name) for d in table], dtype=np.float64)[profile_index]
        for name in DriverProfile.__dataclass_fields__
    }
