"""The ceiling `fleetstream bench pipeline` measures the pipeline against: a minimal one-query Spark
medallion on the same session settings and jars. One Kafka read; from one persisted batch, bronze,
parse, validate and the broadcast join with the car dimension, then silver, the quarantine and the
alerts appended to Delta. No deduplication, no gold, no Kafka outputs, no idempotence markers: the
least a Spark medallion of these tables does, so that the full pipeline's drain rate divided by this
one's says what the rest costs.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery

from fleetstream.config import Settings
from fleetstream.pipeline.bronze import to_bronze
from fleetstream.pipeline.enrich import Reference, car_dimension, read_dims, read_zones_at
from fleetstream.pipeline.silver import SILVER_COLUMNS, check_telemetry, quarantine_rows
from fleetstream.pipeline.stream import kafka_options
from fleetstream.pipeline.writer import at_once
from fleetstream.rules.engine import alerts, load_rules


def start(spark: SparkSession, settings: Settings, max_records: int) -> StreamingQuery:
    """The minimal medallion over the sensors topic, available-now, into ``settings.lake.root``."""
    root = settings.lake.root.rstrip("/")
    cars = spark.createDataFrame(car_dimension(read_dims(spark, settings.lake.dims)).collect()).cache()
    reference = Reference(cars, read_zones_at(spark, settings.lake.dims))
    rules = load_rules()

    def append(frame: DataFrame, name: str, partition: str | None = None) -> None:
        writer = frame.write.format("delta").mode("append")
        (writer.partitionBy(partition) if partition else writer).save(f"{root}/{name}")

    def batch(rows: DataFrame, batch_id: int) -> None:
        bronze = to_bronze(rows).persist()
        checked = check_telemetry(bronze, reference).persist()
        valid = checked.where(F.col("reason").isNull())
        silver = valid.withColumn("silver_batch", F.lit(batch_id).cast("long")).select(*SILVER_COLUMNS)
        at_once(
            {
                "bronze": lambda: append(bronze, "bronze/telemetry", "ingest_date"),
                "silver": lambda: append(silver, "silver/telemetry", "event_date"),
                "quarantine": lambda: append(
                    quarantine_rows(checked.where(F.col("reason").isNotNull())), "quarantine/telemetry",
                    "quarantine_date",
                ),
                "alerts": lambda: append(alerts(valid, rules), "silver/alerts"),
            }
        )  # fmt: skip
        checked.unpersist()
        bronze.unpersist()

    source = (
        spark.readStream.format("kafka")
        .options(**kafka_options(settings))
        .option("subscribe", settings.kafka.topics.sensors)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(max_records))
        .load()
    )
    query: StreamingQuery = (
        source.writeStream.queryName("minimal")
        .option("checkpointLocation", f"{root}/_checkpoints/minimal")
        .foreachBatch(batch)
        .trigger(availableNow=True)
        .start()
    )
    return query
