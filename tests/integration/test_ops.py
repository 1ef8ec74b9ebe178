"""`fleetstream notify critical` on the session's Kafka broker: alert-data's critical alerts go out as
one message per window, an episode's steps once, and what was sent is not sent again; the ops bot's
/status on the running stack."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from confluent_kafka import Producer

from fakes import hook_fake
from fleetstream.clients import librdkafka
from fleetstream.config import KafkaSettings, NotifySettings, Settings, TopicNames
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ops import bot
from fleetstream.ops.channels import WebhookChannel
from fleetstream.ops.notify import follow_critical

pytestmark = pytest.mark.integration


def _produce(kafka: KafkaSettings, values: list[bytes]) -> None:
    producer = Producer(librdkafka(kafka))
    for value in values:
        producer.produce(kafka.topics.alerts, value, key=b"car")
    assert producer.flush(10) == 0


def _episode(episode: str, car: str, lifecycle: str, severity: str, as_of: int) -> bytes:
    return json.dumps({"episode_id": episode, "car_id": car, "rule": "overspeed", "severity": severity,
                       "lifecycle": lifecycle, "message": "speed above the limit", "peak_speed": 150.0 + as_of,
                       "as_of": as_of}).encode()  # fmt: skip


def test_critical_alerts_one_message_per_window_sent_once(stack_settings: Settings) -> None:
    topics = TopicNames().tagged(uuid.uuid4().hex[:8], "test-")
    kafka = stack_settings.kafka.model_copy(update={"topics": topics})
    settings = stack_settings.model_copy(update={"kafka": kafka, "notify": NotifySettings(critical_window_s=3)})
    ensure_topics(kafka, [topics.alerts])
    _produce(kafka, [
        _episode("e1", "car-00001", "opened", "high", 1),  # not critical yet
        _episode("e1", "car-00001", "repeated", "critical", 2),  # escalated
        _episode("e1", "car-00001", "repeated", "critical", 3),  # the same episode again: counted once
        _episode("e2", "car-00002", "opened", "critical", 4),
        json.dumps({"event_id": "x1", "car_id": "car-00003", "rule": "gear_mismatch", "severity": "medium"}).encode(),
        b"not json",
    ])  # fmt: skip
    with hook_fake() as hook:
        channel = WebhookChannel("webhook", hook.url, settings)
        assert follow_critical(settings, threading.Event(), targets=[channel], once=True) == 1
        [(_headers, body)] = hook.received
        sent = json.loads(body)
        assert sent["kind"] == "critical"
        assert sorted((a["episode_id"], a["as_of"]) for a in sent["data"]["alerts"]) == [("e1", 3), ("e2", 4)]
        assert sent["text"].startswith("fleetstream: 2 critical alerts\n")
        assert "car-00001 overspeed (repeated): speed above the limit, peak 153 km/h" in sent["text"]

        # the offsets were committed: nothing is sent twice; a new critical alert is
        assert follow_critical(settings, threading.Event(), targets=[channel], once=True) == 0
        _produce(kafka, [_episode("e3", "car-00004", "opened", "critical", 5)])
        assert follow_critical(settings, threading.Event(), targets=[channel], once=True) == 1
        assert len(hook.received) == 2
        assert [a["episode_id"] for a in json.loads(hook.received[1][1])["data"]["alerts"]] == ["e3"]


def test_bot_status_on_the_running_stack(stack_settings: Settings) -> None:
    status = bot.answer(stack_settings, "/status")
    assert f"kafka: healthy ({stack_settings.kafka.bootstrap})" in status
    assert "stream: no status file" in status
