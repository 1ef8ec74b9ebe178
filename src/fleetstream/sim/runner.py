"""The simulation loop: tick the fleet, encode, break some records, send; real time or as fast as possible.

In real time each car reports at ``rate`` Hz and the fleet's messages are spread evenly over each
period (car i at i/N of it), not sent in bursts. With ``fast`` there is no waiting and event_time
advances in simulated time from ``start_ms``; a run is then a pure function of its options: the same
seed and options give the same messages, byte for byte.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fleetstream.ingest.commands import CommandListener
from fleetstream.ingest.sinks import Sink
from fleetstream.sim.baddata import BadDataInjector
from fleetstream.sim.encode import Encoder
from fleetstream.sim.faults import BadDataRates, FaultRates, GroundTruth, Trip
from fleetstream.sim.fleet import Fleet, FleetConfig

FAST_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fast runs are reproducible by default
SLICES_PER_SECOND = 20


@dataclass(frozen=True)
class SimOptions:
    cars: int = 50
    rate: float = 1.0  # reports per car per second
    duration: float | None = None  # simulated seconds; None = until stopped
    fast: bool = False
    seed: int = 42
    faults: FaultRates = field(default_factory=FaultRates)
    bad_data: BadDataRates = field(default_factory=BadDataRates)
    start_ms: int | None = None  # first event_time; default: now (real time) or FAST_START_MS (fast)


@dataclass
class SimStats:
    ticks: int = 0
    events: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    driving: int = 0
    commands: int = 0
    commands_unknown_car: int = 0
    injected: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds else 0.0


@dataclass(frozen=True)
class Batch:
    keys: list[bytes]
    values: list[bytes | None]  # in car order; None where a message is held back
    event_time: np.ndarray
    extra_keys: list[bytes]
    extra_values: list[bytes]
    sent_ms: int  # when the held-back extras are sent (this tick)


def run_id(seed: int, start_ms: int) -> str:
    """Short id that prefixes every event_id of a run."""
    return hashlib.blake2b(f"{seed}:{start_ms}".encode(), digest_size=3).hexdigest()


class Simulation:
    def __init__(self, options: SimOptions, sink: Sink, commands: CommandListener | None = None) -> None:
        if options.rate <= 0:
            raise ValueError("rate must be positive")
        self.options = options
        self.sink = sink
        self.commands = commands
        self.period = 1.0 / options.rate
        self.fleet = Fleet(FleetConfig(cars=options.cars, seed=options.seed, dt=self.period, faults=options.faults))
        self.start_ms = options.start_ms or (FAST_START_MS if options.fast else int(time.time() * 1000))
        self.encoder = Encoder(self.fleet.car_ids, run_id(options.seed, self.start_ms))
        self.bad = BadDataInjector(options.bad_data, options.seed, self.fleet.ground_truth)
        self.stats = SimStats()
        self.index_of = {car_id: i for i, car_id in enumerate(self.fleet.car_ids)}
        n = options.cars
        self.offsets_ms = (np.arange(n, dtype=np.float64) * self.period * 1000.0 / n).astype(np.int64)
        self._on_before = np.zeros(n, dtype=bool)
        self.silent = np.zeros(n, dtype=bool)  # cars whose reports are not sent (driver command go_offline)
        self._open_trip: dict[int, Trip] = {}

    @property
    def ground_truth(self) -> GroundTruth:
        return self.fleet.ground_truth

    def _apply_commands(self) -> None:
        if self.commands is None:
            return
        for command in self.commands.drain():
            index = self.index_of.get(command.car_id)
            if index is None:
                self.stats.commands_unknown_car += 1
                continue
            if command.command in ("go_offline", "come_online"):  # the connection, not the car
                self.silent[index] = command.command == "go_offline"
            else:
                self.fleet.command(index, command.command, command.value)
            self.stats.commands += 1

    def tick(self) -> Batch:
        """Advance one tick; return its messages (in car order) and any held-back ones now due."""
        tick = self.stats.ticks
        self._apply_commands()
        frame = self.fleet.step()
        tick_ms = self.start_ms + round(tick * self.period * 1000.0)
        event_time = tick_ms + self.offsets_ms
        values: list[bytes | None] = list(self.encoder.encode(frame, tick, event_time))
        silent = self.silent | frame["silent"]  # by driver command, or a lost connection (a fault)
        for i in np.nonzero(silent)[0]:
            values[i] = None  # not sent: the car is offline
        self._trips(frame, event_time, ~silent)
        manifest = frame["manifest"]
        for i, k in zip(*np.nonzero(manifest), strict=True):
            episode = self.fleet.ground_truth.episodes[self.fleet.episode_of[i, k]]
            episode.add(self.encoder.event_id(int(i), tick), int(event_time[i]))
        extra_keys: list[bytes] = []
        extra_values: list[bytes] = []
        if self.bad.active:
            event_ids = [self.encoder.event_id(i, tick) for i in range(len(values))]
            extra_keys, extra_values = self.bad.apply(
                tick, values, self.encoder.keys, event_ids, event_time.tolist(), np.asarray(manifest.any(axis=1))
            )
        self.stats.ticks += 1
        self.stats.sim_seconds = self.stats.ticks * self.period
        return Batch(self.encoder.keys, values, event_time, extra_keys, extra_values, tick_ms)

    def _trips(self, frame: dict[str, np.ndarray], event_time: np.ndarray, sent: np.ndarray) -> None:
        """Ground truth: a trip is a car's run of reports with the engine on (its end: the last one sent)."""
        on, km = frame["engine_on"], frame["odometer"]
        for i in np.nonzero(on & ~self._on_before)[0]:
            trip = Trip(self.fleet.car_ids[i], int(event_time[i]), float(km[i]))
            self.ground_truth.trips.append(trip)
            self._open_trip[int(i)] = trip
        for i in np.nonzero(on & sent)[0]:
            trip = self._open_trip[int(i)]
            trip.ended_ms, trip.end_km, trip.reports = int(event_time[i]), float(km[i]), trip.reports + 1
        self._on_before = on.copy()

    def run(
        self, stop: threading.Event | None = None, on_progress: Callable[[SimStats], None] | None = None
    ) -> SimStats:
        """Run until ``duration`` simulated seconds have passed or ``stop`` is set; flush; return stats."""
        stop = stop or threading.Event()
        total_ticks = None if self.options.duration is None else round(self.options.duration / self.period)
        began = time.monotonic()
        last_progress = began
        while not stop.is_set() and (total_ticks is None or self.stats.ticks < total_ticks):
            batch = self.tick()
            if self.options.fast:
                self._send(batch.keys, batch.values, batch.event_time.tolist())
            else:
                self._send_paced(batch, stop)
            self._send(batch.extra_keys, batch.extra_values, [batch.sent_ms] * len(batch.extra_values))
            self.stats.wall_seconds = time.monotonic() - began
            if on_progress is not None and time.monotonic() - last_progress >= 0.5:
                self._refresh_stats()
                on_progress(self.stats)
                last_progress = time.monotonic()
        keys, values = self.bad.release_all()
        self._send(keys, values, [self.start_ms + round(self.stats.ticks * self.period * 1000.0)] * len(values))
        self.sink.close()
        self.stats.wall_seconds = time.monotonic() - began
        self._refresh_stats()
        if on_progress is not None:
            on_progress(self.stats)
        return self.stats

    def _send(self, keys: list[bytes], values: list[bytes | None] | list[bytes], timestamps: list[int]) -> None:
        """Send, skipping held-back slots; a message's timestamp is when the car sent it."""
        if not values:
            return
        kept = [(k, v, t) for k, v, t in zip(keys, values, timestamps, strict=True) if v is not None]
        self.sink.send([k for k, _, _ in kept], [v for _, v, _ in kept], [t for _, _, t in kept])
        self.stats.events += len(kept)

    def _refresh_stats(self) -> None:
        self.stats.driving = self.fleet.driving
        self.stats.injected = self.fleet.ground_truth.counts()

    def _send_paced(self, batch: Batch, stop: threading.Event) -> None:
        """Send each car's message at its own event_time (real time), in small slices."""
        slices = max(1, int(SLICES_PER_SECOND * self.period))
        bounds = np.linspace(0, len(batch.values), slices + 1).astype(int)
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                continue
            delay = batch.event_time[lo] / 1000.0 - time.time()
            if delay > 0 and stop.wait(delay):
                # stopped mid-tick: the tick's other messages go now, since the ground truth holds the
                # whole tick (dropped, they were faults the truth expected and no consumer could see)
                self._send(batch.keys[lo:], batch.values[lo:], batch.event_time[lo:].tolist())
                return
            self._send(batch.keys[lo:hi], batch.values[lo:hi], batch.event_time[lo:hi].tolist())
