"""The simulator against the real broker: nothing lost on the way, and live driver commands."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetstream.config import Settings
from fleetstream.ingest.commands import CommandListener, DriverCommand, send_command
from fleetstream.ingest.kafka import consume, describe_topics, make_consumer
from fleetstream.ingest.sinks import JsonlSink, KafkaSink
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation

pytestmark = pytest.mark.integration


def test_roundtrip_through_the_broker_loses_nothing(
    stack_settings: Settings, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    options = SimOptions(
        cars=200, fast=True, duration=300, seed=33, faults=FAULT_PRESETS["heavy"], bad_data=BAD_DATA_PRESETS["heavy"]
    )
    sink = KafkaSink(stack_settings.kafka, topic)
    simulation = Simulation(options, sink)
    stats = simulation.run()
    assert sink.stats.failed == 0
    assert sink.stats.delivered == sink.stats.sent == stats.events
    # The same run written to a file is the reference for what the broker must hold.
    Simulation(options, JsonlSink(tmp_path / "reference.jsonl")).run()
    expected = Counter((tmp_path / "reference.jsonl").read_bytes().splitlines())
    assert sum(expected.values()) == stats.events

    consumer = make_consumer(stack_settings.kafka, group_id=f"g-{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    try:
        messages = consume(consumer, stats.events, timeout=120)
    finally:
        consumer.close()
    assert Counter(m.value() for m in messages) == expected
    keyed = 0
    for message in messages:
        try:
            car_id = json.loads(message.value()).get("car_id")
        except ValueError:
            continue  # a malformed record: still keyed by the car that sent it
        if isinstance(car_id, str):
            assert message.key() == car_id.encode()
            keyed += 1
    assert keyed > 0.95 * stats.events
    # The message timestamp is when the car sent it: its event_time, except for late records.
    late = {b.event_id: b.event_time for b in simulation.ground_truth.bad_records if b.defect == "late"}
    checked = 0
    for message in messages:
        try:
            event = json.loads(message.value())
        except ValueError:
            continue
        if event.get("event_id") in late:
            assert message.timestamp()[1] == late[event["event_id"]]
            assert isinstance(event["event_time"], int)
            assert message.timestamp()[1] - event["event_time"] == 2 * 3600 * 1000
            checked += 1
    assert checked == len(late) > 0
    [info] = describe_topics(stack_settings.kafka, [topic])
    assert info.messages == stats.events


def test_driver_command_changes_that_car_and_no_other(
    stack_settings: Settings, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    commands_topic = new_topic(partitions=1)
    options = SimOptions(cars=20, fast=True, duration=40, seed=4)
    Simulation(options, JsonlSink(tmp_path / "free.jsonl")).run()

    listener = CommandListener(stack_settings.kafka, commands_topic).start()
    try:
        assert listener.ready.wait(30), "command consumer got no partition"
        time.sleep(0.5)
        for command in (
            DriverCommand(car_id="car-00003", command="start_engine"),
            DriverCommand(car_id="car-00003", command="set_throttle", value=1.0),
        ):
            send_command(stack_settings.kafka, commands_topic, command)
        deadline = time.monotonic() + 30
        while listener.commands.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listener.commands.qsize() == 2
        simulation = Simulation(options, JsonlSink(tmp_path / "driven.jsonl"), listener)
        simulation.run()
    finally:
        listener.stop()
    assert simulation.stats.commands == 2

    free = (tmp_path / "free.jsonl").read_bytes().splitlines()
    driven = (tmp_path / "driven.jsonl").read_bytes().splitlines()
    assert len(free) == len(driven) == 20 * 40
    changed = {line.split(b'"car_id":"')[1][:9] for a, line in zip(free, driven, strict=True) if a != line}
    assert changed == {b"car-00003"}
    car3 = [json.loads(line) for line in driven if b'"car_id":"car-00003"' in line]
    assert all(e["throttle"] == 100.0 and e["engine_on"] for e in car3)
    speeds = [e["speed"] for e in car3]
    assert speeds[-1] > speeds[0] + 30, speeds
    car3_free = [json.loads(line) for line in free if b'"car_id":"car-00003"' in line]
    assert max(e["gear"] for e in car3) > max(e["gear"] for e in car3_free)
