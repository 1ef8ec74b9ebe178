"""Trips: each car's reports sessionised, engine on to engine off (pure Python; the episodes
processor keeps the open trip in its state and feeds it a car's events).

A trip is a run of reports with the engine on: it starts at the first, ends at the last before a
report with the engine off, or before a gap of more than ``TRIP_GAP_S`` between two reports (a car
that went quiet). Distance is the odometer's difference, fuel used the fuel level's (percent of the
tank), a harsh acceleration or braking a speed change of at least ``HARSH_KMH_PER_S`` between two
consecutive reports, episodes the alert episodes that opened during the trip. A report older than
the last one seen (out of order) is not used.

>>> def report(t, on, speed=50.0, km=0.0):
...     return dict(event_id=f"e{t}", event_time=t * 1000, engine_on=on, speed=speed, odometer=km, lat=1.0,
...                 lon=2.0, fuel_level=50.0, model="M", color="red")
>>> trips = Trips("car-1", 300_000, None)
>>> out = trips.feed([report(0, True, 0.0, 10.0), report(1, True, 20.0, 10.005), report(2, False)], [])
>>> [(t.status, t.started_at, t.ended_at, round(t.distance_km, 3), t.harsh_accelerations) for t in out]
[('closed', 0, 1000, 0.005, 1)]
>>> trips.open is None
True
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import astuple, dataclass, replace
from typing import Any

from pyspark.sql import Row

#: a car's report as the episodes processor reads it: its fields by name
#: (:meth:`~fleetstream.pipeline.episodes.EpisodeProcessor.events`)
Report = Mapping[str, Any]
#: a gap between two reports longer than this ends a trip (the car went quiet), in seconds
TRIP_GAP_S = 300.0
#: a speed change between consecutive reports at least this fast (km/h per second, about 0.3 g)
#: is a harsh acceleration or braking
HARSH_KMH_PER_S = 10.8
TRIP_STATE_SCHEMA = (
    "trip_id STRING, started_at BIGINT, start_km DOUBLE, start_lat DOUBLE, start_lon DOUBLE, "
    "start_fuel DOUBLE, last_at BIGINT, last_km DOUBLE, last_lat DOUBLE, last_lon DOUBLE, last_fuel DOUBLE, "
    "last_speed DOUBLE, reports BIGINT, speed_sum DOUBLE, max_speed DOUBLE, harsh_accelerations BIGINT, "
    "harsh_brakings BIGINT, episodes BIGINT, reading_at BIGINT, readings ARRAY<DOUBLE>, held BIGINT"
)


def trip_id(car_id: str, first_event_id: str) -> str:
    """32 hex digits of SHA-256 of ``car:trip:first report``."""
    return hashlib.sha256(f"{car_id}:trip:{first_event_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class OpenTrip:
    trip_id: str
    started_at: int
    start_km: float
    start_lat: float
    start_lon: float
    start_fuel: float
    last_at: int
    last_km: float
    last_lat: float
    last_lon: float
    last_fuel: float
    last_speed: float
    reports: int
    speed_sum: float
    max_speed: float
    harsh_accelerations: int
    harsh_brakings: int
    episodes: int
    #: the frozen-sensor rules' last readings (one per rule that watches one) and their time: kept
    #: here, with the trip the processor reads and writes anyway (``EpisodeProcessor``)
    reading_at: int | None = None
    readings: list[float | None] | None = None
    #: how many of the car's episodes were pending or open after the last batch (None: not known):
    #: with none, a batch where no rule fires needs no look at the episodes' state
    held: int | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)


class Trips:
    """One car's open trip, fed its events in event-time order."""

    def __init__(self, car_id: str, gap_ms: int, open_trip: OpenTrip | None) -> None:
        self.car_id, self.gap_ms, self.open = car_id, gap_ms, open_trip
        self.changed = False

    def feed(self, events: list[Report], opened_at: list[int]) -> Iterator[Row]:
        """Closed trips, then the open one if it changed, as gold/trips rows; ``opened_at``: the
        times (sorted) at which the car's episodes opened in this batch."""
        last = events[-1]
        for e in events:
            trip = self.open
            if trip is not None and e["event_time"] <= trip.last_at:
                continue  # out of order (or a report seen before a restart): not used
            if trip is not None and (not e["engine_on"] or e["event_time"] - trip.last_at > self.gap_ms):
                yield self._row(trip, "closed", last, trip.last_at)
                self.open, trip = None, None
            if not e["engine_on"]:
                continue
            if trip is None:
                self.open = OpenTrip(
                    trip_id(self.car_id, e["event_id"]), e["event_time"], e["odometer"], e["lat"], e["lon"],
                    e["fuel_level"], e["event_time"], e["odometer"], e["lat"], e["lon"], e["fuel_level"],
                    e["speed"], 1, e["speed"], e["speed"], 0, 0,
                    _count(opened_at, e["event_time"] - 1, e["event_time"]),
                )  # fmt: skip
            else:
                change = (e["speed"] - trip.last_speed) / max((e["event_time"] - trip.last_at) / 1000, 1e-3)
                self.open = replace(
                    trip,
                    last_at=e["event_time"], last_km=e["odometer"], last_lat=e["lat"], last_lon=e["lon"],
                    last_fuel=e["fuel_level"], last_speed=e["speed"], reports=trip.reports + 1,
                    speed_sum=trip.speed_sum + e["speed"], max_speed=max(trip.max_speed, e["speed"]),
                    harsh_accelerations=trip.harsh_accelerations + (change >= HARSH_KMH_PER_S),
                    harsh_brakings=trip.harsh_brakings + (change <= -HARSH_KMH_PER_S),
                    episodes=trip.episodes + _count(opened_at, trip.last_at, e["event_time"]),
                )  # fmt: skip
            self.changed = True
        if self.open is not None and self.changed:
            yield self._row(self.open, "open", last, self.open.last_at)

    def _row(self, t: OpenTrip, status: str, last: Report, as_of: int) -> Row:
        return Row(
            trip_id=t.trip_id, car_id=self.car_id, model=last["model"], color=last["color"], status=status,
            started_at=t.started_at, ended_at=t.last_at, start_lat=t.start_lat, start_lon=t.start_lon,
            end_lat=t.last_lat, end_lon=t.last_lon, distance_km=t.last_km - t.start_km,
            duration_s=(t.last_at - t.started_at) / 1000, max_speed=t.max_speed, mean_speed=t.speed_sum / t.reports,
            fuel_used_pct=t.start_fuel - t.last_fuel, harsh_accelerations=t.harsh_accelerations,
            harsh_brakings=t.harsh_brakings, episodes=t.episodes, reports=t.reports, as_of=as_of,
        )  # fmt: skip


def _count(times: list[int], after: int, until: int) -> int:
    """How many of the sorted ``times`` are in (after, until]."""
    return bisect_right(times, until) - bisect_right(times, after)
