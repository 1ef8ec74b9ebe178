"""Every query of the stream submitted to a local Spark standalone cluster (`fleetstream up
--spark-workers 1`, beside the session's secure broker): `fleetstream stream --available-now` with
its default queries (the stateful ones too: Python on the executors, RocksDB state in their JVM)
over a simulated run with faults and bad data. The lake is what local mode writes: bronze = produced,
every record accounted for, alerts = the ground truth, episodes opened. (The chaos test runs the
stream there too, under Kafka and S3 faults: tests/chaos/test_broker_and_s3_restart.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from fleetstream.bench.pipeline import check_lake
from fleetstream.config import Settings, SparkSettings, process_env
from fleetstream.ingest.kafka import delete_topics, ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.local import spark_cluster
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation
from fleetstream.testing import free_port_base, private_run

pytestmark = pytest.mark.integration

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
CARS, SECONDS = 20, 90


def test_every_query_on_a_standalone_cluster_writes_the_lake_local_mode_writes(
    stack_settings: Settings, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    settings = private_run(stack_settings, lake)
    topics = settings.kafka.topics
    ensure_topics(settings.kafka, topics.all())
    try:
        publish(settings, settings.lake.dims, generate_cars(CARS, 5))
        options = SimOptions(cars=CARS, fast=True, duration=SECONDS, seed=5, faults=FAULT_PRESETS["heavy"],
                             bad_data=BAD_DATA_PRESETS["default"])  # fmt: skip
        simulation = Simulation(options, KafkaSink(settings.kafka, topics.sensors))
        events = simulation.run().events
        expected = tmp_path / "expected.json"
        expected.write_text(json.dumps(sorted(simulation.ground_truth.expected_alerts())))

        port = free_port_base(3)
        cluster = Settings(spark=SparkSettings(workers=1, worker_cores=2, cluster_port=port, ui_port=port + 1))
        env = {
            **process_env(settings, os.environ),  # the session's broker (only checked by `up`), as admin
            "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
            "FLEETSTREAM_SPARK__WORKERS": "1",
            "FLEETSTREAM_SPARK__WORKER_CORES": "2",  # the stream's two applications: one core each
            "FLEETSTREAM_SPARK__CLUSTER_PORT": str(port),
            "FLEETSTREAM_SPARK__UI_PORT": str(port + 1),
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([FLEETSTREAM, *args], env=env, capture_output=True, text=True, timeout=900,
                                  check=False)  # fmt: skip

        up = cli("up", "--detach")
        assert up.returncode == 0, up.stderr[-3000:]
        try:
            assert spark_cluster.alive_workers(cluster) == 1
            drained = cli("stream", "--available-now")
            assert drained.returncode == 0, drained.stderr[-5000:]
            answer = spark_cluster.master_state(cluster)
            assert answer is not None
            apps = [(a["name"], a["state"]) for a in answer["completedapps"]]  # type: ignore[attr-defined]
            assert ("fleetstream-stream", "FINISHED") in apps, apps  # it ran there, not in local mode
        finally:
            down = cli("down")
            assert down.returncode == 0, down.stderr[-3000:]
        assert spark_cluster.master_state(cluster, timeout=0.5) is None  # stopped

        assert check_lake(str(lake), events, expected) == ""  # bronze, the accounting, alerts exact
        episodes = pl.read_delta(str(lake / "silver" / "alert_episodes"), columns=["episode_id"])
        assert episodes.height > 0
        assert episodes["episode_id"].n_unique() == episodes.height
    finally:
        delete_topics(settings.kafka, topics.all())
