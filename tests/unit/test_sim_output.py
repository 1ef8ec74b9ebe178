"""What the simulator emits: the schema, determinism, bad data and the ground truth, through files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from fleetstream import schema
from fleetstream.ingest.sinks import JsonlSink
from fleetstream.reference.catalog import generate_cars, model_by_id
from fleetstream.rules import LIMITS, expected_gear
from fleetstream.sim.faults import BAD_DATA_PRESETS, BAD_DATA_TYPES, FAULT_PRESETS, load_ground_truth
from fleetstream.sim.runner import SimOptions, Simulation


def simulate(path: Path, **options: object) -> Simulation:
    sim = Simulation(SimOptions(**{"cars": 50, "fast": True, "duration": 600, **options}), JsonlSink(path))  # type: ignore[arg-type]
    sim.run()
    sim.ground_truth.save(path.with_suffix(".truth.jsonl"))
    return sim


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Simulation]:
    path = tmp_path_factory.mktemp("sim") / "events.jsonl"
    sim = simulate(
        path, cars=120, duration=1800, seed=21, faults=FAULT_PRESETS["heavy"], bad_data=BAD_DATA_PRESETS["default"]
    )
    return path, sim


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    options = {"seed": 9, "faults": FAULT_PRESETS["heavy"], "bad_data": BAD_DATA_PRESETS["heavy"]}
    simulate(tmp_path / "a.jsonl", **options)
    simulate(tmp_path / "b.jsonl", **options)
    simulate(tmp_path / "c.jsonl", **{**options, "seed": 10})
    a, b = (tmp_path / "a.jsonl").read_bytes(), (tmp_path / "b.jsonl").read_bytes()
    assert len(a) > 1_000_000
    assert a == b
    assert (tmp_path / "a.truth.jsonl").read_bytes() == (tmp_path / "b.truth.jsonl").read_bytes()
    assert (tmp_path / "c.jsonl").read_bytes() != a


def test_clean_events_follow_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "clean.jsonl"
    sim = simulate(path, duration=120)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 50 * 120 == sim.stats.events
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
    ids = set()
    for line in lines:
        event = json.loads(line)
        assert list(event) == list(schema.FIELD_NAMES)
        for field in schema.FIELDS:
            value = event[field.name]
            assert isinstance(value, types[field.type]), field.name
            if field.type != "boolean":
                assert not isinstance(value, bool), field.name
            assert field.minimum is None or value >= field.minimum, (field.name, value)
            assert field.maximum is None or value <= field.maximum, (field.name, value)
        ids.add(event["event_id"])
    assert len(ids) == len(lines)
    times = [json.loads(line)["event_time"] for line in lines[:50]]
    assert times == sorted(times), "cars report spread over the second, in order"
    assert times[-1] - times[0] < 1000


def test_bad_data_rates_and_records(dirty: tuple[Path, Simulation]) -> None:
    path, sim = dirty
    rates = BAD_DATA_PRESETS["default"]
    regular = 120 * 1800
    counts = sim.ground_truth.counts()
    # Events that show a fault are never broken: the rates apply to the others.
    breakable = regular - len({i for e in sim.ground_truth.episodes for i in e.event_ids})
    for name, rate in zip(BAD_DATA_TYPES, rates.as_list(), strict=True):
        expected = rate * breakable
        assert abs(counts[name] - expected) <= 4 * np.sqrt(expected) + 5, (name, counts[name], expected)
    lines = path.read_bytes().splitlines()
    unsent = sum(len(e.event_ids) for e in sim.ground_truth.episodes if e.fault == "offline")  # lost connections
    assert unsent > 0
    assert len(lines) == regular - unsent + counts["duplicate"]  # out-of-order ones are late, not lost

    parsed, broken = {}, 0
    duplicates: dict[str, int] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            broken += 1
            continue
        if event.get("event_id") in parsed:
            duplicates[event["event_id"]] = duplicates.get(event["event_id"], 0) + 1
        parsed[event.get("event_id")] = event
    assert broken == counts["malformed_json"]
    assert len(duplicates) == counts["duplicate"]
    for record in sim.ground_truth.bad_records:
        if record.defect == "missing_field":
            assert record.detail not in parsed[record.event_id]
        elif record.defect == "bad_type":
            assert isinstance(parsed[record.event_id][record.detail], str)
        elif record.defect == "out_of_range":
            field = schema.BY_NAME[record.detail]
            assert not field.minimum <= parsed[record.event_id][record.detail] <= field.maximum
        elif record.defect == "late":
            assert parsed[record.event_id]["event_time"] == record.event_time - 2 * 3600 * 1000


def test_ground_truth_agrees_with_the_events(dirty: tuple[Path, Simulation]) -> None:
    path, _ = dirty
    faults, bad = load_ground_truth(path.with_suffix(".truth.jsonl"))
    broken_ids = {b["event_id"] for b in bad if b["defect"] != "duplicate"}
    events = {}
    for line in path.read_bytes().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        events[event["event_id"]] = event
    cars = {c.car_id: c for c in generate_cars(120, 21)}
    models = model_by_id()

    def schedule(car_id: str) -> list[float]:
        car = cars[car_id]
        return models[car.model_id].shift_schedule(car.driver_profile)

    labelled: dict[str, set[str]] = {}
    for episode in faults:
        for event_id in episode["event_ids"]:
            labelled.setdefault(episode["fault"], set()).add(event_id)
            if episode["fault"] == "offline":  # a lost connection's reports were never sent
                assert event_id not in events
                continue
            event = events[event_id]
            assert event["car_id"] == episode["car_id"]
            assert episode["first_event_time"] <= event["event_time"] <= episode["last_event_time"]
    assert {"overspeed", "over_rev", "wrong_gear", "overheat", "sensor", "offline"} <= set(labelled)
    # a frozen oil sender: one reading held through the episode; a healthy one never repeats its last two
    for episode in (e for e in faults if e["fault"] == "sensor"):
        assert len({events[i]["oil_temp"] for i in episode["event_ids"]}) == 1
    readings: dict[str, list[tuple[int, float]]] = {}
    for event_id, event in events.items():
        if event_id not in broken_ids and event_id not in labelled["sensor"]:
            readings.setdefault(event["car_id"], []).append((event["event_time"], event["oil_temp"]))
    repeats = 0
    for series in readings.values():
        values = [v for _, v in sorted(series)]
        repeats += sum(a == b for a, b in itertools.pairwise(values))
    assert repeats <= sum(len(e["event_ids"]) for e in faults if e["fault"] == "sensor") // 10
    # The three threshold rules, evaluated on every well-formed event, fire exactly on the labels.
    fired: dict[str, set[str]] = {"overspeed": set(), "over_rev": set(), "wrong_gear": set()}
    for event_id, event in events.items():
        if event_id in broken_ids:
            continue
        if event["speed"] > LIMITS.overspeed_kmh:
            fired["overspeed"].add(event_id)
        if event["rpm"] > LIMITS.over_rev_rpm:
            fired["over_rev"].add(event_id)
        if event["gear"] != expected_gear(event["speed"], schedule(event["car_id"])):
            fired["wrong_gear"].add(event_id)
    for rule, ids in fired.items():
        assert ids == labelled[rule], rule


def test_a_live_run_stopped_mid_tick_sends_the_whole_tick(tmp_path: Path) -> None:
    """Stopped while it paces a tick's messages over their event times, the simulator sends the
    tick's other messages at once: every report its ground truth holds was sent (before, the rest
    of the tick was dropped, and a stopped run's truth expected faults no consumer could see)."""
    import threading

    cars, rate = 40, 2.0  # a tick's 40 messages paced over half a second
    sim = Simulation(SimOptions(cars=cars, rate=rate, seed=3), JsonlSink(tmp_path / "events.jsonl"))
    stopped = threading.Event()
    stop = threading.Timer(1.3, stopped.set)  # mid-tick: ticks start every 0.5 s
    stop.start()
    stats = sim.run(stopped)
    stop.cancel()
    sent = (tmp_path / "events.jsonl").read_text().splitlines()
    assert stats.ticks >= 2
    assert len(sent) == stats.events == stats.ticks * cars
