"""Episodes: a rule's lifecycle for one car, as a pure state machine over its events (no Spark).

An episode of a rule for a car goes through these phases, judged on event time:

- **pending**: the condition holds at an event; it has not held ``for`` yet. An event where it does
  not hold ends the pending phase with no episode.
- **open**: it has held ``for`` (``opened``). Each event where it holds counts toward the
  episode's events and peaks. ``repeat_every`` after the last notification it is notified again
  (``repeated``); ``escalate`` raises its severity with its duration (``escalated``).
- **resolved**: the rule has been clear (the clear condition holds: by default, the condition does
  not) for ``clear_for`` (``resolved``). Between the two conditions (hysteresis) it stays open and
  the clear time starts again.

The episode id is derived from the car, the rule and the event where the condition first held, so
the same input gives the same ids after a restart. An event older than the last one seen for the
car (out of order) adds to an open episode's events and peaks but moves no phase.

>>> from fleetstream.rules.engine import Lifecycle
>>> machine = Machine("overspeed", "high", Lifecycle(for_s=2.0, clear_for_s=2.0))
>>> state, out = None, []
>>> for t, fires in enumerate([True, True, True, False, False, False]):
...     event = Event(f"e{t}", t * 1000, fires, not fires, 130.0 if fires else 90.0, 3000, 90.0)
...     state, said = machine.step(state, event)
...     out += [(t, u.lifecycle) for u in said]
>>> out
[(2, 'opened'), (5, 'resolved')]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fleetstream.rules.engine import SEVERITIES

if TYPE_CHECKING:
    from fleetstream.rules.engine import Lifecycle

#: what an update says: the first four go to alert-data; ``updated`` (a changed open episode with
#: nothing to notify) only refreshes its row in silver/alert_episodes
LIFECYCLES = ("opened", "repeated", "escalated", "resolved", "updated")


def episode_id(car_id: str, rule: str, first_event_id: str) -> str:
    """32 hex digits of SHA-256 of ``car:rule:first event``.

    >>> episode_id("car-1", "overspeed", "a1-0-7")
    'dda328bf26086c66e892f4eddaa09ea3'
    """
    return hashlib.sha256(f"{car_id}:{rule}:{first_event_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Event:
    """One silver event as a rule sees it: whether its condition holds and whether it is clear."""

    event_id: str
    event_time: int  # ms
    fires: bool
    clears: bool
    speed: float | None
    rpm: int | None
    coolant: float | None


@dataclass(frozen=True)
class Episode:
    """A rule's state for one car: a pending or open episode (no state: none)."""

    episode_id: str
    phase: str  # "pending" or "open"
    severity: str
    started_at: int  # the event time the condition first held
    last_seen_at: int  # the last event time it held
    last_event_at: int  # the last event time seen for the car (any)
    events: int  # events where it held
    peak_speed: float | None
    peak_rpm: int | None
    peak_coolant: float | None
    opened_at: int | None = None
    clear_since: int | None = None
    notified_at: int | None = None

    def seen(self, event: Event) -> Episode:
        """Counted: one more event where the condition held, and the peaks."""
        return replace(
            self,
            events=self.events + 1,
            last_seen_at=max(self.last_seen_at, event.event_time),
            peak_speed=_max(self.peak_speed, event.speed),
            peak_rpm=_max(self.peak_rpm, event.rpm),
            peak_coolant=_max(self.peak_coolant, event.coolant),
        )


def _max(a: float | int | None, b: float | int | None):  # type: ignore[no-untyped-def]
    if a is None:
        return b
    return a if b is None else max(a, b)


@dataclass(frozen=True)
class Update:
    """What an episode's row says after a change: the episode and the lifecycle step."""

    lifecycle: str
    episode: Episode
    resolved_at: int | None = None
    cleared_at: int | None = None


class Machine:
    """One rule's lifecycle (``name``, base ``severity``, :class:`Lifecycle`) applied to one car's events."""

    def __init__(self, name: str, severity: str, lifecycle: Lifecycle) -> None:
        self.name, self.severity, self.lifecycle = name, severity, lifecycle
        self.for_ms = round(lifecycle.for_s * 1000)
        self.clear_ms = round(lifecycle.clear_for_s * 1000)
        self.repeat_ms = None if lifecycle.repeat_every_s is None else round(lifecycle.repeat_every_s * 1000)
        self.steps = [(round(e.after_s * 1000), e.severity) for e in lifecycle.escalate]

    def step(self, state: Episode | None, event: Event, car_id: str = "") -> tuple[Episode | None, list[Update]]:
        """The state after ``event`` and what it notifies."""
        if state is not None and event.event_time < state.last_event_at:  # out of order: count only
            if state.phase == "open" and event.fires:
                return state.seen(event), []
            return state, []
        if state is None:
            if not event.fires:
                return None, []
            state = Episode(
                episode_id(car_id, self.name, event.event_id), "pending", self.severity, event.event_time,
                event.event_time, event.event_time, 1, event.speed, event.rpm, event.coolant,
            )  # fmt: skip
            return self._maybe_open(state, event)
        state = replace(state, last_event_at=event.event_time)
        if state.phase == "pending":
            if not event.fires:
                return None, []
            return self._maybe_open(state.seen(event), event)
        if event.fires:
            state = replace(state.seen(event), clear_since=None)
        elif event.clears:
            since = state.clear_since if state.clear_since is not None else event.event_time
            if event.event_time - since >= self.clear_ms:
                return None, [Update("resolved", state, resolved_at=event.event_time, cleared_at=since)]
            state = replace(state, clear_since=since)
        else:  # between the two conditions: still open, the clear time starts again
            state = replace(state, clear_since=None)
        return self._notify(state, event)

    def _maybe_open(self, state: Episode, event: Event) -> tuple[Episode | None, list[Update]]:
        if event.event_time - state.started_at < self.for_ms:
            return state, []
        state = replace(state, phase="open", opened_at=event.event_time, notified_at=event.event_time)
        return state, [Update("opened", state)]

    def _escalate(self, state: Episode, now: int) -> tuple[Episode, bool]:
        assert state.opened_at is not None
        due = [sev for after, sev in self.steps if now - state.opened_at >= after]
        if due and SEVERITIES.index(due[-1]) > SEVERITIES.index(state.severity):
            return replace(state, severity=due[-1]), True
        return state, False

    def _notify(self, state: Episode, event: Event) -> tuple[Episode, list[Update]]:
        state, escalated = self._escalate(state, event.event_time)
        if escalated:
            return replace(state, notified_at=event.event_time), [Update("escalated", state)]
        assert state.notified_at is not None
        if self.repeat_ms is not None and event.event_time - state.notified_at >= self.repeat_ms:
            state = replace(state, notified_at=event.event_time)
            return state, [Update("repeated", state)]
        return state, []
