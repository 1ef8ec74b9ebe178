"""Driver commands: JSON messages on `driver-commands` that take over one car live.

    {"car_id": "car-00007", "command": "set_throttle", "value": 0.8}

Commands: ``start_engine``, ``stop_engine``, ``set_throttle`` (value 0..1), ``set_brake`` (0..1),
``release`` (hand the car back to its simulated driver); ``go_offline`` and ``come_online`` silence
the car's reports and let them through again (the car drives on: a lost connection).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleetstream.config import KafkaSettings
from fleetstream.ingest.kafka import make_consumer, make_producer

log = logging.getLogger(__name__)
CommandName = Literal[
    "start_engine", "stop_engine", "set_throttle", "set_brake", "release", "go_offline", "come_online"
]


class DriverCommand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    car_id: str
    command: CommandName
    value: float | None = Field(None, ge=0.0, le=1.0)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def parse_command(payload: bytes) -> DriverCommand:
    """A command from its JSON; ValueError with the reason when it is not one."""
    try:
        return DriverCommand.model_validate(json.loads(payload))
    except (ValueError, ValidationError) as exc:
        raise ValueError(f"not a driver command ({exc.__class__.__name__}): {payload[:200]!r}") from exc


def send_command(kafka: KafkaSettings, topic: str, command: DriverCommand) -> None:
    producer = make_producer(kafka, **{"linger.ms": "0"})
    producer.produce(topic, command.to_bytes(), command.car_id.encode())
    if producer.flush(10):
        raise RuntimeError(f"driver command for {command.car_id} was not delivered to {topic}")


class CommandListener:
    """Consumes driver commands in a background thread; the simulator drains them every tick."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.commands: queue.SimpleQueue[DriverCommand] = queue.SimpleQueue()
        self.rejected = 0
        self._stop = threading.Event()
        # A fresh group that starts at the end: commands sent before the simulator ran are not replayed.
        self._consumer = make_consumer(
            kafka, group_id=f"fleetstream-sim-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "latest"}
        )
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, name="driver-commands", daemon=True)
        self.ready = threading.Event()

    def start(self) -> CommandListener:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if self._consumer.assignment():
                self.ready.set()
            if message is None:
                continue
            if message.error() is not None:
                log.warning("driver-commands consumer: %s", message.error())
                continue
            try:
                self.commands.put(parse_command(message.value() or b""))
            except ValueError as exc:
                self.rejected += 1
                log.warning("%s", exc)

    def drain(self) -> list[DriverCommand]:
        out = []
        while True:
            try:
                out.append(self.commands.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
