"""Bad-data injection: turns chosen messages into the broken records a real gateway sends.

Each defect is recorded in the ground truth with the event it came from. Events that show a fault
are never broken, so a fault's detection does not depend on bad-data handling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fleetstream.sim.faults import (
    BAD_DATA_TYPES,
    LATE_BY_MS,
    OUT_OF_ORDER_TICKS,
    BadDataRates,
    BadRecord,
    GroundTruth,
)

_DROPPABLE = ("car_id", "event_time", "speed", "rpm", "gear", "lat", "lon")
_RETYPABLE: tuple[tuple[str, Any], ...] = (("speed", "fast"), ("rpm", "high"), ("gear", "D"), ("engine_on", "yes"))
_OUT_OF_RANGE: tuple[tuple[str, Any], ...] = (
    ("speed", 460.0), ("rpm", -120), ("coolant_temp", 260.0), ("fuel_level", 140.0),
)  # fmt: skip


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class BadDataInjector:
    rates: BadDataRates
    seed: int
    ground_truth: GroundTruth
    held: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (release tick, key, value)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 0xBAD])
        self.thresholds = np.cumsum(self.rates.as_list())
        if self.thresholds[-1] > 1.0:
            raise ValueError("bad-data rates add up to more than 1")

    @property
    def active(self) -> bool:
        return bool(self.thresholds[-1] > 0)

    def apply(
        self,
        tick: int,
        values: list[bytes | None],
        keys: list[bytes],
        event_ids: list[str],
        event_times: list[int],
        protected: np.ndarray,
    ) -> tuple[list[bytes], list[bytes]]:
        """Break some of this tick's messages in place (None: held back to send later).

        Returns the (keys, values) of messages held back earlier that are due now.
        """
        if self.active:
            draw = self.rng.random(len(values))
            kind = np.searchsorted(self.thresholds, draw, side="right")
            for i in np.nonzero((kind < len(BAD_DATA_TYPES)) & ~protected)[0]:
                value = values[i]
                if value is None:
                    continue
                defect = BAD_DATA_TYPES[int(kind[i])]
                detail, values[i] = self._break(defect, value, tick, keys[i])
                self.ground_truth.bad_records.append(
                    BadRecord(defect, event_ids[i], keys[i].decode(), event_times[i], detail)
                )
        due = [h for h in self.held if h[0] <= tick]
        self.held = [h for h in self.held if h[0] > tick]
        return [h[1] for h in due], [h[2] for h in due]

    def release_all(self) -> tuple[list[bytes], list[bytes]]:
        """Everything still held back (at the end of a run): nothing is lost."""
        held, self.held = self.held, []
        return [h[1] for h in held], [h[2] for h in held]

    def _break(self, defect: str, value: bytes, tick: int, key: bytes) -> tuple[str, bytes | None]:
        rng = self.rng
        if defect == "malformed_json":
            return "truncated", value[: len(value) // 2]
        if defect == "duplicate":
            self.held.append((tick + 1, key, value))
            return "sent twice", value
        if defect == "out_of_order":
            self.held.append((tick + OUT_OF_ORDER_TICKS, key, value))
            return f"sent {OUT_OF_ORDER_TICKS} ticks late", None
        record = json.loads(value)
        if defect == "missing_field":
            name = _DROPPABLE[int(rng.integers(len(_DROPPABLE)))]
            del record[name]
            return name, _dumps(record)
        if defect == "bad_type":
            name, bad = _RETYPABLE[int(rng.integers(len(_RETYPABLE)))]
            record[name] = bad
            return name, _dumps(record)
        if defect == "out_of_range":
            name, bad = _OUT_OF_RANGE[int(rng.integers(len(_OUT_OF_RANGE)))]
            record[name] = bad
            return name, _dumps(record)
        if defect == "late":
            record["event_time"] -= LATE_BY_MS
            return f"event_time {LATE_BY_MS // 60000} min in the past", _dumps(record)
        raise ValueError(defect)
