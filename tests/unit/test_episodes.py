"""Alert episodes without a JVM: the lifecycle machine, and the transformWithState processor under
pyspark's TwsTester (state in memory, the same calls Spark makes)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from pyspark.sql import Row
from pyspark.sql.streaming.tws_tester import TwsTester

from fleetstream.errors import FleetstreamError
from fleetstream.pipeline.episodes import TEXTS, TIME_MODE, WATERMARK_S, EpisodeProcessor
from fleetstream.pipeline.offline import Car
from fleetstream.pipeline.trips import Trips
from fleetstream.rules.engine import Escalation, Lifecycle, Rule, load_rules
from fleetstream.rules.lifecycle import Event, Machine, episode_id


def drive(machine: Machine, pattern: str, start_ms: int = 0, car: str = "c1") -> list[tuple[int, str]]:
    """Feed one event per second: ``x`` the condition holds, ``.`` clear, ``~`` neither (hysteresis)."""
    state, out = None, []
    for t, mark in enumerate(pattern):
        event = Event(f"e{t}", start_ms + t * 1000, mark == "x", mark == ".", 100.0 + t, 3000, 90.0)
        state, updates = machine.step(state, event, car)
        out += [(t, u.lifecycle) for u in updates]
    return out


def test_for_delays_the_opening_and_a_break_in_the_pending_time_cancels_it() -> None:
    machine = Machine("r", "high", Lifecycle(for_s=3.0, clear_for_s=2.0))
    assert drive(machine, "xx.xxxx...") == [(6, "opened"), (9, "resolved")]


def test_clear_for_keeps_one_episode_across_short_breaks() -> None:
    machine = Machine("r", "high", Lifecycle(clear_for_s=3.0))
    assert drive(machine, "x..x....x....") == [(0, "opened"), (7, "resolved"), (8, "opened"), (12, "resolved")]


def test_between_the_conditions_the_episode_stays_open() -> None:
    machine = Machine("r", "high", Lifecycle(clear_for_s=2.0))
    assert drive(machine, "x~~~~~..~...") == [(0, "opened"), (11, "resolved")]


def test_repeat_and_escalation() -> None:
    lifecycle = Lifecycle(clear_for_s=1.0, repeat_every_s=3.0, escalate=(Escalation(5.0, "critical"),))
    machine = Machine("r", "high", lifecycle)
    assert drive(machine, "xxxxxxxxxx..") == [
        (0, "opened"),
        (3, "repeated"),
        (5, "escalated"),
        (8, "repeated"),
        (11, "resolved"),
    ]


def test_out_of_order_events_count_but_move_no_phase() -> None:
    machine = Machine("r", "high", Lifecycle(clear_for_s=1.0))
    state, _ = machine.step(None, Event("a", 5000, True, False, 130.0, 1, 1.0), "c")
    state, said = machine.step(state, Event("b", 3000, False, True, 90.0, 1, 1.0), "c")
    assert said == []
    assert state is not None
    assert state.events == 1
    state, said = machine.step(state, Event("c", 4000, True, False, 150.0, 1, 1.0), "c")
    assert said == []
    assert state is not None
    assert (state.events, state.peak_speed) == (2, 150.0)


def episode_tester(**options: float | None) -> TwsTester:
    """The processor under TwsTester, event time from ``event_time`` (shifted by 1 ms: the tester
    drops events at or before its watermark, which starts at 0, and these rows start at 0). No car
    is called offline unless ``offline_after_s`` is given (these rows' times are before the first
    watermark less the offline time: every car would be offline at once)."""
    options.setdefault("offline_after_s", None)
    return TwsTester(EpisodeProcessor(load_rules(), **options), timeMode=TIME_MODE,  # type: ignore[arg-type]
                     eventTimeExtractor=lambda r: int(r.numbers[0]) + 1)  # fmt: skip


NAMES = [r.name for r in load_rules()]  # the processor's rows carry one flag per rule, in this order
#: the names of the numbers an input row packs, in their order
PACKED = EpisodeProcessor(load_rules()).numbers


def packed(**fields: object) -> Row:
    """An input row as :func:`episode_input` shapes it, from its fields by name."""
    return Row(**{name: fields.get(name) for name in TEXTS},
               numbers=[None if fields[n] is None else float(fields[n]) for n in PACKED])  # type: ignore[arg-type]  # fmt: skip


def trip_state(tester: TwsTester, car_id: str) -> tuple[object, ...] | None:
    """The car's open trip as its value state holds it (None: no open trip, or no state)."""
    held = tester.peekValueState("car", car_id)
    return None if held is None else held[1]


