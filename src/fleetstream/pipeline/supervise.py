"""Watching running queries: a live table on a terminal (log lines otherwise), the status file the
dashboard reads, optional gold snapshots (``--console``), and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery
from rich.console import Console
from rich.live import Live
from rich.table import Table

from fleetstream.pipeline.monitor import QueryHealth, explain, summarize, transient, write_status

log = logging.getLogger("fleetstream")
RESTARTS = 10  # restarts of a query in a row, without a batch done between them, before the stream stops


def health(query: StreamingQuery) -> QueryHealth:
    failure = query.exception()
    progress = query.lastProgress or {"name": query.name, "batchId": -1}
    if failure is not None:
        return summarize(progress, state="failed", error=explain(str(failure)))
    return summarize(progress, state="running" if query.isActive else "stopped")


def backoff_s(attempt: int) -> float:
    """The wait before a query's ``attempt``-th restart in a row: 5 s, doubled each time, at most 60 s
    (ten restarts span about 7 minutes).

    >>> [backoff_s(n) for n in (1, 2, 3, 4, 5, 10)]
    [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    """
    return min(60.0, 5.0 * 2.0 ** (attempt - 1))


def failure_text(query: StreamingQuery) -> str | None:
    """The whole text of a query's failure (its JVM stack trace too), or None when it has not failed."""
    failure = query.exception()
    if failure is None:
        return None
    # the message alone may not name the exception's class (a Kafka TimeoutException's does not), and
    # the query's exception's own trace has no "Caused by": its cause's (a JVM exception) has them all
    cause = getattr(failure, "_cause", None)
    texts = [str(failure), getattr(failure, "_stackTrace", None) or "", getattr(cause, "_stackTrace", None) or ""]
    return "\n".join(texts)


class Restarts:
    """Queries that failed on a passing cause (:func:`~fleetstream.pipeline.monitor.transient`: a
    service out of reach for a while, a machine too busy to start a Python worker in Spark's 10 s) are
    started again from their checkpoints, after
    :func:`backoff_s`; up to :data:`RESTARTS` times in a row, the count reset by each batch done."""

    def __init__(self, restart: Callable[[StreamingQuery], StreamingQuery]) -> None:
        self.restart = restart
        self.attempts: dict[str, int] = {}
        self.due: dict[str, tuple[float, str]] = {}  # query name -> (when, why)

    def tend(self, queries: list[StreamingQuery], now: float) -> None:
        """Schedule the restart of queries that failed transiently; restart those due (in place)."""
        for i, query in enumerate(queries):
            name = query.name
            if name in self.due:
                when, _ = self.due[name]
                if now >= when:
                    del self.due[name]
                    if query.isActive:  # (still stopping, its checkpoint in use: waited for)
                        query.stop()
                    log.info("restarting query %s from its checkpoint", name)
                    queries[i] = self.restart(query)
                continue
            # a failed query has its exception before it stops being active (it stops its sources
            # first, seconds for a stateful one): judged by the exception, as health() judges it
            if query.exception() is None:
                if query.isActive and name in self.attempts and query.lastProgress is not None:
                    log.info("query %s runs again (after %d restarts)", name, self.attempts.pop(name))
                continue
            text = failure_text(query)
            attempt = self.attempts.get(name, 0) + 1
            kind = None if text is None else transient(text)
            if text is None or kind is None or attempt > RESTARTS:
                continue
            self.attempts[name] = attempt
            wait = backoff_s(attempt)
            why = explain(text)
            self.due[name] = (now + wait, why)
            log.warning(
                "query %s failed, %s (%s): restarting it in %.0f s (restart %d of at most %d in a row)",
                name, kind, why, wait, attempt, RESTARTS,
            )  # fmt: skip

    def health(self, query: StreamingQuery) -> QueryHealth:
        if query.name not in self.due:
            return health(query)
        when, why = self.due[query.name]
        progress = query.lastProgress or {"name": query.name, "batchId": -1}
        left = max(0.0, when - time.monotonic())
        return summarize(progress, state="restarting", error=f"restarting in {left:.0f} s: {why}")


def health_table(rows: list[QueryHealth]) -> Table:
    table = Table(title="fleetstream stream", title_justify="left")
    for column in ("query", "batch", "in rows/s", "processed rows/s", "batch ms", "lag", "watermark", "state"):
        table.add_column(column, justify="left" if column in ("query", "watermark", "state") else "right")
    for h in rows:
        lag = "-" if h.lag is None else f"{h.lag:,} {h.lag_unit}"
        table.add_row(
            h.name, str(h.batch), f"{h.input_per_s:,.0f}", f"{h.processed_per_s:,.0f}", f"{h.batch_ms:,}", lag,
            (h.watermark or "-").replace("T", " ").replace(".000Z", "Z"), h.state,
        )  # fmt: skip
    return table


def rows_table(title: str, rows: list[dict[str, object]]) -> Table:
    """A small table of records (the gold snapshots printed by ``--console``)."""
    table = Table(title=title, title_justify="left")
    for column in rows[0] if rows else ["(no rows yet)"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row.values()])
    return table


