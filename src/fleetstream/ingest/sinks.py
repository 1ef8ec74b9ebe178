"""Where telemetry goes: Kafka (default), a JSON-lines file, or nowhere (to measure the generator)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from confluent_kafka import KafkaError, Message

from fleetstream.config import KafkaSettings
from fleetstream.ingest.kafka import make_producer

log = logging.getLogger(__name__)

# How long the producer waits to fill a batch. A backlog (``--fast``) sends as fast as it can, so
# a long wait fills large batches; a paced (real-time) run sends each slice of cars in one burst,
# 50 ms apart, so waiting only delays the slice: every millisecond of it is event-to-alert latency.
BACKLOG_LINGER_MS = 50
PACED_LINGER_MS = 5


@dataclass
class SinkStats:
    sent: int = 0
    bytes: int = 0
    delivered: int = 0
    failed: int = 0


class Sink(Protocol):
    stats: SinkStats

    def send(self, keys: list[bytes], values: list[bytes], timestamps: list[int] | None = None) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """Counts and drops: the generator's own speed."""

    def __init__(self) -> None:
        self.stats = SinkStats()

    def send(self, keys: list[bytes], values: list[bytes], timestamps: list[int] | None = None) -> None:
        self.stats.sent += len(values)
        self.stats.bytes += sum(map(len, values))
        self.stats.delivered = self.stats.sent

    def close(self) -> None:
        return None


class JsonlSink:
    """One message per line (the key is the record's car_id, so it is not written separately)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle: IO[bytes] = path.open("wb")
        self.stats = SinkStats()

    def send(self, keys: list[bytes], values: list[bytes], timestamps: list[int] | None = None) -> None:
        if not values:
            return
        data = b"\n".join(values) + b"\n"
        self._handle.write(data)
        self.stats.sent += len(values)
        self.stats.delivered = self.stats.sent
        self.stats.bytes += len(data)

    def close(self) -> None:
        self._handle.close()


class KafkaSink:
    """Idempotent, compressed, batched producer; every delivery is confirmed or counted as failed.

    ``paced``: the messages come as they happen (a real-time simulation, a gateway), so they are sent
    within :data:`PACED_LINGER_MS` instead of waiting :data:`BACKLOG_LINGER_MS` to fill a batch."""

    def __init__(self, kafka: KafkaSettings, topic: str, paced: bool = False, **overrides: str) -> None:
        self.topic = topic
        self.user = kafka.sasl_username
        self.stats = SinkStats()
        self.errors: dict[str, int] = {}
        self.producer = make_producer(
            kafka,
            **{
                "linger.ms": str(PACED_LINGER_MS if paced else BACKLOG_LINGER_MS),
                "batch.size": str(1024 * 1024),
                "queue.buffering.max.messages": "1000000",
                "queue.buffering.max.kbytes": str(512 * 1024),
                **overrides,
            },
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            reason = err.str()
            if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and self.user:
                reason += f" (user '{self.user}' has no WRITE permission on it: an ACL must allow it)"
            if reason not in self.errors:
                log.error("delivery to %s failed: %s", self.topic, reason)
            self.errors[reason] = self.errors.get(reason, 0) + 1

    def send(self, keys: list[bytes], values: list[bytes], timestamps: list[int] | None = None) -> None:
        """Produce every message; ``timestamps`` (ms) become the messages' CreateTime: when sent."""
        produce, topic, callback = self.producer.produce, self.topic, self._on_delivery
        stamps = timestamps if timestamps is not None else [0] * len(values)  # 0: the client's clock
        for key, value, stamp in zip(keys, values, stamps, strict=True):
            while True:
                try:
                    produce(topic, value, key, on_delivery=callback, timestamp=stamp)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.stats.bytes += len(value)
        self.stats.sent += len(values)
        self.producer.poll(0)

    def close(self, timeout: float = 60.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            self.stats.failed += left
            log.error("%d messages were not delivered within %.0f s of closing", left, timeout)
