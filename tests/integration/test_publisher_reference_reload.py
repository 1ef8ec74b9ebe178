"""The alert-data publisher holds the car dimension in its plan; when the reference data changes it
restarts with the new one (micro-batch: after its running batch; real-time: at its batch end), on
the real broker and Spark. A car added to the reference data gets alerts without a restart by hand."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from pyspark.sql import SparkSession

from fleetstream import schema
from fleetstream.clients import librdkafka
from fleetstream.config import KafkaSettings, LakeSettings, Settings, TopicNames
from fleetstream.errors import FleetstreamError
from fleetstream.ingest.kafka import delete_topics, ensure_topics
from fleetstream.pipeline.dims import DimsBoundQuery
from fleetstream.pipeline.plan import PUBLISHER, plan
from fleetstream.pipeline.stream import Streams, Triggers
from fleetstream.reference.catalog import COLORS, generate_cars, model_by_id
from fleetstream.reference.publish import publish
from fleetstream.rules.engine import Lifecycle, Rule

pytestmark = pytest.mark.integration
SEED = 5


@pytest.mark.parametrize("mode", ["microbatch", "realtime"])
def test_a_car_added_to_the_reference_data_gets_alerts(
    spark: SparkSession, stack_settings: Settings, tmp_path: Path, mode: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames().tagged(suffix)
    kafka = KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics})
    lake = LakeSettings(root=str(tmp_path / "lake"), dims_refresh_s=1.0)
    settings = stack_settings.model_copy(update={"kafka": kafka, "lake": lake})
    # one partition: a real-time query needs a task slot per partition, and this session has two
    ensure_topics(kafka, topics.all(), partitions=1)
    cars = generate_cars(4, SEED)
    known, added = cars[0], cars[3]
    publish(settings, lake.dims, cars[:3])
    triggers = Triggers(realtime_batch_s=5.0, alerts_s=0.1)
    [query] = Streams(spark, settings, plan([PUBLISHER], mode, separate=True), triggers=triggers).start()
    assert isinstance(query, DimsBoundQuery)
    consumer = Consumer({**librdkafka(kafka), "group.id": f"t-{suffix}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topics.alerts])
    producer = Producer(librdkafka(kafka))
    received: list[dict[str, Any]] = []

    def overspeed(car_id: str, event_id: str) -> None:
        now = int(time.time() * 1000)
        event = {**schema.EXAMPLE, "event_id": event_id, "car_id": car_id, "event_time": now, "speed": 150.0}
        producer.produce(topics.sensors, json.dumps(event).encode(), key=car_id.encode(), timestamp=now)
        producer.flush(10)

    def alerted(prefix: str) -> list[dict[str, Any]]:
        received.extend(json.loads(m.value() or b"{}") for m in consumer.consume(100, 1.0) if m.error() is None)
        return [a for a in received if str(a["event_id"]).startswith(prefix)]

    def probe(car_id: str, prefix: str, timeout: float = 120) -> dict[str, Any]:
        """Overspeed reports of the car until one's alert comes back."""
        deadline, n = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            assert query.exception() is None, query.exception()
            n += 1
            overspeed(car_id, f"{prefix}{n}")
            found = alerted(prefix)
            if found:
                return found[0]
        raise AssertionError(f"no alert for {prefix}* within {timeout:.0f} s")

    try:
        probe(known.car_id, "ready-")  # the query runs (a real-time one starts at the latest offsets)
        overspeed(added.car_id, "unknown-1")
        quiet_until = time.monotonic() + 5
        while time.monotonic() < quiet_until:
            assert not alerted("unknown-"), "a car the reference data does not have is not alerted"
        assert query.restarts == 0

        publish(settings, lake.dims, cars)
        deadline = time.monotonic() + 90
        while query.restarts == 0 and time.monotonic() < deadline:
            assert query.exception() is None, query.exception()
            time.sleep(0.5)
        assert query.restarts == 1, "the publisher restarts once the reload has the new car"
        assert query.isActive
        assert query.name == ("alerts" if mode == "microbatch" else "alerts_realtime")

        alert = probe(added.car_id, "added-")
        model = model_by_id()[added.model_id]
        assert (alert["car_id"], alert["rule"]) == (added.car_id, "overspeed")
        assert alert["model"] == f"{model.brand} {model.model}"
        assert alert["color"] == {c[0]: c[1] for c in COLORS}[added.color_id]
        time.sleep(3)  # reloads of unchanged data do not restart it
        assert query.restarts == 1
    finally:
        query.stop()
        consumer.close()
        delete_topics(kafka, topics.all())
    assert not query.isActive


def test_the_publisher_alone_refuses_a_rule_that_does_not_compile(
    spark: SparkSession, stack_settings: Settings, tmp_path: Path
) -> None:
    """`stream --only alert-data --rules <file>` checks the rules as the lake's queries do: a condition
    that does not compile is refused naming the rule and the key, and no query starts."""
    lake = LakeSettings(root=str(tmp_path / "lake"))
    settings = stack_settings.model_copy(update={"lake": lake})
    publish(settings, lake.dims, generate_cars(2, SEED))
    bad = Rule("hot", "coolant_temp >", "high", "m", Lifecycle())
    before = {q.id for q in spark.streams.active}
    with pytest.raises(FleetstreamError, match="rule 'hot', key 'condition' does not compile"):
        Streams(spark, settings, plan([PUBLISHER], "microbatch", separate=True), rules=[bad]).start()
    assert {q.id for q in spark.streams.active} == before
    assert not (tmp_path / "lake" / "_checkpoints").exists()
