"""`fleetstream watchdog` (the ``stream_watchdog`` DAG, every 5 minutes): is the streaming pipeline
running and keeping up? It reads what the dashboard's health page reads (the stream's status file,
the broker) and the lag each query reports, and says what is wrong; with ``--notify`` it tells the
notification channels, once per change of what is wrong (and again every ``repeat`` while it stays
wrong), and once more when all is well again. It does not restart the stream: the stream is a
service of the stack (`fleetstream run` / a process supervisor), not a task.

>>> problems(None, now=0.0, writer_alive=None, broker_up=True, max_lag=10)
['the streaming pipeline has not reported (is `fleetstream stream` running?)']
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fleetstream.config import Settings
from fleetstream.ops.summary import Message, message_id
from fleetstream.pipeline.monitor import STATUS_FILE, Status, pipeline_health, read_status

STATE_FILE = "watchdog.json"


def problems(status: Status | None, now: float, writer_alive: bool | None, broker_up: bool, max_lag: int) -> list[str]:
    """What is wrong, one sentence each (empty: all is well). A pipeline starting up is not wrong.

    >>> from fleetstream.pipeline.monitor import QueryHealth
    >>> q = QueryHealth("lake", 3, "", 0, 0.0, 0.0, 10, 90_000, "records", None)
    >>> problems(Status(written_at=100.0, queries=[q]), now=105.0, writer_alive=True, broker_up=True, max_lag=50_000)
    ['lake is 90,000 records behind its input (more than 50,000)']
    """
    health = pipeline_health(status, broker_up, dt.datetime.fromtimestamp(now, dt.UTC), writer_alive)
    found = [] if health.banner is None or health.level == "info" else [health.banner]
    for q in health.queries:
        if q.state != "failed" and q.lag is not None and q.lag_unit == "records" and q.lag > max_lag:
            found.append(f"{q.name} is {q.lag:,} records behind its input (more than {max_lag:,})")
    return found


@dataclass(frozen=True)
class Verdict:
    problems: list[str]
    message: Message | None  # what to send now, if anything


def decide(found: list[str], previous: dict[str, object], now: float, repeat_s: float) -> Verdict:
    """Whether to notify, given what the last run noted (``previous``: problems and when sent).

    >>> first = decide(["lake failed"], {}, now=0.0, repeat_s=3600)
    >>> first.message is not None, decide(["lake failed"], {"problems": ["lake failed"], "sent_at": 0.0},
    ...                                    now=60.0, repeat_s=3600).message
    (True, None)
    >>> decide([], {"problems": ["lake failed"], "sent_at": 0.0}, now=60.0, repeat_s=3600).message.kind
    'watchdog'
    """
    before = list(previous.get("problems") or [])  # type: ignore[call-overload]
    sent_at = float(previous.get("sent_at") or 0.0)  # type: ignore[arg-type]
    when = f"{dt.datetime.fromtimestamp(now, dt.UTC):%Y-%m-%d %H:%M} UTC"
    if found and (found != before or now - sent_at >= repeat_s):
        lines = "\n".join(f"- {p}" for p in found)
        text = f"fleetstream watchdog, {when}: the streaming pipeline needs attention\n{lines}"
        html = f"<b>fleetstream watchdog</b>, {when}: the streaming pipeline needs attention\n{lines}"
        key = "|".join(found) + f"|{int(now // repeat_s)}"
        return Verdict(found, Message(message_id("watchdog", key), "watchdog", text, html, {"problems": found}))
    if not found and before:
        text = f"fleetstream watchdog, {when}: the streaming pipeline is healthy again"
        html = f"<b>fleetstream watchdog</b>, {when}: the streaming pipeline is healthy again"
        return Verdict([], Message(message_id("watchdog", f"ok|{now}"), "watchdog", text, html, {"problems": []}))
    return Verdict(found, None)


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def check(settings: Settings, max_lag: int) -> list[str]:
    """What is wrong with the stream of this state directory now."""
    import psutil

    from fleetstream.ingest.kafka import broker_count

    status = read_status(settings.state_dir / STATUS_FILE)
    alive = None if status is None or status.pid is None else psutil.pid_exists(status.pid)
    return problems(status, time.time(), alive, broker_count(settings.kafka, timeout=5) > 0, max_lag)


def load_state(settings: Settings) -> dict[str, object]:
    try:
        return dict(json.loads(_state_path(settings).read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError):
        return {}


def save_state(settings: Settings, found: list[str], sent_at: float) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"problems": found, "sent_at": sent_at}), encoding="utf-8")
    os.replace(tmp, path)
