"""`fleetstream stream --no-ml`: the lake without the ML tables. Gold's windows close as they do
with them; gold/driving_features, gold/driver_style, gold/maintenance and gold/overheat_warnings are
never written (the whole pipeline with them is tests/integration/test_pipeline_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import Settings
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.pipeline.medallion import ML_ROLLUPS, ROLLUPS
from fleetstream.pipeline.plan import LAYERS, plan
from fleetstream.pipeline.stream import Streams
from fleetstream.pipeline.writer import delta_exists
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation
from fleetstream.testing import private_run

pytestmark = pytest.mark.integration
CARS, SECONDS, SEED = 6, 960, 5
ML_TABLES = ("gold/driving_features", "gold/driver_style", "gold/maintenance", "gold/overheat_warnings")


def test_no_ml_closes_gold_windows_and_writes_no_ml_table(
    stack_settings: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    settings = private_run(stack_settings, tmp_path / "lake")
    ensure_topics(settings.kafka, settings.kafka.topics.all())
    publish(settings, settings.lake.dims, generate_cars(CARS, SEED))
    options = SimOptions(cars=CARS, fast=True, duration=SECONDS, seed=SEED, faults=FAULT_PRESETS["heavy"])
    produced = Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors)).run().events
    run_plan = plan(LAYERS, "realtime", separate=True, available_now=True, ml=False)
    streams = Streams(spark, settings, run_plan)
    streams.run_available_now()

    [batch] = streams.batches.values()
    assert batch.rollups == tuple(n for n in ROLLUPS if n not in ML_ROLLUPS)
    assert batch.scorer is None
    root = settings.lake.root
    counts = streams.table_counts()
    assert counts["bronze/telemetry"] == produced
    assert counts["gold/car_state"] == CARS
    # 16 minutes of event time: the windows 10 minutes behind the newest report have closed
    for name in ("gold/car_minutes", "gold/speed_by_model", "gold/cars_by_color"):
        assert spark.read.format("delta").load(f"{root}/{name}").count() > 0, name
    assert [name for name in ML_TABLES if delta_exists(spark, f"{root}/{name}")] == []
