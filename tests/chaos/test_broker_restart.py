"""Chaos: kill -9 the (secure) broker while the simulator sends and the stream writes the lake, then
start it again with `fleetstream up`: nothing is lost or doubled, and the stream does not stop.

Its own stack (state directory, ports), so the session's broker is left alone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest

from fleetstream.testing import free_port_base, interrupt_all

pytestmark = pytest.mark.integration

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
CARS, RATE, SECONDS = 10, 5, 60  # 3,000 events over a minute, the outage in the middle of it
OUTAGE_S = 10


def _rows(path: Path) -> int:
    try:
        return pl.read_delta(str(path), columns=["kafka_offset"]).height
    except Exception:  # not created yet
        return 0


def _wait(what: str, done: Callable[[], bool], timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(1)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tails}")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port_base(2)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
        "FLEETSTREAM_KAFKA__PORT": str(port),
        "FLEETSTREAM_KAFKA__CONTROLLER_PORT": str(port + 1),
        "FLEETSTREAM_KAFKA__SECURE": "true",
        "FLEETSTREAM_LAKE__ROOT": str(tmp_path / "lake"),
        "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_ONLY": "bronze,silver",
    }
    yield env
    subprocess.run([FLEETSTREAM, "down"], env=env, capture_output=True, timeout=120, check=False)


def test_broker_killed_mid_stream_and_restarted_loses_and_doubles_nothing(env: dict[str, str], tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEETSTREAM, *args], env=env, capture_output=True, text=True, timeout=180, check=False)

    assert cli("up", "--detach").returncode == 0
    assert cli("reference", "publish", "--cars", str(CARS)).returncode == 0
    lake, logs = tmp_path / "lake", [tmp_path / "simulator.log", tmp_path / "stream.log"]
    started = []
    try:
        for argv, log in (
            (["stream"], logs[1]),
            (["simulate", "--cars", str(CARS), "--rate", str(RATE), "--duration", str(SECONDS)], logs[0]),
        ):
            with log.open("w") as out:
                started.append(subprocess.Popen([FLEETSTREAM, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True))  # fmt: skip
        stream, simulator = started
        _wait("bronze's first rows", lambda: _rows(lake / "bronze" / "telemetry") > 0, 180, logs)

        state = json.loads((tmp_path / "state" / "stack.json").read_text())
        broker = next(s["pid"] for s in state["services"] if s["name"] == "kafka")
        os.killpg(broker, signal.SIGKILL)
        _wait("the broker to be gone", lambda: not psutil.pid_exists(broker), 30, logs)
        before = _rows(lake / "bronze" / "telemetry")
        time.sleep(OUTAGE_S)  # the simulator keeps producing into its buffer; the stream waits
        assert simulator.poll() is None
        assert stream.poll() is None
        again = cli("up", "--detach")
        assert again.returncode == 0, again.stderr
        restarted = time.monotonic()

        assert simulator.wait(SECONDS + 120) == 0, logs[0].read_text()[-3000:]
        said = re.search(r"([\d,]+) events from .* delivered ([\d,]+), failed ([\d,]+)", logs[0].read_text())
        assert said is not None, logs[0].read_text()[-3000:]
        produced, delivered, failed = (int(n.replace(",", "")) for n in said.groups())
        assert (delivered, failed) == (produced, 0)  # the producer's buffer rode the outage out
        assert delivered > CARS * RATE * SECONDS // 2
        _wait("bronze to hold every delivered record", lambda: _rows(lake / "bronze" / "telemetry") >= delivered,
              180, logs)  # fmt: skip
        caught_up = time.monotonic() - restarted
        assert stream.poll() is None, "the stream stopped"  # it rode the outage out
        assert before < delivered  # the kill came before the end of the input

        def accounted() -> int:
            return sum(_rows(lake / t) for t in ("silver/telemetry", "quarantine/telemetry", "silver/duplicates"))

        _wait("silver, quarantine and duplicates to account for bronze", lambda: accounted() >= delivered, 120, logs)
        bronze = pl.read_delta(str(lake / "bronze" / "telemetry"), columns=["kafka_partition", "kafka_offset"])
        assert bronze.height == delivered  # nothing lost, nothing written twice
        assert bronze.unique().height == delivered
        assert accounted() == delivered
        print(
            f"broker down {OUTAGE_S} s with {before} of {delivered} records in bronze; bronze complete "
            f"{caught_up:.0f} s after the restart (the simulator still sending until its end)"
        )
    finally:
        interrupt_all(started)
