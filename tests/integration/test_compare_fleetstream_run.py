"""`bench compare`'s fleetstream contender on the real broker, Spark and Delta: `fleetstream stream`
as the product runs it (the alert publisher in an application of its own), ready once an alert has
come through, measured over both applications, stopped with nothing left behind."""

from __future__ import annotations

from pathlib import Path

import psutil

from fleetstream.bench.compare import MAX, Workload, run_system
from fleetstream.config import Settings


def test_fleetstream_microbatch_through_a_small_workload(stack_settings: Settings, tmp_path: Path) -> None:
    workload = Workload(cars=200, rates=(500,), seconds=8, warmup_s=2, max_events=4000, drain_s=60,
                        burst_timeout_s=120, start_timeout_s=300)  # fmt: skip
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    lines: list[str] = []
    runs = run_system("fleetstream-microbatch", workload, stack_settings.kafka.bootstrap, tmp_path, lines.append)

    assert [r.rate for r in runs] == [MAX, "500"], lines
    for run in runs:
        assert run.correct, run  # every expected alert, and no other (the readiness probe's are not counted)
        assert run.alerts_expected > 0
        # two Spark drivers and their Python processes were measured, not the contender alone
        assert run.peak_rss_mib > 1000, run
    state = tmp_path / "fleetstream-microbatch" / "lake-state"
    assert (state / "logs" / "stream-alert-data.log").exists(), "the publisher did not run apart"
    assert lines[-1] == "fleetstream-microbatch: stopped, its topics deleted"
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, f"processes left behind: {left}"
