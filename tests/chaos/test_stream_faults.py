"""Chaos on the streaming application while the simulator sends (live, faults and bad data on):

- ``kill -9`` of the stream at random points, several times (``FLEETSTREAM_CHAOS_KILLS``, 2 here;
  10 in the long run, docs/reliability.md), each followed by a restart;
- the reference data deleted while the stream runs (it keeps the copy it has), and missing at a
  restart (refused with the command that publishes it);
- the newest offsets file of the lake's checkpoint torn at a kill (refused with the command that
  repairs it; `fleetstream lake repair` then makes the restart whole).

After all of it: bronze = produced, every bronze record in exactly one of silver, quarantine or
duplicates, alerts = the simulator's ground truth, no id twice."""

from __future__ import annotations

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

from fleetstream.config import Settings, process_env
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, Simulation
from fleetstream.testing import interrupt_all, join_and, private_run

pytestmark = pytest.mark.integration

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
KILLS = int(os.environ.get("FLEETSTREAM_CHAOS_KILLS", "2"))
assert KILLS >= 2, "the second kill is the one with the reference data deleted"
CARS, RATE, SECONDS = 20, 2, 100  # 4,000 events, live, while the stream is killed and restarted


def _rows(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    try:
        return pl.read_delta(str(path), columns=columns)
    except Exception:  # not created yet
        return pl.DataFrame()


def _commits(checkpoint: Path) -> int:
    """The newest committed batch of a query (-1: none yet)."""
    return max((int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")), default=-1)


def _wait(what: str, done: Callable[[], bool], timeout: float, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if process.poll() is not None:
            raise AssertionError(f"{what}: the stream exited ({process.returncode})\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{log.read_text()[-4000:]}")


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
        "FLEETSTREAM_STREAM_ONLY": "bronze,silver,alerts,gold",
        "FLEETSTREAM_STREAM_SEPARATE_ALERT_APP": "false",
        "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_MIN_OFFSETS_PER_TRIGGER": "1",
        "FLEETSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER": "300",  # small batches: a kill lands mid-work
        "FLEETSTREAM_LAKE__DIMS_REFRESH_S": "3",
    }
    seed = int(os.environ.get("FLEETSTREAM_CHAOS_SEED", str(random.randrange(1 << 16))))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (FLEETSTREAM_CHAOS_SEED repeats the run's kill points)")

    options = SimOptions(cars=CARS, rate=RATE, duration=SECONDS, seed=11, faults=FAULT_PRESETS["heavy"],
                         bad_data=BAD_DATA_PRESETS["default"])  # fmt: skip
    simulation = Simulation(options, KafkaSink(settings.kafka, topics.sensors))
    produced: list[int] = []
    sender = threading.Thread(target=lambda: produced.append(simulation.run().events), daemon=True)
    sender.start()

    checkpoint = lake / "_checkpoints" / "lake"
    runs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            process = subprocess.Popen([FLEETSTREAM, "stream"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        runs.append(process)
        return process, log

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEETSTREAM, *args], env=env, capture_output=True, text=True, timeout=300, check=False)

    kills: list[tuple[int, int]] = []  # (batches committed, rows in bronze) at each kill
    try:
        for k in range(KILLS):
            stream, log = start(f"run{k}")
            at_start = _commits(checkpoint)
            _wait(f"run {k}: a new batch committed", lambda n=at_start: _commits(checkpoint) > n, 240, log, stream)
            if k == 1:  # the reference data deleted under the running stream: it keeps what it has
                shutil.rmtree(settings.lake.dims)
                _wait("the failed reload", lambda f=log: "not reloaded, keeping the previous" in f.read_text(), 60,
                      log, stream)  # fmt: skip
                committed = _commits(checkpoint)
                _wait("a batch after the deletion", lambda n=committed: _commits(checkpoint) > n, 60, log, stream)
            time.sleep(rng.uniform(0, 3))
            bronze = _rows(lake / "bronze" / "telemetry", ["kafka_offset"]).height
            os.killpg(stream.pid, signal.SIGKILL)
            stream.wait()
            kills.append((_commits(checkpoint), bronze))
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

        stream, log = start("last")
        sender.join(SECONDS + 120)
        assert produced, "the simulator did not finish"
        _wait("bronze to hold every record", lambda: _rows(lake / "bronze" / "telemetry", ["kafka_offset"]).height
              >= produced[0], 300, log, stream)  # fmt: skip

        def accounted() -> int:
            return sum(_rows(lake / t, ["kafka_offset"]).height
                       for t in ("silver/telemetry", "quarantine/telemetry", "silver/duplicates"))  # fmt: skip

        _wait("silver, quarantine and duplicates to account for bronze", lambda: accounted() >= produced[0], 120,
              log, stream)  # fmt: skip
        expected = simulation.ground_truth.expected_alerts()
        _wait("the alerts", lambda: _rows(lake / "silver" / "alerts", ["event_id"]).height >= len(expected), 120,
              log, stream)  # fmt: skip
    finally:
        interrupt_all(runs)
        alive = [p for p in psutil.process_iter(["cmdline"]) if str(lake) in " ".join(p.info["cmdline"] or [])]
        assert not alive, "a stream outlived the test"

    bronze = _rows(lake / "bronze" / "telemetry", ["kafka_partition", "kafka_offset"])
    assert bronze.height == produced[0]  # nothing lost, nothing written twice
    assert bronze.unique().height == produced[0]
    silver = _rows(lake / "silver" / "telemetry", ["event_id"])
    assert silver["event_id"].n_unique() == silver.height
    assert accounted() == produced[0]
    duplicates = _rows(lake / "silver" / "duplicates", ["kafka_offset"])
    assert duplicates.height == simulation.ground_truth.counts()["duplicate"]
    fired = _rows(lake / "silver" / "alerts", ["alert_id", "event_id", "rule"])
    assert fired["alert_id"].n_unique() == fired.height
    assert set(zip(fired["event_id"], fired["rule"], strict=True)) == expected
    figures(
        "kills",
        f"{produced[0]:,} events; the kills came after batches {join_and([str(b) for b, _ in kills])} "
        f"({join_and([f'{rows:,}' for _, rows in kills])} rows in bronze; seed {seed})",
    )
