"""The locked Spark jar set at work: Kafka source, Delta Lake, and S3A against SeaweedFS."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.clients import spark_kafka
from fleetstream.config import Settings
from fleetstream.ingest.kafka import make_producer
from fleetstream.pipeline.session import spark_session

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spark(stack_settings: Settings) -> Iterator[SparkSession]:
    session = spark_session(stack_settings, app_name="fleetstream-tests", with_s3=True)
    yield session
    session.stop()


def test_kafka_source_reads_what_was_produced(
    spark: SparkSession, stack_settings: Settings, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    producer = make_producer(stack_settings.kafka)
    for i in range(100):
        producer.produce(topic, key=f"car-{i % 7}", value=f'{{"seq": {i}}}')
    assert producer.flush(30) == 0
    rows = (
        spark.read.format("kafka")
        .options(**spark_kafka(stack_settings.kafka))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition", "offset")
        .collect()
    )
    assert len(rows) == 100
    assert sorted(int(r.value.split(": ")[1].rstrip("}")) for r in rows) == list(range(100))


def test_delta_table_on_local_disk(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "delta")
    spark.range(1000).write.format("delta").save(path)
    spark.range(1000, 1500).write.format("delta").mode("append").save(path)
    table = spark.read.format("delta").load(path)
    assert table.count() == 1500
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    assert [h.operation for h in history] == ["WRITE", "WRITE"]


def test_delta_table_on_seaweedfs_through_s3a(spark: SparkSession, stack_settings: Settings) -> None:
    path = f"s3a://{stack_settings.s3.bucket}/tests/{uuid.uuid4().hex[:8]}/telemetry"
    frame = spark.createDataFrame([("car-1", 120.5), ("car-2", 88.0), ("car-3", 131.2)], "car_id string, speed double")
    frame.write.format("delta").save(path)
    back = spark.read.format("delta").load(path)
    assert sorted((r.car_id, r.speed) for r in back.collect()) == [("car-1", 120.5), ("car-2", 88.0), ("car-3", 131.2)]
