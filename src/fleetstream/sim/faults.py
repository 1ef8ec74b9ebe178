"""Fault and bad-data injection settings, with presets, and the ground-truth record.

Faults are physical episodes (overspeed, engine over-rev, wrong gear, overheating, a frozen sensor,
speeding through a speed zone, a lost connection); each episode is recorded with the ids of the
events in which it shows (for a lost connection: the reports it did not send), judged on the
emitted values with the default rules' limits. Bad data are broken messages for testing the pipeline's quarantine
(malformed JSON, missing fields, wrong types, out-of-range values, duplicates, late and out-of-order
events); each one is recorded too. Together they are the ground truth detection is scored against.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

FAULT_TYPES = ("overspeed", "over_rev", "wrong_gear", "overheat", "sensor", "zone", "offline")
BAD_DATA_TYPES = (
    "malformed_json", "missing_field", "bad_type", "out_of_range", "duplicate", "late", "out_of_order",
)  # fmt: skip


@dataclass(frozen=True)
class FaultRates:
    """Episodes per car per hour of simulated time, for each fault type."""

    overspeed: float = 0.0
    over_rev: float = 0.0
    wrong_gear: float = 0.0
    overheat: float = 0.0
    sensor: float = 0.0
    zone: float = 0.0  # the driver ignores a speed zone's limit (also raised by an overspeed through a zone)
    offline: float = 0.0  # the car's connection drops: it sends nothing for a while

    def as_list(self) -> list[float]:
        return [getattr(self, name) for name in FAULT_TYPES]


@dataclass(frozen=True)
class BadDataRates:
    """Fraction of events turned into each kind of bad record."""

    malformed_json: float = 0.0
    missing_field: float = 0.0
    bad_type: float = 0.0
    out_of_range: float = 0.0
    duplicate: float = 0.0
    late: float = 0.0
    out_of_order: float = 0.0

    def as_list(self) -> list[float]:
        return [getattr(self, name) for name in BAD_DATA_TYPES]


FAULT_PRESETS: dict[str, FaultRates] = {
    "none": FaultRates(),
    "light": FaultRates(overspeed=0.5, over_rev=0.3, wrong_gear=0.5, overheat=0.1, sensor=0.2, zone=0.1, offline=0.1),
    "default": FaultRates(overspeed=2.0, over_rev=1.0, wrong_gear=2.0, overheat=0.5, sensor=1.0, zone=0.3, offline=0.5),
    "heavy": FaultRates(overspeed=12.0, over_rev=8.0, wrong_gear=12.0, overheat=3.0, sensor=6.0, zone=1.0, offline=2.0),
}
BAD_DATA_PRESETS: dict[str, BadDataRates] = {
    "none": BadDataRates(),
    "light": BadDataRates(0.0005, 0.0005, 0.0005, 0.0005, 0.001, 0.0005, 0.001),
    "default": BadDataRates(0.002, 0.002, 0.002, 0.002, 0.005, 0.002, 0.005),
    "heavy": BadDataRates(0.01, 0.01, 0.01, 0.01, 0.02, 0.01, 0.02),
}

LATE_BY_MS = 2 * 3600 * 1000  # far behind any watermark
OUT_OF_ORDER_TICKS = 3  # held back this many ticks, then sent with its original event_time


@dataclass
class Episode:
    """One injected fault: where, when, and the events in which it shows."""

    episode_id: int
    fault: str
    car_id: str
    started_ms: int
    event_ids: list[str] = field(default_factory=list)
    first_event_time: int | None = None
    last_event_time: int | None = None
    ended_ms: int | None = None

    def add(self, event_id: str, event_time: int) -> None:
        self.event_ids.append(event_id)
        if self.first_event_time is None:
            self.first_event_time = event_time
        self.last_event_time = event_time


@dataclass
class Trip:
    """One trip as the car drove it: its reports with the engine on, from the first to the last
    (event times, ms), and the odometer (km) at both."""

    car_id: str
    started_ms: int
    start_km: float
    ended_ms: int | None = None
    end_km: float | None = None
    reports: int = 0


@dataclass(frozen=True)
class BadRecord:
    defect: str
    event_id: str
    car_id: str
    event_time: int
    detail: str = ""


RULE_OF_FAULT = {
    "overspeed": "overspeed",
    "over_rev": "engine_stress",
    "wrong_gear": "gear_mismatch",
    "zone": "zone_overspeed",
}
#: injected fault -> the default rule that raises one alert episode for it
EPISODE_RULE_OF_FAULT = {**RULE_OF_FAULT, "overheat": "overheat", "sensor": "sensor_fault"}
#: faults that show only from their second report: a frozen sender's first reading is a fresh one,
#: the freeze is seen when the next report repeats it
SHOWS_FROM_SECOND = ("sensor",)


class GroundTruth:
    """Collects episodes and bad records; writes them as JSON lines."""

    def __init__(self) -> None:
        self.episodes: list[Episode] = []
        self.bad_records: list[BadRecord] = []
        self.trips: list[Trip] = []

    def new_episode(self, fault: str, car_id: str, started_ms: int) -> Episode:
        episode = Episode(len(self.episodes), fault, car_id, started_ms)
        self.episodes.append(episode)
        return episode

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in (*FAULT_TYPES, *BAD_DATA_TYPES)}
        for e in self.episodes:
            out[e.fault] += 1
        for b in self.bad_records:
            out[b.defect] += 1
        return out

    def expected_alerts(self, rules: Collection[str] | None = None) -> set[tuple[str, str]]:
        """(event_id, rule) of every alert the default rules (or those of them named in ``rules``) must
        raise: one per event of a fault episode whose fault one of them detects (overheat and sensor
        faults raise episodes only)."""
        return {
            (event_id, RULE_OF_FAULT[e.fault])
            for e in self.episodes
            if e.fault in RULE_OF_FAULT and (rules is None or RULE_OF_FAULT[e.fault] in rules)
            for event_id in e.event_ids
        }

    def expected_episodes(
        self, event_time: Mapping[str, int], for_s: Mapping[str, float]
    ) -> dict[tuple[str, str, int], int]:
        """The alert episodes the default rules must open: (car_id, rule, first event time) -> last
        event time, one per injected fault episode a rule detects, over the events that reached
        silver (``event_time``: event_id -> event time of silver's rows) and only if the condition
        held its rule's ``for`` (``for_s``: rule -> seconds). The simulator lets a car's faults of
        one type be a minute or two apart and its drivers not stop during a speeding or gear fault, so one
        injected episode is one alert episode."""
        expected = {}
        for e in self.episodes:
            rule = EPISODE_RULE_OF_FAULT.get(e.fault)
            times = sorted(event_time[i] for i in e.event_ids if i in event_time)
            if e.fault in SHOWS_FROM_SECOND:
                times = times[1:]
            if rule is None or not times or times[-1] - times[0] < for_s[rule] * 1000:
                continue
            expected[(e.car_id, rule, times[0])] = times[-1]
        return expected

    def expected_offline(
        self, reports: Mapping[str, Collection[int]]
    ) -> tuple[dict[tuple[str, int], int], set[tuple[str, int]]]:
        """The vehicle_offline episodes the lost connections must open, over the reports that reached
        silver (``reports``: car_id -> event times): (car_id, its last report before the silence) ->
        its first report after; and the keys of the silences that last to the end (open, or not yet
        seen as offline)."""
        expected: dict[tuple[str, int], int] = {}
        unfinished: set[tuple[str, int]] = set()
        for fault in (e for e in self.episodes if e.fault == "offline"):
            assert fault.first_event_time is not None
            assert fault.last_event_time is not None
            times = reports[fault.car_id]
            key = (fault.car_id, max(t for t in times if t < fault.first_event_time))
            after = [t for t in times if t > fault.last_event_time]
            if after:
                expected[key] = min(after)
            else:
                unfinished.add(key)
        return expected, unfinished

    def write(self, handle: IO[str]) -> None:
        for e in self.episodes:
            handle.write(json.dumps({"kind": "fault", **asdict(e)}, separators=(",", ":")) + "\n")
        for b in self.bad_records:
            handle.write(json.dumps({"kind": "bad_data", **asdict(b)}, separators=(",", ":")) + "\n")
        for t in self.trips:
            handle.write(json.dumps({"kind": "trip", **asdict(t)}, separators=(",", ":")) + "\n")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            self.write(handle)


def load_ground_truth(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(fault episodes, bad records) from a ground-truth file."""
    faults: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        kind = record.pop("kind")
        if kind != "trip":
            (faults if kind == "fault" else bad).append(record)
    return faults, bad
