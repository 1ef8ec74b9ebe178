"""kill -9 the streaming application mid-stream, restart it: nothing lost, nothing doubled, and its
alert publisher application (a child) stops by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from pyspark.sql import functions as F

from fleetstream.config import KafkaSettings, LakeSettings, Settings, TopicNames
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.pipeline.session import spark_session
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation

pytestmark = pytest.mark.integration
FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")


def _cmdline(process: psutil.Process) -> list[str]:
    """A process's command line, empty once it has exited (Spark's Python workers come and go)."""
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_kill_dash_nine_then_restart_loses_and_doubles_nothing(stack_settings: Settings, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames().tagged(suffix)
    lake = tmp_path / "lake"
    settings = stack_settings.model_copy(
        update={
            "kafka": KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics}),
            "lake": LakeSettings(root=str(lake)),
        }
    )
    ensure_topics(settings.kafka, topics.all())
    publish(settings, settings.lake.dims, generate_cars(30, 5))
    options = SimOptions(
        cars=30, fast=True, duration=1200, seed=5, faults=FAULT_PRESETS["heavy"], bad_data=BAD_DATA_PRESETS["default"]
    )
    simulation = Simulation(options, KafkaSink(settings.kafka, topics.sensors))
    produced = simulation.run().events

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_KAFKA__PORT": str(settings.kafka.port),
        "FLEETSTREAM_LAKE__ROOT": str(lake),
        "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_ONLY": "bronze,silver,alerts",  # what this test checks; gold has its own test
        **{f"FLEETSTREAM_KAFKA__TOPICS__{name.upper()}": value for name, value in topics.model_dump().items()},
    }
    # Small micro-batches from Kafka so the kill lands between batches of work still to do.
    env["FLEETSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER"] = "2000"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            [FLEETSTREAM, "stream"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        silver_log = lake / "silver" / "telemetry" / "_delta_log"
        deadline = time.monotonic() + 300
        # The empty table's creation, then two micro-batches committed: kill in the middle of the run.
        while time.monotonic() < deadline and len(list(silver_log.glob("*.json"))) < 3:
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.5)
        assert len(list(silver_log.glob("*.json"))) >= 3, "silver never committed a batch"
        tree = psutil.Process(first.pid).children(recursive=True)
        assert any("alert-data" in _cmdline(p) for p in tree), "no alert publisher application"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        # The publisher, in a process group of its own, outlives the kill; it must see its parent
        # gone and stop (with its JVM): no orphan, and no second writer once the stream restarts.
        _, alive = psutil.wait_procs(tree, timeout=120)
        assert not alive, [_cmdline(p)[:6] for p in alive]

    second = subprocess.run(
        [FLEETSTREAM, "stream", "--available-now"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert second.returncode == 0, second.stderr[-3000:]

    spark = spark_session(settings, "fleetstream-crash-check")
    bronze = spark.read.format("delta").load(str(lake / "bronze" / "telemetry"))
    assert bronze.count() == produced
    assert bronze.select("kafka_partition", "kafka_offset").distinct().count() == produced
    silver = spark.read.format("delta").load(str(lake / "silver" / "telemetry"))
    quarantine = spark.read.format("delta").load(str(lake / "quarantine" / "telemetry"))
    duplicates = spark.read.format("delta").load(str(lake / "silver" / "duplicates"))
    assert silver.select("event_id").distinct().count() == silver.count()
    assert silver.count() + quarantine.count() + duplicates.count() == produced
    assert quarantine.select("kafka_partition", "kafka_offset").distinct().count() == quarantine.count()
    assert duplicates.count() == simulation.ground_truth.counts()["duplicate"]
    fired = spark.read.format("delta").load(str(lake / "silver" / "alerts"))
    assert fired.select("alert_id").distinct().count() == fired.count()
    expected = simulation.ground_truth.expected_alerts()
    assert {(r["event_id"], r["rule"]) for r in fired.select("event_id", "rule").collect()} == expected
    assert fired.where(F.col("rule").isNull()).count() == 0
