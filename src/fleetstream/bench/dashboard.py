"""`fleetstream bench dashboard`: the cost of a panel refresh on big tables, and the page's first paint.

A lake is written with delta-rs: a gold window table of 1 million rows (about five weeks of
15-minute windows of 20 models, appended in time order as the stream appends them) and a silver
table of 10 million rows (1,000 cars for about 2.8 hours, one file per 100,000 rows in time order,
partitioned by event_date as the pipeline does). Each panel's refresh, the reads and the shaping
and figure building of one fragment run, is timed ``repeat`` times; medians are reported. First
paint is measured in Debian's Chromium: from navigation to the first KPI value on the page.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fleetstream.config import LakeSettings, Settings

MARK_BEGIN = "<!-- bench:dashboard:begin -->"
MARK_END = "<!-- bench:dashboard:end -->"
CARS, MODELS = 1000, 20
GOLD_ROWS, SILVER_ROWS = 1_000_000, 10_000_000
FILE_ROWS = 100_000


@dataclass(frozen=True)
class Timing:
    panel: str
    reads: str
    median_ms: float
    p95_ms: float
    runs: int


def _silver_chunk(start_ms: int, rows: int, rng: np.random.Generator) -> pl.DataFrame:
    """``rows`` reports, one per car per second from ``start_ms``, with the silver table's main columns."""
    seconds = np.arange(rows) // CARS
    car = np.arange(rows) % CARS
    event_time = start_ms + seconds * 1000
    speed = rng.uniform(0, 160, rows)
    frame = pl.DataFrame(
        {
            "event_id": [f"e{start_ms}-{i}" for i in range(rows)],
            "car_id": [f"car-{c:05d}" for c in car],
            "event_time": event_time,
            "speed": speed,
            "rpm": (speed * 40 + 800).astype(np.int64),
            "gear": np.clip(speed // 30 + 1, 1, 6).astype(np.int64),
            "lat": 32.0 + rng.uniform(0, 0.2, rows),
            "lon": 34.7 + rng.uniform(0, 0.2, rows),
            "coolant_temp": rng.uniform(80, 100, rows),
            "fuel_level": rng.uniform(5, 100, rows),
            "engine_on": np.ones(rows, dtype=bool),
            "model": [f"model-{c % MODELS}" for c in car],
            "color": [("White", "Black", "Silver", "Blue", "Red")[c % 5] for c in car],
        }
    )
    ts = pl.from_epoch("event_time", time_unit="ms").dt.replace_time_zone("UTC")
    return frame.with_columns(ts.alias("event_ts"), ts.dt.date().alias("event_date"))


def build_lake(root: Path, now: dt.datetime, progress: Callable[[str], None] = print) -> None:
    """Write the benchmark's gold and silver tables (and a car_state) under ``root``, ending at ``now``."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(3)
    now_ms = int(now.timestamp() * 1000)
    windows = GOLD_ROWS // MODELS
    starts = now_ms - (windows - np.arange(windows)) * 60_000  # one window a minute, the newest just closed
    for i, first in enumerate(range(0, windows, FILE_ROWS // MODELS)):
        part = starts[first : first + FILE_ROWS // MODELS]
        gold = pl.DataFrame(
            {
                "window_start": np.repeat(part, MODELS),
                "model": np.tile([f"model-{m}" for m in range(MODELS)], len(part)),
                "max_speed": rng.uniform(80, 200, len(part) * MODELS),
                "avg_speed": rng.uniform(30, 80, len(part) * MODELS),
                "events": rng.integers(1000, 60000, len(part) * MODELS),
            }
        ).with_columns(pl.from_epoch("window_start", time_unit="ms").dt.replace_time_zone("UTC"))
        gold = gold.with_columns((pl.col("window_start") + pl.duration(minutes=15)).alias("window_end"))
        write_deltalake(str(root / "gold" / "speed_by_model"), gold.to_arrow(), mode="append")
        progress(f"gold/speed_by_model: file {i + 1}")
    silver_start = now_ms - (SILVER_ROWS // CARS) * 1000
    for i, first in enumerate(range(0, SILVER_ROWS, FILE_ROWS)):
        chunk = _silver_chunk(silver_start + (first // CARS) * 1000, FILE_ROWS, rng)
        write_deltalake(
            str(root / "silver" / "telemetry"), chunk.to_arrow(), mode="append", partition_by=["event_date"]
        )
        progress(f"silver/telemetry: file {i + 1} of {SILVER_ROWS // FILE_ROWS}")
        if first + FILE_ROWS >= SILVER_ROWS:
            state = chunk.sort("event_time").group_by("car_id").last().with_columns(alerting=pl.lit(False))
            write_deltalake(str(root / "gold" / "car_state"), state.to_arrow(), mode="overwrite")


def _time(repeat: int, work: Callable[[], Any]) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        samples.append((time.perf_counter() - began) * 1000)
    ordered = sorted(samples)
    return statistics.median(samples), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def panel_timings(settings: Settings, now: dt.datetime, repeat: int = 20, car_id: str = "car-00042") -> list[Timing]:
    """Each panel's refresh (reads, shaping, figures) against the lake in ``settings`` (the cockpit
    shows ``car_id``)."""
    from fleetstream.dashboard import charts, shape
    from fleetstream.lake import read

    def overview() -> None:
        state = read.car_state(settings)
        models = read.recent_windows(settings, "speed_by_model", now - dt.timedelta(minutes=30))
        points = shape.map_points(state, now)
        charts.fleet_map(points, None)
        charts.speed_by_model(*shape.speed_by_model(models, state, now))
        shape.kpis(state, shape.alerts_frame([]), None, now)

    def cockpit() -> None:
        history = read.car_history(settings, car_id, now - dt.timedelta(minutes=5), ["event_ts", "speed", "rpm"])
        if history is None or history.height == 0:
            raise RuntimeError("the cockpit read found no rows: the benchmark lake is not what it should be")
        charts.strip_chart(history)

    out = []
    for panel, reads, work in (
        (
            "overview (KPIs, map, max speed per model)",
            f"gold/speed_by_model ({GOLD_ROWS:,} rows) + car_state",
            overview,
        ),
        ("cockpit (one car, last 5 minutes)", f"silver/telemetry ({SILVER_ROWS:,} rows)", cockpit),
    ):
        work()  # the first read opens the table's log; refreshes after it are what the page pays
        median, p95 = _time(repeat, work)
        out.append(Timing(panel, reads, median, p95, repeat))
    return out


def first_paint(settings: Settings, lake: Path, port: int = 8599, repeat: int = 3) -> list[float]:
    """Milliseconds from navigation to the first KPI value, in headless Chromium, ``repeat`` page loads."""
    import shutil

    from playwright.sync_api import sync_playwright

    from fleetstream.dashboard import streamlit_argv

    env = {**os.environ, "FLEETSTREAM_LAKE__ROOT": str(lake), "FLEETSTREAM_DASHBOARD__MAP_TILES": ""}
    argv = streamlit_argv(settings.dashboard.model_copy(update={"port": port}))
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=["--no-sandbox"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            deadline = time.monotonic() + 60
            while True:  # the server is up when the page loads
                try:
                    page.goto(f"http://127.0.0.1:{port}/", timeout=5000)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            page.locator("[data-testid=stMetricValue]").first.wait_for(timeout=60_000)  # warm: imports, caches
            for _ in range(repeat):
                began = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/")
                page.locator("[data-testid=stMetricValue]").first.wait_for(timeout=60_000)
                samples.append((time.perf_counter() - began) * 1000)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    return samples


def run(
    settings: Settings, workdir: Path, repeat: int = 20, progress: Callable[[str], None] = print
) -> tuple[list[Timing], list[float]]:
    now = dt.datetime.now(dt.UTC)
    lake = workdir / "lake"
    if not (lake / "silver" / "telemetry" / "_delta_log").exists():
        build_lake(lake, now, progress)
    else:  # a lake built before: measure as of its newest report
        newest = pl.scan_delta(str(lake / "gold" / "car_state")).select(pl.col("event_time").max()).collect().item()
        now = dt.datetime.fromtimestamp(newest / 1000, dt.UTC)
    bench_settings = settings.model_copy(update={"lake": LakeSettings(root=str(lake))})
    timings = panel_timings(bench_settings, now, repeat)
    paint = first_paint(settings, lake)
    return timings, paint


def report(timings: list[Timing], paint: list[float], machine: str) -> str:
    lines = [
        MARK_BEGIN,
        "## Dashboard (`fleetstream bench dashboard`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}. A panel refresh is one fragment run's "
        "reads (delta-rs through Polars), shaping and Plotly figures, without the browser; target <= 200 ms.",
        "",
        "| panel | reads | median ms | p95 ms | runs |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {t.panel} | {t.reads} | {t.median_ms:,.1f} | {t.p95_ms:,.1f} | {t.runs} |" for t in timings]
    if paint:
        lines += [
            "",
            f"First paint of the overview in headless Chromium (navigation to the first KPI value, "
            f"server warm), median of {len(paint)}: **{statistics.median(paint):,.0f} ms**.",
        ]
    lines.append(MARK_END)
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a manual entry for profiling
    print(report(*run(Settings(), Path(sys.argv[1])), machine="this machine"))
