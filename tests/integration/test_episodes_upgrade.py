"""An upgrade whose episodes state cannot be carried over (its checkpoint is of a retired layout):
the stateful query starts afresh after silver's history, and still takes in every row this run's
lake query writes, although that query writes them before the stateful one starts (an
available-now run runs the lake first; a live one holds the stateful queries back until the
lake's first batch). Before, it started at silver's newest version when it started, and so skipped
this run's first rows: here, all of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import Settings
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.pipeline.episodes import RETIRED, STATE_LAYOUTS
from fleetstream.pipeline.offline import RULE as OFFLINE_RULE
from fleetstream.pipeline.plan import LAYERS, STATEFUL, plan
from fleetstream.pipeline.stream import Streams
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.rules.engine import load_rules
from fleetstream.sim.faults import FAULT_PRESETS
from fleetstream.sim.runner import FAST_START_MS, SimOptions, Simulation
from fleetstream.testing import private_run

pytestmark = pytest.mark.integration
CARS, SECONDS = 6, 600


def test_an_upgrade_starts_the_episodes_afresh_after_silver_history_with_this_runs_rows(
    stack_settings: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    settings = private_run(stack_settings, tmp_path / "lake")
    ensure_topics(settings.kafka, settings.kafka.topics.all())
    publish(settings, settings.lake.dims, generate_cars(CARS, 3))
    sink = KafkaSink(settings.kafka, settings.kafka.topics.sensors)

    def simulate(start_ms: int) -> Simulation:
        """The fleet of the reference data (its seed), from ``start_ms``: event ids of their own."""
        options = SimOptions(cars=CARS, fast=True, duration=SECONDS, seed=3, start_ms=start_ms,
                             faults=FAULT_PRESETS["heavy"])  # fmt: skip
        simulation = Simulation(options, sink)
        simulation.run()
        return simulation

    # the lake of an earlier version: its silver's history, and its episodes state of a retired layout
    earlier = simulate(FAST_START_MS)
    Streams(spark, settings, plan(LAYERS, "realtime", separate=True, available_now=True, ml=False)).run_available_now()
    retired = tmp_path / "lake" / "_checkpoints" / RETIRED[-1]
    retired.mkdir(parents=True)
    (retired / "metadata").write_text('{"id":"an earlier layout"}\n')
    # the upgrade's run, an hour later: the lake writes these rows, then the episodes query starts
    later = simulate(FAST_START_MS + (SECONDS + 3600) * 1000)
    upgraded = plan((*LAYERS, *STATEFUL), "realtime", separate=True, available_now=True, ml=False)
    streams = Streams(spark, settings, upgraded)
    streams.run_available_now()

    silver = {
        r["event_id"]: r["event_time"]
        for r in spark.read.format("delta").load(f"{settings.lake.root}/silver/telemetry").collect()
    }
    for_s = {r.name: r.lifecycle.for_s for r in load_rules()}
    history = earlier.ground_truth.expected_episodes(silver, for_s)
    expected = later.ground_truth.expected_episodes(silver, for_s)
    assert history  # both runs have episodes: the first run's are skipped, the second's kept
    assert expected
    episodes = spark.read.format("delta").load(f"{settings.lake.root}/silver/alert_episodes")
    got = {(r["car_id"], r["rule"], r["started_at"]) for r in episodes.where(f"rule != '{OFFLINE_RULE}'").collect()}
    assert got == set(expected)
    assert streams.silver_before is not None  # the history skipped: silver's versions of the first run
    assert streams.silver_before >= 0
    # the start is kept beside the new checkpoint until its state has begun (a run killed before that
    # leaves the next one the same start); the next run finds it begun and removes the note
    noted = tmp_path / "lake" / "_checkpoints" / f"{STATE_LAYOUTS[-1]}.start"
    assert noted.read_text() == f"{streams.silver_before}\n"
    again = Streams(spark, settings, upgraded)
    again.run_available_now()
    assert again.silver_before is None
    assert not noted.exists()
    after = spark.read.format("delta").load(f"{settings.lake.root}/silver/alert_episodes")
    assert {
        (r["car_id"], r["rule"], r["started_at"]) for r in after.where(f"rule != '{OFFLINE_RULE}'").collect()
    } == got
