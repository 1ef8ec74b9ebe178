"""`fleetstream notify` and the ops bot's answers on a small lake written with delta-rs, sent to
loopback fakes of Telegram's Bot API and of webhook receivers (tests/fakes.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake
from pydantic import SecretStr

from fakes import chat_fake, hook_fake, telegram_fake
from fleetstream import ops
from fleetstream.config import BotSettings, LakeSettings, NotifySettings, Settings, SqlSettings, TelegramSettings
from fleetstream.ops import bot, notify
from fleetstream.ops.channels import SendError, SlackChannel, TelegramChannel, WebhookChannel
from fleetstream.ops.summary import Message
from fleetstream.testing import free_port_base

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _minute(root: Path, start: dt.datetime, rows: list[tuple[str, str, str, int]]) -> None:
    """gold/alerts_per_minute's rows (rule, severity, color, alerts) of one closed minute."""
    frame = pl.DataFrame(
        {
            "rule": [r[0] for r in rows],
            "severity": [r[1] for r in rows],
            "color": [r[2] for r in rows],
            "model": ["Corolla"] * len(rows),
            "alerts": [r[3] for r in rows],
        }
    ).with_columns(
        pl.lit(start).cast(pl.Datetime("us", "UTC")).alias("window_start"),
        pl.lit(start + MIN).cast(pl.Datetime("us", "UTC")).alias("window_end"),
    )
    write_deltalake(str(root / "gold" / "alerts_per_minute"), frame.to_arrow(), mode="append")


def _lake(root: Path) -> Settings:
    """Two closed minutes of alerts (with the silver rows behind the first), an episode, a car."""
    _minute(root, T0, [("overspeed", "high", "Red", 3), ("overspeed", "high", "Blue", 1),
                       ("engine_stress", "high", "Red", 2)])  # fmt: skip
    _minute(root, T0 + MIN, [("gear_mismatch", "medium", "Red", 1)])
    cars = ["car-00001", "car-00001", "car-00001", "car-00002", "car-00003", "car-00003", "car-00009"]
    alerts = pl.DataFrame(
        {
            "car_id": cars,
            "rule": ["overspeed"] * 4 + ["engine_stress"] * 2 + ["gear_mismatch"],
            "severity": ["high"] * 6 + ["medium"],
            "event_time": [_ms(T0) + i * 1000 for i in range(6)] + [_ms(T0 + MIN) + 5000],
        }
    )
    write_deltalake(str(root / "silver" / "alerts"), alerts.to_arrow())
    episodes = pl.DataFrame(
        {"rule": ["overspeed"], "color": ["Red"], "model": ["Corolla"], "opened": [1], "resolved": [0]}
    ).with_columns(
        pl.lit(T0).cast(pl.Datetime("us", "UTC")).alias("window_start"),
        pl.lit(T0 + MIN).cast(pl.Datetime("us", "UTC")).alias("window_end"),
    )
    write_deltalake(str(root / "gold" / "episodes_per_minute"), episodes.to_arrow())
    return Settings(state_dir=root / "state", lake=LakeSettings(root=str(root)))


def test_summaries_match_the_gold_minute_and_each_channel_resumes(tmp_path: Path) -> None:
    settings = _lake(tmp_path / "lake")
    with hook_fake() as hook:
        channel = WebhookChannel("webhook", hook.url, settings)
        [first] = notify.send_summaries(settings, minutes=2, targets=[channel])
        assert first.error is None
        assert first.message is not None
        data = json.loads(hook.received[0][1])["data"]
        # the counts are gold/alerts_per_minute's for those minutes, the cars silver/alerts'
        assert data["alerts"] == 7
        assert data["by_rule"] == {"overspeed": 4, "engine_stress": 2, "gear_mismatch": 1}
        assert data["by_color"] == {"Red": 6, "Blue": 1}
        assert data["top_cars"][0] == {"car_id": "car-00001", "alerts": 3}
        assert data["episodes_opened"] == {"overspeed": 1}
        assert notify.load_progress(settings) == {}  # --minutes leaves progress alone

        # a first run of its own summarises the newest minute; the next run has nothing new
        [newest] = notify.send_summaries(settings, targets=[channel])
        assert (newest.start, newest.end) == (T0 + MIN, T0 + 2 * MIN)
        assert json.loads(hook.received[1][1])["data"]["by_rule"] == {"gear_mismatch": 1}
        [again] = notify.send_summaries(settings, targets=[channel])
        assert again.message is None
        assert len(hook.received) == 2

        # three more minutes land at once (a pause, a burst): one message for the range, not three
        for i in (2, 3, 4):
            _minute(tmp_path / "lake", T0 + i * MIN, [("overspeed", "high", "Red", 10 * i)])
        [burst] = notify.send_summaries(settings, targets=[channel])
        assert (burst.start, burst.end) == (T0 + 2 * MIN, T0 + 5 * MIN)
        assert len(hook.received) == 3
        assert json.loads(hook.received[2][1])["data"]["alerts"] == 90
        assert "12:02 to 12:05 UTC (3 minutes)" in json.loads(hook.received[2][1])["text"]

        # a channel that fails keeps its range (same message id next time); the other moves on
        _minute(tmp_path / "lake", T0 + 5 * MIN, [("overspeed", "high", "Red", 7)])
        hook.statuses = [400]
        failing = WebhookChannel("webhook", hook.url, settings)
        with hook_fake() as slack_hook:
            slack = SlackChannel("slack", slack_hook.url, settings)
            results = notify.send_summaries(settings, targets=[failing, slack])
            assert [r.error is not None for r in results] == [True, False]
            assert "HTTP 400" in str(results[0].error)
            assert json.loads(slack_hook.received[0][1]) == {"text": results[1].message.text}  # type: ignore[union-attr]
        retry = notify.send_summaries(settings, targets=[failing])
        assert retry[0].error is None
        ids = [h["x-fleetstream-id"] for h, _ in hook.received[-2:]]
        assert ids[0] == ids[1]  # the refused one and its resend: receivers can drop a repeat


