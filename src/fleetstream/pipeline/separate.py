"""The alert-data publisher in a Spark application of its own (``fleetstream stream --separate-alert-app``).

In one application the publisher's jobs share the driver's scheduler and the two cores with the lake
queries' (bronze, silver's Delta commits, gold's windows); a long silver batch then delays alerts by
seconds. Run as a child process, the publisher has its own driver and JVM, and the lake queries run
at a lower CPU priority (``nice``), so the operating system gives the cores to alerts first and the
lake the cycles they leave (the cost: a second driver JVM; docs/benchmarks.md has the latencies).

The child is ``fleetstream stream --only alert-data`` with the parent's settings (it reads the same
environment and .env). It writes its status to a file of its own, which the parent merges into its
live table and into the status file the dashboard reads; it stops when the parent stops, and also
when the parent is gone (killed), so it is never left running alone.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from fleetstream.config import Settings
from fleetstream.local import process
from fleetstream.pipeline.monitor import QueryHealth, read_status

PARENT_ENV = "FLEETSTREAM_STREAM_PARENT_PID"
PUBLISHER_STATUS_FILE = "stream-status.alert-data.json"


def publisher_argv(
    alerts_mode: str, alerts_trigger_s: float, realtime_checkpoint_s: float, master: str | None, rules: Path | None
) -> list[str]:
    """The child's command line: the alert-data publisher alone, with the parent's choices.

    >>> publisher_argv("realtime", 0.5, 300, None, None)[3:]  # doctest: +NORMALIZE_WHITESPACE
    ['stream', '--only', 'alert-data', '--alerts-mode', 'realtime', '--alerts-trigger-seconds', '0.5',
     '--realtime-checkpoint-seconds', '300']
    """
    argv = [sys.executable, "-m", "fleetstream", "stream", "--only", "alert-data"]
    argv += ["--alerts-mode", alerts_mode, "--alerts-trigger-seconds", f"{alerts_trigger_s:g}"]
    argv += ["--realtime-checkpoint-seconds", f"{realtime_checkpoint_s:g}"]
    if master:
        argv += ["--master", master]
    if rules:
        argv += ["--rules", str(rules.resolve())]
    return argv


def start_publisher(settings: Settings, argv: list[str]) -> process.Service:
    """Start the publisher application; its output goes to <state_dir>/logs/stream-alert-data.log."""
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    (settings.state_dir / PUBLISHER_STATUS_FILE).unlink(missing_ok=True)  # no stale rows from a last run
    # In this session: the lake's `nice` then yields the cores to the publisher (across sessions,
    # Linux's autogroups share CPU time equally, whatever the nice values).
    log_path = settings.state_dir / "logs" / "stream-alert-data.log"
    return process.spawn("stream-alert-data", argv, log_path, address="-", env=env, own_session=False)


def publisher_rows(service: process.Service, status_path: Path) -> list[QueryHealth]:
    """The publisher's queries as it last reported them, or one failed row when it has exited."""
    status = read_status(status_path)
    rows = status.queries if status else []
    if service.alive():
        return rows
    error = f"the alert-data application exited; its log: {service.log}"
    if not rows:
        return [QueryHealth("alert-data", -1, "", 0, 0.0, 0.0, 0, None, "", None, state="failed", error=error)]
    return [dataclasses.replace(r, state="failed", error=r.error or error) for r in rows]


def parent_gone() -> bool:
    """True in a publisher child whose parent has exited (it was re-parented)."""
    parent = os.environ.get(PARENT_ENV)
    return bool(parent) and os.getppid() != int(parent or 0)
