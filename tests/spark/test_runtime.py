"""Per-batch values reach Spark without changing its generated code: a plan run again with other
values compiles nothing new (Spark's own count of compilations, ``CodegenMetrics``), and the rows
carry the values given."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetstream.pipeline.runtime import with_values


def _compilations(spark: SparkSession) -> int:
    """How many times this JVM has compiled generated code (a cache miss each)."""
    metrics = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics  # type: ignore[union-attr]
    return int(metrics.METRIC_COMPILATION_TIME().getCount())


def test_other_values_compile_no_new_code(spark: SparkSession) -> None:
    rows = spark.range(100).withColumn("t", F.col("id") * 1000)

    def run(batch: int, lo: int, hi: int | None) -> list[tuple[int, int, int | None]]:
        picked = with_values(rows, batch=batch, lo=lo, hi=hi)
        picked = picked.where((F.col("t") >= F.col("lo")) & (F.col("hi").isNull() | (F.col("t") <= F.col("hi"))))
        return [(r["id"], r["batch"], r["hi"]) for r in picked.orderBy("id").collect()]

    first = run(7, 10_000, 12_000)
    assert first == [(10, 7, 12_000), (11, 7, 12_000), (12, 7, 12_000)]
    before = _compilations(spark)
    assert before > 0  # the metric counts this JVM's compilations: the first run compiled
    assert run(8, 50_000, 51_000) == [(50, 8, 51_000), (51, 8, 51_000)]
    assert run(2**40, 98_000, None) == [(98, 2**40, None), (99, 2**40, None)]
    assert _compilations(spark) == before, "a new value compiled new code"
