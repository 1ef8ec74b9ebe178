"""`fleetstream notify`: per-minute alert summaries and immediate critical alerts, to every channel
the settings turn on (:mod:`fleetstream.ops.channels`).

**Summaries** (``summary``, what Airflow's ``alert_summary`` DAG runs every minute): one message
covering the closed one-minute windows of ``gold/alerts_per_minute`` since the last one each channel
took. A channel's progress is kept under the state directory (``notify/summary.json``), advanced only
when it took the message; a failed channel gets the same range, with the same message id, next run.
A burst or a pause gives one message for the whole range, never one per minute; a range with no
alert sends nothing unless asked. The first run for a channel summarises the newest minute only.

**Critical alerts** (``critical``): alert-data's messages of severity ``critical`` (an escalated
episode, or a rule declared critical), read by the consumer group ``fleetstream-notify``; those
arriving within ``notify.critical_window_s`` go out as one message, and the offsets are committed
once every channel took it (at least once; the message id lets receivers drop a repeat).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from fleetstream.clients import librdkafka
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.ops.channels import Channel, SendError, channels
from fleetstream.ops.summary import Message, Summary, critical_message, summarize, summary_message

log = logging.getLogger(__name__)
UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
GROUP_ID = "fleetstream-notify"
STATE_FILE = "summary.json"
#: `critical --once` stops after this long without a record
IDLE_S = 5.0
#: `critical --once` gives up when no partition is assigned within this long
ASSIGN_TIMEOUT_S = 60.0


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / "notify" / STATE_FILE


def load_progress(settings: Settings) -> dict[str, str]:
    """Channel name -> the end (ISO) of the last range it took."""
    try:
        return dict(json.loads(_state_path(settings).read_text()))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise FleetstreamError(f"{_state_path(settings)} is not valid JSON ({exc}); remove it to start over") from None


def save_progress(settings: Settings, progress: dict[str, str]) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".summary.")
    with os.fdopen(fd, "w") as out:
        json.dump(progress, out, indent=1)
    os.replace(tmp, path)


def newest_closed_end(settings: Settings) -> dt.datetime | None:
    """The end of the newest window in gold/alerts_per_minute (its windows are closed ones)."""
    from fleetstream.lake.read import scan

    frame = scan(settings, "gold/alerts_per_minute")
    if frame is None:
        return None
    newest = frame.select(pl.col("window_end").max()).collect().item()
    return None if newest is None else newest.replace(tzinfo=UTC) if newest.tzinfo is None else newest


def read_summary(settings: Settings, start: dt.datetime, end: dt.datetime) -> Summary:
    """The summary of windows ``start`` <= window_start < ``end``, read from the lake."""
    from fleetstream.lake.read import scan

    def windows(name: str) -> pl.DataFrame | None:
        frame = scan(settings, name)
        if frame is None:
            return None
        return frame.filter((pl.col("window_start") >= start) & (pl.col("window_start") < end)).collect()

    alerts = scan(settings, "silver/alerts")
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    cars = None
    if alerts is not None:
        cars = alerts.filter((pl.col("event_time") >= start_ms) & (pl.col("event_time") < end_ms)).select(
            "car_id"
        ).collect()  # fmt: skip
    return summarize(start, end, windows("gold/alerts_per_minute"), cars, windows("gold/episodes_per_minute"))


@dataclass(frozen=True)
class Sent:
    channel: str
    message: Message | None  # None: nothing to send for that range
    start: dt.datetime
    end: dt.datetime
    error: str | None = None


def send_summaries(
    settings: Settings,
    minutes: int | None = None,
    send_empty: bool = False,
    targets: list[Channel] | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
) -> list[Sent]:
    """One summary per channel for the closed minutes it has not taken (or, with ``minutes``, the
    newest ``minutes`` closed minutes, whatever was sent before; progress is left as it was)."""
    chosen = channels(settings) if targets is None else targets
    if not chosen:
        raise FleetstreamError(
            "no notification channel is configured: set FLEETSTREAM_TELEGRAM__TOKEN and __CHAT_IDS, "
            "FLEETSTREAM_NOTIFY__SLACK_WEBHOOK_URL or FLEETSTREAM_NOTIFY__WEBHOOK_URL"
        )
    end = newest_closed_end(settings)
    if end is None:
        return [Sent(c.name, None, now(), now(), "gold/alerts_per_minute has no closed window yet") for c in chosen]
    progress = load_progress(settings)
    cache: dict[tuple[dt.datetime, dt.datetime], Message | None] = {}
    results = []
    for channel in chosen:
        if minutes is not None:
            start = end - minutes * MINUTE
        elif channel.name in progress:
            start = dt.datetime.fromisoformat(progress[channel.name])
        else:
            start = end - MINUTE
        if start >= end:
            results.append(Sent(channel.name, None, start, end))
            continue
        if (start, end) not in cache:
            summary = read_summary(settings, start, end)
            cache[(start, end)] = summary_message(summary) if summary.alerts or send_empty else None
        message = cache[(start, end)]
        try:
            if message is not None:
                channel.send(message)
        except SendError as exc:
            log.error("%s", exc)
            results.append(Sent(channel.name, message, start, end, str(exc)))
            continue
        if minutes is None:
            progress[channel.name] = end.isoformat()
            save_progress(settings, progress)
        results.append(Sent(channel.name, message, start, end))
    return results


def _critical(value: bytes | None) -> dict[str, Any] | None:
    try:
        alert = json.loads(value or b"")
    except ValueError:
        return None
    return alert if isinstance(alert, dict) and alert.get("severity") == "critical" else None


def follow_critical(
    settings: Settings,
    stop: threading.Event,
    targets: list[Channel] | None = None,
    once: bool = False,
    on_sent: Callable[[Message], None] = lambda m: None,
) -> int:
    """Send alert-data's critical alerts, gathered per window, until ``stop`` (or, ``once``, until
    the topic has nothing new); returns the messages sent. A channel that fails after its retries
    stops the command: the offsets are not committed, so a restart sends that window again."""
    from confluent_kafka import Consumer, KafkaException

    chosen = channels(settings) if targets is None else targets
    if not chosen:
        raise FleetstreamError("no notification channel is configured (see `fleetstream notify --help`)")
    kafka = settings.kafka
    try:
        consumer = Consumer({**librdkafka(kafka), "group.id": GROUP_ID, "enable.auto.commit": False,
                             "auto.offset.reset": "latest" if not once else "earliest"})  # fmt: skip
        consumer.subscribe([kafka.topics.alerts])
    except KafkaException as exc:
        raise FleetstreamError(f"cannot read {kafka.topics.alerts} from {kafka.bootstrap}: {exc}") from None
    started = time.monotonic()
    window = settings.notify.critical_window_s
    sent = 0
    assigned = False
    last = time.monotonic()  # the newest record (or the assignment): --once ends IDLE_S after it

    def drained() -> bool:
        return once and assigned and time.monotonic() - last > IDLE_S

    try:
        while not stop.is_set():
            gathered: list[dict[str, Any]] = []
            read = 0
            began = time.monotonic()
            while time.monotonic() < began + window and not stop.is_set() and not drained():
                batch = consumer.consume(500, min(1.0, max(0.05, began + window - time.monotonic())))
                if not assigned and consumer.assignment():
                    assigned, last = True, time.monotonic()
                if once and not assigned and time.monotonic() - started > ASSIGN_TIMEOUT_S:
                    raise FleetstreamError(
                        f"no partition of {kafka.topics.alerts} was assigned within {ASSIGN_TIMEOUT_S:.0f} s: "
                        f"is the topic there, and does {kafka.bootstrap} answer?"
                    )
                for record in batch:
                    if record.error() is None:
                        read += 1
                        last = time.monotonic()
                        if (alert := _critical(record.value())) is not None:
                            gathered.append(alert)
            message = critical_message(gathered)
            if message is not None:
                for channel in chosen:
                    channel.send(message)  # a SendError ends the command, uncommitted
                sent += 1
                on_sent(message)
            if read:
                try:
                    consumer.commit(asynchronous=False)
                except KafkaException as exc:  # a rebalance, or the group gone: those alerts may come again
                    log.warning("could not commit alert-data's offsets (the window may be sent again): %s", exc)
            if drained():
                break
    finally:
        consumer.close()
    return sent


def probe_message(settings: Settings) -> Message:
    """A message that says where it came from, to check the channels."""
    text = f"fleetstream: a test message from {os.uname().nodename} at {dt.datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return Message(f"test-{int(time.time())}", "test", text, text, {})
