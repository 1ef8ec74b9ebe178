"""A query that fails because a service was out of reach (a broker restarting) is started again
from its checkpoint by ``supervise``, and its failed batch runs again; any other failure stops the
stream with exit code 1, as before. Real Spark queries (a rate source, foreachBatch)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery
from rich.console import Console

from fleetstream.pipeline import supervise as supervising

KAFKA_TIMEOUT = (
    "org.apache.kafka.common.errors.TimeoutException: Timeout of 20000ms expired before the position for "
    "partition sensors-sample-2 could be determined"
)


def _run(spark: SparkSession, tmp_path: Path, failure: Exception) -> tuple[int, list[int], list[str], set[str]]:
    """Supervise one query whose first batch raises ``failure``; returns the exit code, the batch ids
    the query ran, the queries restarted and the states written to the status file."""
    batches: list[int] = []
    restarted: list[str] = []
    states: set[str] = set()
    status = tmp_path / "status.json"

    def write(batch: object, batch_id: int) -> None:
        batches.append(batch_id)
        if len(batches) == 1:
            raise failure

    def start() -> StreamingQuery:
        return (
            spark.readStream.format("rate").option("rowsPerSecond", 5).load()
            .writeStream.queryName("flaky").option("checkpointLocation", str(tmp_path / "checkpoint"))
            .foreachBatch(write).trigger(processingTime="0.5 seconds").start()
        )  # fmt: skip

    def restart(query: StreamingQuery) -> StreamingQuery:
        restarted.append(query.name)
        return start()

    def done() -> bool:
        if status.exists():
            states.update(q["state"] for q in json.loads(status.read_text())["queries"])
        return len(batches) >= 4

    code = supervising.supervise(
        [start()], status, Console(file=io.StringIO()), interval_s=0.2, stop_when=done, restart=restart
    )
    done()  # the last status written, when the query stopped
    return code, batches, restarted, states


#: Spark's words when a Python worker it started did not connect back within its fixed 10 s (a
#: stateful query's batch on a machine busy starting MLflow and Airflow: a CI run of 2026-12-07)
WORKER_LATE = "Python worker failed to connect back."


@pytest.mark.parametrize("failure", [KAFKA_TIMEOUT, WORKER_LATE], ids=["service out of reach", "worker late"])
def test_a_query_failing_on_a_passing_cause_is_restarted_from_its_checkpoint(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.setattr(supervising, "backoff_s", lambda attempt: 1.0)
    code, batches, restarted, states = _run(spark, tmp_path, RuntimeError(failure))
    assert code == 0
    assert restarted == ["flaky"]
    assert batches[1] == batches[0]  # the failed batch ran again (its offsets were logged, its commit not)
    assert "restarting" in states  # the dashboard and the bot see it


def test_any_other_failure_stops_the_stream(spark: SparkSession, tmp_path: Path) -> None:
    code, batches, restarted, states = _run(spark, tmp_path, ValueError("a fault of the code, not of a service"))
    assert code == 1
    assert restarted == []
    assert len(batches) == 1
    assert "failed" in states


def test_a_failures_text_has_its_jvm_causes(spark: SparkSession, tmp_path: Path) -> None:
    """The query's exception names neither its cause's class nor the causes under it (Spark's "Python
    worker failed to connect back" hid a java.net.SocketTimeoutException): the text judged has them."""
    query = (
        spark.readStream.format("rate").load().selectExpr("raise_error('boom')")
        .writeStream.format("noop").option("checkpointLocation", str(tmp_path / "checkpoint")).start()
    )  # fmt: skip
    with pytest.raises(Exception, match="boom"):
        query.awaitTermination(120)
    failure = query.exception()
    assert failure is not None
    assert "org.apache.spark.SparkRuntimeException" not in str(failure)
    assert "org.apache.spark.SparkRuntimeException: [USER_RAISED_EXCEPTION] boom" in (
        supervising.failure_text(query) or ""
    )
