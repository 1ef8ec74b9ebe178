"""What `fleetstream notify` says, built from the lake's rows (pure: frames in, messages out).

A summary covers the closed one-minute windows since the last one sent: alerts by rule and by color
from ``gold/alerts_per_minute`` (the same counts, so a summary can be checked against the table),
the cars with the most alerts from ``silver/alerts``, and the episodes opened and resolved from
``gold/episodes_per_minute``. Critical alerts are gathered over a short window into one message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

TOP_CARS = 5
#: critical alerts listed one per line in a message; the rest are counted
CRITICAL_LINES = 10


@dataclass(frozen=True)
class Message:
    """One notification, rendered for each kind of channel. ``id`` is stable for the same content,
    so a receiver can drop a repeat (a retry, or a run resumed after a failure)."""

    id: str
    kind: str  # summary | critical | test
    text: str  # plain text (Slack, the webhook)
    html: str  # Telegram's HTML subset
    data: dict[str, Any] = field(default_factory=dict)


def message_id(kind: str, key: str) -> str:
    """The kind and a hash of what the message covers.

    >>> message_id("summary", "2026-01-01T00:00:00+00:00")
    'summary-803b839ec8dc70ee'
    """
    return f"{kind}-{hashlib.sha256(f'{kind}|{key}'.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Summary:
    start: dt.datetime
    end: dt.datetime
    alerts: int
    by_rule: dict[str, int]
    by_color: dict[str, int]
    top_cars: list[tuple[str, int]]
    opened: dict[str, int]
    resolved: dict[str, int]


def _counts(frame: pl.DataFrame | None, key: str, value: str) -> dict[str, int]:
    if frame is None or frame.height == 0:
        return {}
    grouped = frame.group_by(key).agg(pl.col(value).sum()).sort([value, key], descending=[True, False])
    return {str(k): int(v) for k, v in grouped.iter_rows() if v}


def summarize(
    start: dt.datetime,
    end: dt.datetime,
    per_minute: pl.DataFrame | None,
    alerts: pl.DataFrame | None,
    episodes: pl.DataFrame | None,
) -> Summary:
    """The windows ``start`` <= window_start < ``end`` of ``gold/alerts_per_minute`` (rule, color,
    alerts), the cars of ``silver/alerts`` rows whose event is in the range, and ``gold/episodes_per_minute``
    (rule, opened, resolved) of the range; each frame already cut to the range, or None.

    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> apm = pl.DataFrame({"rule": ["overspeed", "overspeed", "engine_stress"], "color": ["Red", "Blue", "Red"],
    ...                     "alerts": [3, 1, 2]})
    >>> s = summarize(t, t + dt.timedelta(minutes=1), apm, pl.DataFrame({"car_id": ["c1", "c1", "c2"]}), None)
    >>> s.alerts, s.by_rule, s.by_color, s.top_cars
    (6, {'overspeed': 4, 'engine_stress': 2}, {'Red': 5, 'Blue': 1}, [('c1', 2), ('c2', 1)])
    """
    cars = Counter(alerts["car_id"].to_list()) if alerts is not None and alerts.height else Counter()
    top = sorted(cars.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CARS]
    by_rule = _counts(per_minute, "rule", "alerts")
    return Summary(
        start=start,
        end=end,
        alerts=sum(by_rule.values()),
        by_rule=by_rule,
        by_color=_counts(per_minute, "color", "alerts"),
        top_cars=[(str(c), int(n)) for c, n in top],
        opened=_counts(episodes, "rule", "opened"),
        resolved=_counts(episodes, "rule", "resolved"),
    )


def _span(start: dt.datetime, end: dt.datetime) -> str:
    minutes = round((end - start).total_seconds() / 60)
    first = start.strftime("%Y-%m-%d %H:%M")
    return f"{first} UTC (1 minute)" if minutes == 1 else f"{first} to {end:%H:%M} UTC ({minutes} minutes)"


def _pairs(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


def summary_message(s: Summary) -> Message:
    """The summary for every channel.

    >>> t = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    >>> m = summary_message(Summary(t, t + dt.timedelta(minutes=1), 3, {"overspeed": 3}, {"Red": 3},
    ...                             [("car-1", 3)], {"overspeed": 1}, {}))
    >>> print(m.text)
    fleetstream: 3 alerts, 2026-01-01 12:00 UTC (1 minute)
    by rule: overspeed 3
    by color: Red 3
    top cars: car-1 3
    episodes opened: overspeed 1; resolved: none
    """
    lines = [
        ("by rule", _pairs(s.by_rule)),
        ("by color", _pairs(s.by_color)),
        ("top cars", ", ".join(f"{c} {n:,}" for c, n in s.top_cars) or "none"),
    ]
    head = f"fleetstream: {s.alerts:,} alerts, {_span(s.start, s.end)}"
    episodes = f"episodes opened: {_pairs(s.opened)}; resolved: {_pairs(s.resolved)}"
    text = "\n".join([head, *(f"{k}: {v}" for k, v in lines), episodes])
    body = "\n".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in lines)
    rich = f"<b>{html.escape(head)}</b>\n{body}\n{html.escape(episodes)}"
    data = {
        "start": s.start.isoformat(),
        "end": s.end.isoformat(),
        "alerts": s.alerts,
        "by_rule": s.by_rule,
        "by_color": s.by_color,
        "top_cars": [{"car_id": c, "alerts": n} for c, n in s.top_cars],
        "episodes_opened": s.opened,
        "episodes_resolved": s.resolved,
    }
    return Message(message_id("summary", f"{s.start.isoformat()}|{s.end.isoformat()}"), "summary", text, rich, data)


def _critical_line(alert: Mapping[str, Any]) -> str:
    what = alert.get("message") or alert.get("rule", "?")
    step = f" ({alert['lifecycle']})" if alert.get("lifecycle") else ""
    peak = ""
    if alert.get("peak_speed") is not None:
        peak = f", peak {float(alert['peak_speed']):.0f} km/h"
    elif alert.get("speed") is not None:
        peak = f", {float(alert['speed']):.0f} km/h"
    return f"{alert.get('car_id', '?')} {alert.get('rule', '?')}{step}: {what}{peak}"


def critical_message(alerts: Iterable[Mapping[str, Any]]) -> Message | None:
    """One message for the critical alerts gathered in a window (None when there are none). An
    episode's steps count once (its newest); the first :data:`CRITICAL_LINES` are listed.

    >>> m = critical_message([{"car_id": "c1", "rule": "overspeed", "severity": "critical", "episode_id": "e1",
    ...                        "lifecycle": "opened", "message": "speed above limit", "peak_speed": 151.0},
    ...                       {"car_id": "c1", "rule": "overspeed", "severity": "critical", "episode_id": "e1",
    ...                        "lifecycle": "repeated", "message": "speed above limit", "peak_speed": 160.0}])
    >>> print(m.text)
    fleetstream: 1 critical alert
    c1 overspeed (repeated): speed above limit, peak 160 km/h
    """
    newest: dict[str, Mapping[str, Any]] = {}
    for a in alerts:
        key = str(a.get("episode_id") or a.get("event_id") or json.dumps(a, sort_keys=True, default=str))
        newest[key] = a
    if not newest:
        return None
    items = list(newest.values())
    lines = [_critical_line(a) for a in items[:CRITICAL_LINES]]
    more = len(items) - len(lines)
    head = f"fleetstream: {len(items)} critical alert{'s' if len(items) != 1 else ''}"
    tail = [f"... and {more} more"] if more > 0 else []
    text = "\n".join([head, *lines, *tail])
    rich = "\n".join([f"<b>{html.escape(head)}</b>", *(html.escape(x) for x in lines + tail)])
    key = ",".join(sorted(f"{k}|{a.get('lifecycle', '')}|{a.get('as_of') or a.get('event_time', '')}"
                          for k, a in newest.items()))  # fmt: skip
    return Message(message_id("critical", key), "critical", text, rich, {"alerts": [dict(a) for a in items]})
