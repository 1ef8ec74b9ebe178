"""Alerts: the rules applied to silver rows (the Delta alerts table, in the lake's batch), and the
alert-data publisher, a stateless Kafka -> Kafka query that does not wait for the lake.

The publisher is the latency path: sensors -> validate -> join the broadcast car dimension -> rules
-> alert-data, with no Python per record or batch. Two modes:

- ``realtime`` (the default): Spark's real-time mode, record by record, milliseconds; it starts at
  the latest offsets on its first run (a new alerting path does not replay history).
- ``microbatch``: micro-batches planned in a session of its own (:data:`PUBLISHER_SQL_CONF`), with
  asynchronous progress tracking; it reads the topic from its start on the first run.

Either resumes from its checkpoint, and is restarted when the reference data changes
(:class:`~fleetstream.pipeline.dims.DimsBoundQuery`). What real-time mode gives up is in docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.streaming.readwriter import DataStreamWriter

from fleetstream.pipeline.bronze import to_bronze
from fleetstream.pipeline.dims import DimsBoundQuery, DimsCache
from fleetstream.pipeline.enrich import Reference
from fleetstream.pipeline.session import publisher_session
from fleetstream.pipeline.silver import check_telemetry
from fleetstream.rules.engine import Rule, alerts

__all__ = ["alert_messages", "alerts", "publisher"]


def alert_messages(fired: DataFrame, topic: str) -> DataFrame:
    """Kafka records for alert-data: the alert as JSON, keyed by car_id."""
    return fired.select(
        F.lit(topic).alias("topic"),
        F.col("car_id").alias("key"),
        F.to_json(F.struct(*fired.columns)).alias("value"),
    )


def alert_data(sensors: DataFrame, reference: Reference, rules: list[Rule], topic: str) -> DataFrame:
    """The publisher's plan over the sensors stream: validate -> join the car dimension, find the speed zone -> rules ->
    alert-data records. ``detected_at`` is read per row (:func:`~fleetstream.pipeline.runtime.wall_clock`):
    a real-time batch lasts minutes, and a micro-batch's time would be compiled into its code."""
    checked = check_telemetry(to_bronze(sensors), reference).where(F.col("reason").isNull())
    return alert_messages(alerts(checked, rules), topic)


def publisher(
    spark: SparkSession,
    kafka_options: Mapping[str, str],
    topics: tuple[str, str],
    rules: list[Rule],
    dims: DimsCache,
    checkpoint: str,
    mode: str,
    trigger_s: float,
    realtime_batch_s: float,
) -> StreamingQuery:
    """The alert-data publisher: ``topics`` is (sensors, alerts); ``checkpoint`` its folder.

    Micro-batch: every ``trigger_s`` (a longer batch is followed at once); its jobs run in a
    scheduler pool of their own (``alerts``) so that they are not queued behind other queries'.
    Real-time: batches of ``realtime_batch_s``, after which offsets are checkpointed and progress
    reported; each new batch's start holds alerts up for a moment.
    """
    sensors_topic, alerts_topic = topics
    session = publisher_session(spark) if mode == "microbatch" else spark
    reader = session.readStream.format("kafka").options(**kafka_options).option("subscribe", sensors_topic)
    # a real-time query starts at the latest offsets (it must not replay the topic record by record)
    starting = "latest" if mode == "realtime" else "earliest"
    sensors = reader.option("startingOffsets", starting).option("failOnDataLoss", "false").load()

    def to_kafka(reference: Reference, name: str) -> DataStreamWriter:
        frame = alert_data(sensors, reference, rules, alerts_topic)
        return (
            frame.writeStream.format("kafka")
            .queryName(name)
            .options(**kafka_options)
            .option("checkpointLocation", checkpoint)
        )

    if mode == "realtime":

        def build(reference: Reference) -> StreamingQuery:
            writer = to_kafka(reference, "alerts_realtime").outputMode("update")
            query: StreamingQuery = writer.trigger(realTime=f"{realtime_batch_s:g} seconds").start()  # type: ignore[call-overload]
            return query

        return DimsBoundQuery(build, dims, boundary_wait_s=realtime_batch_s + 60)

    def build_microbatch(reference: Reference) -> StreamingQuery:
        context = spark.sparkContext
        context.setLocalProperty("spark.scheduler.pool", "alerts")  # the query's thread inherits it
        try:
            writer = to_kafka(reference, "alerts").option("asyncProgressTrackingEnabled", "true")
            query: StreamingQuery = writer.trigger(processingTime=f"{trigger_s:g} seconds").start()
            return query
        finally:
            context.setLocalProperty("spark.scheduler.pool", None)  # type: ignore[arg-type]

    return DimsBoundQuery(build_microbatch, dims, boundary_wait_s=30.0)
