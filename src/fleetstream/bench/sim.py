"""`fleetstream bench sim`: how fast the simulator generates and delivers telemetry.

Two measures, each repeated and reported as the median:
- generator alone: 10,000 cars, null sink, serialisation included, in a worker process pinned to
  one core with Polars limited to one thread;
- delivered into the broker: the same fleet through the idempotent Kafka producer into a fresh
  topic, timed until the last delivery report (a local stack on free ports is started if none runs).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetstream.config import KafkaSettings, S3Settings, Settings
from fleetstream.ingest.kafka import broker_count, delete_topics, ensure_topics
from fleetstream.testing import free_port_base

MARK_BEGIN = "<!-- bench:sim:begin -->"
MARK_END = "<!-- bench:sim:end -->"


@dataclass(frozen=True)
class Measure:
    name: str
    runs: list[float]  # events/s
    events: int
    peak_rss_mib: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def _run_simulation(cars: int, ticks: int, sink: Any) -> tuple[int, float]:
    from fleetstream.sim.runner import SimOptions, Simulation

    simulation = Simulation(SimOptions(cars=cars, fast=True, duration=float(ticks), seed=1), sink)
    began = time.perf_counter()
    stats = simulation.run()
    return stats.events, time.perf_counter() - began


def worker(cars: int, ticks: int) -> dict[str, float]:
    """Generator alone, in this process (the caller pins it to one core)."""
    import resource

    from fleetstream.ingest.sinks import NullSink

    events, seconds = _run_simulation(cars, ticks, NullSink())
    return {
        "events": events,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_generator(cars: int, ticks: int, repeat: int) -> Measure:
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    runs, rss, events = [], [], 0
    for _ in range(repeat):
        code = (
            "import json, os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from fleetstream.bench.sim import worker; "
            f"print(json.dumps(worker({cars}, {ticks})))"
        )
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        data = json.loads(result.stdout.strip().splitlines()[-1])
        runs.append(data["events"] / data["seconds"])
        rss.append(data["peak_rss_mib"])
        events = int(data["events"])
    return Measure(f"generator, null sink, {cars:,} cars, 1 core", runs, events, max(rss))


def measure_broker(settings: Settings, cars: int, ticks: int, repeat: int) -> Measure:
    from fleetstream.ingest.sinks import KafkaSink

    runs, events = [], 0
    for _ in range(repeat):
        topic = f"bench-sim-{uuid.uuid4().hex[:8]}"
        ensure_topics(settings.kafka, [topic])
        sink = KafkaSink(settings.kafka, topic)
        try:
            events, seconds = _run_simulation(cars, ticks, sink)
        finally:
            delete_topics(settings.kafka, [topic])  # 600,000 events a run: not left on the broker
        if sink.stats.failed or sink.stats.delivered != events:
            raise RuntimeError(f"benchmark lost messages: {sink.stats}")
        runs.append(events / seconds)
    return Measure(f"delivered into the local broker, {cars:,} cars", runs, events)


def run(settings: Settings, cars: int, ticks: int, repeat: int) -> list[Measure]:
    """Both measures; uses the configured Kafka if it answers, else a temporary local stack."""
    from fleetstream.local import stack

    measures = [measure_generator(cars, ticks, repeat)]
    if broker_count(settings.kafka, timeout=3) > 0:
        measures.append(measure_broker(settings, cars, ticks, repeat))
        return measures
    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-") as tmp:
        port = free_port_base(2)
        private = Settings(
            state_dir=Path(tmp),
            cache_dir=settings.cache_dir,
            java_home=settings.java_home,
            kafka=KafkaSettings(port=port, controller_port=port + 1, heap=settings.kafka.heap),
            s3=S3Settings(),
        )
        stack.up(private)
        try:
            measures.append(measure_broker(private, cars, ticks, repeat))
        finally:
            stack.down(private)
    return measures


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def report(measures: list[Measure], cars: int, ticks: int, repeat: int) -> str:
    lines = [
        MARK_BEGIN,
        "## Simulator (`fleetstream bench sim`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}. Fleet of {cars:,} cars, {ticks} ticks "
        f"({cars * ticks:,} events) per run, {repeat} runs, median shown. Targets: generator >= 300,000 "
        "events/s on one core with serialisation; delivered into the broker >= 150,000 events/s.",
        "",
        "| measure | median events/s | runs (events/s) | peak memory |",
        "| --- | ---: | --- | ---: |",
    ]
    for m in measures:
        runs = ", ".join(f"{r:,.0f}" for r in m.runs)
        memory = f"{m.peak_rss_mib:,.0f} MiB" if m.peak_rss_mib else "-"
        lines.append(f"| {m.name} | {m.median:,.0f} | {runs} | {memory} |")
    lines += [
        "",
        "The broker runs on the same two cores as the producer, so the delivered rate includes the "
        "broker's own work (idempotent producer, acks=all, lz4).",
        MARK_END,
    ]
    return "\n".join(lines)


def write_report(section: str, path: Path) -> None:
    """Replace a section of docs/benchmarks.md (or add it); its first and last lines are its markers."""
    begin, end = section.splitlines()[0], section.splitlines()[-1]
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
