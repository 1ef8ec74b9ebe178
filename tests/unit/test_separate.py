"""The alert-data publisher in an application of its own: who starts it, its rows in the parent's
status, its stop when the parent is gone (which application runs it: tests/unit/test_plan.py; the
end-to-end run is tests/integration/test_separate_alert_app.py)."""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from fleetstream.local import process
from fleetstream.pipeline import separate
from fleetstream.pipeline.monitor import QueryHealth, read_status, write_status
from fleetstream.pipeline.supervise import supervise


def test_publisher_argv_carries_the_parents_choices(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    argv = separate.publisher_argv("microbatch", 1.0, 60, "spark://h:7077", rules)
    assert argv[:3] == [sys.executable, "-m", "fleetstream"]
    assert argv[3:] == [
        "stream", "--only", "alert-data", "--alerts-mode", "microbatch", "--alerts-trigger-seconds", "1",
        "--realtime-checkpoint-seconds", "60", "--master", "spark://h:7077", "--rules", str(rules.resolve()),
    ]  # fmt: skip


def _row(name: str) -> QueryHealth:
    return QueryHealth(name, 3, "2026-01-01T00:00:00.000Z", 10, 5.0, 5.0, 100, 0, "records", None)


def test_publisher_rows_are_its_status_while_it_runs_and_failed_once_it_exits(tmp_path: Path) -> None:
    status = tmp_path / separate.PUBLISHER_STATUS_FILE
    service = process.spawn("child", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "c.log", "-")
    try:
        assert separate.publisher_rows(service, status) == []  # not reported yet, alive: nothing to show
        write_status(status, [_row("alerts")], time.time())
        assert [(r.name, r.state) for r in separate.publisher_rows(service, status)] == [("alerts", "running")]
    finally:
        process.stop(service, timeout=5, group=False)
    rows = separate.publisher_rows(service, status)
    assert [(r.name, r.state) for r in rows] == [("alerts", "failed")]
    assert rows[0].error is not None
    assert str(tmp_path / "c.log") in rows[0].error
    status.unlink()
    rows = separate.publisher_rows(service, status)
    assert [(r.name, r.state) for r in rows] == [("alert-data", "failed")]


def test_a_live_child_stays_alive_when_the_wall_clock_steps(tmp_path: Path) -> None:
    """A live child is found by the kernel's start tick even when its wall-clock start time reads
    an hour off, as after a clock step (CI once saw a live publisher and Spark master taken for gone)."""
    service = process.spawn("child", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "c.log", "-")
    try:
        assert service.start_ticks is not None
        stepped = dataclasses.replace(service, create_time=service.create_time - 3600)  # as read after a step
        assert stepped.alive()
        assert not dataclasses.replace(service, start_ticks=service.start_ticks + 1).alive()  # a reused pid
        assert not dataclasses.replace(stepped, start_ticks=None).alive()  # an old record: wall clock only
        assert dataclasses.replace(service, start_ticks=None).alive()
    finally:
        process.stop(service, timeout=5, group=False)
    assert not service.alive()


def test_stop_of_a_leader_only_leaves_no_process_behind(tmp_path: Path) -> None:
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    service = process.spawn("leader", [sys.executable, "-c", code], tmp_path / "l.log", "-")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not psutil.Process(service.pid).children():
        time.sleep(0.1)
    members = [psutil.Process(service.pid), *psutil.Process(service.pid).children(recursive=True)]
    assert len(members) == 2
    process.stop(service, timeout=2, group=False)
    assert not [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_parent_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(separate.PARENT_ENV, raising=False)
    assert not separate.parent_gone()  # not a child: never
    monkeypatch.setenv(separate.PARENT_ENV, str(os.getppid()))
    assert not separate.parent_gone()
    monkeypatch.setenv(separate.PARENT_ENV, str(os.getppid() + 100_000))  # re-parented: the parent is gone
    assert separate.parent_gone()


def test_supervise_stops_when_the_other_application_fails_and_shows_its_rows(tmp_path: Path) -> None:
    status = tmp_path / "stream-status.json"
    failed = QueryHealth("alerts", -1, "", 0, 0.0, 0.0, 0, None, "", None, state="failed", error="exited")
    console = Console(file=io.StringIO())
    assert supervise([], status, console, interval_s=0.05, others=lambda: [failed]) == 1
    seen: list[str] = []

    def written() -> bool:  # stop once the status file has been written once, noting what it holds
        got = read_status(status)
        if got is None:
            return False
        seen.extend(q.name for q in got.queries)
        return True

    status.unlink()
    assert supervise([], status, console, interval_s=0.05, others=lambda: [_row("alerts")], stop_when=written) == 0
    assert seen == ["alerts"]


class _Query:
    """What the supervisor asks of a query, for one that is running and has done no batch."""

    def __init__(self, name: str) -> None:
        self.name, self.isActive, self.lastProgress, self.stopped = name, True, None, False

    def exception(self) -> None:
        return None

    def stop(self) -> None:
        self.stopped = True


def test_queries_started_later_join_the_status_and_are_stopped_with_the_rest(tmp_path: Path) -> None:
    """A live start holds the stateful queries back until the lake's first batch
    (``Streams.start_deferred``): the supervisor asks at every turn, and what starts joins the others."""
    status = tmp_path / "stream-status.json"
    lake, episodes = _Query("lake"), _Query("episodes")
    asked: list[int] = []

    def later() -> list[Any]:
        asked.append(1)
        return [episodes] if len(asked) == 3 else []

    def both_written() -> bool:
        got = read_status(status)
        return got is not None and [q.name for q in got.queries] == ["lake", "episodes"]

    queries: list[Any] = [lake]
    assert supervise(queries, status, Console(file=io.StringIO()), interval_s=0.05, stop_when=both_written,
                     later=later) == 0  # fmt: skip
    assert len(asked) >= 3
    assert queries == [lake, episodes]
    assert lake.stopped
    assert episodes.stopped
