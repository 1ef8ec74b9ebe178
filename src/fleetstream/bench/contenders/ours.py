"""fleetstream itself: every query of the pipeline, micro-batch or real-time alerts."""

from __future__ import annotations


def run(mode: str, trigger_s: float) -> int:
    from fleetstream.bench.contenders._common import serve_queries
    from fleetstream.config import Settings
    from fleetstream.pipeline.session import spark_session
    from fleetstream.pipeline.stream import QUERIES, Pipeline

    settings = Settings()
    spark = spark_session(settings, f"bench-fleetstream-{mode}")
    spark.sparkContext.setLogLevel("ERROR")
    pipeline = Pipeline(spark, settings, alerts_mode=mode)
    queries = pipeline.start(QUERIES, {"processingTime": f"{trigger_s} seconds"})
    try:
        return serve_queries(queries, realtime=("alerts_realtime",))
    finally:
        spark.stop()
