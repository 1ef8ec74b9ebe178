"""Query health from Spark progress reports, and the status file the dashboard reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fleetstream.pipeline.monitor import drop_stale_status, read_status, summarize, write_status

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
    write_status(path, rows, written_at=123.5, phase="running", started_at=100.0, pid=4242)
    back = read_status(path)
    assert back is not None
    assert (back.written_at, back.phase, back.started_at, back.pid) == (123.5, "running", 100.0, 4242)
    assert back.queries == rows
    assert [p.name for p in path.parent.iterdir()] == ["stream-status.json"], "no temporary file is left"


def test_a_status_left_by_a_process_that_is_gone_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "stream-status.json"
    write_status(path, [], 1.0, "running", 1.0, os.getpid())
    assert not drop_stale_status(path), "its writer runs: kept"
    done = subprocess.Popen(["true"])
    done.wait()
    write_status(path, [], 1.0, "running", 1.0, done.pid)
    assert drop_stale_status(path)
    assert not path.exists()
    assert not drop_stale_status(path), "nothing to drop"


def test_run_waits_for_the_lakes_first_batch_then_goes_on(tmp_path: Path) -> None:
    """`run` starts MLflow and Airflow once the status file shows the lake's first batch and then the
    stateful query's; it does not wait for a stream that has exited, nor past its limit."""
    import threading
    import time

    import psutil

    from fleetstream.cli.stack import _await_lake
    from fleetstream.config import Settings
    from fleetstream.local.process import Service
    from fleetstream.pipeline.monitor import STATUS_FILE

    settings = Settings(state_dir=tmp_path)
    alive = Service("stream", os.getpid(), psutil.Process().create_time(), "", "")
    lake, episodes = (
        summarize({**DELTA_PROGRESS, "name": "lake", "batchId": -1}),
        summarize({**DELTA_PROGRESS, "name": "episodes", "batchId": 0}),
    )
    write_status(tmp_path / STATUS_FILE, [lake, episodes], 0.0, phase="running")

    waiting = summarize({**DELTA_PROGRESS, "name": "episodes", "batchId": -1})
    publisher = summarize({**DELTA_PROGRESS, "name": "alerts_realtime", "batchId": -1})  # (not waited for)
    write_status(tmp_path / STATUS_FILE, [lake, publisher], 0.0, phase="running")

    def first_batches() -> None:
        time.sleep(1.0)
        done = summarize({**DELTA_PROGRESS, "name": "lake", "batchId": 0})
        # the lake's first batch, before the stream's next turn has started the stateful query
        write_status(tmp_path / STATUS_FILE, [done, publisher], 1.0, phase="running")
        time.sleep(1.0)
        write_status(tmp_path / STATUS_FILE, [done, waiting, publisher], 2.0, phase="running")
        time.sleep(1.0)
        write_status(tmp_path / STATUS_FILE, [done, episodes, publisher], 3.0, phase="running")

    writer = threading.Thread(target=first_batches)
    began = time.monotonic()
    writer.start()
    assert _await_lake(settings, alive, timeout_s=30) is True
    writer.join()
    assert 2.9 <= time.monotonic() - began < 10
    # the status still says "no batch": the limit ends the wait, and so does a stream gone
    write_status(tmp_path / STATUS_FILE, [lake, episodes], 2.0, phase="running")
    began = time.monotonic()
    assert _await_lake(settings, alive, timeout_s=1.0) is True  # (the rest starts anyway)
    assert 1.0 <= time.monotonic() - began < 5
    gone = subprocess.Popen(["true"])
    gone.wait()
    began = time.monotonic()
    assert _await_lake(settings, Service("stream", gone.pid, time.time(), "", ""), timeout_s=30) is False
    assert time.monotonic() - began < 5
