"""The thresholds of the default rules (the seeds' three, plus overheating).

The simulator uses them to label what it injects (ground truth); the pipeline's default rules use
the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    overspeed_kmh: float = 120.0
    over_rev_rpm: int = 6000
    overheat_c: float = 110.0
    #: an overheat episode is over once the coolant is back at or below this (hysteresis)
    overheat_clear_c: float = 105.0


LIMITS = Limits()