def supervise(
    queries: list[StreamingQuery],
    status_path: Path,
    console: Console,
    interval_s: float = 2.0,
    log_every_s: float = 10.0,
    snapshot: Callable[[], list[Table]] | None = None,
    snapshot_every_s: float = 10.0,
    others: Callable[[], list[QueryHealth]] | None = None,
    stop_when: Callable[[], bool] | None = None,
    started_at: float | None = None,
    restart: Callable[[StreamingQuery], StreamingQuery] | None = None,
    later: Callable[[], list[StreamingQuery]] | None = None,
) -> int:
    """Until Ctrl-C/SIGTERM, ``stop_when()`` or a query fails: refresh the display and the status
    file. Then stop every query and return the exit code (0 on a requested stop, 1 when a query
    failed). ``others`` gives the rows of queries another application runs for this one (the
    alert-data publisher): shown and written with these, and their failure stops these too.
    ``started_at``: when this process started (written to the status file with its pid).
    ``restart``: starts a query again (from its checkpoint); given, a query that failed because a
    service was out of reach is restarted (:class:`Restarts`) instead of stopping the others.
    ``later``: called at every turn, the queries it starts (held back at the start) join these."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    live = Live(console=console, refresh_per_second=1, transient=True) if console.is_terminal else None
    last_log = last_snapshot = time.monotonic()
    code = 0
    restarts = Restarts(restart) if restart is not None else None
    try:
        if live is not None:
            live.__enter__()
        while True:
            if stop_when is not None and stop_when():
                log.info("stopping: the application that started this one is gone")
                break
            if later is not None:
                queries.extend(later())
            if restarts is not None:
                restarts.tend(queries, time.monotonic())
            rows = [restarts.health(q) if restarts else health(q) for q in queries] + (others() if others else [])
            write_status(status_path, rows, time.time(), "running", started_at, os.getpid())
            failed = [h for h in rows if h.state == "failed"]
            if failed:
                for h in failed:
                    log.error("query %s failed: %s", h.name, h.error)
                code = 1
                break
            now = time.monotonic()
            if snapshot is not None and now - last_snapshot >= snapshot_every_s:
                last_snapshot = now
                for table in snapshot():
                    console.print(table)
            if live is not None:
                live.update(health_table(rows))
            elif now - last_log >= log_every_s:
                last_log = now
                for h in rows:
                    log.info(
                        "%s: batch %d, %.0f rows/s in, %.0f rows/s processed, batch %d ms, lag %s",
                        h.name, h.batch, h.input_per_s, h.processed_per_s, h.batch_ms,
                        "-" if h.lag is None else f"{h.lag} {h.lag_unit}",
                    )  # fmt: skip
            if stop.wait(interval_s):
                break
    finally:
        if live is not None:
            live.__exit__(None, None, None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopping %d queries", len(queries))
        active = SparkSession.getActiveSession()
        if code == 0 and active is not None:
            # A stop cancels the running tasks (a real-time query's always); Spark logs that as errors.
            active.sparkContext.setLogLevel("FATAL")
            # py4j logs the interruption of a batch under way (pipeline.stream.stoppable) as an error
            logging.getLogger("py4j").setLevel(logging.CRITICAL)
        for query in queries:
            query.stop()
        write_status(status_path, [health(q) for q in queries], time.time(), "stopped", started_at, os.getpid())
    return code
