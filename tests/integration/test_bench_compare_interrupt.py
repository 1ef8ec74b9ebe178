"""`bench compare` interrupted on the real broker, with the contender that starts in seconds (Quix):
Ctrl-C stops the systems under test and writes nothing (the whole quick run is
test_bench_compare_quick.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from fleetstream.config import Settings, process_env

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")


def test_ctrl_c_stops_the_systems_under_test_and_writes_nothing(stack_settings: Settings, tmp_path: Path) -> None:
    env = {
        **process_env(stack_settings, os.environ),  # its Kafka, with the credentials
        "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
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
