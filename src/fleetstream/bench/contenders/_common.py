"""What every contender process shares: the READY line and a clean stop on SIGTERM / SIGINT."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

READY = "READY"


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (the bench stops contenders with SIGTERM)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def ready() -> None:
    print(READY, flush=True)


def serve_queries(queries: Iterable[Any]) -> int:
    """Wait until every (micro-batch) query has finished a batch, say READY, run until stopped.
    Returns the exit code (1 if a query failed)."""
    queries = list(queries)
    stop = stop_event()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not stop.is_set():
        if all(q.lastProgress is not None for q in queries):
            break
        time.sleep(0.5)
    ready()
    failed = None
    logged = time.monotonic()
    while not stop.is_set() and failed is None:
        failed = next((q for q in queries if q.exception() is not None), None)
        stop.wait(0.5)
        if time.monotonic() - logged >= 10:
            logged = time.monotonic()
            for query in queries:
                print(progress_line(query.name, query.lastProgress), file=sys.stderr, flush=True)
    for query in queries:
        try:
            query.stop()
        except Exception as exc:  # stopping the rest matters more than one stop's error
            print(f"stopping {query.name}: {exc}", file=sys.stderr, flush=True)
    if failed is not None:
        print(f"query {failed.name} failed: {failed.exception()}", file=sys.stderr, flush=True)
        return 1
    return 0


def progress_line(name: str, progress: dict[str, Any] | None) -> str:
    """One log line from a query's last progress: batch, rows, rows/s, batch time.

    >>> progress_line("silver", {"batchId": 7, "numInputRows": 1200, "processedRowsPerSecond": 950.4,
    ...                          "durationMs": {"triggerExecution": 1262}})
    '[silver] batch 7: 1200 rows, 950 rows/s, 1262 ms'
    >>> progress_line("alerts_realtime", None)
    '[alerts_realtime] no batch yet'
    """
    if not progress:
        return f"[{name}] no batch yet"
    took = (progress.get("durationMs") or {}).get("triggerExecution", 0)
    return (
        f"[{name}] batch {progress.get('batchId')}: {progress.get('numInputRows', 0)} rows, "
        f"{progress.get('processedRowsPerSecond', 0) or 0:.0f} rows/s, {took} ms"
    )
