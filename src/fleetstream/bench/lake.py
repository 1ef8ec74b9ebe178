"""`fleetstream bench lake`: what `fleetstream lake maintain` does to a lake the stream wrote.

A simulated fleet (default 1,000 cars at 1 Hz, one hour, the default faults and bad data) goes to
private topics while `fleetstream stream` runs as `make run` runs it (every query, the default
triggers), into a private lake. When the stream has caught up it is stopped, and the lake is
measured: live files per table (count, bytes, small files: what a reader lists and opens) and the
dashboard's panel refreshes (:func:`fleetstream.bench.dashboard.panel_timings`: the overview, and
the cockpit's read of one car's last five minutes of silver, the heaviest). Then
:func:`fleetstream.lake.maintain.maintain` runs with its defaults, and the lake is measured again.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fleetstream.bench.common import StreamProcess, bench_settings, prepare, wait_until
from fleetstream.config import Settings, TopicNames

MARK_BEGIN = "<!-- bench:lake:begin -->"
MARK_END = "<!-- bench:lake:end -->"
SEED = 11


def _newest(settings: Settings) -> dt.datetime:
    """The newest report in gold/car_state: the benchmark's "now" (as the page's, just after it)."""
    import polars as pl

    from fleetstream.lake.read import scan

    frame = scan(settings, "gold/car_state")
    if frame is None:
        raise RuntimeError("gold/car_state is not there: the stream wrote no gold")
    newest = frame.select(pl.col("event_time").max()).collect().item()
    return dt.datetime.fromtimestamp(newest / 1000, dt.UTC)


def measure(settings: Settings, car_id: str, repeat: int) -> dict[str, Any]:
    """Live files per table and the dashboard's panel refreshes, now."""
    from fleetstream.bench.dashboard import panel_timings
    from fleetstream.lake.maintain import files_of
    from fleetstream.lake.tables import TABLES

    files = {name: asdict(f) for name in TABLES if (f := files_of(settings, name)) is not None}
    timings = panel_timings(settings, _newest(settings), repeat, car_id=car_id)
    return {"files": files, "timings": [asdict(t) for t in timings]}


def _progress(
    settings: Settings, began: float, seconds: int, done: threading.Event, say: Callable[[str], None]
) -> None:
    from fleetstream.bench.pipeline import lake_lag

    while not done.wait(300):
        try:
            lag = f"{lake_lag(settings):,} records"
        except Exception as exc:  # the broker is busy: the next report will say
            lag = f"unknown ({exc})"
        say(f"lake: {time.monotonic() - began:.0f} of {seconds} s simulated; the lake's lag {lag}")


def run(
    settings: Settings, cars: int, seconds: int, repeat: int, say: Callable[[str], None], workdir: Path | None = None
) -> dict[str, Any]:
    """Stream ``cars`` cars at 1 Hz for ``seconds`` into a private lake, measure, maintain, measure."""
    from fleetstream.bench.pipeline import lake_lag
    from fleetstream.ingest.kafka import delete_topics
    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.lake.maintain import maintain
    from fleetstream.pipeline.session import spark_session
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-lake-") as tmp:
        work = workdir or Path(tmp)
        suffix = os.urandom(4).hex()
        lake = bench_settings(settings.kafka.bootstrap, str(work / "lake"), suffix=suffix)
        try:
            prepare(lake, cars, SEED)
            stream = StreamProcess(lake, [])
            try:
                stream.warm({"lake"})
                say(f"lake: the stream is up; {cars} cars at 1 Hz for {seconds} s")
                options = SimOptions(cars=cars, rate=1.0, duration=seconds, seed=SEED,
                                     faults=FAULT_PRESETS["default"], bad_data=BAD_DATA_PRESETS["default"])  # fmt: skip
                simulation = Simulation(options, KafkaSink(lake.kafka, lake.kafka.topics.sensors, paced=True))
                done = threading.Event()
                watcher = threading.Thread(
                    target=_progress, args=(lake, time.monotonic(), seconds, done, say), daemon=True
                )
                watcher.start()
                try:
                    stats = simulation.run()
                finally:
                    done.set()
                say(f"lake: {stats.events:,} events in {stats.wall_seconds:.0f} s; waiting for the lake to catch up")
                if not wait_until(lambda: lake_lag(lake) == 0, 600, poll=2.0):
                    raise RuntimeError(f"the lake did not catch up within 600 s:\n{stream.tail()}")
                time.sleep(30)  # gold and the stateful queries follow silver by a trigger or two
            finally:
                stream.stop()
            car_id = generate_cars(cars, SEED)[min(42, cars - 1)].car_id
            before = measure(lake, car_id, repeat)
            say("lake: measured before maintenance; maintaining")
            spark = spark_session(lake, "fleetstream-bench-lake")
            try:
                began = time.monotonic()
                outcomes = maintain(lake, spark, say=lambda line: say(f"lake: {line}"))
                maintain_s = time.monotonic() - began
            finally:
                spark.stop()
            after = measure(lake, car_id, repeat)
        finally:
            delete_topics(settings.kafka, TopicNames().tagged(suffix, "bench-").all())
    return {
        "cars": cars,
        "seconds": seconds,
        "events": stats.events,
        "before": before,
        "after": after,
        "maintain_s": maintain_s,
        "per_table_s": {o.table: o.seconds for o in outcomes},
        "vacuumed": {o.table: o.vacuumed for o in outcomes},
    }


def report(figures: dict[str, Any], machine: str) -> str:
    """The docs/benchmarks.md section (between its markers)."""
    mib = 1 << 20
    before, after = figures["before"], figures["after"]
    lines = [
        MARK_BEGIN,
        "## Lake maintenance (`fleetstream bench lake`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}: {figures['cars']:,} cars at 1 Hz for "
        f"{figures['seconds']:,} s ({figures['events']:,} events, the default faults and bad data) streamed "
        "by `fleetstream stream` with every query and the default triggers; then, the stream stopped, "
        f"`fleetstream lake maintain` with its defaults took {figures['maintain_s']:.0f} s. Live files are "
        "what a reader lists and opens (the files VACUUM deletes later are no longer among them); small "
        "files are under 32 MiB.",
        "",
        "| table | files before | files after | small before | small after | MiB before | MiB after | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, b in before["files"].items():
        a = after["files"].get(name, b)
        lines.append(
            f"| {name} | {b['files']:,} | {a['files']:,} | {b['small']:,} | {a['small']:,} | "
            f"{b['bytes'] / mib:,.1f} | {a['bytes'] / mib:,.1f} | {figures['per_table_s'].get(name, 0):.1f} |"
        )
    lines += [
        "",
        "The dashboard's panel refreshes on that lake (reads through delta-rs and Polars, shaping and "
        "figures, as in `fleetstream bench dashboard`), before and after:",
        "",
        "| panel | median ms before | median ms after | p95 ms before | p95 ms after | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b, a in zip(before["timings"], after["timings"], strict=True):
        lines.append(
            f"| {b['panel']} | {b['median_ms']:,.1f} | {a['median_ms']:,.1f} | {b['p95_ms']:,.1f} | "
            f"{a['p95_ms']:,.1f} | {b['runs']} |"
        )
    lines.append(MARK_END)
    return "\n".join(lines)
