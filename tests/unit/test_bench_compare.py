"""`bench compare`'s measuring code: lag detection, segments, sustained rates, the process-tree meter,
the report and plot, and the Quix contender's record function."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetstream.bench.compare import (
    MARK_BEGIN,
    MARK_END,
    QUICK,
    Run,
    TreeMeter,
    contender_env,
    lag_grows,
    max_sustained,
    plot,
    report,
    segment_alerts,
    verdict,
)
from fleetstream.bench.contenders.quix import car_table, fire
from fleetstream.config import Settings
from fleetstream.reference.catalog import generate_cars, model_by_id
from fleetstream.reference.publish import publish
from fleetstream.rules import expected_gear


def test_lag_grows_only_when_latency_keeps_rising() -> None:
    jitter = [(t, 400.0 + 300.0 * ((t // 500) % 2)) for t in range(0, 60_000, 50)]  # micro-batch saw-tooth
    assert not lag_grows(jitter)
    behind = [(t, 100.0 + 0.2 * t) for t in range(0, 60_000, 50)]  # 20 % slower than the input
    assert lag_grows(behind)
    short_rise = [(t, 100.0 + 0.1 * t) for t in range(0, 5_000, 50)]  # steep, but 500 ms in all
    assert not lag_grows(short_rise)
    assert not lag_grows([(1, 5.0e6), (2, 9.0e6)])  # too few samples to tell


def test_segment_alerts_takes_one_event_time_range() -> None:
    seen = {("a", "overspeed"): (1_000, 5.0), ("b", "overspeed"): (2_000, 6.0), ("c", "gear_mismatch"): (3_000, 7.0)}
    assert set(segment_alerts(seen, 1_500, 3_000)) == {("b", "overspeed")}
    assert segment_alerts(seen, 4_000, 5_000) == {}
    # a rule the other systems do not implement is left out of the comparison
    assert segment_alerts({("d", "zone_overspeed"): (2_000, 6.0)}, 1_500, 3_000) == {}


def _run(system: str, rate: str, **kw: object) -> Run:
    base: dict[str, object] = dict(events=1000, seconds=1.0, alerts_expected=10, alerts_got=10, precision=1.0,
                                   recall=1.0)  # fmt: skip
    return Run(system, rate, **{**base, **kw})  # type: ignore[arg-type]


def test_max_sustained_ignores_bursts_wrong_and_lagging_runs() -> None:
    runs = [
        _run("a", "max", throughput=9e9),
        _run("a", "1,000"),
        _run("a", "5,000"),
        _run("a", "20,000", lag_grows=True),
        _run("b", "1,000", precision=0.5),
        _run("c", "1,000", delivered=False, recall=0.4),
    ]
    assert max_sustained(runs) == {"a": 5000, "b": None, "c": None}
    assert [verdict(r) for r in runs] == [
        "done", "kept up", "kept up", "fell behind", "**wrong alerts**", "fell behind",
    ]  # fmt: skip


def test_report_has_every_run_and_the_plot(tmp_path: Path) -> None:
    runs = [
        _run("quix", "max", seconds=2.0, throughput=4321.0, cpu_cores=0.5, peak_rss_mib=96.0),
        _run("quix", "1,000", seconds=20.0, events=20_000, latency_ms={"p50": 41.0, "p95": 90.0, "p99": 101.4},
             samples=150, cpu_cores=0.03, peak_rss_mib=97.0),
        _run("seed-style", "1,000", seconds=20.0, events=20_000, latency_ms={"p50": 9000.0, "p95": 11000.0,
             "p99": 12000.0}, samples=150, lag_grows=True),
    ]  # fmt: skip
    text = report(runs, QUICK, "test machine", "images/bench-compare.png")
    assert text.startswith(MARK_BEGIN)
    assert text.endswith(MARK_END)
    assert "| quix | max | 500 | - | - | - | 4,321 | 10 / 10 | 1.000 | 1.000 | 0.50 | 96 MiB | done |" in text
    assert "| quix | 1,000 | 1,000 | 41 | 90 | 101 | - | 10 / 10 | 1.000 | 1.000 | 0.03 | 97 MiB | kept up |" in text
    assert "- quix: **1,000 events/s**" in text
    assert "- seed-style: none of the rates tried" in text
    assert "![p50 and p99 event-to-alert latency against input rate](images/bench-compare.png)" in text
    png = tmp_path / "plot.png"
    plot(runs, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


BURN = """
import os, time
if os.fork() == 0:
    block = bytearray(200 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    end = time.process_time() + 1.5
    while time.process_time() < end:
        pass
    os._exit(0)
os.wait()
"""


def test_tree_meter_counts_cpu_and_memory_of_descendants() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN])
    meter = TreeMeter([child.pid], interval=0.1)
    meter.mark()
    meter.start()
    child.wait(30)
    time.sleep(0.2)
    cpu, peak = meter.since_mark()
    meter.done.set()
    meter.join()
    # the grandchild's 1.5 s of CPU, once: seen while it ran, then in the child's reaped children's time
    assert 1.4 <= cpu <= 2.3, cpu
    assert peak >= 190, peak  # the grandchild's 200 MiB, resident


BURN_BRIEFLY = "import time\\nend = time.process_time() + 0.1\\nwhile time.process_time() < end: pass"
SPAWN = f"""
import subprocess, sys
for _ in range(12):
    subprocess.run([sys.executable, "-c", "{BURN_BRIEFLY}"])
"""


def test_tree_meter_counts_processes_that_end_between_its_samples() -> None:
    """Short-lived children (a JVM's ``chmod`` per file) are never sampled alive: their CPU is in
    their parent's reaped children's time."""
    child = subprocess.Popen([sys.executable, "-c", SPAWN])
    meter = TreeMeter([child.pid], interval=60)  # (no sample between the mark and the end)
    meter.mark()
    time.sleep(0.3)  # the first children start and end
    meter.sample()
    while child.poll() is None:
        time.sleep(0.05)
        cpu = meter.since_mark()[0]  # (the child is sampled until it ends; its own children never)
    assert 1.2 <= cpu <= 2.6, cpu  # twelve children's 0.1 s each, and their interpreters' start


def test_contender_env_points_every_process_at_the_run() -> None:
    settings = Settings()
    topics = settings.kafka.topics.tagged("x1", "cmp-")
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": "h:1", "topics": topics})}
    )
    env = contender_env(settings)
    assert env["FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS"] == "h:1"
    assert env["FLEETSTREAM_KAFKA__TOPICS__ALERTS"] == "cmp-alert-data-x1"
    assert env["FLEETSTREAM_KAFKA__TOPICS__SENSORS"] == "cmp-sensors-sample-x1"
    assert "FLEETSTREAM_SPARK__MASTER" not in env  # `fleetstream stream` chooses it, as in the product


@pytest.fixture
def cars(tmp_path: Path) -> dict[str, dict[str, object]]:
    publish(Settings(), str(tmp_path), generate_cars(20, seed=3))
    return car_table(str(tmp_path))


def test_quix_contender_fires_the_three_rules(cars: dict[str, dict[str, object]]) -> None:
    car_id = sorted(cars)[0]
    upshift = cars[car_id]["upshift"]
    assert isinstance(upshift, list)

    def event(speed: float, rpm: int, gear: int) -> dict[str, object]:
        return {"event_id": "e", "car_id": car_id, "event_time": 1, "speed": speed, "rpm": rpm, "gear": gear}

    right = expected_gear(50.0, upshift)
    assert fire(event(50.0, 2500, right), cars) == []
    assert [a["rule"] for a in fire(event(130.0, 2500, expected_gear(130.0, upshift)), cars)] == ["overspeed"]
    assert [a["rule"] for a in fire(event(50.0, 6500, right), cars)] == ["engine_stress"]
    mismatch = fire(event(50.0, 2500, right + 1), cars)
    assert [(a["rule"], a["expected_gear"]) for a in mismatch] == [("gear_mismatch", right)]
    assert fire(event(1.0, 900, 3), cars) == []  # standing still: no gear rule
    assert fire({**event(130.0, 2500, 1), "car_id": "nobody"}, cars) == []
    assert mismatch[0]["model"] in {f"{m.brand} {m.model}" for m in model_by_id().values()}
