"""Chaos on the streaming application while the simulator sends (live, faults and bad data on), with
every query of the lake, the stateful episodes query and the alert publisher as an application of its
own (the stream's child, in a process group of its own). One run, in its richest form:

- ``kill -9`` of the stream at random points, several times (``FLEETSTREAM_CHAOS_KILLS``, 2 here;
  10 in the long run, docs/reliability.md), each followed by a restart. The first kill comes with
  episodes open, rows waiting for their upsert and gold's state in memory. Each time the publisher
  sees its parent gone and stops (with its JVM): no orphan, no second writer after the restart;
- the reference data deleted while the stream runs (it keeps the copy it has), and missing at a
  restart (refused with the command that publishes it);
- the newest offsets file of the lake's checkpoint torn at a kill (refused with the command that
  repairs it; `fleetstream lake repair` then makes the restart whole);
- the last run, ``fleetstream stream --available-now``, drains the rest while Airflow's
  lake_maintenance DAG (dag.test(): `fleetstream lake maintain` as its task) compacts and vacuums
  beside it.

After all of it: bronze = produced, every bronze record in exactly one of silver, quarantine or
duplicates, alerts = the simulator's ground truth, no id twice; gold/car_minutes sums to exactly
silver's rows and gold/car_state holds each car's newest; the episodes are the ground truth's, each
once, their lifecycle messages under one id, none left waiting for an upsert."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import psutil
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from fleetstream.clients import spark_kafka
from fleetstream.config import Settings, process_env
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.pipeline import gold
from fleetstream.pipeline.episodes import STATE_LAYOUTS
from fleetstream.pipeline.offline import RULE as OFFLINE_RULE
from fleetstream.pipeline.session import spark_session
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.rules.engine import load_rules
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation
from fleetstream.testing import HEAVY_TIMEOUT_S, airflow_dag_test_command, interrupt_all, join_and, private_run

pytestmark = pytest.mark.integration

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
KILLS = int(os.environ.get("FLEETSTREAM_CHAOS_KILLS", "2"))
assert KILLS >= 2, "the second kill is the one with the reference data deleted"
CARS, RATE, SECONDS = 20, 2, 100  # at least 4,000 events, live: the simulator sends until the last kill


def _rows(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    try:
        return pl.read_delta(str(path), columns=columns)
    except Exception:  # not created yet
        return pl.DataFrame()


def _commits(checkpoint: Path) -> int:
    """The newest committed batch of a query (-1: none yet)."""
    return max((int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")), default=-1)


def _cmdline(process: psutil.Process) -> list[str]:
    """A process's command line, empty once it has exited (Spark's Python workers come and go)."""
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _wait(what: str, done: Callable[[], bool], timeout: float, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if process.poll() is not None:
            raise AssertionError(f"{what}: the stream exited ({process.returncode})\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{log.read_text()[-4000:]}")


# a hang guard, not a speed target: this scenario takes 6 to 10 min on a slow day, over the suite's 600 s
@pytest.mark.timeout(HEAVY_TIMEOUT_S)
def test_stream_killed_again_and_again_reference_deleted_checkpoint_torn(
    stack_settings: Settings, tmp_path: Path, figures: Callable[[str, str], None]
) -> None:
    lake = tmp_path / "lake"
    settings = private_run(stack_settings, lake)
    topics = settings.kafka.topics
    ensure_topics(settings.kafka, topics.all())
    cars = generate_cars(CARS, 11)
    publish(settings, settings.lake.dims, cars)
    env = {
        **process_env(settings, os.environ),  # the broker with its credentials, the topics, the lake
        "FLEETSTREAM_STREAM_ONLY": "bronze,silver,alerts,gold,episodes",
        "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_EPISODES_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_GOLD_INTERVAL_SECONDS": "10",  # gold updated from rows kept in memory between
        "FLEETSTREAM_STREAM_MIN_OFFSETS_PER_TRIGGER": "1",
        "FLEETSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER": "300",  # small batches: a kill lands mid-work
        "FLEETSTREAM_LAKE__DIMS_REFRESH_S": "3",
    }
    seed = int(os.environ.get("FLEETSTREAM_CHAOS_SEED", str(random.randrange(1 << 16))))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (FLEETSTREAM_CHAOS_SEED repeats the run's kill points)")

    # the simulator sends until the kills are over (each restart needs new input to commit a batch)
    options = SimOptions(cars=CARS, rate=RATE, seed=11, faults=FAULT_PRESETS["heavy"],
                         bad_data=BAD_DATA_PRESETS["default"])  # fmt: skip
    simulation = Simulation(options, KafkaSink(settings.kafka, topics.sensors))
    produced: list[int] = []
    sending = threading.Event()
    sender = threading.Thread(target=lambda: produced.append(simulation.run(sending).events), daemon=True)
    sender.start()
    sending_since = time.monotonic()

    checkpoint = lake / "_checkpoints" / "lake"
    episode_commits = lake / "_checkpoints" / STATE_LAYOUTS[-1] / "commits"
    car_state_log = lake / "gold" / "car_state" / "_delta_log"
    waiting = lake / "silver" / "pending_upserts"
    runs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str, environment: dict[str, str] = env) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            process = subprocess.Popen([FLEETSTREAM, "stream", *args], env=environment, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        runs.append(process)
        return process, log

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEETSTREAM, *args], env=env, capture_output=True, text=True, timeout=300, check=False)

    def episodes_open() -> bool:
        """Whether an episode is open now: by its newest row, upserted or waiting for the next upsert."""
        fields = ["episode_id", "status", "as_of"]
        steps = _rows(waiting, ["kind", "episode"])
        if "kind" not in steps.columns:  # (not readable at this moment)
            return False
        steps = steps.filter(pl.col("kind") == "episode").select(pl.col("episode").struct.field(*fields))
        upserted = _rows(lake / "silver" / "alert_episodes", fields)
        frames = [f for f in (upserted, steps) if f.height]
        if not frames:
            return False
        newest = pl.concat(frames).sort("as_of").unique("episode_id", keep="last")
        return bool((newest["status"] == "open").any())

    def in_the_middle() -> bool:
        """Two episode batches (with episodes open, rows waiting for the next upsert) and three gold
        updates (the table's creation, then two from rows kept in memory)."""
        return (
            len(list(episode_commits.glob("[0-9]*"))) >= 2
            and len(list(car_state_log.glob("*.json"))) >= 3
            and _rows(waiting, ["kind"]).height > 0
            and episodes_open()
        )

    kills: list[tuple[int, int]] = []  # (batches committed, rows in bronze) at each kill
    upkeep: subprocess.Popen[str] | None = None
    try:
        for k in range(KILLS):
            stream, log = start(f"run{k}")
            at_start = _commits(checkpoint)
            _wait(f"run {k}: a new batch committed", lambda n=at_start: _commits(checkpoint) > n, 240, log, stream)
            if k == 0:
                _wait("episodes open and gold's state in memory", in_the_middle, 240, log, stream)
            if k == 1:  # the reference data deleted under the running stream: it keeps what it has
                shutil.rmtree(settings.lake.dims)
                _wait("the failed reload", lambda f=log: "not reloaded, keeping the previous" in f.read_text(), 60,
                      log, stream)  # fmt: skip
                committed = _commits(checkpoint)
                _wait("a batch after the deletion", lambda n=committed: _commits(checkpoint) > n, 60, log, stream)
            if k > 0:  # (the first kill right away: rows still wait for their upsert, at most every 60 s)
                time.sleep(rng.uniform(0, 3))
            bronze = _rows(lake / "bronze" / "telemetry", ["kafka_offset"]).height
            tree = psutil.Process(stream.pid).children(recursive=True)
            assert any("alert-data" in _cmdline(p) for p in tree), "no alert publisher application"
            os.killpg(stream.pid, signal.SIGKILL)
            stream.wait()
            kills.append((_commits(checkpoint), bronze))
            # the publisher, in a process group of its own, outlives the kill; it must see its parent
            # gone and stop (with its JVM) before the restart starts another
            _, alive = psutil.wait_procs(tree, timeout=120)
            for orphan in alive:  # (killed, so that a failure leaves nothing running)
                orphan.kill()
            assert not alive, [_cmdline(p)[:6] for p in alive]
            if k == 0:  # rows the killed run held back for its next upsert, for a later run to upsert
                assert pl.read_delta(str(waiting)).height > 0
            if k == 1:  # restarted without reference data: refused, and told what to run
                refused = cli("stream")
                assert refused.returncode == 1, refused.stderr[-3000:]
                assert "fleetstream reference publish" in refused.stderr, refused.stderr[-3000:]
                publish(settings, settings.lake.dims, cars)

        # the newest offsets file torn, as by a crash or a full disk while it was written
        newest = max((p for p in (checkpoint / "offsets").glob("[0-9]*")), key=lambda p: int(p.name))
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
        refused = cli("stream")
        assert refused.returncode == 1, refused.stderr[-3000:]
        assert "fleetstream lake repair" in refused.stderr, refused.stderr[-3000:]
        assert f"offsets/{newest.name}" in refused.stderr, refused.stderr[-3000:]
        repaired = cli("lake", "repair")
        assert repaired.returncode == 0, repaired.stderr[-3000:]
        assert f"offsets/{newest.name}" in repaired.stderr, repaired.stderr[-3000:]
        assert "repaired 1 damaged checkpoint files" in repaired.stdout, repaired.stdout
        said = " ".join(repaired.stderr.split())
        restored = sorted({line.split()[1] for line in repaired.stderr.splitlines() if line.startswith("restored ")})
        assert not restored, said  # the lake's commits record their batch's input: nothing to undo
        rebuilt = re.search(r"recorded in its commit to (\S+)", said)
        figures("torn", f"in this run the torn file was batch {newest.name}'s, " + (
            f"which {rebuilt[1]} (and the tables beside it) held: written again from the input range the commits "
            "recorded, nothing restored" if rebuilt else "which no table held yet, so it was moved aside"))  # fmt: skip
        assert newest.exists() == bool(rebuilt)
        assert list((checkpoint / "_damaged").iterdir())  # moved aside, not deleted

        # The last run drains the rest once the simulator is done, at the default batch size; its first
        # batch reads back from silver the rows gold had not taken in. Airflow's lake_maintenance DAG
        # runs beside it: compaction and VACUUM while the stream appends, upserts episodes and reads
        # silver as a stream.
        time.sleep(max(0.0, SECONDS - (time.monotonic() - sending_since)))
        sending.set()
        sender.join(60)
        assert produced, "the simulator did not finish"
        rest = {k: v for k, v in env.items() if k != "FLEETSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER"}
        last, log = start("last", "--available-now", environment=rest)
        argv, airflow_env = airflow_dag_test_command(
            settings.model_copy(update={"state_dir": tmp_path / "state"}), "lake_maintenance", {"retain_hours": 2}
        )
        upkeep = subprocess.Popen(argv, env=airflow_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kept = "".join(upkeep.communicate(timeout=480))
        assert last.wait(480) == 0, log.read_text()[-3000:]
    finally:
        sending.set()
        if upkeep is not None and upkeep.poll() is None:  # its task's `fleetstream lake maintain` and JVM too
            with contextlib.suppress(psutil.Error):
                for member in [*psutil.Process(upkeep.pid).children(recursive=True), psutil.Process(upkeep.pid)]:
                    member.kill()
        interrupt_all(runs)
        alive = [p for p in psutil.process_iter(["cmdline"]) if str(lake) in " ".join(p.info["cmdline"] or [])]
        assert not alive, "a stream outlived the test"
    assert upkeep.returncode == 0, kept[-4000:]  # the DAG run succeeded
    assert "maintained" in kept, kept[-4000:]
    assert "silver/telemetry:" in kept, kept[-4000:]

    def accounted() -> int:
        return sum(_rows(lake / t, ["kafka_offset"]).height
                   for t in ("silver/telemetry", "quarantine/telemetry", "silver/duplicates"))  # fmt: skip

    bronze = _rows(lake / "bronze" / "telemetry", ["kafka_partition", "kafka_offset"])
    assert bronze.height == produced[0]  # nothing lost, nothing written twice
    assert bronze.unique().height == produced[0]
    silver_ids = _rows(lake / "silver" / "telemetry", ["event_id"])
    assert silver_ids["event_id"].n_unique() == silver_ids.height
    assert accounted() == produced[0]
    quarantined = _rows(lake / "quarantine" / "telemetry", ["kafka_partition", "kafka_offset"])
    assert quarantined.unique().height == quarantined.height
    duplicates = _rows(lake / "silver" / "duplicates", ["kafka_offset"])
    assert duplicates.height == simulation.ground_truth.counts()["duplicate"]
    alerted = _rows(lake / "silver" / "alerts", ["alert_id", "event_id", "rule"])
    assert alerted["alert_id"].n_unique() == alerted.height
    assert set(zip(alerted["event_id"], alerted["rule"], strict=True)) == simulation.ground_truth.expected_alerts()
    figures(
        "kills",
        f"{produced[0]:,} events; the kills came after batches {join_and([str(b) for b, _ in kills])} "
        f"({join_and([f'{rows:,}' for _, rows in kills])} rows in bronze; seed {seed})",
    )

    spark = spark_session(settings, "fleetstream-chaos-check")
    silver = spark.read.format("delta").load(str(lake / "silver" / "telemetry"))
    fired = spark.read.format("delta").load(str(lake / "silver" / "alerts"))
    # the maintenance compacted silver (fewer files written than removed) under the stream's appends
    # (a live run's rows are all today's: no closed day to Z-order, which tests/spark/test_lake_maintain.py checks)
    optimized = (
        DeltaTable.forPath(spark, str(lake / "silver" / "telemetry")).history()
        .where("operation = 'OPTIMIZE'").select("operationMetrics").collect()
    )  # fmt: skip
    assert optimized
    assert all(
        int(r["operationMetrics"]["numAddedFiles"]) < int(r["operationMetrics"]["numRemovedFiles"]) for r in optimized
    ), optimized
    # gold: every silver row counted once in gold/car_minutes (partial rows: summed), alerts too
    minutes = spark.read.format("delta").load(str(lake / "gold" / "car_minutes"))
    totals = minutes.groupBy("car_id", "minute").agg(F.sum("events").alias("events"), F.sum("alerts").alias("alerts"))
    recomputed = gold.car_minutes(silver, fired).select("car_id", "minute", "events", "alerts")
    assert sorted(map(tuple, totals.collect())) == sorted(map(tuple, recomputed.collect()))
    state = spark.read.format("delta").load(str(lake / "gold" / "car_state"))
    latest = silver.groupBy("car_id").agg(F.max("event_time").alias("t"))
    assert state.count() == latest.count() == CARS
    assert state.join(latest, "car_id").where(F.col("event_time") != F.col("t")).count() == 0
    # episodes: the same as the ground truth's, each once, its lifecycle messages under one id; what
    # a killed run left waiting to be upserted was upserted by a later run
    assert spark.read.format("delta").load(str(waiting)).count() == 0
    episodes = spark.read.format("delta").load(str(lake / "silver" / "alert_episodes"))
    rules = {r.name: r.lifecycle.for_s for r in load_rules()}
    times = {r["event_id"]: r["event_time"] for r in silver.select("event_id", "event_time").collect()}
    everything = [(r["car_id"], r["rule"], r["started_at"]) for r in episodes.collect()]
    assert len(everything) == len(set(everything)) == episodes.select("episode_id").distinct().count()
    # the lost connections' offline episodes (if the run had any), each once, resolved at the car's
    # first report after (tests/integration/test_pipeline_e2e.py checks a run that has some)
    reports: dict[str, list[int]] = {}
    for r in silver.select("car_id", "event_time").collect():
        reports.setdefault(r["car_id"], []).append(r["event_time"])
    offline, unfinished = simulation.ground_truth.expected_offline(reports)
    resolved = {(r["car_id"], r["started_at"]): r["resolved_at"]
                for r in episodes.where(F.col("rule") == OFFLINE_RULE).collect()}  # fmt: skip
    assert set(offline) <= set(resolved) <= set(offline) | unfinished
    assert {key: resolved[key] for key in offline} == offline
    got = [key for key in everything if key[1] != OFFLINE_RULE]
    expected = sorted(simulation.ground_truth.expected_episodes(times, rules))
    assert expected, "the run opened no episode"
    # live, an event held back by the simulator (out of order) may reach the episodes query a batch
    # after the ones it preceded: it then counts, but the episode starts at the next one
    assert len(got) == len(expected)
    for (car, rule, start_at), (car_e, rule_e, start_e) in zip(sorted(got), expected, strict=True):
        assert (car, rule) == (car_e, rule_e)
        assert 0 <= start_at - start_e <= 3000, ((car, rule, start_at), start_e)
    messages = (
        spark.read.format("kafka").options(**spark_kafka(settings.kafka))
        .option("subscribe", topics.alerts).option("startingOffsets", "earliest").load()
        .select(F.from_json(F.col("value").cast("string"), "kind STRING, lifecycle STRING, episode_id STRING")
                .alias("m"))
        .where("m.kind = 'episode'").select("m.*")
    )  # fmt: skip
    opened = {r["episode_id"] for r in messages.where("lifecycle = 'opened'").collect()}
    assert opened == {r["episode_id"] for r in episodes.select("episode_id").collect()}
    # repeated, escalated and resolved messages, before a kill and after the restart, under those ids
    assert {r["episode_id"] for r in messages.where("lifecycle != 'opened'").collect()} <= opened
