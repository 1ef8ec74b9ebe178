"""The local clusters' configuration: three Kafka nodes (ports, quorum, replication) and the Spark
standalone cluster's commands and settings (pure: nothing is started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleetstream.config import KafkaSettings, Settings, SparkSettings
from fleetstream.local import kafka_broker, spark_cluster


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_three_kafka_nodes_form_one_quorum_with_three_replicas(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka=KafkaSettings(port=9092, controller_port=9093, brokers=3))
    nodes = {n: _props(kafka_broker.server_properties(settings, n)) for n in (1, 2, 3)}
    assert [nodes[n]["listeners"] for n in (1, 2, 3)] == [
        f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{p + 1}" for p in (9092, 9094, 9096)
    ]
    voters = "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    assert {nodes[n]["controller.quorum.voters"] for n in nodes} == {voters}
    assert all("controller.quorum.bootstrap.servers" not in p for p in nodes.values())
    assert {p["controlled.shutdown.enable"] for p in nodes.values()} == {"false"}  # they stop together
    assert {p["log.dirs"] for p in nodes.values()} == {
        str(tmp_path / "kafka" / "data"), str(tmp_path / "kafka" / "node-2" / "data"),
        str(tmp_path / "kafka" / "node-3" / "data"),
    }  # fmt: skip
    for p in nodes.values():
        assert p["default.replication.factor"] == p["offsets.topic.replication.factor"] == "3"
        assert p["min.insync.replicas"] == p["transaction.state.log.min.isr"] == "2"
    assert settings.kafka.replication_factor == 3
    assert settings.kafka.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert [kafka_broker.node_name(n) for n in (1, 2, 3)] == ["kafka", "kafka-2", "kafka-3"]


def test_one_kafka_node_keeps_its_standalone_quorum(tmp_path: Path) -> None:
    props = _props(kafka_broker.server_properties(Settings(state_dir=tmp_path)))
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props
    assert "controlled.shutdown.enable" not in props  # (its own controller approves it)
    assert props["min.insync.replicas"] == props["default.replication.factor"] == "1"


def test_more_replicas_than_local_nodes_is_refused() -> None:
    with pytest.raises(ValidationError, match="replication_factor 3 needs as many brokers"):
        KafkaSettings(brokers=2, replication_factor=3)
    assert KafkaSettings(bootstrap_servers="k:9092", replication_factor=3).replication_factor == 3  # not ours


def test_the_spark_cluster_runs_from_the_pyspark_installation(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, spark=SparkSettings(workers=2, cluster_port=7100, ui_port=8100))
    assert settings.spark.master == "spark://127.0.0.1:7100"  # the commands submit there
    assert spark_cluster.names(settings) == ["spark-master", "spark-worker-1", "spark-worker-2"]
    master = spark_cluster.master_command(settings)
    assert master[master.index("-cp") + 1] == f"{spark_cluster.spark_home() / 'jars'}/*"
    assert (spark_cluster.spark_home() / "jars").is_dir()
    assert master[-6:] == ["--host", "127.0.0.1", "--port", "7100", "--webui-port", "8100"]
    assert "-Dspark.master.rest.enabled=false" in master  # no unauthenticated submission server on 6066
    worker = spark_cluster.worker_command(settings, 2)
    assert worker[-1] == "spark://127.0.0.1:7100"
    assert worker[worker.index("--webui-port") + 1] == "8102"
    assert spark_cluster.ports(settings) == {
        "Spark master": 7100, "Spark master web UI": 8100, "Spark worker 1 web UI": 8101, "Spark worker 2 web UI": 8102,
    }  # fmt: skip
    env = spark_cluster.environment(settings, {"PATH": "/bin"})
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["SPARK_SCALA_VERSION"] == "2.13"  # the workers build their executors' command lines with it
    assert Path(env["JAVA_HOME"], "bin", "java").exists()
    assert spark_cluster.master_state(settings, timeout=0.2) is None  # nothing answers there


def test_a_master_chosen_explicitly_wins_over_the_local_cluster() -> None:
    spark = SparkSettings(workers=2, master="spark://elsewhere:7077")
    assert spark.master == "spark://elsewhere:7077"
    assert not spark.on_local_cluster
    assert spark_cluster.session_conf(Settings(spark=spark)) == {}


def test_the_jobs_stop_at_once_then_the_infrastructure_the_kafka_nodes_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`down` stops fleetstream's jobs first, all at the same time, then the infrastructure newest
    first; a Kafka cluster's nodes stop at once (one after the other, the last waits on a quorum
    gone), and only after everything started after the cluster: also when a node restarted later
    (by `up`, after a kill) is the newest of all."""
    from fleetstream.local import stack
    from fleetstream.local.process import Service

    stopped: list[list[str]] = []
    grace: dict[str, float] = {}
    groups: dict[str, bool] = {}

    def stop_together(services: list[Service], timeout: float, group: bool = True) -> None:
        stopped.append([s.name for s in services])
        grace[services[-1].name] = timeout
        groups[services[-1].name] = group

    monkeypatch.setattr(stack, "stop_together", stop_together)
    names = ["kafka", "kafka-3", "seaweedfs", "spark-master", "stream", "simulator", "kafka-2"]
    started = [Service(name, pid, 0.0, "-", "-") for pid, name in enumerate(names)]
    stack.stop_in_order(list(reversed(started)))
    assert sorted(stopped[:2]) == [["simulator"], ["stream"]]  # (each in a thread of its own)
    assert stopped[2:] == [["spark-master"], ["seaweedfs"], ["kafka-2", "kafka-3", "kafka"]]
    # SeaweedFS's volume server may wait 30 s for connections to drain: it gets longer before a kill
    # ... and the stream's Python stops its queries and its JVM itself before it is killed
    assert grace == {"simulator": 20.0, "stream": 60.0, "spark-master": 20.0, "seaweedfs": 40.0, "kafka": 20.0}
    assert groups == {"simulator": True, "stream": False, "spark-master": True, "seaweedfs": True, "kafka": True}
