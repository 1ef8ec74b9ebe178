"""The lake batches' step log: wall time and the driver JVM's CPU time per step."""

from __future__ import annotations

import logging
import os
import re
import time

import pytest

from fleetstream.pipeline.clock import StepClock, process_cpu_s


def test_process_cpu_counts_this_process_and_knows_no_process() -> None:
    before = process_cpu_s(os.getpid())
    assert before is not None
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn CPU that /proc must see (at 100 ticks a second)
        pass
    after = process_cpu_s(os.getpid())
    assert after is not None
    assert after - before >= 0.2
    assert process_cpu_s(None) is None
    assert process_cpu_s(2**22 + 12345) is None  # (above the kernel's largest process id)


def test_step_clock_logs_each_step_with_its_cpu_and_the_time_between_batches(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fleetstream.pipeline.clock")
    first = StepClock("lake batch 0", os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    first.mark("silver")
    first.log()
    second = StepClock("lake batch 1", os.getpid(), since=first.ended)
    second.mark("write bronze/telemetry")
    second.log()
    lines = [r.getMessage() for r in caplog.records]
    assert re.match(r"lake batch 0: silver \d+\.\d\d s \(JVM CPU \d+\.\d\d s\)$", lines[0]), lines[0]
    cpu = float(lines[0].split("JVM CPU ")[1].split(" s")[0])
    assert cpu >= 0.1
    assert re.match(r"lake batch 1: since the last batch \d+\.\d\d s \(JVM CPU \d+\.\d\d s\), write ", lines[1])
    assert "write bronze/telemetry" in lines[1]


def test_step_clock_reads_no_cpu_unless_debug_is_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fleetstream.pipeline.clock")
    clock = StepClock("lake batch 0", os.getpid())
    clock.mark("silver")
    assert clock.steps[0][2] is None
    assert clock.pid is None
