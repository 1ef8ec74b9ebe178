"""Chaos on a local cluster of three secure Kafka nodes (`up --brokers 3 --secure`: topics with 3
replicas, min.insync.replicas 2), a lake on S3 (``s3a://`` on SeaweedFS) and the stream submitted
to a Spark standalone cluster (`up --spark-workers 1`: executors in a JVM of their own, as on a
real cluster). While the simulator sends and the stream writes the lake: kill -9 one Kafka node
and start it again with `fleetstream up`; later kill -9 the S3 server and start it again the same
way. Nothing is lost or doubled, and neither the simulator nor the stream stops. (A whole broker
outage, the only node down, is in tests/chaos/test_disk_full.py.)

Its own stack (state directory, ports), so the session's servers are left alone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from fleetstream.config import KafkaSettings, LakeSettings, S3Settings, Settings, SparkSettings
from fleetstream.ingest.kafka import make_admin
from fleetstream.lake.read import storage_options, table_uri
from fleetstream.local import spark_cluster
from fleetstream.pipeline.monitor import STATUS_FILE, read_status
from fleetstream.testing import HEAVY_TIMEOUT_S, free_port_base, interrupt_all

pytestmark = pytest.mark.integration

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
# 40 events/s from before the first outage until AFTER_S after the second ends (about 4,000 events:
# the S3 kill came after ~50 s); SECONDS caps it
CARS, RATE, SECONDS, AFTER_S = 10, 4, 900, 10
OUTAGE_S = 10


def _frame(settings: Settings, table: str, columns: list[str]) -> pl.DataFrame:
    """A table of the lake on S3 (empty before it exists)."""
    try:
        return pl.read_delta(table_uri(settings, table), columns=columns, storage_options=storage_options(settings))
    except Exception:  # not created yet, or the server is down
        return pl.DataFrame()


def _wait(what: str, done: Callable[[], bool], timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(1)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tails}")


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Settings]]:
    """The environment of the test's commands, and the same settings (to read the lake here)."""
    port, s3_port, spark_port = free_port_base(6), free_port_base(5, grpc_offset=10000), free_port_base(3)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
        "FLEETSTREAM_KAFKA__PORT": str(port),
        "FLEETSTREAM_KAFKA__CONTROLLER_PORT": str(port + 1),
        "FLEETSTREAM_KAFKA__SECURE": "true",
        "FLEETSTREAM_KAFKA__BROKERS": "3",
        "FLEETSTREAM_SPARK__WORKERS": "1",
        "FLEETSTREAM_SPARK__WORKER_CORES": "2",
        "FLEETSTREAM_SPARK__CLUSTER_PORT": str(spark_port),
        "FLEETSTREAM_SPARK__UI_PORT": str(spark_port + 1),
        "FLEETSTREAM_SPARK__CONF": '{"spark.cores.max": "2"}',  # one application here (no alert publisher)
        "FLEETSTREAM_S3__PORT": str(s3_port),
        "FLEETSTREAM_LAKE__ROOT": "s3a://fleetstream/lake",
        "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_ONLY": "bronze,silver",
    }
    settings = Settings(
        state_dir=tmp_path / "state",
        kafka=KafkaSettings(port=port, controller_port=port + 1, brokers=3, secure=True),
        s3=S3Settings(port=s3_port),
        lake=LakeSettings(root="s3a://fleetstream/lake"),
        spark=SparkSettings(workers=1, worker_cores=2, cluster_port=spark_port, ui_port=spark_port + 1),
    )
    yield env, settings
    stopped = subprocess.run([FLEETSTREAM, "down"], env=env, capture_output=True, text=True, timeout=120, check=False)
    # every part stops on SIGTERM (the three Kafka nodes together: one after the other, the last one
    # waited on a quorum gone until it was killed)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "did not stop" not in stopped.stderr, stopped.stderr[-3000:]


