"""`fleetstream stream --separate-alert-app` on the real broker, Spark and Delta: the alert-data
publisher runs as an application of its own, the lake's at a lower CPU priority; alert-data and the
Delta alerts table both equal the ground truth; Ctrl-C stops both applications. (A publisher whose
parent is killed -9 stops by itself: tests/chaos/test_stream_faults.py kills the stream with
its publisher running.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import polars as pl
import psutil
import pytest
from confluent_kafka import Consumer

from fleetstream.clients import librdkafka
from fleetstream.config import KafkaSettings, LakeSettings, Settings, TopicNames, process_env
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation

pytestmark = pytest.mark.integration
FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
CARS, SEED = 30, 31


def _publisher(parent: psutil.Process, timeout: float = 60) -> psutil.Process:
    """The parent's `--only alert-data` child, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in parent.children():
            if "alert-data" in child.cmdline():
                return child
        time.sleep(0.5)
    raise AssertionError("no alert-data publisher was started")


def _java(process: psutil.Process) -> psutil.Process:
    """The Spark driver JVM a fleetstream process started (its own child, not its publisher's)."""
    return next(c for c in process.children() if c.name() == "java")


def test_the_publisher_runs_apart_and_both_applications_stop_together(stack_settings: Settings, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames().tagged(suffix)
    kafka = KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics})
    settings = stack_settings.model_copy(update={"kafka": kafka})
    ensure_topics(kafka, topics.all())
    lake, state = tmp_path / "lake", tmp_path / "state"
    publish(settings, str(lake / "dims"), generate_cars(CARS, SEED))
    env = {
        **process_env(settings.model_copy(update={"lake": LakeSettings(root=str(lake))}), os.environ),
        "FLEETSTREAM_STATE_DIR": str(state),
        "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_ONLY": "bronze,silver,alerts",  # gold has its own tests
    }
    options = SimOptions(
        cars=CARS, fast=True, duration=300, seed=SEED, faults=FAULT_PRESETS["heavy"],
        bad_data=BAD_DATA_PRESETS["default"],
    )  # fmt: skip
    simulation = Simulation(options, KafkaSink(kafka, topics.sensors))
    simulation.run()  # the micro-batch publisher reads the topic from its start: all of it counts
    expected = simulation.ground_truth.expected_alerts()
    assert len(expected) > 50

    log_path = tmp_path / "stream.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [FLEETSTREAM, "stream", "--separate-alert-app", "--lake-nice", "7", "--alerts-mode", "microbatch"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    consumer = Consumer({**librdkafka(kafka), "group.id": f"t-{suffix}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topics.alerts])
    started: list[psutil.Process] = []  # every process of both applications, killed if the test fails
    try:
        parent = psutil.Process(process.pid)
        child = _publisher(parent)
        started += [child]
        published: set[tuple[str, str]] = set()
        in_delta: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 300
        while (published != expected or in_delta != expected) and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            batch = [json.loads(m.value()) for m in consumer.consume(1000, 1.0) if m.error() is None]
            published |= {(a["event_id"], a["rule"]) for a in batch}
            # the log directory appears before its first commit file: wait for a committed version
            if published == expected and any((lake / "silver" / "alerts" / "_delta_log").glob("0*.json")):
                table = pl.read_delta(str(lake / "silver" / "alerts"), columns=["event_id", "rule"])
                in_delta = set(table.iter_rows())
        assert published == expected  # precision and recall 1.0, from the publisher application
        assert in_delta == expected  # the Delta alerts table, from silver's batches in the lake application

        # the lake application and its JVM yield the CPU; the publisher and its JVM do not
        assert (parent.nice(), _java(parent).nice()) == (7, 7)
        assert (child.nice(), _java(child).nice()) == (0, 0)
        status = json.loads((state / "stream-status.json").read_text())
        # the lake's one query (bronze, silver and alerts from one Kafka read), and the publisher's
        assert {q["name"] for q in status["queries"]} == {"bronze+silver+alerts", "alerts"}
        assert all(q["state"] == "running" for q in status["queries"])
        assert (state / "logs" / "stream-alert-data.log").stat().st_size > 0

        gone = [parent, *parent.children(recursive=True)]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, log_path.read_text()
        _, alive = psutil.wait_procs(gone, timeout=30)
        assert not alive, f"left running after Ctrl-C: {[p.cmdline()[:4] for p in alive]}"
    finally:
        consumer.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for proc in started:
            with contextlib.suppress(psutil.Error):
                for member in [*proc.children(recursive=True), proc]:
                    member.kill()
