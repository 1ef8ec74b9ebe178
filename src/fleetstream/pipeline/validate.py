"""Parsing and validating raw telemetry: typed columns plus a reason code for every rejected row.

Pure ``DataFrame -> DataFrame`` functions built only from Spark built-ins. The raw payload is read as
a VARIANT (``try_parse_json``), which lets each field be checked for presence and for its JSON type
exactly (a string "72.5" is not a speed, "yes" is not a boolean), then against the ranges of
:mod:`fleetstream.schema`. Lateness is judged against the Kafka message timestamp (when the vehicle
sent it), so live traffic, backfills and replays are treated alike.

Reason codes, first failing check wins: ``malformed_json``, ``missing_field``, ``bad_type``,
``out_of_range``, ``too_late``, ``future_time``; enrichment adds ``unknown_car``.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType, VariantType

from fleetstream import schema
from fleetstream.pipeline import DEFAULT_MAX_LATENESS_S

REASONS = ("malformed_json", "missing_field", "bad_type", "out_of_range", "too_late", "future_time", "unknown_car")
DEFAULT_MAX_CLOCK_SKEW_S = 300

_SPARK_TYPE = {"string": "string", "integer": "bigint", "number": "double", "boolean": "boolean"}
_INTEGRAL = ("BIGINT", "INT", "SMALLINT", "TINYINT")


def _type_ok(json_type: Column, field_type: str) -> Column:
    if field_type == "string":
        return json_type == "STRING"
    if field_type == "boolean":
        return json_type == "BOOLEAN"
    integral = json_type.isin(*_INTEGRAL) | json_type.rlike(r"^DECIMAL\(\d+,0\)$")
    if field_type == "integer":
        return integral
    return integral | json_type.startswith("DECIMAL") | json_type.isin("DOUBLE", "FLOAT") | F.lit(False)


def _names_where(checks: list[tuple[str, Column]]) -> Column:
    """Comma-separated names of the fields whose check is true (empty string when none)."""
    return F.concat_ws(",", *[F.when(check, F.lit(name)) for name, check in checks])


def _fast_schema() -> StructType:
    """The contract as the JSON reader should read it: string fields as VARIANT, to check they are strings."""
    typed = schema.spark_schema()
    return StructType(
        [StructField(f.name, VariantType() if f.name in _STRINGS else f.dataType, True) for f in typed.fields]
    )


_STRINGS = tuple(f.name for f in schema.FIELDS if f.type == "string")
_NUMBERS = tuple(f.name for f in schema.FIELDS if f.type == "number")


def parse_telemetry(
    df: DataFrame,
    raw: str = "raw",
    sent_ms: str = "kafka_ts_ms",
    max_lateness_s: int = DEFAULT_MAX_LATENESS_S,
    max_clock_skew_s: int = DEFAULT_MAX_CLOCK_SKEW_S,
) -> DataFrame:
    """Add one typed column per schema field, ``reason`` (null when valid) and ``reason_detail``.

    ``raw`` is the payload as a string; ``sent_ms`` the Kafka timestamp in epoch milliseconds.

    Two tiers. Spark's JSON reader reads every record into the typed contract (fast); a record in
    which every field came out, the strings as JSON strings and no number as a NaN text, is clean.
    Only the other records are parsed again as a VARIANT, to tell exactly what is wrong with them.
    Each stage is its own projection, so that every lookup is computed once.
    """
    parsed = df.withColumn("_j", F.from_json(F.col(raw), _fast_schema()))
    clean = reduce(
        lambda a, b: a & b,
        [F.col(f"_j.{f.name}").isNotNull() for f in schema.FIELDS]
        + [F.expr(f"schema_of_variant(_j.{name})") == "STRING" for name in _STRINGS]
        + [~F.isnan(F.col(f"_j.{name}")) for name in _NUMBERS],
    )
    parsed = parsed.withColumn("_clean", F.coalesce(clean, F.lit(False)))
    parsed = parsed.withColumn("_v", F.when(~F.col("_clean"), F.expr(f"try_parse_json(`{raw}`)")))
    parsed = parsed.select(
        "*",
        F.expr("schema_of_variant(_v)").alias("_root"),
        *[F.expr(f"variant_get(_v, '$.{f.name}')").alias(f"_n_{f.name}") for f in schema.FIELDS],
    )
    parsed = parsed.select(
        "*", *[F.expr(f"schema_of_variant(`_n_{f.name}`)").alias(f"_t_{f.name}") for f in schema.FIELDS]
    )
    is_clean = F.col("_clean")
    is_object = is_clean | F.coalesce(F.col("_root").startswith("OBJECT"), F.lit(False))

    present: list[tuple[str, Column]] = []
    type_ok: list[tuple[str, Column]] = []
    values: list[Column] = []
    for field in schema.FIELDS:
        json_type = F.col(f"_t_{field.name}")
        exists = json_type.isNotNull() & (json_type != "VOID")
        good_type = exists & _type_ok(json_type, field.type)
        if field.required:
            present.append((field.name, ~exists))
        spark_type = _SPARK_TYPE[field.type]
        fast = (
            F.expr(f"try_variant_get(_j.{field.name}, '$', 'string')")
            if field.type == "string"
            else F.col(f"_j.{field.name}")
        )
        slow = F.when(good_type, F.expr(f"try_variant_get(`_n_{field.name}`, '$', '{spark_type}')"))
        values.append(F.when(is_clean, fast).otherwise(slow).alias(field.name))
        type_ok.append((field.name, exists & slow.isNull()))  # wrong JSON type, or an integer beyond 64 bits
    parsed = parsed.select(
        "*",
        *values,
        F.when(is_clean, F.lit("")).otherwise(_names_where(present)).alias("_missing"),
        F.when(is_clean, F.lit("")).otherwise(_names_where(type_ok)).alias("_bad_type"),
        is_object.alias("_object"),
    )
    in_range: list[tuple[str, Column]] = []
    for field in schema.FIELDS:
        value = F.col(field.name)
        bounds = []
        if field.minimum is not None:
            bounds.append(value < F.lit(field.minimum))
        if field.maximum is not None:
            bounds.append(value > F.lit(field.maximum))
        if bounds:
            in_range.append((field.name, value.isNotNull() & reduce(lambda a, b: a | b, bounds)))
    any_out = reduce(lambda a, b: a | b, [check for _, check in in_range])
    parsed = parsed.withColumn("_out_of_range", F.when(any_out, _names_where(in_range)).otherwise(F.lit("")))
    missing, bad_type, out_of_range = F.col("_missing"), F.col("_bad_type"), F.col("_out_of_range")
    is_object = F.col("_object")
    lateness_ms = F.col(sent_ms) - F.col("event_time")
    reason = (
        F.when(~is_object, F.lit("malformed_json"))
        .when(missing != "", F.lit("missing_field"))
        .when(bad_type != "", F.lit("bad_type"))
        .when(out_of_range != "", F.lit("out_of_range"))
        .when(lateness_ms > max_lateness_s * 1000, F.lit("too_late"))
        .when(-lateness_ms > max_clock_skew_s * 1000, F.lit("future_time"))
    )
    detail = (
        F.when(~is_object, F.lit("not a JSON object"))
        .when(missing != "", missing)
        .when(bad_type != "", bad_type)
        .when(out_of_range != "", out_of_range)
        .when(
            lateness_ms > max_lateness_s * 1000,
            F.format_string("%d s after event_time", (lateness_ms / 1000).cast("long")),
        )
        .when(
            -lateness_ms > max_clock_skew_s * 1000,
            F.format_string("%d s before event_time", (-lateness_ms / 1000).cast("long")),
        )
    )
    internal = ["_v", "_j", "_clean", "_object", "_root", "_missing", "_bad_type", "_out_of_range"]
    internal += [f"_{kind}_{f.name}" for f in schema.FIELDS for kind in ("n", "t")]
    return parsed.withColumn("reason", reason).withColumn("reason_detail", detail).drop(*internal)


def split_valid(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid rows, rejected rows) of a parsed frame."""
    return df.where(F.col("reason").isNull()), df.where(F.col("reason").isNotNull())
