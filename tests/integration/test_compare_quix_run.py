"""`bench compare` end to end on the real broker, with the contender that starts in seconds (Quix):
the system is started, meets a burst and two fixed rates, is measured and stopped, nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from fleetstream.bench.compare import MAX, Workload, report, run_system
from fleetstream.config import Settings
from fleetstream.ingest.kafka import make_admin

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")


def test_quix_through_a_small_workload(stack_settings: Settings, tmp_path: Path) -> None:
    workload = Workload(cars=200, rates=(200, 1000), seconds=8, warmup_s=2, max_events=4000, drain_s=30,
                        burst_timeout_s=60)  # fmt: skip
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    admin = make_admin(stack_settings.kafka)
    topics_before = set(admin.list_topics(timeout=10).topics) | {"__consumer_offsets"}  # the broker's own
    lines: list[str] = []
    runs = run_system("quix", workload, stack_settings.kafka.bootstrap, tmp_path, lines.append)

    assert [r.rate for r in runs] == [MAX, "200", "1,000"]
    for run in runs:
        assert run.correct, run  # every expected alert, and no other
        assert run.alerts_expected > 0
        assert run.peak_rss_mib > 20  # the Quix process was measured
    burst, slow, fast = runs
    assert burst.events == 4000
    assert burst.throughput > 0
    assert 150 < slow.input_rate < 250
    assert 800 < fast.input_rate < 1200
    for run in (slow, fast):
        assert run.samples > 0
        assert 0 < run.latency_ms["p50"] <= run.latency_ms["p99"] < 5000
        assert run.sustained
    assert lines[0] == "quix: starting"
    assert lines[-1] == "quix: stopped, its topics deleted"
    deadline = time.monotonic() + 15  # the broker's metadata catches up with a deletion within moments
    while (left_topics := set(admin.list_topics(timeout=10).topics) - topics_before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left_topics, f"the workload's topics are still on the broker: {left_topics}"
    assert (tmp_path / "quix" / "quix-quix.log").exists()
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, f"processes left behind: {left}"
    assert "| quix | 1,000 |" in report(runs, workload, "test machine")


def test_ctrl_c_stops_the_systems_under_test_and_writes_nothing(stack_settings: Settings, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
        "FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS": stack_settings.kafka.bootstrap,
    }
    report_file, plot_file = tmp_path / "bench.md", tmp_path / "bench.png"
    command = [FLEETSTREAM, "bench", "compare", "--quick", "--systems", "quix", "--write", str(report_file),
               "--plot", str(plot_file)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # interrupt once the burst is measured, during the fixed-rate segment
        lines.append(line)
        if "quix at max" in line:
            break
    assert any("quix at max" in line for line in lines), "".join(lines)
    contenders = [
        p for p in psutil.Process(process.pid).children(recursive=True) if "contenders" in " ".join(p.cmdline())
    ]
    assert contenders, "the Quix process runs under the bench"
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    assert "quix: stopped" in rest
    assert "interrupted" in rest
    assert not report_file.exists()
    assert not plot_file.exists()
    assert not [p for p in contenders if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert (tmp_path / "state" / "bench-compare" / "quix-quix.log").exists()
