"""Real broker: fleetstream's Kafka clients, and interoperability with kcat (a client we did not write)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest

from fleetstream.clients import librdkafka
from fleetstream.config import KafkaSettings, Settings
from fleetstream.ingest.kafka import (
    consume,
    delete_topics,
    describe_topics,
    ensure_topics,
    make_admin,
    make_consumer,
    make_producer,
)
from fleetstream.local import stack
from fleetstream.testing import free_port_base

pytestmark = pytest.mark.integration


def test_ten_thousand_keyed_messages_arrive_in_order_per_key(
    stack_settings: Settings, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=4)
    producer = make_producer(stack_settings.kafka)
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    cars = [f"car-{i:03d}" for i in range(50)]
    for seq in range(10_000):
        car = cars[seq % len(cars)]
        producer.produce(topic, key=car, value=f"{car}:{seq}", on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []

    consumer = make_consumer(stack_settings.kafka, group_id=f"g-{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    try:
        messages = consume(consumer, 10_000, timeout=60)
    finally:
        consumer.close()

    assert len(messages) == 10_000
    by_key: dict[str, list[int]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for message in messages:
        key = message.key().decode()
        car, seq = message.value().decode().split(":")
        assert car == key
        by_key[key].append(int(seq))
        partitions_of[key].add(message.partition())
    assert sorted(by_key) == cars
    for car in cars:
        assert len(by_key[car]) == 200
        assert by_key[car] == sorted(by_key[car]), f"{car} out of order"
        assert len(partitions_of[car]) == 1
    [info] = describe_topics(stack_settings.kafka, [topic])
    assert info.partitions == 4
    assert info.messages == 10_000


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A PLAINTEXT broker of its own for kcat: Debian's kcat (1.7.1) is built on librdkafka 2.0.2,
    whose SCRAM exchange Kafka 4 refuses (a client bug fixed in librdkafka 2.6.1, #4895), so it cannot
    log in to the session's secure broker. The settings reach kcat through ``clients.librdkafka``."""
    port = free_port_base(2)
    settings = Settings(state_dir=tmp_path_factory.mktemp("plain"),
                        kafka=KafkaSettings(port=port, controller_port=port + 1))  # fmt: skip
    stack.up(settings)
    try:
        yield settings
    finally:
        stack.down(settings)


@pytest.fixture(scope="module")
def kcat(plain: Settings, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """kcat with the cluster's client settings in a file, as fleetstream's own clients have them."""
    path = shutil.which("kcat")
    assert path is not None, "kcat is installed by `make setup` (Debian package kcat)"
    config = tmp_path_factory.mktemp("kcat") / "kcat.conf"
    config.write_text("".join(f"{key}={value}\n" for key, value in librdkafka(plain.kafka).items()))
    return [path, "-F", str(config)]


def test_kcat_message_is_read_by_fleetstream(plain: Settings, kcat: list[str]) -> None:
    topic = f"test-{uuid.uuid4().hex[:12]}"
    ensure_topics(plain.kafka, [topic], partitions=1)
    payload = '{"car_id": "car-042", "speed": 97.5}'
    subprocess.run(
        [*kcat, "-P", "-t", topic, "-K", "|"],
        input=f"car-042|{payload}\n",
        text=True,
        check=True,
        timeout=30,
    )
    consumer = make_consumer(plain.kafka, group_id=f"g-{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    try:
        [message] = consume(consumer, 1, timeout=30)
    finally:
        consumer.close()
    assert message.key() == b"car-042"
    assert message.value().decode() == payload


def test_fleetstream_message_is_read_by_kcat(plain: Settings, kcat: list[str]) -> None:
    topic = f"test-{uuid.uuid4().hex[:12]}"
    ensure_topics(plain.kafka, [topic], partitions=1)
    producer = make_producer(plain.kafka)
    producer.produce(topic, key=b"car-007", value=b'{"rpm": 6500}')
    assert producer.flush(30) == 0
    result = subprocess.run(
        [*kcat, "-C", "-t", topic, "-o", "beginning", "-c", "1",
         "-e", "-f", "%k|%s|%p\\n"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert result.stdout.strip() == 'car-007|{"rpm": 6500}|0'


def test_delete_topics_removes_them_with_their_data_and_ignores_missing_ones(
    stack_settings: Settings, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    producer = make_producer(stack_settings.kafka)
    producer.produce(topic, key="car-1", value="x")
    assert producer.flush(30) == 0
    gone = f"never-created-{uuid.uuid4().hex[:8]}"

    assert delete_topics(stack_settings.kafka, [topic, gone]) == [topic]

    admin = make_admin(stack_settings.kafka)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)  # deletion completes asynchronously on the controller
    assert topic not in admin.list_topics(timeout=10).topics
    assert delete_topics(stack_settings.kafka, [topic]) == []