def test_webhook_signs_and_retries_rate_limits_and_server_errors(tmp_path: Path) -> None:
    secret = "hook-secret"
    settings = Settings(notify=NotifySettings(webhook_secret=SecretStr(secret), retries=3))
    message = Message("summary-x", "summary", "text", "<b>text</b>", {"alerts": 1})
    waits: list[float] = []
    with hook_fake() as hook:
        hook.statuses = [500, 429]
        WebhookChannel("webhook", hook.url, settings, sleep=waits.append).send(message)
        assert len(hook.received) == 3
        assert waits == [1.0, 0.0]
        for headers, body in hook.received:
            expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-fleetstream-signature"] == f"sha256={expected}"
            assert headers["x-fleetstream-id"] == "summary-x"
        hook.statuses = [503] * 4
        with pytest.raises(SendError, match="after 4 tries: HTTP 503"):
            WebhookChannel("webhook", hook.url, settings, sleep=waits.append).send(message)
        with pytest.raises(SendError, match="its URL cannot be posted to"):
            WebhookChannel("webhook", "ftp://example.com/hook", settings, sleep=waits.append).send(message)
        hook.statuses = [404]
        before = len(hook.received)
        with pytest.raises(SendError, match="refused message summary-x: HTTP 404"):
            WebhookChannel("webhook", hook.url, settings, sleep=waits.append).send(message)
        assert len(hook.received) == before + 1  # a refusal is not retried


def test_telegram_channel_waits_out_429_and_retries_500() -> None:
    with telegram_fake() as fake:
        settings = Settings(
            telegram=TelegramSettings(token=SecretStr(fake.token), base_url=fake.base_url, chat_ids=[11, 12]),
            notify=NotifySettings(retries=2),
        )
        fake.fail("getMe", 502)  # the start-up call is retried too
        fake.fail("sendMessage", 429, retry_after=1)
        fake.fail("sendMessage", 500)
        message = Message("m1", "summary", "plain", "<b>3 alerts</b> &amp; more", {})
        TelegramChannel(settings).send(message)
        assert fake.calls.count("getMe") == 2
        assert [m["chat_id"] for m in fake.sent] == [11, 12]
        assert fake.sent[0]["parse_mode"] == "HTML"
        assert fake.sent[0]["text"] == "<b>3 alerts</b> &amp; more"
        assert fake.calls.count("sendMessage") == 4  # 429, 500, then one each

        wrong = settings.model_copy(
            update={"telegram": settings.telegram.model_copy(update={"token": SecretStr("1:x")})}
        )
        with pytest.raises(SendError, match="refused the bot's token") as refused:
            TelegramChannel(wrong).send(message)
        assert "1:x" not in str(refused.value)  # the token is a secret


