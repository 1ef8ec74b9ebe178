"""Query health from Spark progress reports, and the status file the dashboard reads."""

from __future__ import annotations

from pathlib import Path

from fleetstream.pipeline.monitor import read_status, summarize, write_status

DELTA_PROGRESS = {
    "name": "silver",
    "batchId": 3,
    "timestamp": "2026-01-01T00:00:02.000Z",
    "numInputRows": 5000,
    "inputRowsPerSecond": 2500.0,
    "processedRowsPerSecond": 10000.0,
    "durationMs": {"triggerExecution": 500, "addBatch": 400},
    "eventTime": {"watermark": "2026-01-01T00:00:00.000Z"},
    "sources": [{"description": "DeltaSource", "metrics": {"numBytesOutstanding": "1024", "numFilesOutstanding": "4"}}],
}


def test_delta_source_lag_is_files_outstanding() -> None:
    health = summarize(DELTA_PROGRESS)
    assert (health.name, health.batch, health.lag, health.lag_unit) == ("silver", 3, 4, "files")
    assert (health.input_per_s, health.processed_per_s, health.batch_ms) == (2500.0, 10000.0, 500)
    assert health.watermark == "2026-01-01T00:00:00.000Z"


def test_kafka_source_lag_is_offsets_behind_and_a_query_without_progress_is_unknown() -> None:
    kafka = {"name": "bronze", "batchId": 0, "sources": [{"metrics": {"maxOffsetsBehindLatest": "250"}}]}
    assert (summarize(kafka).lag, summarize(kafka).lag_unit) == (250, "records")
    empty = summarize({"name": "gold_car_state", "batchId": -1})
    assert (empty.lag, empty.input_rows, empty.batch_ms) == (None, 0, 0)


def test_status_file_roundtrip_and_failed_state(tmp_path: Path) -> None:
    path = tmp_path / "state" / "stream-status.json"
    assert read_status(path) is None
    rows = [summarize(DELTA_PROGRESS), summarize({"name": "alerts"}, state="failed", error="boom")]
    write_status(path, rows, written_at=123.5)
    written_at, back = read_status(path)  # type: ignore[misc]
    assert written_at == 123.5
    assert back == rows
    assert [p.name for p in path.parent.iterdir()] == ["stream-status.json"], "no temporary file is left"
