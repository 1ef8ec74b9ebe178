"""`fleetstream bench compare --quick` as a user runs it, on the real broker: every kind of system
(fleetstream with the whole lake and its real-time alerts, the seed-style chain of three Spark
applications, Quix Streams) is started, meets a burst and a fixed rate, is measured against the
simulator's ground truth and stopped; the report and plot are written, and nothing is left behind.

This is also the suite's check of `fleetstream stream --alerts-mode realtime` live: its alert-data
equals the ground truth (precision and recall 1.000) through a burst and a fixed rate, and Ctrl-C
stops it with exit 0 (the contender fails otherwise). fleetstream-microbatch is the same contender
with `--alerts-mode microbatch` (test_separate_alert_app.py runs that mode as a service); leaving
it out saves the suite two minutes of a third Spark pipeline. How long it takes, and whether a
system keeps up with the fixed rate on a machine busy with the rest of the suite, are
measurements: printed (docs/benchmarks.md quotes them), not asserted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fleetstream.bench.compare import QUICK
from fleetstream.bench.contenders import SYSTEMS
from fleetstream.config import Settings, process_env
from fleetstream.ingest.kafka import make_admin
from fleetstream.testing import HEAVY_TIMEOUT_S

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")
COMPARED = [system for system in SYSTEMS if system != "fleetstream-microbatch"]


def _rows(report: str) -> dict[tuple[str, str], list[str]]:
    """The report's table: (system, input) -> the row's cells."""
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 13 and cells[0] in SYSTEMS:
            rows[(cells[0], cells[1])] = cells
    return rows


# a hang guard, not a speed target: this scenario takes 6 to 10 min on a slow day, over the suite's 600 s
@pytest.mark.timeout(HEAVY_TIMEOUT_S)
def test_quick_compare_runs_every_system_correctly(stack_settings: Settings, tmp_path: Path) -> None:
    env = {
        **process_env(stack_settings, os.environ),  # its Kafka, with the credentials
        "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
    }
    admin = make_admin(stack_settings.kafka)
    topics_before = set(admin.list_topics(timeout=10).topics) | {"__consumer_offsets"}
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    report_file, plot_file = tmp_path / "bench.md", tmp_path / "bench.png"
    report_file.write_text("# Benchmarks\n")
    started = time.monotonic()
    done = subprocess.run(
        [FLEETSTREAM, "bench", "compare", "--quick", "--systems", ",".join(COMPARED), "--write", str(report_file),
         "--plot", str(plot_file)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    print(f"bench compare --quick took {took:.0f} s\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    assert done.returncode == 0, done.stderr[-4000:]

    rows = _rows(report_file.read_text())
    rate = f"{QUICK.rates[0]:,}"
    assert set(rows) == {(system, run) for system in COMPARED for run in ("max", rate)}, sorted(rows)
    for (system, run), cells in rows.items():
        precision, recall, verdict = cells[8], cells[9], cells[12]
        assert (precision, recall) == ("1.000", "1.000"), f"{system} at {run}: {cells}"  # the ground truth
        # every alert came, and only those; falling behind (lag that keeps growing) is a verdict, not a failure
        assert verdict in (("done",) if run == "max" else ("kept up", "fell behind")), f"{system} at {run}: {cells}"
        assert float(cells[10]) > 0, f"{system} at {run}: no CPU measured"
        if run == rate:
            p50, p99 = (float(cells[i].replace(",", "")) for i in (3, 5))
            assert 0 < p50 <= p99, f"{system}: latency p50 {p50} ms, p99 {p99} ms at {rate} events/s"
    assert plot_file.stat().st_size > 0

    logs = tmp_path / "state" / "bench-compare"
    for system in COMPARED:  # each process's output, kept for the user
        for process in SYSTEMS[system]:
            assert (logs / f"{system}-{process}.log").exists(), sorted(p.name for p in logs.iterdir())
    deadline = time.monotonic() + 15  # the broker's metadata catches up with a deletion within moments
    while (left_topics := set(admin.list_topics(timeout=10).topics) - topics_before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left_topics, f"the workload's topics are still on the broker: {left_topics}"
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, f"processes left behind: {left}"
