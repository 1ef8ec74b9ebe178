"""Vehicles offline: a car that was reporting and stops for ``offline_after_s`` seconds while the
rest of the fleet goes on opens a ``vehicle_offline`` episode; its next report resolves it.

Part of the episodes query (``EpisodeProcessor``, :mod:`fleetstream.pipeline.episodes`), which
keeps each car's last report in a value state (:class:`Car`) anyway: one stateful query over
silver, not two (each query costs its own state commit, Python worker and Delta reads per batch).
The logic here is pure: the processor does the state's I/O.

On event-time timers: each report moves the car's timer to the time at which the fleet's clock (the
newest event time the query has seen) is ``offline_after_s + SLACK_S`` past the report; the timer
fires once the query's watermark passes it, which opens the episode. The watermark stays
``WATERMARK_S`` (episodes) behind the fleet's clock so that late reports still count for the other
rules, so the timer is set that much earlier (:meth:`Offline.timer`); a report more than ``SLACK_S``
behind the fleet's clock is not this rule's (:meth:`Offline.reports`). A silence that a batch holds
whole (two of the car's reports further apart than the offline time: a backlog, a catch-up run) is
an episode opened and resolved at once, with the same times and id the timer would have given it.
Its steps have the episodes' shape and go to the same places: ``silver/alert_episodes`` and
``alert-data``.

Why event time and not the wall clock: processing-time timers (``ProcessingTime`` mode) measure
silence from when the query saw a report, so a lake batch that takes longer than the offline time
(a cold start, a backlog) made every car "offline" at once (seen in the dashboard test); in that
mode Spark also runs a batch at every trigger and an available-now run never ends. Against the
fleet's own clock, a slow lake delays the detection instead. The price: while the whole fleet (or
the pipeline) is stopped, no car is called offline; the dashboard's banner tells that case. (When
the fleet comes back after more than the offline time, each car's silence is one episode.)
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from typing import Any

from pyspark.sql import Row

from fleetstream.pipeline.trips import Report
from fleetstream.rules.lifecycle import episode_id

RULE = "vehicle_offline"
SEVERITY = "medium"
#: how far past a car's offline time the fleet's clock must be before the car is called offline,
#: in seconds: a report up to this late (out of order) does not make it offline
SLACK_S = 10
#: a car's last report, its state-expiry timer, and its offline timer or open offline episode
CAR_SCHEMA = (
    "last_event_id STRING, last_event_at BIGINT, model STRING, color STRING, expires_at BIGINT, "
    "timer_at BIGINT, episode_id STRING, opened_at BIGINT"
)


@dataclass(frozen=True)
class Car:
    """A car's last report (the newest by event time), as the episodes processor keeps it."""

    last_event_id: str
    last_event_at: int
    model: str | None
    color: str | None
    #: the event time of its state-expiry timer (a day after its last report, on the hour)
    expires_at: int | None = None
    #: the event time of its offline timer (None: none set, or offline now)
    timer_at: int | None = None
    #: its open offline episode (None: online)
    episode_id: str | None = None
    opened_at: int | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)


class Offline:
    """The offline rule: ``after_s`` of silence (None: no car is ever called offline, the last
    report is still kept); ``watermark_s``: how far the query's watermark is behind the fleet's
    clock."""

    def __init__(self, after_s: float | None, watermark_s: float) -> None:
        self.after_ms = None if after_s is None else round(after_s * 1000)
        self.lead_ms = round((watermark_s - SLACK_S) * 1000)

    def timer(self, last_at: int) -> int | None:
        """The watermark at which a car last seen at ``last_at`` is offline: the fleet's clock is
        then the offline time and ``SLACK_S`` past its report."""
        return None if self.after_ms is None else last_at + self.after_ms - self.lead_ms

    def reports(self, car_id: str, events: list[Report], car: Car | None, watermark_ms: int) -> tuple[list[Row], Car]:
        """The offline steps of a batch of the car's reports (sorted by event time) and the car as it
        stands after them; ``watermark_ms``: the batch's watermark.

        The rule reads the reports that are at most ``SLACK_S`` behind the fleet's clock as of the
        batch before (``watermark_ms + lead_ms``); later ones are not its (the other rules read them:
        the query's watermark is far behind). A late report would otherwise resolve an episode
        before it opened, and set a timer that has passed: the car would be offline again at once.
        A car seen only in late reports is kept unwatched (no timer: its state-expiry timer only)."""
        steps: list[Row] = []
        cutoff = None if self.after_ms is None else watermark_ms + self.lead_ms
        timely = [e for e in events if cutoff is None or e["event_time"] >= cutoff]
        if not timely:
            if car is not None:
                return steps, car
            first = events[-1]
            return steps, Car(first["event_id"], first["event_time"], first["model"], first["color"])
        watched = car is not None and (car.timer_at is not None or car.episode_id is not None)
        last = None if car is None else (car.last_event_id, car.last_event_at)
        open_episode = car if car is not None and car.episode_id is not None else None
        newest = timely[-1]
        for report in timely:
            at = report["event_time"]
            if last is not None and at <= last[1]:
                continue  # out of order: older than the last report seen
            if open_episode is not None:  # it was offline (its timer fired): back online
                steps.append(_step(car_id, open_episode, "resolved", resolved_at=at, as_of=at))
                open_episode = None
            elif watched and last is not None and self.after_ms is not None and at - last[1] > self.after_ms:
                # silent longer than the offline time between two reports of one batch (a backlog,
                # or a batch that came after the silence): opened and resolved at once
                gap = Car(last[0], last[1], newest["model"], newest["color"],
                          episode_id=episode_id(car_id, RULE, last[0]), opened_at=last[1] + self.after_ms)  # fmt: skip
                steps.append(_step(car_id, gap, "opened", as_of=last[1]))
                steps.append(_step(car_id, gap, "resolved", resolved_at=at, as_of=at))
            last, watched = (report["event_id"], at), True
        assert last is not None  # (a car seen before, or a first report)
        if car is not None and last == (car.last_event_id, car.last_event_at):
            return steps, car  # only reports older than its last: nothing moves
        expires = None if car is None else car.expires_at
        return steps, Car(last[0], last[1], newest["model"], newest["color"], expires, self.timer(last[1]))

    def expired(self, car_id: str, car: Car) -> tuple[Car, Row]:
        """The car with its offline timer fired: offline since its offline time; and the step."""
        assert self.after_ms is not None
        offline = replace(car, timer_at=None, episode_id=episode_id(car_id, RULE, car.last_event_id),
                          opened_at=car.last_event_at + self.after_ms)  # fmt: skip
        return offline, _step(car_id, offline, "opened", as_of=car.last_event_at)


def _step(car_id: str, car: Car, lifecycle: str, as_of: int, resolved_at: int | None = None) -> Row:
    """An offline episode's step, in the episodes' shape: ``car`` as last seen, with the episode."""
    episode = Row(
        episode_id=car.episode_id, car_id=car_id, rule=RULE, severity=SEVERITY,
        message="the car stopped reporting", model=car.model, color=car.color, lifecycle=lifecycle,
        status="resolved" if lifecycle == "resolved" else "open", started_at=car.last_event_at,
        opened_at=car.opened_at, last_seen_at=car.last_event_at, cleared_at=resolved_at, resolved_at=resolved_at,
        events=0, peak_speed=None, peak_rpm=None, peak_coolant=None, as_of=as_of,
    )  # fmt: skip
    return Row(kind="episode", episode=episode, trip=None)