def car_state(tester: TwsTester, car_id: str) -> Car | None:
    """The car's last report as its value state holds it (None: no state)."""
    held = tester.peekValueState("car", car_id)
    return None if held is None else Car(*held[0])


def bits(flags: list[bool]) -> int:
    return sum(1 << i for i, flag in enumerate(flags) if flag)


def rows(pattern: str, start_ms: int = 0, oil: list[float] | None = None) -> list[Row]:
    """Silver rows as the processor reads them, for the default rules: ``o`` overspeed, ``.`` normal;
    the oil temperature readings ``oil`` (default: a new one at each report)."""
    out = []
    for t, mark in enumerate(pattern):
        speed = 130.0 + t if mark == "o" else 80.0
        reading = oil[t] if oil is not None else 95.0 + (start_ms / 1000 + t) / 10
        fires = [mark == "o" if name == "overspeed" else name == "sensor_fault" for name in NAMES]
        clears = [mark != "o" if name == "overspeed" else name != "sensor_fault" for name in NAMES]
        out.append(packed(car_id="c1", event_id=f"e{start_ms + t}", event_time=start_ms + t * 1000, model="M",
                          color="red", speed=speed, rpm=3000, coolant_temp=90.0, engine_on=True,
                          odometer=100.0 + t * 0.03, lat=32.0, lon=34.0, fuel_level=50.0,
                          fires=bits(fires), clears=bits(clears),
                          **{f"reading_{NAMES.index('sensor_fault')}": reading}))  # fmt: skip
    return out


def test_the_processor_keeps_an_episode_open_across_batches_and_resolves_it() -> None:
    tester = episode_tester()
    output = tester.test("c1", rows("..ooo"))
    first = [r.episode for r in output if r.kind == "episode"]
    [trip] = [r.trip for r in output if r.kind == "trip"]
    assert (trip.status, trip.reports, trip.episodes) == ("open", 5, 1)  # the car's trip, with its episode
    assert [(r.lifecycle, r.rule, r.status, r.events) for r in first] == [
        ("opened", "overspeed", "open", 1), ("updated", "overspeed", "open", 3)
    ]  # fmt: skip
    assert first[0].episode_id == episode_id("c1", "overspeed", "e2")  # the first event it held at
    assert list(tester.peekMapState("episodes", "c1")) == [("overspeed",)]  # one rule held open
    # the next batch arrives in a different order: the processor sorts it by event time
    second = [
        r.episode for r in tester.test("c1", list(reversed(rows("o" + "." * 11, start_ms=5000)))) if r.kind == "episode"
    ]
    assert [(r.lifecycle, r.status, r.events, r.peak_speed) for r in second] == [("resolved", "resolved", 4, 134.0)]
    assert second[0].resolved_at - second[0].cleared_at == 10_000  # clear_for of overspeed
    assert second[0].episode_id == first[0].episode_id
    assert tester.peekMapState("episodes", "c1") == {}  # resolved: nothing held
    assert [r for r in tester.test("c1", rows("....", start_ms=60_000)) if r.kind == "episode"] == []


def test_a_frozen_reading_is_a_sensor_fault_episode_across_batches() -> None:
    """sensor_fault: the oil reading repeats the previous report's for 10 s (event time) with the
    engine on; the first reading that moves resolves it. The previous reading crosses batches in state."""
    tester = episode_tester()
    stuck = [96.0, 96.4, 97.1] + [97.3] * 8  # frozen from the fourth report on: repeats from the fifth
    first = [r.episode for r in tester.test("c1", rows("." * 11, oil=stuck)) if r.kind == "episode"]
    assert first == []  # pending: 6 repeats, 5 s
    trip = trip_state(tester, "c1")  # the last reading is kept with the open trip
    assert trip is not None
    assert (trip[-3], list(trip[-2]), trip[-1]) == (10_000, [97.3], 1)  # and the one episode pending
    second = [
        r.episode for r in tester.test("c1", rows("." * 12, start_ms=11_000, oil=[97.3] * 10 + [97.5, 97.4]))
        if r.kind == "episode"
    ]  # fmt: skip
    assert [(r.lifecycle, r.rule, r.started_at, r.opened_at) for r in second[:1]] == [
        ("opened", "sensor_fault", 4_000, 14_000)
    ]
    assert [(r.lifecycle, r.resolved_at, r.last_seen_at) for r in second[-1:]] == [("resolved", 21_000, 20_000)]
    assert tester.peekMapState("episodes", "c1") == {}
    # a reading that repeats once (a report lost between two) is not a frozen sender
    blip = [r for r in tester.test("c1", rows("." * 5, start_ms=30_000, oil=[98.0, 98.0, 98.2, 98.1, 98.3]))]
    assert [r for r in blip if r.kind == "episode"] == []


