"""The local Kafka 4.x cluster in KRaft mode: one node by default, or several (`up --brokers 3`),
each a process that is broker and controller combined.

One node keeps its files in ``<state>/kafka`` and forms its quorum on its own (``--standalone``);
node ``i`` of a larger cluster keeps its files in ``<state>/kafka/node-<i>`` (node 1 in ``kafka``)
and the nodes form a static quorum (``controller.quorum.voters``). The storage remembers how many
nodes it was formatted for: starting it with another number is refused."""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from pathlib import Path

from fleetstream.config import LOCAL_HOST, Settings
from fleetstream.errors import FleetstreamError
from fleetstream.jvm import broker_classpath
from fleetstream.local import kafka_security
from fleetstream.local.java import find_java
from fleetstream.local.process import write_private

#: written when the storage was formatted with the secure broker's users
SECURE_MARKER = "secure-users-created"
#: the number of nodes the storage was formatted for (absent: one)
NODES_FILE = "cluster-nodes"
CLUSTER_ID_FILE = "cluster-id"

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


def broker_dir(settings: Settings, node: int = 1) -> Path:
    """Where node ``node`` keeps its configuration, data and log."""
    home = settings.state_dir / "kafka"
    return home if node == 1 else home / f"node-{node}"


def node_name(node: int) -> str:
    """The service name of a node: ``kafka`` for the first, ``kafka-2``, ``kafka-3``... after it."""
    return "kafka" if node == 1 else f"kafka-{node}"


def is_node_name(name: str) -> bool:
    """Whether a service is a Kafka node (:func:`node_name`).

    >>> [is_node_name(n) for n in ("kafka", "kafka-3", "kafka-ui", "stream")]
    [True, True, False, False]
    """
    return re.fullmatch(r"kafka(-\d+)?", name) is not None


def server_properties(settings: Settings, node: int = 1) -> str:
    """A node's configuration: loopback listeners, data under the state directory, replication
    for the size of the cluster."""
    kafka = settings.kafka
    port, controller_port = kafka.node_ports(node)
    copies, insync = str(min(3, kafka.brokers)), str(kafka.min_insync)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "listeners": f"PLAINTEXT://{LOCAL_HOST}:{port},CONTROLLER://{LOCAL_HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOCAL_HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(broker_dir(settings, node) / "data"),
        "num.partitions": str(kafka.partitions),
        # Topics are created on purpose (`up`, tests); a typo in a topic name must not invent one.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": copies,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": copies,
        "transaction.state.log.min.isr": insync,
        "share.coordinator.state.topic.replication.factor": copies,
        "share.coordinator.state.topic.min.isr": insync,
        "default.replication.factor": str(kafka.replication_factor),
        "min.insync.replicas": insync,
        "group.initial.rebalance.delay.ms": "0",
        # Retention by size, not age: a backfill (`simulate --fast`) carries old send times, and
        # time-based retention would delete it as soon as it is written.
        "log.retention.ms": "-1",
        "log.retention.bytes": str(kafka.retention_bytes),
    }
    if kafka.brokers == 1:
        props["controller.quorum.bootstrap.servers"] = f"{LOCAL_HOST}:{controller_port}"
    else:
        props["controller.quorum.voters"] = ",".join(
            f"{n}@{LOCAL_HOST}:{kafka.node_ports(n)[1]}" for n in range(1, kafka.brokers + 1)
        )
        # `down` stops the nodes together (there is no leadership left to hand over). With a
        # controlled shutdown, a node's broker first waits for the controller quorum to approve it:
        # a node that got there a second after the others found two of three voters gone, and
        # waited until it was killed 20 s later (seen in the chaos test's teardown under load).
        props["controlled.shutdown.enable"] = "false"
    if kafka.secure:
        props |= kafka_security.server_properties(settings.state_dir, port, controller_port, LOCAL_HOST)
    return "".join(f"{key}={value}\n" for key, value in props.items())


def java_argfile(args: list[str]) -> str:
    """A ``java @file``'s text: one argument per line, quoted, so spaces, quotes, backslashes and
    line breaks pass as they are (the launcher reads ``\\\\``, ``\\"``, ``\\n`` and ``\\r`` in quotes).

    >>> print(java_argfile(["format", 'a "b" c\\\\d', "e\\nf"]), end="")
    "format"
    "a \\"b\\" c\\\\d"
    "e\\nf"
    """
    escaped = (a.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") for a in args)
    return "".join(f'"{arg}"\n' for arg in escaped)


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


def _formatted_nodes(settings: Settings) -> int | None:
    """How many nodes the storage was formatted for; None before the first start."""
    home = broker_dir(settings)
    if not (home / "data" / "meta.properties").exists():
        return None
    marker = home / NODES_FILE
    return int(marker.read_text().strip()) if marker.exists() else 1


def _cluster_id(settings: Settings) -> str:
    """The cluster id every node of one storage is formatted with (kept beside node 1's files)."""
    path = broker_dir(settings) / CLUSTER_ID_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new_cluster_id(), encoding="utf-8")
    return path.read_text(encoding="utf-8").strip()


def prepare(settings: Settings, node: int = 1) -> list[str]:
    """Write a node's configuration, format its storage on first start; return its command line."""
    java = find_java(settings.java_home)
    classpath = broker_classpath(settings.cache_dir)
    nodes = settings.kafka.brokers
    formatted = _formatted_nodes(settings)
    if formatted is not None and formatted != nodes:
        raise FleetstreamError(
            f"The Kafka storage in {broker_dir(settings)} was formatted for {formatted} node(s), not {nodes}. Start "
            f"it with --brokers {formatted} (FLEETSTREAM_KAFKA__BROKERS), or remove {broker_dir(settings)} (its "
            f"topics and messages) and run `fleetstream up --brokers {nodes}` again."
        )
    home = broker_dir(settings, node)
    (home / "data").mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    write_private(config, server_properties(settings, node))  # secure: the keystore's and broker's passwords
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
        quorum = ["--standalone"] if nodes == 1 else []  # several nodes: the voters in the configuration
        # the tool and its arguments from a file of the JVM's (`java @file`, mode 0600, removed after):
        # on the command line, every local user could read the SCRAM passwords in the process list
        argfile = home / "format.args"
        tool = ["kafka.tools.StorageTool", "format", *quorum, f"--cluster-id={_cluster_id(settings)}"]
        try:
            write_private(argfile, java_argfile([*tool, f"--config={config}", *users]))
            result = subprocess.run([java, *jvm_flags, f"@{argfile}"], capture_output=True, text=True, check=False)
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode == 0 and secure:
            (home / SECURE_MARKER).touch()
        if result.returncode != 0:
            raise FleetstreamError(
                f"Formatting the Kafka storage in {home / 'data'} failed: "
                f"{(result.stderr or result.stdout).strip()[-800:]} "
                f"If the folder holds data from another Kafka version, remove {home} and run `fleetstream up` again."
            )
        if node == 1 and nodes > 1:
            (home / NODES_FILE).write_text(str(nodes), encoding="utf-8")
    elif secure and not (home / SECURE_MARKER).exists():
        raise FleetstreamError(
            f"The Kafka storage in {home / 'data'} was created without --secure, so it has none of the secure "
            f"broker's users. Start it without --secure, or remove {home} (its topics and messages) and run "
            "`fleetstream up --secure` again."
        )
    return [java, *jvm_flags, "kafka.Kafka", str(config)]
