"""What each streaming query is doing: rates, batch duration and lag, from Spark's query progress.

``summarize`` is pure (a progress dict in, a :class:`QueryHealth` out) so it is tested without Spark.
``write_status`` publishes the summaries as JSON (``<state_dir>/stream-status.json``), which the
dashboard reads; it is replaced atomically so a reader never sees half a file. The file also says
which process wrote it, since when it runs and in which phase (starting, running, stopped), so that
a reader tells a pipeline starting up from one that is gone (a file left by an earlier run).

>>> h = summarize({"name": "bronze", "batchId": 7, "timestamp": "2026-01-01T00:00:00.000Z",
...     "numInputRows": 10, "inputRowsPerSecond": 5.0, "processedRowsPerSecond": 20.0,
...     "durationMs": {"triggerExecution": 500},
...     "sources": [{"metrics": {"maxOffsetsBehindLatest": "12", "avgOffsetsBehindLatest": "3.0"}}]})
>>> (h.name, h.batch, h.batch_ms, h.lag, h.lag_unit)
('bronze', 7, 500, 12, 'records')
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
STATUS_FILE = "stream-status.json"
STATUS_STALE_S = 30  # a status file older than this means the pipeline is not running
PHASES = ("starting", "running", "stopped")


@dataclass(frozen=True)
class QueryHealth:
    name: str
    batch: int
    updated: str  # the progress timestamp (UTC, ISO 8601)
    input_rows: int
    input_per_s: float
    processed_per_s: float
    batch_ms: int
    lag: int | None  # how far behind its source the query is, in lag_unit; None when unknown
    lag_unit: str
    watermark: str | None
    state: str = "running"  # running | restarting | failed | stopped
    error: str | None = None


def summarize(progress: dict[str, Any], state: str = "running", error: str | None = None) -> QueryHealth:
    """One query's health from its ``lastProgress``.

    Lag: a Kafka source reports how many offsets it is behind the latest (max over partitions); a
    Delta source reports the files and bytes still to read.
    """
    lag: int | None = None
    unit = ""
    for source in progress.get("sources") or []:
        metrics = source.get("metrics") or {}
        if "maxOffsetsBehindLatest" in metrics:
            lag, unit = (lag or 0) + int(float(metrics["maxOffsetsBehindLatest"])), "records"
        elif "numFilesOutstanding" in metrics:
            lag, unit = (lag or 0) + int(float(metrics["numFilesOutstanding"])), "files"
    watermark = (progress.get("eventTime") or {}).get("watermark")
    return QueryHealth(
        name=str(progress.get("name") or "?"),
        batch=int(progress.get("batchId", -1)),
        updated=str(progress.get("timestamp", "")),
        input_rows=int(progress.get("numInputRows") or 0),
        input_per_s=float(progress.get("inputRowsPerSecond") or 0.0),
        processed_per_s=float(progress.get("processedRowsPerSecond") or 0.0),
        batch_ms=int((progress.get("durationMs") or {}).get("triggerExecution") or 0),
        lag=lag,
        lag_unit=unit,
        watermark=watermark,
        state=state,
        error=error,
    )


@dataclass(frozen=True)
class Status:
    """What a status file says: when it was written, the queries, and the writer's phase."""

    written_at: float
    queries: list[QueryHealth]
    phase: str = "running"  # starting | running | stopped
    started_at: float | None = None  # when the writing process started
    pid: int | None = None  # the writing process (on the dashboard's machine, unless elsewhere)


