"""Bronze, deduplication and gold: pure DataFrame -> DataFrame functions (the I/O is in stream.py)."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fleetstream import schema
from fleetstream.pipeline.enrich import enrich
from fleetstream.pipeline.validate import parse_telemetry

SILVER_COLUMNS = (
    *schema.FIELD_NAMES,
    "event_ts",
    "event_date",
    "model_id",
    "model",
    "color_id",
    "color",
    "driver_profile",
    "year",
    "expected_gear",
    "kafka_partition",
    "kafka_offset",
    "kafka_ts",
    "ingest_time",
    "silver_batch",  # the micro-batch that wrote the row: lets a retried batch decide as the first try did
)
QUARANTINE_COLUMNS = (
    "reason",
    "reason_detail",
    "raw",
    "event_id",
    "car_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_ts",
    "ingest_time",
    "quarantine_date",
)


def to_bronze(kafka: DataFrame) -> DataFrame:
    """Kafka rows as received: the value's bytes untouched, with key and Kafka coordinates."""
    return kafka.select(
        F.col("value"),
        F.col("key").cast("string").alias("key"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_ts"),
        F.current_timestamp().alias("ingest_time"),
        F.to_date(F.col("timestamp")).alias("ingest_date"),
    )


def bronze_for_parsing(bronze: DataFrame) -> DataFrame:
    """The columns validation works on: the payload as text and the send time in milliseconds."""
    return bronze.withColumn("raw", F.col("value").cast("string")).withColumn(
        "kafka_ts_ms", F.unix_millis(F.col("kafka_ts"))
    )


def with_event_time(df: DataFrame) -> DataFrame:
    return df.withColumn("event_ts", F.timestamp_millis(F.col("event_time"))).withColumn(
        "event_date", F.to_date(F.col("event_ts"))
    )


def parse_bronze(bronze: DataFrame) -> DataFrame:
    """Parse and validate bronze rows: every row stays, ``reason`` is null on the good ones."""
    return with_event_time(parse_telemetry(bronze_for_parsing(bronze)))


def check_telemetry(bronze: DataFrame, cars: DataFrame) -> DataFrame:
    """Parse, validate and enrich bronze rows: every row stays, ``reason`` is null on the good ones."""
    return enrich(parse_bronze(bronze), cars)


COPY_KEYS = ("kafka_partition", "kafka_offset")  # a Kafka record's coordinates: they name one copy


def later_copies(valid: DataFrame, seen: DataFrame | None = None) -> DataFrame:
    """The Kafka coordinates (``COPY_KEYS``) of every copy of an event but the first (by partition and
    offset), and of every copy of an event_id already in ``seen`` (a frame with an ``event_id`` column).

    Only three narrow columns are read and aggregated, never the batch's wide rows. There are at most
    as many copies as rows in the batch, and usually a few.
    """
    keys = valid.select("event_id", *COPY_KEYS)
    first = F.min(F.struct(*COPY_KEYS))
    repeated = keys.groupBy("event_id").agg(F.count(F.lit(1)).alias("_n"), first.alias("_first")).where("_n > 1")
    copies = (
        keys.join(F.broadcast(repeated.drop("_n")), "event_id")
        .where(F.struct(*COPY_KEYS) != F.col("_first"))
        .select(*COPY_KEYS)
    )
    if seen is not None:
        # Only the batch's own ids are looked up: the window of silver can hold millions of ids, the
        # batch a few thousand, so the batch's side is broadcast and the window's side only scanned.
        ids = F.broadcast(keys.select("event_id").distinct())
        known = seen.select("event_id").join(ids, "event_id", "left_semi").distinct()
        copies = copies.unionByName(keys.join(F.broadcast(known), "event_id", "left_semi").select(*COPY_KEYS))
    return copies.distinct()


def split_copies(valid: DataFrame, copies: DataFrame) -> tuple[DataFrame, DataFrame]:
    """``valid`` split into first copies and later copies by ``later_copies``' coordinates (broadcast)."""
    flagged = F.broadcast(copies.select(*COPY_KEYS))
    return valid.join(flagged, list(COPY_KEYS), "left_anti"), valid.join(flagged, list(COPY_KEYS), "left_semi")


def quarantine_rows(rejected: DataFrame) -> DataFrame:
    return rejected.withColumn("quarantine_date", F.to_date(F.col("ingest_time"))).select(*QUARANTINE_COLUMNS)


def duplicate_rows(later_copies: DataFrame) -> DataFrame:
    """What silver/duplicates keeps of a later copy of an event: which one it was and where it came from."""
    return later_copies.select("event_id", "car_id", "kafka_partition", "kafka_offset", "kafka_ts", "ingest_time")


def dlq_messages(quarantined: DataFrame, topic: str) -> DataFrame:
    """Kafka records for sensors-dlq: key = car_id (when known), value = reason, detail, raw payload."""
    return quarantined.select(
        F.lit(topic).alias("topic"),
        F.col("car_id").alias("key"),
        F.to_json(
            F.struct("reason", "reason_detail", "raw", "kafka_topic", "kafka_partition", "kafka_offset", "kafka_ts")
        ).alias("value"),
    )


def enriched_messages(silver: DataFrame, topic: str) -> DataFrame:
    """Kafka records for samples-enriched: the silver row as JSON, keyed by car_id."""
    internal = ("kafka_partition", "kafka_offset", "kafka_ts", "ingest_time", "silver_batch")
    keep = [c for c in SILVER_COLUMNS if c not in internal]
    return silver.select(
        F.lit(topic).alias("topic"), F.col("car_id").alias("key"), F.to_json(F.struct(*keep)).alias("value")
    )


def alert_messages(alerts: DataFrame, topic: str) -> DataFrame:
    """Kafka records for alert-data: the alert as JSON, keyed by car_id."""
    return alerts.select(
        F.lit(topic).alias("topic"), F.col("car_id").alias("key"), F.to_json(F.struct(*alerts.columns)).alias("value")
    )


# --- gold ------------------------------------------------------------------------------------


FLEET_WINDOW = ("15 minutes", "1 minute")  # length, slide


def car_windows(silver: DataFrame) -> DataFrame:
    """15-minute windows sliding every minute, one row per car: its model, color, top and summed
    speed and its events. The one stateful aggregation behind both fleet tables below: a window is
    closed for every car at the same watermark, so a streaming batch holds all of a window's cars."""
    return (
        silver.groupBy(F.window("event_ts", *FLEET_WINDOW).alias("window"), "car_id", "model", "color")
        .agg(F.max("speed").alias("max_speed"), F.sum("speed").alias("sum_speed"), F.count("*").alias("events"))
        .select(F.col("window.start").alias("window_start"), F.col("window.end").alias("window_end"), "*")
        .drop("window")
    )


def speed_by_model(silver: DataFrame, per_car: DataFrame | None = None) -> DataFrame:
    """15-minute windows sliding every minute: max and mean speed per model (from ``car_windows``)."""
    cars = car_windows(silver) if per_car is None else per_car
    return cars.groupBy("window_start", "window_end", "model").agg(
        F.max("max_speed").alias("max_speed"),
        (F.sum("sum_speed") / F.sum("events")).alias("avg_speed"),
        F.sum("events").alias("events"),
    )


def cars_by_color(silver: DataFrame, per_car: DataFrame | None = None) -> DataFrame:
    """15-minute windows sliding every minute: distinct cars seen per color (from ``car_windows``)."""
    cars = car_windows(silver) if per_car is None else per_car
    return cars.groupBy("window_start", "window_end", "color").agg(
        F.count_distinct("car_id").alias("cars"), F.sum("events").alias("events")
    )


def alerts_per_minute(alerts: DataFrame) -> DataFrame:
    """1-minute tumbling windows: alert counts by rule, color and model (``event_ts`` = event time)."""
    return (
        alerts.groupBy(F.window("event_ts", "1 minute").alias("window"), "rule", "severity", "color", "model")
        .agg(F.count("*").alias("alerts"))
        .select(F.col("window.start").alias("window_start"), F.col("window.end").alias("window_end"), "*")
        .drop("window")
    )


def latest_per_car(silver: DataFrame, alerting_ids: DataFrame | None = None) -> DataFrame:
    """Each car's latest report (position, speed, rpm, gear) in a batch of silver rows."""
    state = F.struct("event_time", "event_id", "lat", "lon", "heading", "speed", "rpm", "gear", "expected_gear",
                     "coolant_temp", "fuel_level", "engine_on", "model", "color")  # fmt: skip
    latest = silver.groupBy("car_id").agg(F.max_by(state, F.col("event_time")).alias("s")).select("car_id", "s.*")
    if alerting_ids is None:
        return latest.withColumn("alerting", F.lit(False))
    flagged = alerting_ids.select("event_id").distinct().withColumn("alerting", F.lit(True))
    return latest.join(flagged, "event_id", "left").withColumn("alerting", F.coalesce("alerting", F.lit(False)))


def newest_per_car(current: DataFrame, batch: DataFrame) -> DataFrame:
    """The cars' state after a batch: one row per car, from the table's ``current`` rows and a batch's
    ``latest_per_car`` rows, the newest event_time winning and the batch's row winning a tie."""
    order = Window.partitionBy("car_id").orderBy(F.desc("event_time"), F.desc("_newer"))
    both = current.withColumn("_newer", F.lit(0)).unionByName(batch.withColumn("_newer", F.lit(1)))
    return both.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1).drop("_newer", "_rank")