def _bot_lake(root: Path) -> Settings:
    settings = _lake(root)
    now = dt.datetime.now(dt.UTC)
    state = pl.DataFrame(
        {
            "car_id": ["car-00001", "car-00002"],
            "event_time": [_ms(now) - 3000, _ms(now) - 4000],
            "speed": [88.5, 0.0],
            "rpm": [2600, 800],
            "gear": [4, 0],
            "fuel_level": [55.0, 12.0],
            "coolant_temp": [92.0, 80.0],
            "lat": [32.08, 32.1],
            "lon": [34.78, 34.8],
            "model": ["Corolla", "Golf"],
            "color": ["Red", "Blue"],
        }
    )
    write_deltalake(str(root / "gold" / "car_state"), state.to_arrow())
    episodes = pl.DataFrame(
        {
            "episode_id": ["e1", "e2"],
            "car_id": ["car-00001", "car-00001"],
            "rule": ["overspeed", "overheat"],
            "severity": ["critical", "high"],
            "status": ["open", "resolved"],
            "resolved_at": [None, _ms(now) - 1000],
        }
    )
    write_deltalake(str(root / "silver" / "alert_episodes"), episodes.to_arrow())
    recent = pl.DataFrame(
        {
            "car_id": ["car-00002", "car-00002"],
            "rule": ["overspeed", "gear_mismatch"],
            "severity": ["high", "medium"],
            "event_time": [_ms(now) - 60_000, _ms(now) - 30_000],
        }
    )
    write_deltalake(str(root / "silver" / "alerts"), recent.to_arrow(), mode="append")
    return settings


def test_bot_answers_from_the_lake(tmp_path: Path) -> None:
    settings = _bot_lake(tmp_path / "lake")
    help_text = bot.answer(settings, "/help")
    assert all(f"/{name}" in help_text for name in bot.COMMANDS)
    assert bot.answer(settings, "/count fleet.silver_alerts") == "fleet.silver_alerts: 9 rows"
    assert bot.answer(settings, "/count@fleetstream_test_bot silver_alerts") == "fleet.silver_alerts: 9 rows"
    assert bot.answer(settings, "/count fleet.gold_trips") == "fleet.gold_trips is not there yet"
    tables = bot.answer(settings, "/tables")
    assert "fleet.gold_car_state  2 rows" in tables
    assert "fleet.silver_telemetry  not there yet" in tables
    car = bot.answer(settings, "/car car-00001")
    assert "speed: 88.5 km/h" in car
    assert "gear: 4" in car
    assert "open alerts: overspeed (critical)" in car
    assert "open alerts: none" in bot.answer(settings, "/car car-00002")
    assert bot.answer(settings, "/car car-77777") == "no car car-77777 in gold/car_state"
    assert bot.answer(settings, "/car") == "usage: /car &lt;car_id&gt;, for example /car car-00042"
    recent = bot.answer(settings, "/alerts")
    assert "overspeed" in recent
    assert "gear_mismatch" in recent
    assert "engine_stress" not in recent
    assert "car-00002" in bot.answer(settings, "/alerts overspeed")
    assert "gear_mismatch" in bot.answer(settings, "/alerts car-00002")
    assert bot.answer(settings, "/reboot") == "unknown command /reboot; /help lists them"
    assert "read-only" in bot.answer(settings, "/sql DROP TABLE fleet.silver_alerts")
    assert "read-only" in bot.answer(settings, "/sql INSERT INTO fleet.silver_alerts VALUES (1)")
    # beeline runs every statement of a line: one only, whatever the first one is
    assert "read-only" in bot.answer(settings, "/sql SHOW TABLES; DROP TABLE fleet.silver_alerts")
    assert "read-only" in bot.answer(settings, "/sql SELECT 1) AS q; DROP TABLE fleet.x; SELECT (1")
    nowhere = settings.model_copy(update={"sql": SqlSettings(port=free_port_base(1))})
    assert "no SQL endpoint answers" in bot.answer(nowhere, "/sql SELECT 1")
    writable = settings.model_copy(update={"sql": SqlSettings(read_only=False)})
    assert "/sql is off" in bot.answer(writable, "/sql SELECT 1")
    assert "cockpit" in bot.answer(settings, "/dashboards")


