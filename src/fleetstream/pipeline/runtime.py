"""Values that change from micro-batch to micro-batch, given to Spark without changing its
generated code.

Spark writes literals into the Java code it generates and keeps compiled code by its source text: a
plan holding ``current_timestamp()``, a batch id or a batch's time bounds as literals generates and
compiles its code anew in every micro-batch, and the JVM then compiles the new classes again (for
the validation's plan, most of a small batch's CPU). The wall clock is read per row instead; other
values come from a one-row frame joined to the rows, whose columns Spark's optimizer cannot fold
back into literals.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


def wall_clock() -> Column:
    """The time a row is computed (millisecond precision)."""
    return F.timestamp_millis(F.expr("reflect('java.lang.System', 'currentTimeMillis')").cast("long"))


def batch_values(spark: SparkSession, **values: int | None) -> DataFrame:
    """One row of bigint columns (``None``: null), to join to the rows that use them."""
    # spark_partition_id() * 0 is not foldable: no literal reaches the joined rows' generated code
    zero = F.spark_partition_id().cast("long") * 0
    return spark.range(1).select(*[(zero + F.lit(v).cast("long")).alias(k) for k, v in values.items()])


def with_values(rows: DataFrame, **values: int | None) -> DataFrame:
    """``rows`` with the given per-batch values as columns (a broadcast one-row join)."""
    return rows.crossJoin(F.broadcast(batch_values(rows.sparkSession, **values)))
