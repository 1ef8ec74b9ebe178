from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleetstream.bench.common import in_subprocess
from fleetstream.bench.sim import MARK_BEGIN, MARK_END, Measure, report, write_report


def test_median_and_report_section() -> None:
    measures = [Measure("generator", [3.0, 1.0, 2.0], 600, 120.0), Measure("broker", [5.0, 4.0], 600)]
    assert measures[0].median == 2.0
    assert measures[1].median == 4.5
    section = report(measures, cars=10, ticks=60, repeat=3)
    assert section.startswith(MARK_BEGIN)
    assert section.endswith(MARK_END)
    assert "| generator | 2 | 3, 1, 2 | 120 MiB |" in section


def test_report_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# Benchmarks\n\nintro\n\n{MARK_BEGIN}\nold figures\n{MARK_END}\n\n## Pipeline\nkept\n")
    write_report(f"{MARK_BEGIN}\nnew figures\n{MARK_END}", path)
    text = path.read_text()
    assert "old figures" not in text
    assert "new figures" in text
    assert text.startswith("# Benchmarks\n\nintro")
    assert text.endswith("## Pipeline\nkept\n")
    write_report(f"{MARK_BEGIN}\nnewer\n{MARK_END}", tmp_path / "fresh.md")
    assert (tmp_path / "fresh.md").read_text().startswith("# Benchmarks")


WORKER = """
import pathlib, subprocess, time


def measure(marker: str) -> dict:
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)  # as `fleetstream run` is started
    pathlib.Path(marker + ".started").write_text(str(child.pid))
    try:
        time.sleep(600)
    finally:
        child.terminate()
        child.wait()
        pathlib.Path(marker + ".stopped").write_text("")
    return {}
"""


def test_an_interrupted_measure_stops_what_its_worker_started(tmp_path: Path, monkeypatch: Any) -> None:
    """An interrupt of the bench alone (a `kill -INT`, or SIGTERM taken as one; a terminal's Ctrl-C
    reaches only the bench too, the workers having sessions of their own) is passed on to the
    worker, whose own cleanup then runs: before, the worker was killed and a `fleetstream run` it
    had started in a session of its own was left running."""
    (tmp_path / "slow_worker.py").write_text(WORKER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    marker = str(tmp_path / "marker")

    done = threading.Event()

    def interrupt_once_started() -> None:  # (only while the measure runs: a stray one would end the session)
        while not done.wait(0.1):
            if Path(marker + ".started").exists():
                os.kill(os.getpid(), signal.SIGINT)
                return

    interrupter = threading.Thread(target=interrupt_once_started, daemon=True)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            in_subprocess("slow_worker", "measure", marker=marker)
    finally:
        done.set()
        interrupter.join()
    child = int(Path(marker + ".started").read_text())
    assert Path(marker + ".stopped").exists()  # the worker's `finally` ran
    assert not psutil.pid_exists(child)
