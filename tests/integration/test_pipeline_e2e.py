"""The whole path on the real broker, Spark and Delta: simulator with faults and bad data, then the
pipeline, checked against the simulator's ground truth."""

from __future__ import annotations

import os
import uuid
from collections import Counter

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetstream.config import KafkaSettings, LakeSettings, Settings, TopicNames
from fleetstream.ingest.kafka import describe_topics, ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.pipeline import gold
from fleetstream.pipeline.plan import LAYERS, plan
from fleetstream.pipeline.session import spark_session
from fleetstream.pipeline.stream import Streams
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, SimStats, Simulation

pytestmark = pytest.mark.integration
CARS, SECONDS, SEED = 40, 1500, 77


@pytest.fixture(scope="module")
def run(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Simulation, SimStats, SparkSession]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames().tagged(suffix)
    settings = stack_settings.model_copy(
        update={
            "kafka": KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics}),
            "lake": LakeSettings(root=str(tmp_path_factory.mktemp("lake"))),
        }
    )
    ensure_topics(settings.kafka, topics.all())
    publish(settings, settings.lake.dims, generate_cars(CARS, SEED))
    options = SimOptions(
        cars=CARS,
        fast=True,
        duration=SECONDS,
        seed=SEED,
        faults=FAULT_PRESETS["heavy"],
        bad_data=BAD_DATA_PRESETS["default"],
    )
    simulation = Simulation(options, KafkaSink(settings.kafka, topics.sensors))
    stats = simulation.run()
    spark = spark_session(settings, "fleetstream-e2e")
    Streams(spark, settings, plan(LAYERS, "realtime", separate=True, available_now=True)).run_available_now()
    return settings, simulation, stats, spark


def table(spark: SparkSession, settings: Settings, name: str):  # type: ignore[no-untyped-def]
    return spark.read.format("delta").load(f"{settings.lake.root}/{name}")


def test_bronze_holds_every_produced_message(run) -> None:  # type: ignore[no-untyped-def]
    settings, _, stats, spark = run
    assert table(spark, settings, "bronze/telemetry").count() == stats.events


def test_every_bronze_row_is_accounted_for(run) -> None:  # type: ignore[no-untyped-def]
    settings, simulation, stats, spark = run
    silver = table(spark, settings, "silver/telemetry").count()
    quarantine = table(spark, settings, "quarantine/telemetry")
    duplicates = table(spark, settings, "silver/duplicates").count()
    assert silver + quarantine.count() + duplicates == stats.events
    truth = simulation.ground_truth.counts()
    reasons = Counter({r["reason"]: r["count"] for r in quarantine.groupBy("reason").count().collect()})
    assert reasons == Counter(
        {
            "malformed_json": truth["malformed_json"],
            "missing_field": truth["missing_field"],
            "bad_type": truth["bad_type"],
            "out_of_range": truth["out_of_range"],
            "too_late": truth["late"],
        }
    )
    assert duplicates == truth["duplicate"]
    ids = table(spark, settings, "silver/telemetry").select("event_id")
    assert ids.count() == ids.distinct().count()


def test_alerts_equal_the_ground_truth(run) -> None:  # type: ignore[no-untyped-def]
    settings, simulation, _, spark = run
    expected = simulation.ground_truth.expected_alerts()
    got = {
        (r["event_id"], r["rule"]) for r in table(spark, settings, "silver/alerts").select("event_id", "rule").collect()
    }
    assert len(expected) > 100
    assert got == expected  # precision and recall 1.0


def test_kafka_outputs_match_the_tables(run) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, spark = run
    topics = settings.kafka.topics
    counts = {t.name: t.messages for t in describe_topics(settings.kafka, [topics.enriched, topics.dlq, topics.alerts])}
    assert counts[topics.enriched] == table(spark, settings, "silver/telemetry").count()
    assert counts[topics.dlq] == table(spark, settings, "quarantine/telemetry").count()
    assert counts[topics.alerts] == table(spark, settings, "silver/alerts").count()


def test_gold_equals_batch_recomputation(run) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, spark = run
    silver = table(spark, settings, "silver/telemetry")
    models = table(spark, settings, "gold/speed_by_model")
    assert models.count() > 0
    batch = gold.speed_by_model(gold.car_windows(silver))
    key = ["window_start", "model"]
    joined = models.alias("g").join(batch.alias("b"), key)
    assert joined.count() == models.count()
    assert joined.where(F.col("g.max_speed") != F.col("b.max_speed")).count() == 0
    assert joined.where(F.col("g.events") != F.col("b.events")).count() == 0
    colors = table(spark, settings, "gold/cars_by_color")
    recomputed = gold.cars_by_color(gold.car_windows(silver))
    joined = colors.alias("g").join(recomputed.alias("b"), ["window_start", "color"])
    assert colors.count() > 0
    assert joined.where(F.col("g.cars") != F.col("b.cars")).count() == 0
    state = table(spark, settings, "gold/car_state")
    assert state.count() == CARS
    latest = silver.groupBy("car_id").agg(F.max("event_time").alias("t"))
    assert state.join(latest, "car_id").where(F.col("event_time") != F.col("t")).count() == 0


def test_replay_rebuilds_the_same_tables_from_bronze(run, tmp_path_factory: pytest.TempPathFactory) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, spark = run
    target = str(tmp_path_factory.mktemp("replay"))
    replayed = settings.model_copy(update={"lake": LakeSettings(root=target, dims_location=settings.lake.dims)})
    before = describe_topics(settings.kafka, [settings.kafka.topics.alerts])[0].messages
    layers = plan(["silver", "alerts", "gold"], "realtime", separate=True, available_now=True, publish=False)
    streams = Streams(spark, replayed, layers, bronze_from=settings.lake.root)
    streams.run_available_now()

    def ids(root: str, name: str, column: str) -> list[str]:
        frame = spark.read.format("delta").load(f"{root}/{name}")
        return sorted(r[0] for r in frame.select(column).collect())

    root = settings.lake.root
    assert ids(target, "silver/telemetry", "event_id") == ids(root, "silver/telemetry", "event_id")
    assert ids(target, "silver/alerts", "alert_id") == ids(root, "silver/alerts", "alert_id")
    assert ids(target, "quarantine/telemetry", "raw") == ids(root, "quarantine/telemetry", "raw")
    assert ids(target, "silver/duplicates", "event_id") == ids(root, "silver/duplicates", "event_id")
    counts = streams.table_counts()
    assert counts["gold/car_state"] == table(spark, settings, "gold/car_state").count()
    assert "bronze" not in os.listdir(target), "bronze is read in place, not copied"
    assert describe_topics(settings.kafka, [settings.kafka.topics.alerts])[0].messages == before, "nothing published"
