"""The dashboard's live Kafka inputs: the alert feed, the watched cars' telemetry, driver commands.

Each feed is a background thread with its own consumer, shared by every browser session of the
dashboard process. A broker that is down is not an error here: the consumer reconnects by itself,
the feeds keep what they have, and ``broker_up`` tells the page to show a banner.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from fleetstream.config import KafkaSettings
from fleetstream.ingest.commands import DriverCommand, send_command
from fleetstream.ingest.kafka import broker_count, make_consumer

log = logging.getLogger(__name__)
ALERT_HISTORY_MS = 35 * 60 * 1000  # the feed keeps 35 minutes: the panels show up to 30
MAX_ALERTS = 50_000
CAR_READINGS = 900  # per watched car: 15 minutes at one report a second


def _assign_since(consumer: Consumer, topic: str, since_ms: int | None, timeout: float = 5.0) -> bool:
    """Assign every partition of ``topic`` at the first offset at or after ``since_ms`` (None: the end)."""
    metadata = consumer.list_topics(topic, timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return False
    wanted = [TopicPartition(topic, p, since_ms if since_ms is not None else OFFSET_END) for p in found.partitions]
    if since_ms is not None:
        wanted = consumer.offsets_for_times(wanted, timeout=timeout)
    consumer.assign(wanted)
    return True


class _Feed(threading.Thread):
    def __init__(self, kafka: KafkaSettings, topic: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.kafka, self.topic = kafka, topic
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.last_message = 0.0  # time.time() of the newest message, 0 before the first

    def since_ms(self) -> int | None:
        return None

    def handle(self, key: bytes | None, value: bytes) -> None:
        raise NotImplementedError

    def run(self) -> None:
        consumer = make_consumer(self.kafka, group_id=f"fleetstream-dashboard-{uuid.uuid4().hex[:8]}")
        try:
            while not self.stopping.is_set():  # the topic may not exist yet, or the broker be down
                try:
                    if _assign_since(consumer, self.topic, self.since_ms()):
                        break
                except Exception as exc:  # KafkaException, timeouts: try again shortly
                    log.debug("%s: waiting for %s: %s", self.name, self.topic, exc)
                self.stopping.wait(2.0)
            while not self.stopping.is_set():
                for message in consumer.consume(num_messages=2000, timeout=0.25):
                    value = message.value()
                    if message.error() is None and value is not None:
                        self.handle(message.key(), value)
                        self.last_message = time.time()
        finally:
            consumer.close()

    def stop(self) -> None:
        self.stopping.set()


class AlertFeed(_Feed):
    """alert-data from 30 minutes back, then live; repeats (same alert_id) are dropped."""

    def __init__(self, kafka: KafkaSettings) -> None:
        super().__init__(kafka, kafka.topics.alerts, "alert-feed")
        self._alerts: dict[str, dict[str, Any]] = {}

    def since_ms(self) -> int | None:
        return int(time.time() * 1000) - ALERT_HISTORY_MS

    def handle(self, key: bytes | None, value: bytes) -> None:
        try:
            alert = json.loads(value)
            alert_id = alert["alert_id"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self._alerts[alert_id] = alert
            if len(self._alerts) > MAX_ALERTS * 1.1:
                self._prune()

    def _prune(self) -> None:
        horizon = time.time() * 1000 - ALERT_HISTORY_MS
        kept = sorted(
            (a for a in self._alerts.values() if a.get("event_time", 0) >= horizon),
            key=lambda a: a.get("event_time", 0),
        )[-MAX_ALERTS:]
        self._alerts = {a["alert_id"]: a for a in kept}

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts held, in no order (the panels sort and filter)."""
        with self.lock:
            self._prune()
            return list(self._alerts.values())


class CarFeed(_Feed):
    """sensors-sample from now on, kept only for the cars the cockpit watches (decoded by key first)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        super().__init__(kafka, kafka.topics.sensors, "car-feed")
        self._readings: dict[bytes, deque[dict[str, Any]]] = {}

    def watch(self, car_id: str) -> None:
        with self.lock:
            self._readings.setdefault(car_id.encode(), deque(maxlen=CAR_READINGS))

    def handle(self, key: bytes | None, value: bytes) -> None:
        readings = self._readings.get(key) if key is not None else None
        if readings is None:
            return
        try:
            reading = json.loads(value)
        except ValueError:
            return
        if isinstance(reading, dict) and isinstance(reading.get("event_time"), int):
            with self.lock:
                readings.append(reading)

    def readings(self, car_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._readings.get(car_id.encode(), ()))


class Feeds:
    """What one dashboard process shares between its sessions."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.alerts = AlertFeed(kafka)
        self.cars = CarFeed(kafka)
        self.alerts.start()
        self.cars.start()
        self._broker: tuple[float, bool] = (0.0, False)

    def broker_up(self) -> bool:
        """Whether the broker answers (asked at most every 5 s)."""
        checked, up = self._broker
        if time.monotonic() - checked > 5:
            up = broker_count(self.kafka, timeout=1.0) > 0
            self._broker = (time.monotonic(), up)
        return up

    def send(self, car_id: str, command: str, value: float | None = None) -> None:
        """Send a driver command; RuntimeError when the broker did not take it."""
        send_command(self.kafka, self.kafka.topics.commands, DriverCommand(car_id=car_id, command=command, value=value))

    def stop(self) -> None:
        self.alerts.stop()
        self.cars.stop()