# a hang guard, not a speed target: this scenario takes 6 to 10 min on a slow day, over the suite's 600 s
@pytest.mark.timeout(HEAVY_TIMEOUT_S)
def test_one_broker_of_three_then_the_s3_server_killed_mid_stream_lose_and_double_nothing(
    stack_env: tuple[dict[str, str], Settings], tmp_path: Path, figures: Callable[[str, str], None]
) -> None:
    env, settings = stack_env

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEETSTREAM, *args], env=env, capture_output=True, text=True, timeout=180, check=False)

    def rows(table: str = "bronze/telemetry") -> int:
        return _frame(settings, table, ["kafka_offset"]).height

    def kill(service: str) -> float:
        state = json.loads((tmp_path / "state" / "stack.json").read_text())
        pid = next(s["pid"] for s in state["services"] if s["name"] == service)
        os.killpg(pid, signal.SIGKILL)
        _wait(f"{service} to be gone", lambda: not psutil.pid_exists(pid), 30, logs)
        return time.monotonic()

    up = cli("up", "--detach", "--s3")
    assert up.returncode == 0, up.stderr[-3000:]
    assert cli("reference", "publish", "--cars", str(CARS)).returncode == 0
    admin = make_admin(settings.kafka)
    sensors = admin.list_topics(timeout=10).topics[settings.kafka.topics.sensors]
    assert [len(p.replicas) for p in sensors.partitions.values()] == [3] * 4
    resource = ConfigResource(ResourceType.TOPIC, settings.kafka.topics.sensors)
    assert admin.describe_configs([resource])[resource].result()["min.insync.replicas"].value == "2"
    logs = [tmp_path / "simulator.log", tmp_path / "stream.log"]
    status = tmp_path / "state" / STATUS_FILE
    started = []
    try:
        for argv, log in (
            (["stream"], logs[1]),
            (["simulate", "--cars", str(CARS), "--rate", str(RATE), "--duration", str(SECONDS)], logs[0]),
        ):
            if argv[0] == "simulate":  # once the stream's query runs (its start on the cluster takes ~40 s)
                _wait("the stream's query to start", lambda: bool(getattr(read_status(status), "queries", [])),
                      180, logs)  # fmt: skip
            with log.open("w") as out:
                started.append(subprocess.Popen([FLEETSTREAM, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True))  # fmt: skip
        stream, simulator = started
        _wait("bronze's first rows", lambda: rows() > 0, 180, logs)
        cluster = spark_cluster.master_state(settings)  # the stream runs on the standalone cluster
        assert cluster is not None
        assert cluster["aliveworkers"] == 1
        assert [(a["name"], a["state"]) for a in cluster["activeapps"]] == [("fleetstream-stream", "RUNNING")]

        # 1. one Kafka node of three: the others lead its partitions, the producer and the stream go on
        broker_down_at = rows()
        killed = kill("kafka-2")
        _wait("bronze to grow with a node down", lambda: rows() > broker_down_at, 120, logs)
        grew_in = time.monotonic() - killed
        time.sleep(OUTAGE_S)
        assert simulator.poll() is None
        assert stream.poll() is None
        again = cli("up", "--detach", "--s3")  # starts the node that is down, on its storage
        assert again.returncode == 0, again.stderr
        assert "kafka-2" in again.stderr

        # 2. the S3 server, under the lake
        s3_down_at = rows()  # (read while the server still answers)
        kill("seaweedfs")
        time.sleep(OUTAGE_S)  # the stream's writes fail and are tried again
        assert stream.poll() is None, logs[1].read_text()[-4000:]
        again = cli("up", "--detach", "--s3")
        assert again.returncode == 0, again.stderr
        restarted = time.monotonic()

        # the input goes on past both outages however long they took on this machine, then stops
        time.sleep(AFTER_S)
        assert simulator.poll() is None, logs[0].read_text()[-3000:]
        simulator.send_signal(signal.SIGINT)
        assert simulator.wait(60) == 0, logs[0].read_text()[-3000:]
        said = re.search(r"([\d,]+) events from .* delivered ([\d,]+), failed ([\d,]+)", logs[0].read_text())
        assert said is not None, logs[0].read_text()[-3000:]
        produced, delivered, failed = (int(n.replace(",", "")) for n in said.groups())
        assert (delivered, failed) == (produced, 0)  # the producer's buffer rode the outage out
        _wait("bronze to hold every delivered record", lambda: rows() >= delivered, 180, logs)
        s3_caught_up = time.monotonic() - restarted
        assert stream.poll() is None, "the stream stopped"  # it rode both outages out
        assert s3_down_at < delivered  # the second kill came before the end of the input

        def accounted() -> int:
            return sum(rows(t) for t in ("silver/telemetry", "quarantine/telemetry", "silver/duplicates"))

        _wait("silver, quarantine and duplicates to account for bronze", lambda: accounted() >= delivered, 120, logs)
        bronze = _frame(settings, "bronze/telemetry", ["kafka_partition", "kafka_offset"])
        assert bronze.height == delivered  # nothing lost, nothing written twice
        assert bronze.unique().height == delivered
        assert accounted() == delivered
        figures("kafka-node", f"{delivered:,} records, {broker_down_at:,} of them in bronze at the kill; bronze "
                              f"growing again {grew_in:.0f} s after the kill with the node still down; the node "
                              f"restarted {OUTAGE_S} s later")  # fmt: skip
        figures("s3", f"{s3_down_at:,} records in bronze at the kill; bronze complete {s3_caught_up:.0f} s after the "
                      "restart")  # fmt: skip
    finally:
        interrupt_all(started)
