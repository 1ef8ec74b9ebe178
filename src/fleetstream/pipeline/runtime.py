"""Values that change from micro-batch to micro-batch, given to Spark without changing its
generated code.

Spark writes literals into the Java code it generates and keeps compiled code by its source text: a
plan holding ``current_timestamp()``, a batch id or a batch's time bounds as literals generates and
compiles its code anew in every micro-batch, and the JVM then compiles the new classes again (for
the validation's plan, most of a small batch's CPU). The wall clock is read per row instead; other
values come from a one-row frame joined to the rows, whose columns Spark's optimizer cannot fold
back into literals. That frame's own code is the same in every batch too: each value reaches it as
text, which generated code takes from its references (a bigint literal would be written into it),
and is cast to a bigint per row, concatenated first with an empty text the optimizer cannot
compute (a null is the empty text, which the cast turns into null: the same code for a null too).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


def wall_clock() -> Column:
    """The time a row is computed (millisecond precision)."""
    return F.timestamp_millis(F.expr("reflect('java.lang.System', 'currentTimeMillis')").cast("long"))


def batch_values(spark: SparkSession, **values: int | None) -> DataFrame:
    """One row of bigint columns (``None``: null), to join to the rows that use them."""
    # the empty text, but not foldable: the concatenation below is computed per row, not folded into
    # a literal (a CASE on a non-foldable condition is not enough: the cast is pushed into its branches)
    empty = F.substring(F.spark_partition_id().cast("string"), 1, 0)
    return spark.range(1).select(
        *[F.concat(F.lit("" if v is None else str(v)), empty).try_cast("long").alias(k) for k, v in values.items()]
    )


def with_values(rows: DataFrame, **values: int | None) -> DataFrame:
    """``rows`` with the given per-batch values as columns (a broadcast one-row join)."""
    return rows.crossJoin(F.broadcast(batch_values(rows.sparkSession, **values)))
