"""The local Kafka 4.x broker in KRaft mode (one process, broker and controller combined)."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from pathlib import Path

from fleetstream.config import LOCAL_HOST, Settings
from fleetstream.errors import FleetstreamError
from fleetstream.jvm import broker_classpath
from fleetstream.local import kafka_security
from fleetstream.local.java import find_java

#: written when the storage was formatted with the secure broker's users
SECURE_MARKER = "secure-users-created"

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
"""


def broker_dir(settings: Settings) -> Path:
    return settings.state_dir / "kafka"


def server_properties(settings: Settings) -> str:
    """The broker's configuration: loopback listeners, data under the state directory."""
    kafka = settings.kafka
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{LOCAL_HOST}:{kafka.controller_port}",
        "listeners": f"PLAINTEXT://{LOCAL_HOST}:{kafka.port},CONTROLLER://{LOCAL_HOST}:{kafka.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOCAL_HOST}:{kafka.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(broker_dir(settings) / "data"),
        "num.partitions": str(kafka.partitions),
        # Topics are created on purpose (`up`, tests); a typo in a topic name must not invent one.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Retention by size, not age: a backfill (`simulate --fast`) carries old send times, and
        # time-based retention would delete it as soon as it is written.
        "log.retention.ms": "-1",
        "log.retention.bytes": str(kafka.retention_bytes),
    }
    if kafka.secure:
        props |= kafka_security.server_properties(settings.state_dir, kafka.port, kafka.controller_port, LOCAL_HOST)
    return "".join(f"{key}={value}\n" for key, value in props.items())


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own generator, never one that starts with "-" (tools would read it as an option).

    >>> all(not new_cluster_id().startswith("-") and len(new_cluster_id()) == 22 for _ in range(500))
    True
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def prepare(settings: Settings) -> list[str]:
    """Write the configuration, format storage on first start; return the broker's command line."""
    java = find_java(settings.java_home)
    classpath = broker_classpath(settings.cache_dir)
    home = broker_dir(settings)
    (home / "data").mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    # mode 0600: in secure mode it holds the keystore's and the broker's own passwords
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(server_properties(settings))
    os.chmod(config, 0o600)  # an older file kept its mode
    log4j = home / "log4j2.properties"
    log4j.write_text(LOG4J2, encoding="utf-8")
    jvm_flags = [
        "-Xms64m",
        f"-Xmx{settings.kafka.heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={home / 'logs'}",
        "-cp",
        classpath,
    ]
    secure = settings.kafka.secure
    if not (home / "data" / "meta.properties").exists():
        users = kafka_security.scram_arguments(settings.state_dir) if secure else []
        result = subprocess.run(
            [java, *jvm_flags, "kafka.tools.StorageTool", "format", "--standalone",
             f"--cluster-id={new_cluster_id()}", f"--config={config}", *users],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode == 0 and secure:
            (home / SECURE_MARKER).touch()
        if result.returncode != 0:
            raise FleetstreamError(
                f"Formatting the Kafka storage in {home / 'data'} failed: "
                f"{(result.stderr or result.stdout).strip()[-800:]} "
                f"If the folder holds data from another Kafka version, remove {home} and run `fleetstream up` again."
            )
    elif secure and not (home / SECURE_MARKER).exists():
        raise FleetstreamError(
            f"The Kafka storage in {home / 'data'} was created without --secure, so it has none of the secure "
            f"broker's users. Start it without --secure, or remove {home} (its topics and messages) and run "
            "`fleetstream up --secure` again."
        )
    return [java, *jvm_flags, "kafka.Kafka", str(config)]
