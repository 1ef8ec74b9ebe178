"""The seed-style pipeline: the seeds' design, rebuilt here as they built it, to measure against.

Three separate Spark applications (three JVMs) chained through Kafka, each with the default trigger
(the next micro-batch as soon as the previous one ends):

1. ``enrich``: raw telemetry -> ``from_json`` -> join with the car, model and color tables ->
   expected gear as a per-row **Python UDF** -> ``to_json`` of the whole row -> ``samples-enriched``;
2. ``detect``: ``samples-enriched`` -> ``from_json`` again -> the rules -> ``to_json`` -> ``alert-data``;
3. ``aggregate``: ``alert-data`` -> ``from_json`` -> 1-minute alert counts per rule -> Parquet files.

No validation, dead-letter path or deduplication: the seeds had none. The rules and the expected gear
are fleetstream's own definitions (``fleetstream.rules``), so a difference in the alert set is a
difference of the design, not of the rules.
"""

from __future__ import annotations

from typing import Any

ENRICHED_EXTRA = (("model", "string"), ("color", "string"), ("driver_profile", "string"), ("expected_gear", "integer"))


def _kafka_source(spark: Any, settings: Any, topic: str) -> Any:
    from fleetstream.clients import spark_kafka

    return (
        spark.readStream.format("kafka")
        .options(**spark_kafka(settings.kafka))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )


def _kafka_sink(df: Any, settings: Any, topic: str, name: str) -> Any:
    from fleetstream.clients import spark_kafka

    return (
        df.writeStream.format("kafka")
        .queryName(name)
        .options(**spark_kafka(settings.kafka))
        .option("topic", topic)
        .option("checkpointLocation", f"{settings.lake.root}/_seed/checkpoints/{name}")
        .start()
    )


def gear_udf() -> Any:
    """expected_gear(speed, upshift schedules by profile, profile) as a per-row Python UDF."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType

    from fleetstream.rules import expected_gear

    # a lambda, as the seeds wrote it (type hints would make Spark try to infer an Arrow UDF)
    return F.udf(
        lambda speed, upshift, profile: (
            None if speed is None or upshift is None or profile is None else expected_gear(speed, upshift[profile])
        ),
        IntegerType(),
    )


def enrich_frame(raw: Any, cars: Any, models: Any, colors: Any) -> Any:
    """Kafka rows -> enriched JSON values, the seed way (pure: batch DataFrames in, DataFrame out)."""
    from pyspark.sql import functions as F

    from fleetstream.schema import spark_schema

    telemetry = raw.select(F.from_json(F.col("value").cast("string"), spark_schema()).alias("t")).select("t.*")
    joined = (
        telemetry.join(cars.select("car_id", "model_id", "color_id", "driver_profile"), "car_id")
        .join(models.select("model_id", F.concat_ws(" ", "brand", "model").alias("model"), "upshift_kmh"), "model_id")
        .join(colors.select("color_id", F.col("color_name").alias("color")), "color_id")
    )
    enriched = joined.withColumn("expected_gear", gear_udf()("speed", "upshift_kmh", "driver_profile"))
    columns = [*spark_schema().fieldNames(), *(name for name, _ in ENRICHED_EXTRA)]
    return enriched.select(F.col("car_id").alias("key"), F.to_json(F.struct(*columns)).alias("value"))


def detect_frame(enriched: Any) -> Any:
    """Enriched JSON values -> alert JSON values (one per event and rule that fires)."""
    from pyspark.sql import functions as F

    from fleetstream.bench.common import COMPARED_RULES
    from fleetstream.rules.engine import alerts, load_rules
    from fleetstream.schema import spark_schema

    schema = spark_schema()
    for name, type_name in ENRICHED_EXTRA:
        schema = schema.add(name, type_name)
    rows = enriched.select(F.from_json(F.col("value").cast("string"), schema).alias("e")).select("e.*")
    fired = alerts(rows, [rule for rule in load_rules() if rule.name in COMPARED_RULES])  # the seeds' three
    return fired.select(F.col("car_id").alias("key"), F.to_json(F.struct(*fired.columns)).alias("value"))


def aggregate_frame(alert_values: Any) -> Any:
    """Alert JSON values -> alert counts per rule and 1-minute window (watermark 1 minute)."""
    from pyspark.sql import functions as F

    schema = "rule string, car_id string, model string, color string, event_time long"
    fired = alert_values.select(F.from_json(F.col("value").cast("string"), schema).alias("a")).select("a.*")
    return (
        fired.withColumn("event_ts", F.timestamp_millis("event_time"))
        .withWatermark("event_ts", "1 minute")
        .groupBy(F.window("event_ts", "1 minute"), "rule")
        .agg(F.count(F.lit(1)).alias("alerts"), F.approx_count_distinct("car_id").alias("cars"))
    )


def run(stage: str) -> int:
    from fleetstream.bench.contenders._common import serve_queries
    from fleetstream.config import Settings
    from fleetstream.pipeline.enrich import read_dims
    from fleetstream.pipeline.session import spark_session

    settings = Settings()
    topics = settings.kafka.topics
    spark = spark_session(settings, f"seed-{stage}")
    spark.sparkContext.setLogLevel("ERROR")
    try:
        if stage == "enrich":
            dims = read_dims(spark, settings.lake.dims)
            raw = _kafka_source(spark, settings, topics.sensors)
            query = _kafka_sink(
                enrich_frame(raw, dims.cars, dims.models, dims.colors), settings, topics.enriched, stage
            )
        elif stage == "detect":
            query = _kafka_sink(
                detect_frame(_kafka_source(spark, settings, topics.enriched)), settings, topics.alerts, stage
            )
        elif stage == "aggregate":
            counts = aggregate_frame(_kafka_source(spark, settings, topics.alerts))
            query = (
                counts.writeStream.format("parquet")
                .queryName(stage)
                .outputMode("append")
                .option("path", f"{settings.lake.root}/_seed/alert_counts")
                .option("checkpointLocation", f"{settings.lake.root}/_seed/checkpoints/{stage}")
                .start()
            )
        else:
            raise ValueError(f"unknown seed-style stage {stage!r}")
        return serve_queries([query])
    finally:
        spark.stop()
