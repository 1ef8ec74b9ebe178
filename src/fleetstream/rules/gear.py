"""Expected gear: the gear a model's shift schedule selects at a speed.

Each car model carries, per driver profile, the speeds (km/h) at which its automatic gearbox shifts
up: ``upshift_kmh[i]`` is where gear ``i + 1`` gives way to gear ``i + 2``. Below ``STOP_KMH`` the
box is in neutral (0). The rule is a pure comparison of decimals, so the Python, NumPy and Spark
versions agree exactly.

>>> expected_gear(0.0, [20.0, 40.0, 65.0])
0
>>> expected_gear(19.99, [20.0, 40.0, 65.0])
1
>>> expected_gear(20.0, [20.0, 40.0, 65.0])
2
>>> expected_gear(130.0, [20.0, 40.0, 65.0])
4
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

STOP_KMH = 2.0


def expected_gear(speed_kmh: float, upshift_kmh: Sequence[float]) -> int:
    """0 below STOP_KMH, else 1 + the number of upshift speeds at or below ``speed_kmh``."""
    if speed_kmh < STOP_KMH:
        return 0
    return 1 + sum(1 for threshold in upshift_kmh if speed_kmh >= threshold)


def expected_gear_array(
    speed_kmh: npt.NDArray[np.float64], upshift_kmh: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Vectorised twin: ``upshift_kmh`` is (cars, max_gears - 1), padded with +inf."""
    gears = 1 + (speed_kmh[:, None] >= upshift_kmh).sum(axis=1)
    return np.where(speed_kmh < STOP_KMH, 0, gears).astype(np.int64)
