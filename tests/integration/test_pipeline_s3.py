"""The whole pipeline with the lake and the reference data on S3 (SeaweedFS through s3a://)."""

from __future__ import annotations

import uuid

import pytest

from fleetstream.clients import s3_client
from fleetstream.config import KafkaSettings, LakeSettings, Settings, TopicNames
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.pipeline.plan import LAYERS, plan
from fleetstream.pipeline.session import spark_session
from fleetstream.pipeline.stream import Streams
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation

pytestmark = pytest.mark.integration
CARS, SEED = 15, 31


def test_bronze_to_gold_on_s3a(stack_settings: Settings) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames().tagged(suffix)
    root = f"s3a://{stack_settings.s3.bucket}/lake-{suffix}"
    settings = stack_settings.model_copy(
        update={
            "kafka": KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics}),
            "lake": LakeSettings(root=root),
        }
    )
    ensure_topics(settings.kafka, topics.all())
    publish(settings, settings.lake.dims, generate_cars(CARS, SEED))
    options = SimOptions(
        cars=CARS, fast=True, duration=1000, seed=SEED, faults=FAULT_PRESETS["heavy"],
        bad_data=BAD_DATA_PRESETS["default"],
    )  # fmt: skip
    simulation = Simulation(options, KafkaSink(settings.kafka, topics.sensors))
    produced = simulation.run().events
    spark = spark_session(settings, "fleetstream-s3", with_s3=True)
    pipeline = Streams(spark, settings, plan(LAYERS, "realtime", separate=True, available_now=True))
    pipeline.run_available_now()

    counts = pipeline.table_counts()
    assert counts["bronze/telemetry"] == produced
    assert counts["silver/telemetry"] + counts["quarantine/telemetry"] + counts["silver/duplicates"] == produced
    fired = spark.read.format("delta").load(f"{root}/silver/alerts").select("event_id", "rule").collect()
    assert {(r["event_id"], r["rule"]) for r in fired} == simulation.ground_truth.expected_alerts()
    assert counts["gold/car_state"] == CARS
    assert counts["gold/speed_by_model"] > 0  # windows the watermark (10 min behind) has closed
    # the tables are really in the bucket, with their Delta logs
    bucket = s3_client(settings).list_objects_v2(
        Bucket=stack_settings.s3.bucket, Prefix=f"lake-{suffix}/silver/telemetry/_delta_log/"
    )
    assert bucket.get("KeyCount", 0) > 0
