"""The overheating early warning scored against the simulator's injected overheat faults.

An injected overheat fault starts heating a car's engine at ``started_ms``; its first report above
the limit (``first_event_time`` in the ground truth) is the overheat. Warnings
(``gold/overheat_warnings``) are grouped into runs: a car's warned reports less than
``RUN_GAP_MS`` apart are one warning. Then:

- a warning is right when it starts while a fault heats that car and before its overheat;
- an overheat is caught when a warning of its car comes between the fault's start and the overheat;
  the lead time is from the first such warning to the overheat (event time).

>>> episodes = [{"fault": "overheat", "car_id": "a", "started_ms": 0, "first_event_time": 80_000},
...             {"fault": "overheat", "car_id": "b", "started_ms": 0, "first_event_time": 90_000},
...             {"fault": "overspeed", "car_id": "c", "started_ms": 0, "first_event_time": 5_000}]
>>> s = score([("a", 20_000), ("a", 21_000), ("c", 50_000)], episodes)
>>> (s.overheats, s.caught, s.warnings, s.right, s.recall, s.precision, s.leads_s)
(2, 1, 2, 1, 0.5, 0.5, [60.0])
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RUN_GAP_MS = 60_000


@dataclass
class WarningScore:
    overheats: int = 0  # injected faults whose coolant crossed the limit
    caught: int = 0  # ... warned before it crossed
    warnings: int = 0  # warning runs
    right: int = 0  # ... that started while a fault heated their car, before the overheat
    leads_s: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.caught / self.overheats if self.overheats else 0.0

    @property
    def precision(self) -> float:
        return self.right / self.warnings if self.warnings else 0.0

    @property
    def median_lead_s(self) -> float | None:
        return statistics.median(self.leads_s) if self.leads_s else None

    def as_dict(self) -> dict[str, Any]:
        leads = sorted(self.leads_s)
        return {"overheats": self.overheats, "caught": self.caught, "warnings": self.warnings, "right": self.right,
                "recall": self.recall, "precision": self.precision, "median_lead_s": self.median_lead_s,
                "min_lead_s": leads[0] if leads else None, "max_lead_s": leads[-1] if leads else None}  # fmt: skip


def score(warned: Iterable[tuple[str, int]], episodes: Iterable[Mapping[str, Any]]) -> WarningScore:
    """Score warned reports ((car_id, event time ms)) against ground-truth fault episodes."""
    heats: dict[str, list[tuple[int, int]]] = defaultdict(list)  # car -> (fault start, overheat)
    for e in episodes:
        if e["fault"] == "overheat" and e.get("first_event_time") is not None:
            heats[e["car_id"]].append((int(e["started_ms"]), int(e["first_event_time"])))
    by_car: dict[str, list[int]] = defaultdict(list)
    for car, at in warned:
        by_car[car].append(int(at))
    out = WarningScore(overheats=sum(len(v) for v in heats.values()))
    for car, times in by_car.items():
        times.sort()
        starts = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > RUN_GAP_MS]
        out.warnings += len(starts)
        out.right += sum(any(lo <= t < hi for lo, hi in heats.get(car, ())) for t in starts)
    for car, spans in heats.items():
        for lo, hi in spans:
            before = [t for t in by_car.get(car, ()) if lo <= t < hi]
            if before:
                out.caught += 1
                out.leads_s.append((hi - min(before)) / 1000.0)
    return out
