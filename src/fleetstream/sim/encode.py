"""Turning a tick's arrays into telemetry messages: JSON lines built column-wise by Polars.

>>> import numpy as np
>>> enc = Encoder(["car-00000"], run_id="ab12")
>>> frame = {name: np.zeros(1) for name in enc.numeric_fields}
>>> frame.update(rpm=np.array([800]), gear=np.array([0]), engine_on=np.array([True]))
>>> enc.encode(frame, tick=7, event_time=np.array([1767225600000]))[0][:74]
b'{"schema_version":1,"event_id":"ab12-000000-00000007","car_id":"car-00000"'
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from fleetstream.schema import FIELD_NAMES, SCHEMA_VERSION

_IDENTITY = ("schema_version", "event_id", "car_id", "event_time")


class Encoder:
    """Encodes ticks of one fleet run; ids are ``<run>-<car index:06>-<tick:08>``."""

    def __init__(self, car_ids: list[str], run_id: str) -> None:
        self.run_id = run_id
        self.car_ids = pl.Series("car_id", car_ids, dtype=pl.String)
        self.id_prefix = pl.Series("prefix", [f"{run_id}-{i:06d}-" for i in range(len(car_ids))], dtype=pl.String)
        self.keys = [c.encode() for c in car_ids]
        self.numeric_fields = [name for name in FIELD_NAMES if name not in _IDENTITY]

    def encode(
        self,
        frame: dict[str, npt.NDArray[np.generic]],
        tick: int,
        event_time: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64] | None = None,
    ) -> list[bytes]:
        """One JSON message per car (or per index in ``rows``), fields in the schema's order."""
        prefix, cars = (self.id_prefix, self.car_ids) if rows is None else (self.id_prefix[rows], self.car_ids[rows])
        columns: dict[str, pl.Series | npt.NDArray[np.generic]] = {
            "schema_version": np.full(len(cars), SCHEMA_VERSION, dtype=np.int64),
            "event_id": prefix + f"{tick:08d}",
            "car_id": cars,
            "event_time": event_time if rows is None else event_time[rows],
        }
        for name in self.numeric_fields:
            columns[name] = frame[name] if rows is None else frame[name][rows]
        text = pl.DataFrame(columns).write_ndjson()
        return text.encode().split(b"\n")[:-1]

    def event_id(self, car_index: int, tick: int) -> str:
        return f"{self.run_id}-{car_index:06d}-{tick:08d}"
