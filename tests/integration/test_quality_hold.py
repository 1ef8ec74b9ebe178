"""FLEETSTREAM_QUALITY__HOLD_GOLD: while `fleetstream quality check` has marked a table as failing its
critical expectations, the stream writes bronze, silver and alerts but leaves gold as it is; once a
check passes and the mark is gone, gold's first update takes in every silver row it skipped, and
gold/car_minutes again sums to exactly silver's rows."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetstream.config import KafkaSettings, LakeSettings, QualitySettings, Settings, TopicNames
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.pipeline.plan import LAYERS, plan
from fleetstream.pipeline.stream import Streams
from fleetstream.pipeline.writer import delta_exists
from fleetstream.quality.check import Result, Run
from fleetstream.quality.hold import read_hold, updated_hold, write_hold
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.runner import SimOptions, Simulation

pytestmark = pytest.mark.integration
CARS = 8


def _simulate(settings: Settings, seed: int, start_ms: int) -> int:
    options = SimOptions(cars=CARS, fast=True, duration=240, seed=seed, start_ms=start_ms)
    return Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors)).run().events


def _run(spark: SparkSession, settings: Settings) -> None:
    Streams(spark, settings, plan(LAYERS, "realtime", separate=True, available_now=True)).run_available_now()


def test_gold_waits_while_held_and_catches_up_after(
    stack_settings: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    topics = TopicNames().tagged(uuid.uuid4().hex[:8])
    settings = stack_settings.model_copy(
        update={
            "kafka": KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics}),
            "lake": LakeSettings(root=str(tmp_path / "lake")),
            "quality": QualitySettings(hold_gold=True),
        }
    )
    ensure_topics(settings.kafka, topics.all())
    publish(settings, settings.lake.dims, generate_cars(CARS, 3))
    root = settings.lake.root
    at = dt.datetime.now(dt.UTC)
    failed = Run("r1", [Result("r1", at, "silver/telemetry", "unique(event_id)", "critical", False, "2 rows", 9)])
    write_hold(spark, settings, updated_hold(None, failed, ["silver/telemetry"]))
    assert read_hold(spark, settings) == {
        "tables": {"silver/telemetry": {"run_id": "r1", "failed": ["unique(event_id)"]}}
    }

    start = int(at.timestamp() * 1000) - 3_600_000
    _simulate(settings, seed=1, start_ms=start)
    _run(spark, settings)
    held_silver = spark.read.format("delta").load(f"{root}/silver/telemetry").count()
    assert held_silver > 1000
    assert spark.read.format("delta").load(f"{root}/silver/alerts").count() > 0
    for name in ("gold/car_minutes", "gold/car_state"):
        path = f"{root}/{name}"
        assert not delta_exists(spark, path) or spark.read.format("delta").load(path).count() == 0, name

    passed = Run("r2", [Result("r2", at, "silver/telemetry", "unique(event_id)", "critical", True, "ok", 9)])
    write_hold(spark, settings, updated_hold(read_hold(spark, settings), passed, ["silver/telemetry"]))
    assert read_hold(spark, settings) is None
    _simulate(settings, seed=2, start_ms=start + 300_000)
    _run(spark, settings)

    silver = spark.read.format("delta").load(f"{root}/silver/telemetry")
    assert silver.count() > held_silver
    minutes = spark.read.format("delta").load(f"{root}/gold/car_minutes")
    assert minutes.agg(F.sum("events")).first()[0] == silver.count()  # type: ignore[index]
    state = spark.read.format("delta").load(f"{root}/gold/car_state")
    latest = silver.groupBy("car_id").agg(F.max("event_time").alias("t"))
    assert state.count() == latest.count() == CARS
    assert state.join(latest, "car_id").where(F.col("event_time") != F.col("t")).count() == 0