def test_bot_process_answers_allowed_chats_refuses_others_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`fleetstream bot` as a user runs it, against the fake Bot API: replies come through a 429 and a
    500, a chat not on the list is refused and logged, Ctrl-C stops it cleanly."""
    settings = _bot_lake(tmp_path / "lake")
    with telegram_fake() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")}
        env |= {"FLEETSTREAM_TELEGRAM__TOKEN": fake.token, "FLEETSTREAM_TELEGRAM__BASE_URL": fake.base_url,
                "FLEETSTREAM_TELEGRAM__ALLOWED_CHAT_IDS": "[11]", "FLEETSTREAM_LAKE__ROOT": settings.lake.root,
                "FLEETSTREAM_STATE_DIR": str(settings.state_dir), "FLEETSTREAM_BOT__POLL_TIMEOUT_S": "1"}  # fmt: skip
        fake.fail("sendMessage", 429, retry_after=1)
        fake.fail("sendMessage", 500)
        log = tmp_path / "bot.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "fleetstream", "bot"], env=env, stdout=out, stderr=out)
        try:
            fake.say(11, "/count fleet.silver_alerts")
            assert fake.wait_replies(11, 1) == ["fleet.silver_alerts: 9 rows"]
            fake.say(99, "/tables")
            assert fake.wait_replies(99, 1) == ["this chat is not allowed to use this bot"]
            fake.say(11, "/sql DELETE FROM fleet.silver_alerts")
            assert "read-only" in fake.wait_replies(11, 2)[1]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log.read_text()
        assert "refused chat 99" in text
        assert fake.token not in text  # no request URL (it holds the token) is logged
        assert fake.calls.count("sendMessage") == 5  # 429, 500, then the three replies


def test_ai_answers_with_the_bots_read_only_commands_as_tools(tmp_path: Path) -> None:
    settings = _bot_lake(tmp_path / "lake")
    assert bot.answer(settings, "/ai how many alerts?").startswith("/ai is off")
    with chat_fake() as fake:
        ai = BotSettings(ai_base_url=fake.base_url, ai_api_key=SecretStr(fake.api_key), ai_model="test-model")
        on = settings.model_copy(update={"bot": ai})
        fake.script = [("count", {"table": "fleet.silver_alerts"}), ("car", {"car_id": "car-00001"}),
                       "9 alerts in all; car-00001 is at 88.5 km/h with overspeed open."]  # fmt: skip
        reply = bot.answer(on, "/ai how many alerts, and how is car-00001?")
        assert reply == "9 alerts in all; car-00001 is at 88.5 km/h with overspeed open."
        first, second, third = fake.requests
        assert first["model"] == "test-model"
        assert {t["function"]["name"] for t in first["tools"]} == {
            "status",
            "alerts",
            "car",
            "tables",
            "count",
            "sql",
            "dags",
            "runs",
        }
        assert first["messages"][-1] == {"role": "user", "content": "how many alerts, and how is car-00001?"}
        # each tool's result is the bot's own answer, as plain text
        assert second["messages"][-1]["content"] == "fleet.silver_alerts: 9 rows"
        assert "speed: 88.5 km/h" in third["messages"][-1]["content"]
        assert "<pre>" not in third["messages"][-1]["content"]
        # a write through the sql tool is refused by the bot's own check; the model hears why
        fake.script = [("sql", {"statement": "DROP TABLE fleet.silver_alerts"}), "I cannot do that."]
        assert bot.answer(on, "/ai drop the alerts") == "I cannot do that."
        assert "read-only" in fake.requests[-1]["messages"][-1]["content"]
        wrong = on.model_copy(update={"bot": ai.model_copy(update={"ai_api_key": SecretStr("sk-wrong")})})
        refused = bot.answer(wrong, "/ai anything")
        assert refused.startswith("the model&#x27;s API answered")
        assert "sk-wrong" not in refused


def test_summary_every_runs_like_cron_until_ctrl_c(tmp_path: Path) -> None:
    """`notify summary --every`, as `fleetstream run` starts it: the newest minute once, nothing again
    while no minute closes, a clean stop on Ctrl-C."""
    settings = _lake(tmp_path / "lake")
    with hook_fake() as hook:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")}
        env |= {"FLEETSTREAM_NOTIFY__WEBHOOK_URL": hook.url, "FLEETSTREAM_LAKE__ROOT": settings.lake.root,
                "FLEETSTREAM_STATE_DIR": str(settings.state_dir)}  # fmt: skip
        argv = [sys.executable, "-m", "fleetstream", "notify", "summary", "--every", "5"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while not hook.received and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(6)  # a second run: nothing new
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, output
        assert len(hook.received) == 1
        assert json.loads(hook.received[0][1])["data"]["by_rule"] == {"gear_mismatch": 1}
        assert "webhook: 2026-12-01 12:02 to 12:02 UTC: nothing to send" in output


def test_run_starts_the_configured_operations() -> None:
    assert ops.apps(Settings()) == []
    hook_only = Settings(notify=NotifySettings(webhook_url="http://127.0.0.1:9/hook"))
    assert [name for name, _ in ops.apps(hook_only)] == ["notify-summary", "notify-critical"]
    assert ops.apps(hook_only)[0][1][-4:] == ["notify", "summary", "--every", "60"]
    bot_only = Settings(telegram=TelegramSettings(token=SecretStr("1:x"), allowed_chat_ids=[5]))
    assert [name for name, _ in ops.apps(bot_only)] == ["bot"]
