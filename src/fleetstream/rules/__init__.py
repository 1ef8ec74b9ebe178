"""Detection rules and the domain functions they use (one definition each, shared by the simulator,
the Spark pipeline and the docs)."""

from fleetstream.rules.gear import STOP_KMH, expected_gear, expected_gear_array
from fleetstream.rules.limits import LIMITS, Limits

__all__ = ["LIMITS", "STOP_KMH", "Limits", "expected_gear", "expected_gear_array"]
