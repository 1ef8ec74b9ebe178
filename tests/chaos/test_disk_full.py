"""Chaos: full disks while the simulator sends and the stream writes the lake. First the lake's
disk (Delta tables, checkpoints): the stream stops and says why; then the state directory's disk
(the broker's log): the broker halts. Once space is freed, `fleetstream stream` (with `fleetstream
lake repair` when it names a torn checkpoint file) and `fleetstream up` recover it all: nothing
is lost or doubled.

The disks are small tmpfs mounts made for the test, which needs root (as CI runs); elsewhere the
test is skipped, saying so."""

from __future__ import annotations

import errno
import functools
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

from fleetstream.testing import HEAVY_TIMEOUT_S, free_port_base, interrupt_all

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as the full disk needs root"),
]

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
# 50 events/s from before the first disk fills until AFTER_S after the broker is back (SECONDS: at most)
CARS, RATE, SECONDS, AFTER_S = 10, 5, 900, 10
DISK_MB = 384
FULL_S = 30  # how long the disk stays full: longer than Spark's Kafka timeouts (20 s)


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


def _fill(path: Path) -> int:
    """Write zeros into ``path`` until the disk is full; returns the bytes written."""
    chunk, written = b"\0" * (1 << 20), 0
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Two small disks: one under the state directory (the broker's log), one under the lake."""
    mounts = {name: tmp_path / name for name in ("state", "lake")}
    for mount in mounts.values():
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)], check=True)
    try:
        yield mounts
    finally:
        for mount in mounts.values():
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def env(disks: dict[str, Path]) -> Iterator[dict[str, str]]:
    port = free_port_base(2)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_STATE_DIR": str(disks["state"] / "state"),
        "FLEETSTREAM_KAFKA__PORT": str(port),
        "FLEETSTREAM_KAFKA__CONTROLLER_PORT": str(port + 1),
        "FLEETSTREAM_KAFKA__SECURE": "true",
        "FLEETSTREAM_LAKE__ROOT": str(disks["lake"] / "lake"),
        "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1",
        "FLEETSTREAM_STREAM_ONLY": "bronze,silver",
    }
    yield env
    subprocess.run([FLEETSTREAM, "down"], env=env, capture_output=True, timeout=120, check=False)


# a hang guard, not a speed target: this scenario takes 6 to 10 min on a slow day, over the suite's 600 s
@pytest.mark.timeout(HEAVY_TIMEOUT_S)
def test_full_disks_under_the_lake_then_the_state_directory_recover_losing_nothing(
    env: dict[str, str], disks: dict[str, Path], tmp_path: Path, figures: Callable[[str, str], None]
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEETSTREAM, *args], env=env, capture_output=True, text=True, timeout=300, check=False)

    def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("a") as out:
            process = subprocess.Popen([FLEETSTREAM, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        started.append(process)
        return process

    assert cli("up", "--detach").returncode == 0
    assert cli("reference", "publish", "--cars", str(CARS)).returncode == 0
    lake, logs = disks["lake"] / "lake", [tmp_path / "simulator.log", tmp_path / "stream.log"]
    bronze_rows = functools.partial(_rows, lake / "bronze" / "telemetry")
    started: list[subprocess.Popen[bytes]] = []
    seen: list[str] = []
    try:
        stream = start(["stream"], logs[1])
        simulator = start(["simulate", "--cars", str(CARS), "--rate", str(RATE), "--duration", str(SECONDS)], logs[0])
        _wait("bronze's first rows", lambda: bronze_rows() > 0, 180, logs)

        # 1. the lake's disk: the stream's next batch cannot write; it stops and says why
        filler = disks["lake"] / "filler"
        filled = _fill(filler)
        _wait("the stream to stop on the full disk", lambda: stream.poll() is not None, 120, logs)
        assert stream.returncode == 1
        assert "the disk is full (No space left on device)" in logs[1].read_text(), logs[1].read_text()[-4000:]
        lake_full_at = bronze_rows()
        filler.unlink()
        stream = start(["stream"], logs[1])  # resumes, or names the repair a torn checkpoint file needs
        _wait("bronze to grow again", lambda: bronze_rows() > lake_full_at or stream.poll() is not None, 180, logs)
        if stream.poll() is not None:
            assert "fleetstream lake repair" in logs[1].read_text()[-5000:], logs[1].read_text()[-4000:]
            repaired = cli("lake", "repair")
            assert repaired.returncode == 0, repaired.stderr[-3000:]
            seen.append("repair needed")
            stream = start(["stream"], logs[1])
            _wait("bronze to grow again", lambda: bronze_rows() > lake_full_at, 180, logs)

        # 2. the state directory's disk: the broker cannot append and halts; the stream waits for it
        filler = disks["state"] / "filler"
        _fill(filler)
        state = json.loads((disks["state"] / "state" / "stack.json").read_text())
        broker = next(s["pid"] for s in state["services"] if s["name"] == "kafka")
        _wait("the broker to halt", lambda: not psutil.pid_exists(broker), 60, logs)
        state_full_at = bronze_rows()
        time.sleep(FULL_S)
        assert stream.poll() is None, "the stream stopped while the broker was down"
        filler.unlink()
        freed = time.monotonic()
        again = cli("up", "--detach")  # starts the broker again
        assert again.returncode == 0, again.stderr

        # the input goes on past the broker's halt however long it took on this machine, then stops
        time.sleep(AFTER_S)
        assert simulator.poll() is None, logs[0].read_text()[-3000:]
        simulator.send_signal(signal.SIGINT)
        assert simulator.wait(120) == 0, logs[0].read_text()[-3000:]  # (its producer's flush: up to 60 s)
        said = re.search(r"([\d,]+) events from .* delivered ([\d,]+), failed ([\d,]+)", logs[0].read_text())
        assert said is not None, logs[0].read_text()[-3000:]
        produced, delivered, failed = (int(n.replace(",", "")) for n in said.groups())
        assert (delivered, failed) == (produced, 0)  # the producer's buffer rode the broker's halt out
        _wait("bronze to hold every delivered record", lambda: bronze_rows() >= delivered, 240, logs)
        caught_up = time.monotonic() - freed
        assert state_full_at < delivered  # the second disk filled before the end of the input
        # the stream rode the broker's halt out: a query that timed out was restarted, not the stream
        assert stream.poll() is None, logs[1].read_text()[-4000:]
        restarts = logs[1].read_text().count("restarting it in")

        def accounted() -> int:
            return sum(_rows(lake / t) for t in ("silver/telemetry", "quarantine/telemetry", "silver/duplicates"))

        _wait("silver, quarantine and duplicates to account for bronze", lambda: accounted() >= delivered, 120, logs)
        bronze = pl.read_delta(str(lake / "bronze" / "telemetry"), columns=["kafka_partition", "kafka_offset"])
        assert bronze.height == delivered  # nothing lost, nothing written twice
        assert bronze.unique().height == delivered
        assert accounted() == delivered
        figures("lake-disk", f"{delivered:,} records, {lake_full_at:,} in bronze when the disk filled; the restart "
                             f"needed {'`fleetstream lake repair`' if seen else 'no repair'} in this run (a "
                             f"{filled / 2**20:.0f} MiB filler)")  # fmt: skip
        figures("state-disk", f"{state_full_at:,} records in bronze when the second disk filled; bronze complete "
                              f"{caught_up:.0f} s after the space was freed and the broker started; {restarts} "
                              f"quer{'y' if restarts == 1 else 'ies'} restarted in this run")  # fmt: skip
    finally:
        interrupt_all(started)