def test_an_invalid_rules_file_names_the_rule_and_the_key(tmp_path: Path) -> None:
    cases = {
        "unknown key": ("  for_ever: 1s\n", "rule 'r' has unknown key 'for_ever'"),
        "bad duration": ("  for: soon\n", "rule 'r', key 'for': 'soon' is not a duration"),
        "bad escalation": ("  escalate: [{after: 1m, severity: urgent}]\n", "rule 'r' has escalate severity 'urgent'"),
        "per-event frozen sensor": (
            "  unchanged: oil_temp\n",
            "rule 'r', key 'unchanged': such a rule raises episodes",
        ),
    }
    for extra, message in cases.values():
        path = tmp_path / "rules.yaml"
        path.write_text("rules:\n- name: r\n  condition: speed > 1\n  severity: low\n  message: m\n" + extra)
        with pytest.raises(FleetstreamError, match=message):
            load_rules(path)
    # the episodes query carries each event's rules as bits in a double: at most 53 rules
    many = "".join(f"- name: r{i}\n  condition: speed > {i}\n  severity: low\n  message: m\n" for i in range(54))
    path.write_text("rules:\n" + many)
    with pytest.raises(FleetstreamError, match="54 rules; a rules file holds at most 53"):
        load_rules(path)
    path.write_text("rules:\n" + many.split("- name: r53")[0])
    assert len(load_rules(path)) == 53


def test_a_rule_only_worth_episodes_raises_no_per_event_alert() -> None:
    rules = {r.name: r for r in load_rules()}
    assert rules["overheat"].per_event is False
    assert rules["overspeed"].per_event is True
    assert rules["overheat"].clear_expression == "coolant_temp <= 105.0"
    assert Rule("x", "a > 1", "low", "m").clear_expression == "NOT (a > 1)"


def test_trips_end_with_the_engine_or_a_gap_and_count_harsh_events() -> None:
    def report(t: int, on: bool, speed: float = 50.0) -> dict[str, object]:
        return dict(event_id=f"e{t}", event_time=t * 1000, engine_on=on, speed=speed, odometer=100.0 + t / 100,
                    lat=1.0 + t, lon=2.0, fuel_level=60.0 - t / 10, model="M", color="red")  # fmt: skip

    trips = Trips("c1", gap_ms=60_000, open_trip=None)
    events = [report(0, True, 0.0), report(1, True, 15.0), report(2, True, 2.0), report(3, True, 2.0),
              report(4, False, 0.0), report(10, True, 10.0), report(100, True, 10.0)]  # fmt: skip
    out = list(trips.feed(events, opened_at=[1500, 50_000]))
    assert [(t.status, t.started_at, t.ended_at, t.reports) for t in out] == [
        ("closed", 0, 3000, 4), ("closed", 10_000, 10_000, 1), ("open", 100_000, 100_000, 1)
    ]  # fmt: skip
    first = out[0]
    assert (first.harsh_accelerations, first.harsh_brakings, first.episodes) == (1, 1, 1)
    assert first.distance_km == pytest.approx(0.03)
    assert first.fuel_used_pct == pytest.approx(0.3)
    assert (first.start_lat, first.end_lat, first.max_speed, first.mean_speed) == (1.0, 4.0, 15.0, 4.75)
    assert trips.open is not None
    assert trips.open.started_at == 100_000
    # the next batch: an old report is not used; the trip goes on
    later = list(Trips("c1", 60_000, trips.open).feed([report(99, True), report(101, True)], []))
    assert [(t.status, t.reports) for t in later] == [("open", 2)]


#: the offline tests' first event time (2026-01-01): the watermark the offline timers are set
#: against is far behind the fleet's clock, so the times must be far from 0
EPOCH_MS = 1_767_225_600_000


def offline_tester(**options: float) -> TwsTester:
    return episode_tester(offline_after_s=30, **options)


def at(t: float) -> int:
    """Event time ``t`` seconds after EPOCH_MS."""
    return EPOCH_MS + round(t * 1000)


def clock(t: float) -> int:
    """The watermark when the newest event time the query has seen is ``at(t)``."""
    return at(t) - WATERMARK_S * 1000


