"""`fleetstream stream --alerts-mode realtime`: Spark's real-time mode, Kafka to Kafka, on the real
broker; the alerts it publishes equal the simulator's ground truth, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from fleetstream import schema
from fleetstream.config import KafkaSettings, Settings, TopicNames
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation

pytestmark = pytest.mark.integration
FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
CARS, SEED = 30, 23


def test_realtime_alerts_equal_the_ground_truth(stack_settings: Settings, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames().tagged(suffix)
    kafka = KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics})
    settings = stack_settings.model_copy(update={"kafka": kafka})
    ensure_topics(kafka, topics.all())
    lake = tmp_path / "lake"
    publish(settings, str(lake / "dims"), generate_cars(CARS, SEED))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
        "FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        "FLEETSTREAM_LAKE__ROOT": str(lake),
        **{f"FLEETSTREAM_KAFKA__TOPICS__{name.upper()}": value for name, value in topics.model_dump().items()},
    }
    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": f"t-{suffix}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topics.alerts])
    log_path = tmp_path / "stream.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [FLEETSTREAM, "stream", "--only", "alerts", "--alerts-mode", "realtime"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        # The query starts at the latest offsets: probe with an overspeed report until its alert
        # comes back, so that the simulated run below is wholly after the start.
        probe = Producer({"bootstrap.servers": kafka.bootstrap})
        car = generate_cars(CARS, SEED)[0].car_id
        alerts: list[dict[str, object]] = []
        deadline = time.monotonic() + 180
        n = 0
        while not alerts and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            n += 1
            now = int(time.time() * 1000)
            event = {**schema.EXAMPLE, "event_id": f"probe-{n}", "car_id": car, "event_time": now, "speed": 150.0}
            probe.produce(topics.sensors, json.dumps(event).encode(), key=car.encode(), timestamp=now)
            probe.flush(10)
            alerts += [json.loads(m.value()) for m in consumer.consume(100, 2.0) if m.error() is None]
        assert alerts, log_path.read_text()
        assert alerts[0]["rule"] == "overspeed"
        assert str(alerts[0]["event_id"]).startswith("probe-")

        options = SimOptions(
            cars=CARS, fast=True, duration=300, seed=SEED, faults=FAULT_PRESETS["heavy"],
            bad_data=BAD_DATA_PRESETS["default"],
        )  # fmt: skip
        simulation = Simulation(options, KafkaSink(kafka, topics.sensors))
        simulation.run()
        expected = simulation.ground_truth.expected_alerts()
        got: set[tuple[str, str]] = set()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 10 and time.monotonic() < deadline + 120:
            batch = [json.loads(m.value()) for m in consumer.consume(1000, 1.0) if m.error() is None]
            if batch:
                quiet_since = time.monotonic()
            got |= {(a["event_id"], a["rule"]) for a in batch if not str(a["event_id"]).startswith("probe-")}
        assert len(expected) > 50
        assert got == expected  # precision and recall 1.0
        # the publisher runs in an application of its own; the lake's (here its Delta alerts query, at
        # the lowest CPU priority) writes the status, with the publisher's rows merged in
        status_path = tmp_path / "state" / "stream-status.json"
        names: set[str] = set()
        status_by = time.monotonic() + 120
        while not names >= {"alerts", "alerts_realtime"} and time.monotonic() < status_by:
            assert process.poll() is None, log_path.read_text()
            if status_path.exists():
                names = {q["name"] for q in json.loads(status_path.read_text())["queries"]}
            time.sleep(1)
        assert names >= {"alerts", "alerts_realtime"}, log_path.read_text()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0, log_path.read_text()
    finally:
        consumer.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
