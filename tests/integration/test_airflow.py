"""The local Airflow (API server, scheduler, dag-processor) beside the session's stack, with
fleetstream's DAGs, notifications to a loopback fake of Telegram's Bot API:

- every shipped DAG is parsed, none with an import error, and `status` lists the three processes;
- the real scheduler runs alert_summary on its schedule: one message, with gold/alerts_per_minute's
  counts for the closed minute;
- ``dag.test()`` (``airflow dags test``) of fleet_reference, data_quality and stream_watchdog
  against the stack (lake_maintenance: tests/chaos/test_stream_faults.py; data_quality's
  failing run: tests/e2e; ml_retrain and replay: tests/integration/test_pipeline_e2e.py, each on a
  lake that has what it needs);
- the ops bot's /dags, /run, /runs and /kill through Airflow's REST API, and its refusals.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake
from pydantic import SecretStr

from fakes import TelegramFake, telegram_fake
from fleetstream.config import AirflowSettings, KafkaSettings, LakeSettings, Settings, TelegramSettings, TopicNames
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.local import airflow_server, stack
from fleetstream.ops import bot
from fleetstream.ops.airflow_api import AirflowClient
from fleetstream.pipeline.monitor import STATUS_FILE, QueryHealth, write_status
from fleetstream.testing import airflow_dag_test, free_port_base

pytestmark = pytest.mark.integration
DAGS = {"fleet_reference", "lake_maintenance", "ml_retrain", "alert_summary", "replay", "data_quality",
        "stream_watchdog"}  # fmt: skip
CHAT = 777


@pytest.fixture(scope="module")
def telegram() -> Iterator[TelegramFake]:
    with telegram_fake() as fake:
        yield fake


@pytest.fixture(scope="module")
def airflow(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory, telegram: TelegramFake
) -> Iterator[Settings]:
    """Airflow started as `fleetstream up --airflow` starts it, with this module's settings: its own
    state directory, lake and topics, notifications to the fake Bot API."""
    tmp = tmp_path_factory.mktemp("airflow")
    topics = TopicNames().tagged(uuid.uuid4().hex[:8])
    settings = stack_settings.model_copy(
        update={
            "state_dir": tmp / "state",
            "kafka": KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics}),
            "lake": LakeSettings(root=str(tmp / "lake")),
            "airflow": AirflowSettings(port=free_port_base(1)),
            "telegram": TelegramSettings(
                token=SecretStr(telegram.token), base_url=telegram.base_url, chat_ids=[CHAT], allowed_chat_ids=[CHAT]
            ),
        }
    )
    ensure_topics(settings.kafka, topics.all())
    started = time.monotonic()
    stack.start_airflow(settings)
    print(f"Airflow healthy {time.monotonic() - started:.0f} s after the start")
    try:
        yield settings
    finally:
        stack.down(settings)


def _closed_minute(root: str) -> tuple[dt.datetime, dict[str, int]]:
    """gold/alerts_per_minute's rows of the minute before this one (closed), and silver/alerts behind
    them; returns the minute and its alerts by rule."""
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
    rows = [("overspeed", "high", "Red", 4), ("overspeed", "high", "Blue", 2), ("engine_stress", "high", "Red", 1)]
    gold = pl.DataFrame(
        {"rule": [r[0] for r in rows], "severity": [r[1] for r in rows], "color": [r[2] for r in rows],
         "model": ["Corolla"] * len(rows), "alerts": [r[3] for r in rows]}
    ).with_columns(
        pl.lit(start).cast(pl.Datetime("us", "UTC")).alias("window_start"),
        pl.lit(start + dt.timedelta(minutes=1)).cast(pl.Datetime("us", "UTC")).alias("window_end"),
    )  # fmt: skip
    write_deltalake(f"{root}/gold/alerts_per_minute", gold.to_arrow(), mode="append")
    ms = int(start.timestamp() * 1000)
    alerts = pl.DataFrame(
        {"car_id": ["car-00001"] * 5 + ["car-00002"] * 2, "rule": ["overspeed"] * 6 + ["engine_stress"],
         "severity": ["high"] * 7, "event_time": [ms + i * 1000 for i in range(7)]}
    )  # fmt: skip
    write_deltalake(f"{root}/silver/alerts", alerts.to_arrow(), mode="append")
    return start, {"overspeed": 6, "engine_stress": 1}  # Red 5, Blue 2


def _wait(what: str, check: object, timeout: float, every: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()  # type: ignore[operator]
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_every_dag_is_parsed_and_status_lists_airflow(airflow: Settings) -> None:
    with AirflowClient(airflow) as client:
        dags = _wait("the dag-processor's first parse", lambda: {d["dag_id"] for d in client.dags()} >= DAGS, 120)
        assert dags
        assert {d["dag_id"] for d in client.dags()} == DAGS
        assert client.import_errors() == []
        assert all(d["is_paused"] for d in client.dags())  # nothing runs until the user turns it on
    parts = {p.name: p for p in stack.status(airflow).parts}
    for name in airflow_server.PROCESSES:
        assert parts[name].healthy, parts[name]
        assert parts[name].address == airflow.airflow.base_url
    assert airflow.airflow.base_url.startswith("http://127.0.0.1:")


def test_the_scheduler_runs_alert_summary_and_its_message_has_the_minutes_counts(
    airflow: Settings, telegram: TelegramFake
) -> None:
    start, by_rule = _closed_minute(airflow.lake.root)
    before = len(telegram.sent)
    with AirflowClient(airflow) as client:
        client.unpause("alert_summary")  # its latest interval runs at once, then one run a minute
        try:
            run = _wait(
                "a scheduled alert_summary run to succeed",
                lambda: next((r for r in client.runs("alert_summary") if r["state"] == "success"), None),
                180,
                2,
            )
        finally:
            client.request("PATCH", "/api/v2/dags/alert_summary", json={"is_paused": True})
    assert run["run_type"] == "scheduled"  # type: ignore[index]
    messages = telegram.sent[before:]
    assert len(messages) == 1, messages  # later runs find no new minute: nothing more
    text = messages[0]["text"]
    assert int(messages[0]["chat_id"]) == CHAT
    assert f"{start:%H:%M}" in text
    assert f"{sum(by_rule.values())} alerts" in text, text
    assert "by rule</b>: overspeed 6, engine_stress 1" in text, text
    assert "by color</b>: Red 5, Blue 2" in text, text  # Red: 4 overspeed + 1 engine_stress


def test_dag_test_fleet_reference_publishes_the_fleet(airflow: Settings) -> None:
    done = airflow_dag_test(airflow, "fleet_reference", {"cars": 9, "seed": 3})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cars = (Path(airflow.lake.dims) / "cars.json").read_text().splitlines()
    assert len(cars) == 9
    assert json.loads(cars[0])["car_id"].startswith("car-")


def test_dag_test_data_quality_passes_on_a_lake_that_holds(airflow: Settings, tmp_path: Path) -> None:
    """data_quality's run succeeds when the checked tables hold (its failing run, on a crafted
    expectation: tests/e2e), and the results land in gold/dq_results."""
    suites = tmp_path / "suites.yaml"
    suites.write_text("silver/alerts:\n  expectations:\n    - {not_null: [car_id, rule, event_time]}\n")
    _closed_minute(airflow.lake.root)  # silver/alerts' rows (the module's lake may have none yet)
    done = airflow_dag_test(airflow, "data_quality", {"since": "all"}, env={"FLEETSTREAM_QUALITY__SUITES": str(suites)})
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    assert "1/1 expectations hold" in said, said[-4000:]
    results = pl.read_delta(f"{airflow.lake.root}/gold/dq_results")
    assert results.filter(pl.col("table_name") == "silver/alerts")["passed"].to_list() == [True]


def test_dag_test_stream_watchdog_passes_a_running_stream_and_reports_a_stopped_one(
    airflow: Settings, telegram: TelegramFake
) -> None:
    status = airflow.state_dir / STATUS_FILE
    lake = QueryHealth("lake", 12, "", 100, 10.0, 50.0, 800, 40, "records", None)
    write_status(status, [lake], time.time(), "running", time.time() - 60, os.getpid())  # this process: alive
    before = len(telegram.sent)
    healthy = airflow_dag_test(airflow, "stream_watchdog")
    assert healthy.returncode == 0, healthy.stdout[-3000:] + healthy.stderr[-3000:]
    assert "the streaming pipeline is running and keeping up" in healthy.stdout + healthy.stderr
    assert len(telegram.sent) == before  # nothing to say

    write_status(status, [lake], time.time() - 600, "stopped", time.time() - 900, os.getpid())
    down = airflow_dag_test(airflow, "stream_watchdog")
    assert down.returncode != 0  # the task fails while the stream is down: the run is red
    assert "the streaming pipeline stopped at" in down.stdout + down.stderr
    [message] = telegram.sent[before:]
    assert "needs attention" in message["text"]
    assert "stopped at" in message["text"]


def test_bot_lists_runs_and_kills_dags(airflow: Settings) -> None:
    listing = bot.answer(airflow, "/dags")
    for dag in DAGS:
        assert dag in listing
    assert "* * * * *" in listing  # alert_summary's schedule

    started = bot.answer(airflow, "/run fleet_reference")  # manual only: unpaused and run at once
    run_id = re.search(r"<code>(.*?)</code>", started).group(1)  # type: ignore[union-attr]
    with AirflowClient(airflow) as client:
        _wait("the run to succeed", lambda: client.run("fleet_reference", run_id)["state"] == "success", 120, 2)
    assert run_id in bot.answer(airflow, "/runs fleet_reference")
    assert "success" in bot.answer(airflow, "/runs fleet_reference")

    queued = bot.answer(airflow, "/run data_quality")  # scheduled and paused: the run waits
    assert "waits until it is unpaused" in queued
    waiting = re.search(r"<code>(.*?)</code>", queued).group(1)  # type: ignore[union-attr]
    killed = bot.answer(airflow, f"/kill {waiting}")
    assert killed.endswith("of data_quality is now failed"), killed
    with AirflowClient(airflow) as client:
        run = client.run("data_quality", waiting)
    assert run["state"] == "failed"
    assert run["start_date"] is None  # it never ran

    assert bot.answer(airflow, "/run drop_everything").startswith("no DAG drop_everything; the DAGs: ")
    assert "no DAG has a run" in bot.answer(airflow, "/kill manual__1999-01-01")
    assert bot.answer(airflow, "/runs").startswith("usage: /runs")
    nowhere = airflow.model_copy(update={"airflow": AirflowSettings(port=free_port_base(1))})
    assert "does not answer" in bot.answer(nowhere, "/dags")
    wrong = airflow.model_copy(update={"airflow": airflow.airflow.model_copy(update={"password": SecretStr("no")})})
    assert "refused the login" in bot.answer(wrong, "/dags")