def offline_steps(output: list[Row]) -> list[Row]:
    return [r.episode for r in output if r.kind == "episode" and r.episode.rule == "vehicle_offline"]


def report(t: int, car: str = "c1") -> list[Row]:
    """One report of ``car`` at ``at(t)``, as the processor reads it."""
    return [r.asDict() | {"car_id": car} for r in rows(".", start_ms=at(t))]  # type: ignore[misc]


def test_a_car_silent_while_the_fleet_goes_on_opens_an_offline_episode_and_its_next_report_resolves_it() -> None:
    """The episodes processor keeps each car's last report; when the fleet's clock is the offline
    time (30 s) and 10 s of slack past it, the car is offline (an event-time timer, set against a
    watermark that stays WATERMARK_S behind the clock)."""
    tester = offline_tester()

    def batch(*times: int) -> list[Row]:
        return offline_steps(tester.test("c1", [Row(**r) for t in times for r in report(t)]))

    assert batch(9, 8) == []  # reporting: offline once the fleet's clock is at 49 s
    assert batch(19) == []  # a report moves that to 59 s
    assert offline_steps(tester.setWatermark(clock(58))) == []  # the fleet's clock is not there yet
    [opened] = offline_steps(tester.setWatermark(clock(59)))
    assert (opened.rule, opened.lifecycle, opened.last_seen_at, opened.opened_at) == (
        "vehicle_offline",
        "opened",
        at(19),
        at(49),
    )
    assert opened.episode_id == episode_id("c1", "vehicle_offline", f"e{at(19)}")
    assert offline_steps(tester.setWatermark(clock(90))) == []  # once per silence
    [resolved] = batch(95)
    assert (resolved.lifecycle, resolved.status, resolved.resolved_at) == ("resolved", "resolved", at(95))
    assert resolved.episode_id == opened.episode_id
    assert batch(99) == []  # online again, nothing open


def test_a_silence_a_batch_holds_whole_is_an_offline_episode_opened_and_resolved_at_once() -> None:
    """A backlog or a catch-up run: the silence is between two reports of one batch (no timer fired)."""
    tester = offline_tester()

    def batch(*times: int) -> list[Row]:
        return offline_steps(tester.test("c1", [Row(**r) for t in times for r in report(t)]))

    assert batch(0, 1, 2, 31) == []  # 29 s: not offline
    steps = batch(75, 32, 33, 76)  # 33 -> 75: 42 s
    assert [(s.lifecycle, s.started_at, s.opened_at, s.resolved_at) for s in steps] == [
        ("opened", at(33), at(63), None),
        ("resolved", at(33), at(63), at(75)),
    ]
    assert steps[0].episode_id == steps[1].episode_id == episode_id("c1", "vehicle_offline", f"e{at(33)}")


def test_a_report_more_than_the_slack_behind_the_fleets_clock_is_not_the_offline_rules() -> None:
    """The episodes query takes reports up to WATERMARK_S late; the offline rule, those at most
    SLACK_S (10 s) behind the fleet's clock (as a query of its own, its watermark dropped the rest):
    a late report neither resolves an episode nor calls its car offline, nor starts a silence."""
    tester = offline_tester()

    def batch(car: str, *times: int) -> list[Row]:
        return offline_steps(tester.test(car, [Row(**r) for t in times for r in report(t, car)]))

    assert batch("c1", 0) == []
    [opened] = offline_steps(tester.setWatermark(clock(50)))
    assert batch("c1", 5) == []  # 45 s behind the clock: not a return
    assert batch("c2", 20) == []  # a car first seen 30 s behind the clock: not offline at once
    car = car_state(tester, "c2")
    assert car is not None
    assert car.timer_at is None  # kept (for its state's expiry), not watched
    assert batch("c2", 55) == []  # watched from its first report on time, no silence before it
    [resolved] = batch("c1", 60)
    assert (resolved.episode_id, resolved.resolved_at) == (opened.episode_id, at(60))
    [gone] = offline_steps(tester.setWatermark(clock(96)))  # c2: 55 + 30 + 10 s
    assert (gone.car_id, gone.opened_at) == ("c2", at(85))


def test_an_offline_time_longer_than_the_state_ttl_still_calls_the_car_offline() -> None:
    tester = episode_tester(offline_after_s=2 * 3600, ttl_s=3600)
    tester.test("c1", [Row(**r) for r in report(0)])
    assert offline_steps(tester.setWatermark(clock(5000))) == []  # the TTL: trip and episodes go
    assert trip_state(tester, "c1") is None
    assert car_state(tester, "c1") is not None  # its offline timer is still to fire
    [opened] = offline_steps(tester.setWatermark(clock(7300)))
    assert opened.opened_at == at(7200)