def write_status(
    path: Path,
    queries: list[QueryHealth],
    written_at: float,
    phase: str = "running",
    started_at: float | None = None,
    pid: int | None = None,
) -> None:
    """Replace ``path`` with the queries' health and the writer's phase as JSON. A file that cannot
    be written (a full disk) is logged and left as it was: the queries go on."""
    payload = {"written_at": written_at, "phase": phase, "started_at": started_at, "pid": pid,
               "queries": [asdict(q) for q in queries]}  # fmt: skip
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".stream-status.")
        with os.fdopen(fd, "w") as out:
            json.dump(payload, out)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("status file %s not written: %s", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


#: what a failure's text says, and what to tell the user about it
_CAUSES = (
    (
        "No space left on device",
        "the disk is full (No space left on device): free space, then start the stream again; it resumes "
        "from its checkpoints (if it then names a damaged checkpoint file, run `fleetstream lake repair` first)",
    ),
)


#: failures that pass: a service out of reach for a while (a broker restarting, a partition's leader
#: moving, the object store restarting), or the machine too busy for a while to start a Python worker
#: within the fixed 10 s Spark waits for it (a stateful query's batch, while MLflow and Airflow start on
#: two cores); the query is started again from its checkpoint
_TRANSIENT = (
    ("org.apache.kafka.common.errors.TimeoutException", "a service out of reach"),
    ("org.apache.kafka.common.errors.NetworkException", "a service out of reach"),
    ("org.apache.kafka.common.errors.DisconnectException", "a service out of reach"),
    ("org.apache.kafka.common.errors.NotLeaderOrFollowerException", "a service out of reach"),
    ("org.apache.kafka.common.errors.LeaderNotAvailableException", "a service out of reach"),
    ("java.net.ConnectException", "a service out of reach"),
    ("Unable to execute HTTP request", "a service out of reach"),
    ("Python worker failed to connect back", "the machine too busy to start a Python worker in time"),
    ("Python worker to connect back", "the machine too busy to start a Python worker in time"),  # (its daemon's)
    ("java.net.SocketTimeoutException", "a service out of reach"),
)


def transient(failure: str) -> str | None:
    """What passing cause a query's failure shows (worth a restart from the checkpoint), or None when
    it is a fault of the data, the code or the disk.

    >>> transient("Caused by: org.apache.kafka.common.errors.TimeoutException: Timeout of 20000ms expired")
    'a service out of reach'
    >>> transient("Python worker failed to connect back.\\nCaused by: java.net.SocketTimeoutException: Timed out")
    'the machine too busy to start a Python worker in time'
    >>> transient("Caused by: java.io.IOException: No space left on device") is None
    True
    """
    if "No space left on device" in failure:
        return None
    return next((kind for needle, kind in _TRANSIENT if needle in failure), None)


def explain(failure: str) -> str:
    """A query failure for the log and the status file: its first line, led by the cause and what to
    do when the text shows a cause users can act on.

    >>> explain("StreamingQueryException: boom\\n  at x")
    'StreamingQueryException: boom'
    >>> explain("Job aborted\\nCaused by: java.io.IOException: No space left on device")[:40]
    'the disk is full (No space left on devic'
    """
    first = failure.strip().splitlines()[0][:500] if failure.strip() else "unknown failure"
    for needle, advice in _CAUSES:
        if needle in failure:
            return f"{advice}. {first}"
    return first


def read_status(path: Path) -> Status | None:
    """The last status written, or None when there is none."""
    try:
        payload = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return Status(
        written_at=float(payload["written_at"]),
        queries=[QueryHealth(**q) for q in payload["queries"]],
        phase=str(payload.get("phase") or "running"),
        started_at=payload.get("started_at"),
        pid=payload.get("pid"),
    )


#: the status file's rows of the alert publisher: its real-time and micro-batch query, and the row a
#: separate publisher application is reported by
PUBLISHER_ROWS = frozenset({"alerts_realtime", "alerts", "alert-data"})
#: the status file's queries that are not lake queries: the stateful ones and the publisher's
NOT_LAKE = PUBLISHER_ROWS | {"episodes"}


def lake_has_written(status: Status) -> bool:
    """Whether each lake query of the status has finished a batch (the stateful queries and the
    alert publisher aside: they are not what the dashboard's first data waits for).

    >>> def q(name, batch):
    ...     return QueryHealth(name, batch, "", 0, 0.0, 0.0, 0, None, "", None)
    >>> lake_has_written(Status(0.0, [q("lake", -1), q("episodes", 0), q("alerts_realtime", -1)]))
    False
    >>> lake_has_written(Status(0.0, [q("lake", 0), q("episodes", -1)]))
    True
    >>> lake_has_written(Status(0.0, [q("episodes", 3)]))  # no lake query here
    False
    """
    lake = [q for q in status.queries if q.name not in NOT_LAKE]
    return bool(lake) and all(q.batch >= 0 for q in lake)


def started_up(status: Status) -> bool:
    """Whether the lake has written (:func:`lake_has_written`) and every other query of the stream
    has finished a batch too, the alert publisher aside (a real-time query reports no batch until it
    ends one): the stateful query, started after the lake's first batch, starts its Python workers in
    its own first batch, and Spark gives such a worker 10 s to connect back.

    >>> def q(name, batch):
    ...     return QueryHealth(name, batch, "", 0, 0.0, 0.0, 0, None, "", None)
    >>> started_up(Status(0.0, [q("lake", 0), q("episodes", -1), q("alerts_realtime", -1)]))
    False
    >>> started_up(Status(0.0, [q("lake", 0), q("episodes", 0), q("alerts_realtime", -1)]))
    True
    >>> started_up(Status(0.0, [q("lake", 2)]))  # no stateful query in this stream
    True
    """
    return lake_has_written(status) and all(q.batch >= 0 for q in status.queries if q.name not in PUBLISHER_ROWS)


def drop_stale_status(path: Path) -> bool:
    """Remove a status file whose writer no longer runs (left by an earlier run); True if removed."""
    import psutil

    status = read_status(path)
    if status is None or (status.pid is not None and psutil.pid_exists(status.pid)):
        return False
    path.unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class Health:
    banner: str | None  # what is wrong (or under way), in one sentence; None when all is well
    queries: list[QueryHealth]
    updated: dt.datetime | None
    level: str = "error"  # how the banner is shown: "error", or "info" for a pipeline starting up


def pipeline_health(status: Status | None, broker_up: bool, now: dt.datetime, writer_alive: bool | None) -> Health:
    """The pipeline's state from its status file, whether its writer still runs (None: unknown, it
    runs on another machine) and whether the broker answers. A file left by an earlier run (its
    writer gone, or stopped) says the pipeline is not running; a pipeline starting up says so."""
    problems = []
    if not broker_up:
        problems.append("Kafka does not answer: live feeds are paused")
    if status is None:
        problems.append("the streaming pipeline has not reported (is `fleetstream stream` running?)")
        return Health("; ".join(problems), [], None)
    updated = dt.datetime.fromtimestamp(status.written_at, dt.UTC)
    age = now.timestamp() - status.written_at
    queries = status.queries
    if status.phase == "stopped":
        problems.append(f"the streaming pipeline stopped at {updated:%H:%M:%S} UTC")
    elif writer_alive is False or (status.phase == "running" and age > STATUS_STALE_S):
        problems.append(f"the streaming pipeline last reported {age:.0f} s ago: it is not running")
    elif status.phase == "starting" and not problems:
        since = now.timestamp() - (status.started_at or status.written_at)
        return Health(f"the streaming pipeline is starting ({since:.0f} s)", queries, updated, "info")
    failed = [q.name for q in queries if q.state == "failed"]
    if failed:
        problems.append(f"failed queries: {', '.join(failed)}")
    restarting = [q.name for q in queries if q.state == "restarting"]
    if restarting:
        problems.append(f"restarting after a service was out of reach: {', '.join(restarting)}")
    return Health("; ".join(problems) or None, queries, updated)
