"""Bronze: every Kafka record as received, with its coordinates (pure: the I/O is in the writer)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType, TimestampType

from fleetstream.pipeline.runtime import wall_clock

#: the columns of a Kafka source's rows
KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType()), StructField("value", BinaryType()),
        StructField("topic", StringType()), StructField("partition", IntegerType()),
        StructField("offset", LongType()), StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
)  # fmt: skip


BRONZE_COLUMNS = ("value", "key", "kafka_topic", "kafka_partition", "kafka_offset", "kafka_ts", "ingest_time",
                  "ingest_date")  # fmt: skip


def to_bronze(kafka: DataFrame) -> DataFrame:
    """Kafka rows as received: the value's bytes untouched, with key, Kafka coordinates and the time
    the row was ingested."""
    return kafka.select(
        F.col("value"),
        F.col("key").cast("string").alias("key"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_ts"),
        wall_clock().alias("ingest_time"),
        F.to_date(F.col("timestamp")).alias("ingest_date"),
    )
