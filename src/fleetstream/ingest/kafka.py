"""Kafka clients built from settings, topic administration and a bounded consume helper.

>>> from fleetstream.config import KafkaSettings
>>> producer_config(KafkaSettings())["enable.idempotence"]
'true'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from fleetstream.clients import librdkafka
from fleetstream.config import KafkaSettings
from fleetstream.errors import FleetstreamError


def producer_config(kafka: KafkaSettings, **overrides: str) -> dict[str, str]:
    """An idempotent, compressed, batching producer: no loss or duplicates on retry."""
    return {
        **librdkafka(kafka),
        "enable.idempotence": "true",
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": "20",
        "batch.size": str(512 * 1024),
        **overrides,
    }


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: str) -> dict[str, str]:
    return {
        **librdkafka(kafka),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": "false",
        **overrides,
    }


# librdkafka's own log lines go through Python logging instead of raw stderr.
CLIENT_LOG = logging.getLogger("fleetstream.kafka.client")


def make_producer(kafka: KafkaSettings, **overrides: str) -> Producer:
    return Producer({**producer_config(kafka, **overrides), "logger": CLIENT_LOG})


def make_consumer(kafka: KafkaSettings, group_id: str, **overrides: str) -> Consumer:
    return Consumer({**consumer_config(kafka, group_id, **overrides), "logger": CLIENT_LOG})


def make_admin(kafka: KafkaSettings, quiet: bool = False) -> AdminClient:
    """An admin client; ``quiet`` silences librdkafka's connection errors (for health probes)."""
    return AdminClient({**librdkafka(kafka), **({"log_level": "0"} if quiet else {})})


def broker_count(kafka: KafkaSettings, timeout: float = 2.0) -> int:
    """How many brokers answer; 0 when the cluster cannot be reached within ``timeout``."""
    try:
        return len(make_admin(kafka, quiet=True).list_topics(timeout=timeout).brokers)
    except KafkaException:
        return 0


#: the connection errors that say why a client was turned away
_REFUSALS = (KafkaError._AUTHENTICATION, KafkaError._SSL)


def require_kafka(kafka: KafkaSettings, timeout: float = 5.0) -> None:
    """Raise a :class:`FleetstreamError` that names the cause unless the cluster answers: refused
    credentials and failed TLS handshakes are told apart from a broker that is not there."""
    errors: list[KafkaError] = []
    admin = AdminClient({**librdkafka(kafka), "log_level": "0", "error_cb": errors.append})
    try:
        if admin.list_topics(timeout=timeout).brokers:
            return
    except KafkaException as exc:
        errors.append(exc.args[0])
    admin.poll(0.5)  # serves error_cb: why the connection failed
    codes = {error.code() for error in errors if isinstance(error, KafkaError)}
    said = next((e.str() for e in errors if isinstance(e, KafkaError) and e.code() in _REFUSALS), "")
    if KafkaError._AUTHENTICATION in codes:
        raise FleetstreamError(
            f"Kafka at {kafka.bootstrap} refused user '{kafka.sasl_username}': {said}. Check "
            "FLEETSTREAM_KAFKA__SASL_USERNAME and __SASL_PASSWORD (or __SASL_PASSWORD_FILE) and __SASL_MECHANISM."
        )
    if KafkaError._SSL in codes:
        raise FleetstreamError(
            f"The TLS handshake with Kafka at {kafka.bootstrap} failed: {said}. Check FLEETSTREAM_KAFKA__SSL_CA_FILE "
            "(the CA the broker's certificate chains to) and that the address is a name in that certificate."
        )
    secure = " --secure" if kafka.secure else ""
    raise FleetstreamError(
        f"Kafka at {kafka.bootstrap} does not answer. Start the local stack with `fleetstream up --detach{secure}` "
        "(or `make run`), or point FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS at a cluster."
    )


def ensure_topics(kafka: KafkaSettings, names: Iterable[str], partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet and wait until every partition has a leader.

    Returns the names created.
    """
    admin = make_admin(kafka)
    names = list(dict.fromkeys(names))
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(name, num_partitions=partitions or kafka.partitions, replication_factor=kafka.replication_factor)
        for name in names
        if name not in existing
    ]
    created: list[str] = []
    futures = admin.create_topics(wanted, operation_timeout=30) if wanted else {}
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_leaders(admin, names, timeout=30)
    return created


def delete_topics(kafka: KafkaSettings, names: Iterable[str], timeout: float = 30.0) -> list[str]:
    """Delete the named topics that exist (a benchmark's scratch topics, with their data).

    Returns the names deleted; a topic that is already gone is not an error.
    """
    admin = make_admin(kafka)
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [name for name in dict.fromkeys(names) if name in existing]
    deleted: list[str] = []
    futures = admin.delete_topics(doomed, operation_timeout=timeout) if doomed else {}
    for name, future in futures.items():
        try:
            future.result()
            deleted.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
    return deleted


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=10).topics
        pending = [
            name
            for name in names
            if name not in topics
            or topics[name].error is not None
            or any(p.leader < 0 for p in topics[name].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KafkaException(f"topics without a partition leader after {timeout:.0f} s: {pending}")
        time.sleep(0.1)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: list[int]  # -1 where the broker could not say (e.g. a leader election under way)

    @property
    def messages(self) -> int:
        """Sum of known end offsets: messages ever written (retention may have dropped older ones)."""
        return sum(offset for offset in self.end_offsets if offset >= 0)


def describe_topics(kafka: KafkaSettings, names: Iterable[str], timeout: float = 5.0) -> list[TopicInfo]:
    """Partition count and end offset per partition of each existing topic among ``names``."""
    metadata = make_admin(kafka, quiet=True).list_topics(timeout=timeout)
    consumer = make_consumer(kafka, group_id="fleetstream-status", log_level="0")
    try:
        infos = []
        for name in names:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                continue
            offsets = [_end_offset(consumer, name, p, timeout) for p in sorted(topic.partitions)]
            infos.append(TopicInfo(name, len(topic.partitions), offsets))
        return infos
    finally:
        consumer.close()


def _end_offset(consumer: Consumer, topic: str, partition: int, timeout: float) -> int:
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)[1])
    except KafkaException:
        return -1


def consume(consumer: Consumer, count: int, timeout: float) -> list[Message]:
    """Poll until ``count`` messages arrived or ``timeout`` seconds passed; raise on a consumer error."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=min(10_000, count - len(messages)), timeout=0.5)
        for message in batch:
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            messages.append(message)
    return messages
