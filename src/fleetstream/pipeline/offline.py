"""Vehicles offline: a car that was reporting and stops for ``offline_after_s`` seconds while the
rest of the fleet goes on opens a ``vehicle_offline`` episode; its next report resolves it.

A stateful query of its own (``offline``) over silver's table, on event-time timers
(``transformWithState`` in ``EventTime`` mode): each report moves the car's timer to its event time
plus ``offline_after_s``; the timer fires once the watermark (the newest event time silver has
seen, less ``WATERMARK_S``) passes it, which opens the episode. A silence that a batch holds whole
(two of the car's reports further apart than the offline time: a backlog, a catch-up run) is an
episode opened and resolved at once, with the same times and id the timer would have given it.
Its steps have the episodes query's shape (:mod:`fleetstream.pipeline.episodes`) and go to the
same places: ``silver/alert_episodes`` and ``alert-data``.

Why event time and not the wall clock: processing-time timers (``ProcessingTime`` mode) measure
silence from when the query saw a report, so a lake batch that takes longer than the offline time
(a cold start, a backlog) made every car "offline" at once (seen in the dashboard test); in that
mode Spark also runs a batch at every trigger and an available-now run never ends. Against the
fleet's own clock, a slow lake delays the detection instead. The price: while the whole fleet (or
the pipeline) is stopped, no car is called offline; the dashboard's banner tells that case. (When
the fleet comes back after more than the offline time, each car's silence is one episode.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyspark.sql import DataFrame, Row
from pyspark.sql.streaming.stateful_processor import (
    ExpiredTimerInfo,
    StatefulProcessor,
    StatefulProcessorHandle,
    TimerValues,
)

from fleetstream.pipeline import OFFLINE_AFTER_S
from fleetstream.pipeline.episodes import OUTPUT_SCHEMA
from fleetstream.rules.lifecycle import episode_id

RULE = "vehicle_offline"
SEVERITY = "medium"
#: how far behind the newest event time silver has seen the watermark stays (out-of-order reports)
WATERMARK_S = 10
STATE_SCHEMA = (
    "last_event_id STRING, last_event_at BIGINT, timer_at BIGINT, episode_id STRING, opened_at BIGINT, "
    "model STRING, color STRING"
)


class OfflineProcessor(StatefulProcessor):
    """Per car: its last report and its timer; the open offline episode, if any."""

    def __init__(self, offline_after_s: float = OFFLINE_AFTER_S) -> None:
        self.after_ms = round(offline_after_s * 1000)

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.car = handle.getValueState("car", STATE_SCHEMA)

    def handleInputRows(self, key: Any, rows: Iterator[Row], timerValues: TimerValues) -> Iterator[Row]:  # noqa: N802, N803 (Spark's names)
        car_id = key[0]
        reports = sorted(rows, key=lambda r: (r["event_time"], r["event_id"]))
        if not reports:
            return
        held = self.car.get() if self.car.exists() else None
        if held is not None and held[2] is not None:
            self.handle.deleteTimer(held[2])
        newest = reports[-1]
        last = None if held is None else (held[0], held[1])
        for report in reports:
            if last is not None and report["event_time"] <= last[1]:
                continue  # out of order: older than the last report seen
            if held is not None and held[3] is not None:  # it was offline (its timer fired): back online
                yield _step(car_id, held, "resolved", held[1], resolved_at=report["event_time"],
                            as_of=report["event_time"])  # fmt: skip
                held = None
            elif last is not None and report["event_time"] - last[1] > self.after_ms:
                # silent longer than the offline time between two reports of one batch (a backlog,
                # or a batch that came after the silence): opened and resolved at once
                gap = (last[0], last[1], None, episode_id(car_id, RULE, last[0]), last[1] + self.after_ms,
                       newest["model"], newest["color"])  # fmt: skip
                yield _step(car_id, gap, "opened", last[1], as_of=last[1])
                yield _step(car_id, gap, "resolved", last[1], resolved_at=report["event_time"],
                            as_of=report["event_time"])  # fmt: skip
            last = (report["event_id"], report["event_time"])
        assert last is not None
        timer = last[1] + self.after_ms
        self.handle.registerTimer(timer)
        self.car.update((*last, timer, None, None, newest["model"], newest["color"]))

    def handleExpiredTimer(  # noqa: N802 (Spark's name)
        self,
        key: Any,
        timerValues: TimerValues,  # noqa: N803
        expiredTimerInfo: ExpiredTimerInfo,  # noqa: N803
    ) -> Iterator[Row]:
        held = self.car.get() if self.car.exists() else None
        if held is None or held[3] is not None:
            return
        opened = (held[0], held[1], None, episode_id(key[0], RULE, held[0]), expiredTimerInfo.getExpiryTimeInMs(),
                  held[5], held[6])  # fmt: skip
        self.car.update(opened)
        yield _step(key[0], opened, "opened", held[1], as_of=held[1])

    def close(self) -> None:
        pass


def _step(car_id: str, held: tuple[Any, ...], lifecycle: str, last_seen: int, as_of: int,
          resolved_at: int | None = None) -> Row:  # fmt: skip
    episode = Row(
        episode_id=held[3], car_id=car_id, rule=RULE, severity=SEVERITY,
        message="the car stopped reporting", model=held[5], color=held[6], lifecycle=lifecycle,
        status="resolved" if lifecycle == "resolved" else "open", started_at=last_seen, opened_at=held[4],
        last_seen_at=last_seen, cleared_at=resolved_at, resolved_at=resolved_at, events=0, peak_speed=None,
        peak_rpm=None, peak_coolant=None, as_of=as_of,
    )  # fmt: skip
    return Row(kind="episode", episode=episode, trip=None)


def offline(silver: DataFrame, offline_after_s: float) -> DataFrame:
    """Offline episodes' steps from a stream of silver rows."""
    rows = silver.select("car_id", "event_id", "event_time", "event_ts", "model", "color")
    rows = rows.withWatermark("event_ts", f"{WATERMARK_S} seconds")
    return rows.groupBy("car_id").transformWithState(
        OfflineProcessor(offline_after_s), OUTPUT_SCHEMA, "Append", "EventTime"
    )
