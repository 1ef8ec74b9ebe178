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

from fleetstream import schema

REASONS = ("malformed_json", "missing_field", "bad_type", "out_of_range", "too_late", "future_time", "unknown_car")
DEFAULT_MAX_LATENESS_S = 600
DEFAULT_MAX_CLOCK_SKEW_S = 300

_INTEGRAL = ("BIGINT", "INT", "SMALLINT", "TINYINT")
_SPARK_TYPE = {"string": "string", "integer": "bigint", "number": "double", "boolean": "boolean"}


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


def parse_telemetry(
    df: DataFrame,
    raw: str = "raw",
    sent_ms: str = "kafka_ts_ms",
    max_lateness_s: int = DEFAULT_MAX_LATENESS_S,
    max_clock_skew_s: int = DEFAULT_MAX_CLOCK_SKEW_S,
) -> DataFrame:
    """Add one typed column per schema field, ``reason`` (null when valid) and ``reason_detail``.

    ``raw`` is the payload as a string; ``sent_ms`` the Kafka timestamp in epoch milliseconds.
    """
    v = F.expr(f"try_parse_json(`{raw}`)")
    parsed = df.withColumn("_v", v)
    is_object = F.col("_v").isNotNull() & F.expr("schema_of_variant(_v)").startswith("OBJECT")

    present, type_ok, in_range, values = [], [], [], {}
    for field in schema.FIELDS:
        node = F.expr(f"variant_get(_v, '$.{field.name}')")
        json_type = F.expr(f"schema_of_variant(variant_get(_v, '$.{field.name}'))")
        exists = node.isNotNull() & ~F.expr(f"is_variant_null(variant_get(_v, '$.{field.name}'))")
        good_type = exists & _type_ok(json_type, field.type)
        value = F.when(good_type, F.expr(f"try_variant_get(_v, '$.{field.name}', '{_SPARK_TYPE[field.type]}')"))
        values[field.name] = value
        if field.required:
            present.append((field.name, ~exists))
        type_ok.append((field.name, exists & ~good_type))
        bounds = []
        if field.minimum is not None:
            bounds.append(value < F.lit(field.minimum))
        if field.maximum is not None:
            bounds.append(value > F.lit(field.maximum))
        if bounds:
            in_range.append((field.name, good_type & reduce(lambda a, b: a | b, bounds)))

    parsed = parsed.select("*", *[c.alias(name) for name, c in values.items()])
    missing = _names_where(present)
    bad_type = _names_where(type_ok)
    out_of_range = _names_where(in_range)
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
    return parsed.withColumn("reason", reason).withColumn("reason_detail", detail).drop("_v")


def split_valid(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid rows, rejected rows) of a parsed frame."""
    return df.where(F.col("reason").isNull()), df.where(F.col("reason").isNotNull())