def test_an_offline_car_keeps_its_last_report_past_the_state_ttl_and_its_return_resolves() -> None:
    """A day (here an hour) after its last report, a car's trip and episodes leave the state; a car
    offline keeps its last report, so that its next report resolves the episode."""
    tester = offline_tester(ttl_s=3600)
    tester.test("c1", [Row(**r) for r in report(0)])
    [opened] = offline_steps(tester.setWatermark(clock(50)))
    assert trip_state(tester, "c1") is not None
    tester.setWatermark(clock(3 * 3600))
    assert trip_state(tester, "c1") is None
    car = car_state(tester, "c1")
    assert car is not None
    assert car.episode_id == opened.episode_id
    [resolved] = offline_steps(tester.test("c1", [Row(**r) for r in report(3 * 3600 + 5)]))
    assert (resolved.lifecycle, resolved.resolved_at) == ("resolved", at(3 * 3600 + 5))


def test_a_car_with_nothing_pending_is_not_looked_up_until_a_rule_fires() -> None:
    """The open trip says how many episodes the car holds; with none, a quiet batch skips the
    episodes' state, and the first batch where a rule fires (or a reading repeats) still opens one."""
    tester = episode_tester()
    assert [r for r in tester.test("c1", rows("....")) if r.kind == "episode"] == []
    trip = trip_state(tester, "c1")
    assert trip is not None
    assert trip[-1] == 0  # nothing pending or open
    assert [r for r in tester.test("c1", rows("....", start_ms=4_000)) if r.kind == "episode"] == []
    opened = [r.episode for r in tester.test("c1", rows("..o", start_ms=8_000)) if r.kind == "episode"]
    assert [(r.lifecycle, r.rule, r.started_at) for r in opened] == [("opened", "overspeed", 10_000)]
    after = trip_state(tester, "c1")
    assert after is not None
    assert after[-1] == 1
    # a reading that repeats across the batch boundary is a firing rule too
    frozen = [99.0] * 12
    tester.test("c1", rows("." * 12, start_ms=30_000, oil=frozen))
    assert list(tester.peekMapState("episodes", "c1")) == [("sensor_fault",)]


def test_the_state_of_a_car_not_seen_for_a_day_is_dropped() -> None:
    """An event-time timer a TTL (rounded up to the hour) after the car's last report: when the
    fleet's clock passes it, the car's trip and episodes leave the state; a car seen since keeps its."""
    tester = episode_tester(ttl_s=3600)
    tester.test("c1", rows("...ooo"))  # an open trip and an open overspeed episode
    tester.test("c2", rows("...", start_ms=1_000_000))
    car = car_state(tester, "c1")
    assert car is not None
    assert car.expires_at == 2 * 3_600_000  # 5 s + 1 h, rounded up to the hour
    assert tester.setWatermark(3_600_000) == []
    assert trip_state(tester, "c1") is not None
    tester.test("c2", rows("...", start_ms=3_700_000))  # c2 reports again: its timer moves on
    assert tester.setWatermark(2 * 3_600_000) == []  # nothing is emitted: the tables keep what they had
    assert trip_state(tester, "c1") is None
    assert car_state(tester, "c1") is None
    assert tester.peekMapState("episodes", "c1") == {}
    assert trip_state(tester, "c2") is not None  # seen at 3,702 s: expires at 3 h
    tester.setWatermark(3 * 3_600_000)
    assert trip_state(tester, "c2") is None


def test_a_python_worker_freezes_its_heap_at_its_first_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspark's daemon collects garbage after every task: in a worker the processor's first
    ``init`` freezes what the worker holds (``gc.freeze``), once; outside a worker it does not."""
    import pyspark

    gc.unfreeze()
    episode_tester()  # TwsTester runs init with no task context: nothing frozen
    assert gc.get_freeze_count() == 0
    monkeypatch.setattr(pyspark.TaskContext, "get", staticmethod(object))
    try:
        episode_tester()
        frozen = gc.get_freeze_count()
        assert frozen > 0
        garbage = [[]]
        garbage[0].append(garbage)  # a cycle made after the freeze
        del garbage
        episode_tester()  # a later task: nothing frozen again (frozen objects freed since leave the count)
        assert gc.get_freeze_count() <= frozen
        assert gc.collect() > 0  # (what came after the freeze is collected as before)
    finally:
        gc.unfreeze()
