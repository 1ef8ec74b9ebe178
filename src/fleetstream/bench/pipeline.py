"""`fleetstream bench pipeline`: what the streaming pipeline costs and how fast it is, against its targets.

Every run is a process of its own (its own Spark drivers) on private topics and a fresh lake; each
measure is repeated and its median reported, the runs compared side by side in one bench run.

- ``quiet``: `fleetstream run` as `make run` starts it (its own broker, 50 cars at 1 Hz, the
  pipeline and the dashboard): seconds until the dashboard answers and its data shows every car
  (``gold/car_state``) and the charts' minutes (``gold/car_minutes``); then the whole stack's CPU over
  ``quiet_seconds``; event-to-silver latency (a silver row's commit time minus its event time).
  Each of ``quiet_variants`` (:data:`VARIANTS`: as `make run` starts it, without the stateful
  queries, without the ML tables) in turn.
- ``publisher``: the alert-data publisher alone, real-time against micro-batch, at 50, 1,000 and
  10,000 events/s: CPU (busy and idle) and event-to-alert latency.
- ``ceiling``: one backlog drained by `fleetstream stream --available-now` (the lake's layers, and
  again with every default query) and by the minimal one-query medallion
  (:mod:`fleetstream.bench.minimal`), the order rotated per run; events/s from the query's start,
  and the command's wall time. The pipeline's tables are checked against the ground truth.
- ``small``: `fleetstream stream --available-now` on a small topic: the command's wall time.
- ``steady``: 10,000 events/s for ``steady_seconds`` after a warm-up, every query, each alert mode
  of ``steady_modes`` and each of ``steady_variants``: alerts' latency, the lake's lag when the input
  stops, CPU of both applications.
- ``episodes``: the alert episodes query alone over 10,000 cars' silver rows, 10 s of reports per
  batch: its batch time and the state it keeps.
- ``burst``: 200,000 events at once, then 1,000 events/s: the steady part's alerts' latency, and
  the seconds from the burst's end until the lake is live again (behind by under two triggers).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fleetstream.bench.common import (
    AlertClock,
    StreamProcess,
    TreeMeter,
    alert_score,
    bench_settings,
    in_subprocess,
    percentiles,
    prepare,
    probe_until_alert,
    wait_until,
)
from fleetstream.bench.profile import Profiler, summarize
from fleetstream.config import Settings, TopicNames, process_env
from fleetstream.pipeline import LAKE_MAX_RECORDS, LAKE_TRIGGER_S
from fleetstream.pipeline.plan import LAYERS

MARK_BEGIN = "<!-- bench:pipeline:begin -->"
MARK_END = "<!-- bench:pipeline:end -->"
MEASURES = ("quiet", "publisher", "ceiling", "small", "steady", "burst", "episodes", "upsert", "cluster")
MODES = ("realtime", "microbatch")
HERE = "fleetstream.bench.pipeline"


@dataclass
class Result:
    measure: str  # one of MEASURES
    label: str  # what was run (system, mode, rate)
    values: dict[str, float] = field(default_factory=dict)
    correct: bool = True  # the outputs equal the ground truth
    note: str = ""


@dataclass(frozen=True)
class Options:
    repeat: int = 3
    quiet_cars: int = 50
    quiet_seconds: int = 300
    quiet_settle_seconds: int = 60
    quiet_variants: tuple[str, ...] = ("default", "no-stateful")
    quiet_profile: bool = False  # the lake JVM sampled by async-profiler over the measure (fleetstream.bench.profile)
    steady_modes: tuple[str, ...] = MODES
    steady_variants: tuple[str, ...] = ("default",)
    publisher_rates: tuple[int, ...] = (50, 1000, 10_000)
    ceiling_cars: int = 1000
    ceiling_seconds: int = 600  # simulated seconds of backlog: cars x seconds events
    max_records: int = LAKE_MAX_RECORDS
    steady_rate: int = 10_000
    steady_seconds: int = 300
    warmup_seconds: int = 60
    upsert_rounds: int = 10
    burst_events: int = 200_000
    burst_rate: int = 1000
    burst_seconds: int = 180
    trigger_s: float = LAKE_TRIGGER_S
    episodes_cars: int = 10_000


# --- reading the lake and Kafka (no Spark in the bench's own process) ------------------------------


def _delta(root: str, name: str) -> Any:
    from deltalake import DeltaTable

    path = f"{root.rstrip('/')}/{name}"
    return DeltaTable(path) if DeltaTable.is_deltatable(path) else None


def _rows(root: str, name: str, columns: list[str] | None = None) -> Any:
    """A table's rows as a Polars frame (None when the table is not there)."""
    import polars as pl

    table = _delta(root, name)
    return None if table is None else pl.from_arrow(table.to_pyarrow_table(columns=columns))


def commit_times(root: str, name: str, writer: str) -> dict[int, float]:
    """Micro-batch id -> the time (epoch s) its commit to a table became readable, from the
    commits' user metadata (``fleetstream <writer> batch <id>``)."""
    from fleetstream.pipeline.writer import last_batch

    table = _delta(root, name)
    out: dict[int, float] = {}
    for commit in table.history() if table is not None else []:
        batch = last_batch([commit.get("userMetadata")], writer)
        if batch >= 0:
            out[batch] = commit["timestamp"] / 1000
    return out


def committed_offset(checkpoint: Path) -> dict[str, Any] | None:
    """The source offset a query has committed (its one source's), from its checkpoint: the last
    line of the newest ``offsets/<batch>`` whose ``commits/<batch>`` exists; None before any."""
    commits = sorted((int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")), reverse=True)
    if not commits:
        return None
    offset: dict[str, Any] = json.loads((checkpoint / "offsets" / str(commits[0])).read_text().splitlines()[-1])
    return offset


def checkpoint_offsets(checkpoint: Path) -> dict[int, int]:
    """The Kafka offsets (partition -> next offset) a query has committed, from its checkpoint."""
    offsets = committed_offset(checkpoint) or {}
    return {int(p): int(o) for topic in offsets.values() for p, o in topic.items()}


def lake_lag(settings: Settings) -> int:
    """Records of sensors-sample the lake query has not committed yet."""
    from fleetstream.ingest.kafka import describe_topics

    [topic] = describe_topics(settings.kafka, [settings.kafka.topics.sensors])
    done = checkpoint_offsets(Path(settings.lake.root) / "_checkpoints" / "lake")
    return sum(end - done.get(p, 0) for p, end in enumerate(topic.end_offsets))


def stateful_lag(settings: Settings) -> int | None:
    """Silver rows the stateful query has not taken in yet (None: it has no checkpoint, as without
    the stateful queries): silver's rows less its rows at the version the query's newest committed
    batch read to (the Delta source's offset in the checkpoint; a version begun counts as read, so
    a batch stopped inside a version under-counts by at most that version's rows). The checkpoint
    is read first: silver only grows after it."""
    from fleetstream.lake.read import table_rows
    from fleetstream.pipeline.episodes import STATE_LAYOUTS

    checkpoint = Path(settings.lake.root) / "_checkpoints" / STATE_LAYOUTS[-1]
    if not checkpoint.is_dir():
        return None
    offset = committed_offset(checkpoint)
    version = -1 if offset is None else int(offset["reservoirVersion"]) - (1 if int(offset["index"]) < 0 else 0)
    read = table_rows(settings, "silver/telemetry", version) if version >= 0 else 0
    now = table_rows(settings, "silver/telemetry")
    return None if now is None else now - (read or 0)


# --- quiet: `fleetstream run` ------------------------------------------------------------------------


#: Hadoop's own local file system, which every run used before session 59 (a ``chmod`` process per file)
HADOOP_LOCAL_FS = {
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.LocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "org.apache.hadoop.fs.local.LocalFs",
}
#: the stream's variants the quiet and steady measures run side by side (`--quiet-variants`,
#: `--steady-variants`): what each is called in the report, and the stream's settings that make it
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "default": ("as `make run` starts it", {}),
    "no-stateful": ("without the stateful queries", {"FLEETSTREAM_STREAM_ONLY": "bronze,silver,alerts,gold"}),
    "no-ml": ("without the ML tables", {"FLEETSTREAM_STREAM_ML": "false"}),
    "rollup-5": ("gold's windows closed every 5 minutes", {"FLEETSTREAM_STREAM_ROLLUP_EVERY_MINUTES": "5"}),
    "features-1": (
        "the driving features closed and scored every minute",
        {"FLEETSTREAM_STREAM_FEATURES_EVERY_MINUTES": "1"},
    ),
    "features-5": (
        "the driving features closed and scored every 5 minutes",
        {"FLEETSTREAM_STREAM_FEATURES_EVERY_MINUTES": "5"},
    ),
    "no-aqe": (
        "adaptive query execution off in the lake",
        {"FLEETSTREAM_SPARK__CONF": json.dumps({"spark.sql.adaptive.enabled": "false"})},
    ),
    "hadoop-local-fs": ("Hadoop's own local file system", {"FLEETSTREAM_SPARK__CONF": json.dumps(HADOOP_LOCAL_FS)}),
}


def variant_settings(name: str) -> tuple[str, dict[str, str]]:
    """A variant's label and settings: a key of :data:`VARIANTS`, or several joined by ``+``.

    >>> variant_settings("no-ml+rollup-5")
    ("without the ML tables, gold's windows closed every 5 minutes", {'FLEETSTREAM_STREAM_ML': 'false', \
'FLEETSTREAM_STREAM_ROLLUP_EVERY_MINUTES': '5'})
    """
    parts = [VARIANTS[part] for part in name.split("+")]
    return ", ".join(label for label, _ in parts), {k: v for _, env in parts for k, v in env.items()}


def quiet_worker(
    cars: int, seconds: int, settle_s: int = 60, variant: str = "default", profile: bool = False
) -> dict[str, Any]:
    """`fleetstream run` with its own broker and dashboard in a fresh state directory (``variant``:
    a key of :data:`VARIANTS`); ``profile``: the lake's JVM sampled over the measure
    (:mod:`fleetstream.bench.profile`; its stacks kept in ``quiet-profile-<time>.collapsed`` in the
    system's temporary folder)."""
    import urllib.request

    from fleetstream.testing import free_port_base

    workdir = Path(tempfile.mkdtemp(prefix="fleetstream-bench-quiet-"))
    kafka_port, web = free_port_base(2), free_port_base(1, low=30000, high=31000)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_STATE_DIR": str(workdir / "state"),
        "FLEETSTREAM_LAKE__ROOT": str(workdir / "lake"),
        "FLEETSTREAM_KAFKA__PORT": str(kafka_port),
        "FLEETSTREAM_KAFKA__CONTROLLER_PORT": str(kafka_port + 1),
        "FLEETSTREAM_DASHBOARD__PORT": str(web),
        "FLEETSTREAM_MLFLOW__PORT": str(free_port_base(1, low=31000, high=32000)),
        "FLEETSTREAM_DASHBOARD__MAP_TILES": "",
    }
    tracking = Settings().mlflow.tracking_uri
    if tracking:  # an existing MLflow server (with a champion: the fleet's windows are scored live)
        env["FLEETSTREAM_MLFLOW__TRACKING_URI"] = tracking
    called, overrides = variant_settings(variant)
    env |= overrides
    root = str(workdir / "lake")
    began = time.time()
    log = (workdir / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetstream", "run", "--cars", str(cars)], env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    seen: dict[str, float] = {}
    sampled: dict[str, float] = {}

    def dashboard_up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/_stcore/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def check() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"fleetstream run exited {proc.returncode}: {(workdir / 'run.log').read_text()[-2000:]}")
        state = _rows(root, "gold/car_state", ["car_id"])
        if "cars" not in seen and state is not None and state.height >= cars:
            seen["cars"] = time.time() - began
        minutes = _rows(root, "gold/car_minutes", ["car_id"])
        if "charts" not in seen and minutes is not None and minutes.height > 0:
            seen["charts"] = time.time() - began
        if "dashboard" not in seen and dashboard_up():
            seen["dashboard"] = time.time() - began
        return len(seen) == 3

    try:
        if not wait_until(check, 300, poll=0.5):
            raise RuntimeError(f"no dashboard data within 300 s: {seen}")
        first = max(seen.values())
        time.sleep(max(0.0, settle_s - (time.time() - began)))
        meter = TreeMeter([proc.pid])
        profiler = _lake_profiler(proc.pid) if profile else None
        meter.mark()
        measured_from = time.time()
        if profiler is not None:
            profiler.start()
        time.sleep(seconds)
        cpu, peak = meter.since_mark()
        kinds = meter.by_name()
        took = time.time() - measured_from
        if profiler is not None:
            stacks = profiler.stop(
                Path(tempfile.gettempdir()) / f"quiet-profile-{time.strftime('%Y%m%d-%H%M%S')}.collapsed"
            )
            with stacks.open() as lines:
                sampled = {f"profile:{k}": v for k, v in summarize(lines, took).items()}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            stopped = proc.wait(120) == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            stopped = False
        log.close()
    commits = commit_times(root, "silver/telemetry", "lake")
    silver = _rows(root, "silver/telemetry", ["event_time", "silver_batch"])
    lags = [
        commits[b] - t / 1000
        for t, b in silver.select("event_time", "silver_batch").iter_rows()
        if b in commits and t / 1000 >= measured_from
    ]
    lat = percentiles(lags)
    values = {"first_data_s": first, **{f"{k}_s": v for k, v in seen.items()}, "cores": cpu / took,
              "peak_mib": peak, "silver_p50_s": lat["p50"], "silver_p95_s": lat["p95"], "silver_p99_s": lat["p99"],
              **{f"cores[{k}]": v / took for k, v in kinds.items() if v / took >= 0.005}, **sampled}  # fmt: skip
    label = f"{cars} cars at 1 Hz, {called}" + (
        " (the lake's JVM profiled: its CPU includes the profiler's)" if profile else ""
    )
    return asdict(Result("quiet", label, values, stopped, "" if stopped else "did not stop cleanly"))


def _lake_profiler(run_pid: int) -> Profiler:
    """A profiler of the lake's JVM among ``fleetstream run``'s processes: the Spark driver whose parent
    is `fleetstream stream` (not the alert publisher's, `stream --only alert-data`)."""
    for child in psutil.Process(run_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            parent = child.parent()
            command = " ".join(parent.cmdline()) if parent is not None else ""
            if "SparkSubmit" in " ".join(child.cmdline()) and " stream" in command and "alert-data" not in command:
                settings = Settings()
                return Profiler(child.pid, settings.cache_dir, settings.java_home)
    raise RuntimeError("the lake's JVM is not among `fleetstream run`'s processes: nothing to profile")


# --- the publisher alone ---------------------------------------------------------------------------


def _paced(
    settings: Settings, stream: StreamProcess, rate: int, warmup_s: int, seconds: int
) -> tuple[AlertClock, TreeMeter, Any, Any, float, float, float]:
    """``rate`` cars at 1 Hz (heavy faults, seed 11) for ``warmup_s + seconds`` against a started
    stream, its alerts clocked and its CPU metered from the warm-up's end: (clock, meter,
    simulation, its stats, CPU seconds and peak MiB since the warm-up, when the warm-up ended)."""
    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    clock = AlertClock(settings.kafka, settings.kafka.topics.alerts)
    clock.start()
    clock.ready.wait(30)
    meter = TreeMeter([stream.proc.pid])
    options = SimOptions(cars=rate, rate=1.0, duration=warmup_s + seconds, seed=11,
                         faults=FAULT_PRESETS["heavy"], bad_data=BAD_DATA_PRESETS["none"])  # fmt: skip
    simulation = Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors, paced=True))
    marked: dict[str, float] = {}

    def mark() -> None:
        time.sleep(warmup_s)
        meter.mark()
        marked["at"] = time.monotonic()

    threading.Thread(target=mark, daemon=True).start()
    stats = simulation.run()
    cpu, peak = meter.since_mark()
    return clock, meter, simulation, stats, cpu, peak, marked["at"]


def publisher_worker(
    bootstrap: str, suffix: str, mode: str, rate: int, warmup_s: int = 30, seconds: int = 60, idle_s: int = 30
) -> dict[str, Any]:
    """`fleetstream stream --only alert-data` at ``rate`` events/s: CPU while busy and idle, latency."""
    from fleetstream.reference.catalog import generate_cars

    settings = bench_settings(bootstrap, tempfile.mkdtemp(prefix="fleetstream-bench-pub-"), suffix=suffix)
    prepare(settings, rate, seed=11)
    stream = StreamProcess(settings, ["--only", "alert-data", "--alerts-mode", mode])
    try:
        probe_until_alert(settings, generate_cars(rate, 11)[0].car_id)
        clock, meter, simulation, _, cpu, peak, marked_at = _paced(settings, stream, rate, warmup_s, seconds)
        busy = cpu / (time.monotonic() - marked_at)
        wait_until(lambda: len(clock.alerts) >= len(simulation.ground_truth.expected_alerts()), 30)
        meter.mark()
        began = time.monotonic()
        time.sleep(idle_s)
        idle = meter.since_mark()[0] / (time.monotonic() - began)
        clock.stop.set()
        clock.join()
    finally:
        stream.stop()
    lat = percentiles([lat for t, lat in clock.samples if t >= simulation.start_ms + warmup_s * 1000])
    precision, recall = alert_score(clock.alerts, simulation.ground_truth.expected_alerts())
    values = {"rate": rate, "cores": busy, "idle_cores": idle, "peak_mib": peak, **lat}
    return asdict(Result("publisher", f"{mode}, {rate:,} events/s", values, precision == recall == 1.0))


# --- ceiling and small: draining a backlog ---------------------------------------------------------


def backlog_worker(bootstrap: str, suffix: str, lake: str, cars: int, seconds: int, seed: int = 7) -> dict[str, Any]:
    """Produce a backlog (faults and bad data included) and its reference data; the expected alerts
    go to ``<lake>/expected.json``, the ground truth to ``<lake>/ground_truth.jsonl``."""
    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    settings = bench_settings(bootstrap, lake, suffix=suffix)
    prepare(settings, cars, seed)
    options = SimOptions(cars=cars, fast=True, duration=seconds, seed=seed, faults=FAULT_PRESETS["default"],
                         bad_data=BAD_DATA_PRESETS["default"])  # fmt: skip
    simulation = Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors))
    events = simulation.run().events
    Path(lake, "expected.json").write_text(json.dumps(sorted(simulation.ground_truth.expected_alerts())))
    simulation.ground_truth.save(Path(lake, "ground_truth.jsonl"))
    return {"events": events}


def minimal_worker(bootstrap: str, suffix: str, lake: str, dims: str, max_records: int) -> dict[str, Any]:
    """The minimal medallion over the backlog: seconds from its query's start to its end."""
    from fleetstream.bench import minimal
    from fleetstream.config import LakeSettings
    from fleetstream.pipeline.session import spark_session

    settings = bench_settings(bootstrap, lake, suffix=suffix)
    settings = settings.model_copy(update={"lake": LakeSettings(root=lake, dims_location=dims)})
    spark = spark_session(settings, "fleetstream-bench-minimal")
    spark.sparkContext.setLogLevel("ERROR")
    began = time.time()
    query = minimal.start(spark, settings, max_records)
    query.awaitTermination()
    ended = time.time()
    if query.exception() is not None:
        raise RuntimeError(str(query.exception()))
    spark.stop()
    return {"started": began, "ended": ended}


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(line: str) -> float:
    found = _LOG_TIME.match(line)
    if not found:
        raise ValueError(f"no time in {line!r}")
    return dt.datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=dt.UTC).timestamp()


def available_now(
    settings: Settings,
    max_records: int,
    workdir: Path,
    only: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> tuple[float, float]:
    """`fleetstream stream --available-now` as a user runs it (``only``: its ``--only``; None: its
    default queries; ``extra_env``: more settings, such as a Spark master): (wall seconds, seconds
    from the lake query's start to the end)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**process_env(settings, os.environ), "FLEETSTREAM_STATE_DIR": str(workdir / "state"),
           "FLEETSTREAM_LAKE__DIMS_LOCATION": settings.lake.dims, **(extra_env or {})}  # fmt: skip
    argv = [sys.executable, "-m", "fleetstream", "stream", "--available-now", "--max-offsets-per-trigger",
            str(max_records), *(["--only", only] if only else [])]  # fmt: skip
    began = time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - began
    if done.returncode != 0:
        raise RuntimeError(f"fleetstream stream --available-now exited {done.returncode}:\n{done.stderr[-3000:]}")
    lines = done.stderr.splitlines()
    started = _log_time(next(line for line in lines if "processing what is available" in line))
    ended = _log_time(next(line for line in lines if " done in " in line))
    return wall, ended - started


def check_lake(root: str, events: int, expected_path: Path) -> str:
    """What is wrong with a drained lake ('' when nothing): every record accounted for, alerts exact."""
    bronze = _rows(root, "bronze/telemetry", ["kafka_offset"])
    parts = [
        _rows(root, n, ["kafka_offset"]) for n in ("silver/telemetry", "quarantine/telemetry", "silver/duplicates")
    ]
    accounted = sum(p.height for p in parts if p is not None)
    fired = _rows(root, "silver/alerts", ["event_id", "rule"])
    got = set() if fired is None else set(fired.iter_rows())
    expected = {tuple(pair) for pair in json.loads(expected_path.read_text())}
    problems = []
    if bronze is None or bronze.height != events:
        problems.append(f"bronze holds {0 if bronze is None else bronze.height:,} of {events:,}")
    if accounted != events:
        problems.append(f"silver + quarantine + duplicates hold {accounted:,} of {events:,}")
    if got != expected:
        problems.append(f"alerts: precision/recall {alert_score(got, expected)}")
    return "; ".join(problems)


#: the ceiling's systems: the lake's layers (what the minimal medallion computes, and more), the
#: minimal medallion, and `stream --available-now` as a user runs it (the stateful queries too)
CEILING_SYSTEMS = {"fleetstream": ",".join(LAYERS), "minimal": None, "fleetstream, every query": None}


@contextmanager
def _backlog(
    settings: Settings, options: Options, say: Callable[[str], None]
) -> Iterator[tuple[Settings, int, str, str]]:
    """A backlog of ``ceiling_cars`` x ``ceiling_seconds`` events on topics of its own (deleted
    after): (its settings, with the reference data and the ground truth under its lake root; the
    events; a temporary folder for the runs' lakes; its topics' suffix)."""
    from fleetstream.ingest.kafka import delete_topics

    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-backlog-") as tmp:
        suffix = os.urandom(4).hex()
        backlog = bench_settings(settings.kafka.bootstrap, f"{tmp}/backlog", suffix=suffix)
        Path(backlog.lake.root).mkdir(parents=True)
        try:
            events = in_subprocess(HERE, "backlog_worker", bootstrap=settings.kafka.bootstrap, suffix=suffix,
                                   lake=backlog.lake.root, cars=options.ceiling_cars,
                                   seconds=options.ceiling_seconds)["events"]  # fmt: skip
            say(f"a backlog of {events:,} events")
            yield backlog, events, tmp, suffix
        finally:
            delete_topics(settings.kafka, TopicNames().tagged(suffix, "bench-").all())


def _drain(backlog: Settings, events: int, lake: str, options: Options, only: str | None,
           extra_env: Mapping[str, str] | None = None) -> tuple[float, float, str]:  # fmt: skip
    """`stream --available-now` over the backlog into ``lake``: (wall s, drain s, what is wrong)."""
    update = {"lake": backlog.lake.model_copy(update={"root": lake, "dims_location": backlog.lake.dims})}
    wall, drain = available_now(backlog.model_copy(update=update), options.max_records, Path(f"{lake}-work"), only,
                                extra_env)  # fmt: skip
    return wall, drain, check_lake(lake, events, Path(backlog.lake.root, "expected.json"))


def ceiling(settings: Settings, options: Options, say: Callable[[str], None]) -> list[Result]:
    """The same backlog drained by the pipeline and the minimal medallion, the order rotated per run."""
    results = []
    with _backlog(settings, options, say) as (backlog, events, tmp, suffix):
        for i in range(options.repeat):
            systems = list(CEILING_SYSTEMS)
            for system in systems[i % len(systems) :] + systems[: i % len(systems)]:
                lake = f"{tmp}/{system}-{i}"
                if system == "minimal":
                    began = time.time()
                    got = in_subprocess(
                        HERE, "minimal_worker", bootstrap=settings.kafka.bootstrap,
                        suffix=suffix, lake=lake, dims=backlog.lake.dims, max_records=options.max_records,
                    )  # fmt: skip
                    wall, drain, note = time.time() - began, got["ended"] - got["started"], ""
                else:
                    wall, drain, note = _drain(backlog, events, lake, options, CEILING_SYSTEMS[system])
                values = {"events": events, "rate": events / drain, "wall_s": wall}
                results.append(Result("ceiling", system, values, not note, note))
                say(f"ceiling, {system}: {events / drain:,.0f} events/s from its start, {wall:.0f} s wall {note}")
    return results


#: the cluster measure's two ways to run the same command
CLUSTER_SYSTEMS = ("local mode", "standalone cluster")


@contextmanager
def local_spark_cluster(settings: Settings, state_dir: Path) -> Iterator[dict[str, str]]:
    """A local Spark standalone cluster (one worker with this machine's cores), started with
    `fleetstream up --spark-workers 1` as a user starts it (the bench's Kafka is only checked) and
    stopped with `fleetstream down`; yields the settings that submit a command to it, taking every
    core (one application at a time here)."""
    from fleetstream.testing import free_port_base

    cores = os.cpu_count() or 2
    port = free_port_base(3)
    cluster = {"FLEETSTREAM_SPARK__WORKERS": "1", "FLEETSTREAM_SPARK__WORKER_CORES": str(cores),
               "FLEETSTREAM_SPARK__WORKER_MEMORY": "6g", "FLEETSTREAM_SPARK__CLUSTER_PORT": str(port),
               "FLEETSTREAM_SPARK__UI_PORT": str(port + 1),
               "FLEETSTREAM_SPARK__CONF": json.dumps({"spark.cores.max": str(cores),
                                                      "spark.executor.memory": "4g"})}  # fmt: skip
    env = {**process_env(settings, os.environ), **cluster, "FLEETSTREAM_STATE_DIR": str(state_dir)}
    fleetstream = [sys.executable, "-m", "fleetstream"]
    up = subprocess.run([*fleetstream, "up", "--detach"], env=env, capture_output=True, text=True, check=False)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"fleetstream up --spark-workers 1 exited {up.returncode}:\n{up.stderr[-3000:]}")
        yield cluster
    finally:
        subprocess.run([*fleetstream, "down"], env=env, capture_output=True, check=False, timeout=120)


def cluster(settings: Settings, options: Options, say: Callable[[str], None]) -> list[Result]:
    """The ceiling's backlog drained by `stream --available-now --only <the lake's layers>` in local
    mode and submitted to a local Spark standalone cluster, the order alternated per run."""
    results = []
    with (
        _backlog(settings, options, say) as (backlog, events, tmp, _),
        local_spark_cluster(settings, Path(tmp, "cluster-state")) as on_cluster,
    ):
        for i in range(options.repeat):
            for system in CLUSTER_SYSTEMS if i % 2 == 0 else CLUSTER_SYSTEMS[::-1]:
                lake = f"{tmp}/{system.replace(' ', '-')}-{i}"
                extra = on_cluster if system == "standalone cluster" else None
                wall, drain, note = _drain(backlog, events, lake, options, CEILING_SYSTEMS["fleetstream"], extra)
                values = {"events": events, "rate": events / drain, "wall_s": wall}
                results.append(Result("cluster", system, values, not note, note))
                say(f"cluster, {system}: {events / drain:,.0f} events/s from its start, {wall:.0f} s wall {note}")
    return results


def small_worker(bootstrap: str, suffix: str, cars: int = 50, seconds: int = 30) -> dict[str, Any]:
    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    lake = tempfile.mkdtemp(prefix="fleetstream-bench-small-")
    settings = bench_settings(bootstrap, f"{lake}/lake", suffix=suffix)
    prepare(settings, cars, seed=3)
    options = SimOptions(cars=cars, fast=True, duration=seconds, seed=3, faults=FAULT_PRESETS["default"],
                         bad_data=BAD_DATA_PRESETS["light"])  # fmt: skip
    events = Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors)).run().events
    wall, drain = available_now(settings, LAKE_MAX_RECORDS, Path(f"{lake}/work"))
    return asdict(Result("small", f"{events:,} events", {"events": events, "wall_s": wall, "drain_s": drain}))


# --- live: steady rate, burst ----------------------------------------------------------------------


def _live(settings: Settings, mode: str, trigger_s: float, variant: str = "default") -> StreamProcess:
    argv = ["--alerts-mode", mode, "--trigger-seconds", f"{trigger_s:g}"]
    stream = StreamProcess(settings, argv, env=variant_settings(variant)[1])
    stream.warm({"lake"} if mode == "realtime" else {"lake", "alerts"})
    return stream


def steady_worker(
    bootstrap: str,
    suffix: str,
    mode: str,
    rate: int,
    seconds: int,
    warmup_s: int,
    trigger_s: float,
    variant: str = "default",
) -> dict[str, Any]:
    """Every query at ``rate`` events/s (``rate`` cars at 1 Hz) for ``warmup_s + seconds``
    (``variant``: a key of :data:`VARIANTS`)."""
    from fleetstream.reference.catalog import generate_cars

    settings = bench_settings(bootstrap, tempfile.mkdtemp(prefix="fleetstream-bench-steady-") + "/lake", suffix=suffix)
    prepare(settings, rate, seed=11)
    stream = _live(settings, mode, trigger_s, variant)
    try:
        probe_until_alert(settings, generate_cars(rate, 11)[0].car_id)
        clock, _, simulation, stats, cpu, peak, marked_at = _paced(settings, stream, rate, warmup_s, seconds)
        cores = cpu / (time.monotonic() - marked_at)
        lag = lake_lag(settings)
        behind = stateful_lag(settings)
        expected = simulation.ground_truth.expected_alerts()
        wait_until(lambda: clock.alerts >= expected, 60, poll=1.0)
        clock.stop.set()
        clock.join()
    finally:
        stream.stop()
    measured = [lat for t, lat in clock.samples if t >= simulation.start_ms + warmup_s * 1000]
    precision, recall = alert_score(clock.alerts, expected)
    values = {"rate": stats.events / (warmup_s + seconds), "cores": cores, "peak_mib": peak, "lag_records": lag,
              "lag_s": lag / rate, **percentiles(measured)}  # fmt: skip
    if behind is not None:
        values["stateful_lag_s"] = behind / rate
    label = f"{mode}, {rate:,} events/s" + ("" if variant == "default" else f", {variant_settings(variant)[0]}")
    return asdict(Result("steady", label, values, precision == recall == 1.0))


def burst_worker(
    bootstrap: str, suffix: str, mode: str, burst: int, rate: int, seconds: int, trigger_s: float
) -> dict[str, Any]:
    """``burst`` events as fast as they go, then ``rate`` events/s for ``seconds``."""
    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    settings = bench_settings(bootstrap, tempfile.mkdtemp(prefix="fleetstream-bench-burst-") + "/lake", suffix=suffix)
    prepare(settings, rate, seed=13)
    stream = _live(settings, mode, trigger_s)
    live_at: dict[str, float] = {}
    try:
        probe_until_alert(settings, generate_cars(rate, 13)[0].car_id)
        clock = AlertClock(settings.kafka, settings.kafka.topics.alerts)
        clock.start()
        clock.ready.wait(30)
        sink = KafkaSink(settings.kafka, settings.kafka.topics.sensors)
        burst_s = burst // rate
        now = int(time.time() * 1000)
        fast = SimOptions(cars=rate, fast=True, duration=burst_s, seed=13, faults=FAULT_PRESETS["heavy"],
                          bad_data=BAD_DATA_PRESETS["none"], start_ms=now - burst_s * 1000 - 5000)  # fmt: skip
        Simulation(fast, sink).run()
        burst_end = time.monotonic()
        threshold = 2 * trigger_s * rate

        def watch() -> None:
            while "at" not in live_at and time.monotonic() - burst_end < seconds + 120:
                if lake_lag(settings) <= threshold:
                    live_at["at"] = time.monotonic() - burst_end
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        # the same fleet as the reference data (seed 13: models, colors, profiles); its own event ids
        # (a run's id prefix holds its start time)
        paced = SimOptions(cars=rate, rate=1.0, duration=seconds, seed=13, faults=FAULT_PRESETS["heavy"],
                           bad_data=BAD_DATA_PRESETS["none"])  # fmt: skip
        simulation = Simulation(paced, KafkaSink(settings.kafka, settings.kafka.topics.sensors, paced=True))
        simulation.run()
        expected = simulation.ground_truth.expected_alerts()
        wait_until(lambda: clock.alerts >= expected, 60, poll=1.0)
        watcher.join(120)
        clock.stop.set()
        clock.join()
    finally:
        stream.stop()
    steady = [lat for t, lat in clock.samples if t >= simulation.start_ms]
    got = {key for key in clock.alerts if clock.seen[key][0] >= simulation.start_ms}
    recall = alert_score(got, expected)[1]
    values = {"burst": burst, "rate": rate, "live_again_s": live_at.get("at", float("nan")), **percentiles(steady)}
    note = "" if "at" in live_at else f"the lake was not live again within {seconds + 120} s"
    return asdict(Result("burst", f"{mode}, {burst:,} then {rate:,} events/s", values, recall == 1.0, note))


# --- episodes: the stateful query alone ------------------------------------------------------------


#: the episodes measure's first event time (2026-01-01): event times near 0 would be before the
#: query's first watermark, and every car's offline time with them
EPOCH_MS = 1_767_225_600_000


def episodes_worker(cars: int, seconds: int, batch_s: int) -> dict[str, Any]:
    """The episodes query (alert episodes, offline cars and trips, on RocksDB state) over ``cars`` cars' silver rows,
    ``batch_s`` simulated seconds per micro-batch: each batch's time, and the state it keeps."""
    import polars as pl
    from pyspark.sql import functions as F

    from fleetstream.pipeline import EPISODE_PARTITIONS
    from fleetstream.pipeline.episodes import STATE_LAYOUTS, EpisodesBatch, episodes, episodes_session
    from fleetstream.pipeline.session import spark_session
    from fleetstream.pipeline.writer import Lake, Writer
    from fleetstream.reference.catalog import COLORS, model_by_id
    from fleetstream.rules import expected_gear_array
    from fleetstream.rules.engine import load_rules
    from fleetstream.sim.faults import FAULT_PRESETS
    from fleetstream.sim.fleet import Fleet, FleetConfig

    root = tempfile.mkdtemp(prefix="fleetstream-bench-episodes-")
    spark = spark_session(Settings(), "fleetstream-bench-episodes")
    spark.sparkContext.setLogLevel("ERROR")
    fleet = Fleet(FleetConfig(cars=cars, seed=21, faults=FAULT_PRESETS["heavy"]))
    models = model_by_id()
    model = np.array([f"{models[c.model_id].brand} {models[c.model_id].model}" for c in fleet.cars])
    names = {c[0]: c[1] for c in COLORS}
    color = np.array([names[c.color_id] for c in fleet.cars])
    silver = f"{root}/silver/telemetry"
    zone_ids = np.array([z.zone_id for z in fleet.zones] + [None], dtype=object)  # index -1: no zone
    for chunk in range(seconds // batch_s):  # one Delta commit, and so one micro-batch, per chunk
        frames = []
        for tick in range(chunk * batch_s, (chunk + 1) * batch_s):
            f = fleet.step()
            zone = fleet.zone_index.lookup(f["lat"], f["lon"])
            columns = ("speed", "rpm", "gear", "coolant_temp", "oil_temp", "engine_on", "odometer", "lat", "lon",
                       "fuel_level")  # fmt: skip
            frames.append(pl.DataFrame({
                "car_id": fleet.car_ids, "event_id": [f"{i}-{tick}" for i in range(cars)],
                "event_time": np.full(cars, EPOCH_MS + tick * 1000, dtype=np.int64), "model": model, "color": color,
                **{c: f[c] for c in columns}, "expected_gear": expected_gear_array(f["speed"], fleet.upshift),
                "zone_id": pl.Series(zone_ids[zone].tolist(), dtype=pl.String),
                "zone_limit": pl.Series(fleet.zone_limit[zone]).replace(np.inf, None),
            }))  # fmt: skip
        batch = spark.createDataFrame(pl.concat(frames).to_pandas()).withColumns(
            {"zone_id": F.col("zone_id").cast("string"), "event_ts": F.timestamp_millis("event_time")}
        )  # (silver's types: a chunk's zones may all be empty; the watermark reads event_ts)
        batch.coalesce(1).write.format("delta").mode("append").save(silver)
    session = episodes_session(spark, EPISODE_PARTITIONS)
    rows = session.readStream.format("delta").option("maxFilesPerTrigger", 1).load(silver)
    lake = Lake(root)
    query = (
        episodes(rows, load_rules()).writeStream.option("checkpointLocation", lake.checkpoint(STATE_LAYOUTS[-1]))
        .foreachBatch(EpisodesBatch(Writer(spark, lake, "episodes", {}), None)).trigger(availableNow=True).start()
    )  # fmt: skip
    query.awaitTermination()
    progress = [p for p in query.recentProgress if p["numInputRows"]]
    later = progress[1:] or progress  # the first batch also starts the Python workers and creates the tables
    took = [p["durationMs"]["triggerExecution"] / 1000 for p in later]
    state = progress[-1]["stateOperators"][0]
    values = {
        "events_per_batch": cars * batch_s,
        "batch_s": float(np.median(took)),
        "events_per_s": cars * batch_s / float(np.median(took)),
        "state_rows": state["numRowsTotal"],
        "state_mib": state["memoryUsedBytes"] / 2**20,
        "batches": len(later),
    }
    spark.stop()
    return asdict(Result("episodes", f"{cars:,} cars, {batch_s} s of reports per batch", values))


#: the writes :func:`upsert_worker` compares, in its order
UPSERT_WAYS = (
    "upsert (MERGE) into silver/alert_episodes (by Spark)",
    "the same upsert from the driver, by delta-rs (a stateful query's now)",
    "append to the query's partition of silver/pending_upserts (from the driver, by delta-rs)",
    "the partition emptied (a delete from the driver, by delta-rs)",
    "plain append to a Delta table (by Spark)",
)


def upsert_worker(rounds: int, rows: int = 20, table_rows: int = 3000) -> dict[str, Any]:
    """The driver's CPU (JVM and Python) and the wall time of one write of ``rows`` episode steps, five ways,
    in one Spark driver, alternated ``rounds`` times: an upsert into silver/alert_episodes (a Delta
    MERGE, by the pipeline's writer, into a table of ``table_rows`` episodes), by Spark and from
    the driver by delta-rs (into a table of its own, the same rows), an append to a
    query's partition of silver/pending_upserts (what an episodes batch writes between upserts),
    the partition emptied (what an upsert does after its MERGEs), and a plain append
    (gold/episodes_per_minute's kind of write)."""
    from pyspark.sql import functions as F

    from fleetstream.pipeline.clock import jvm_pid, process_cpu_s
    from fleetstream.pipeline.episodes import (
        EPISODE_COLUMNS,
        EPISODE_SCHEMA,
        PENDING_SCHEMA,
        PENDING_TABLE,
        TRIP_SCHEMA,
    )
    from fleetstream.pipeline.session import spark_session
    from fleetstream.pipeline.writer import Lake, Writer

    root = tempfile.mkdtemp(prefix="fleetstream-bench-upsert-")
    spark = spark_session(Settings(), "fleetstream-bench-upsert")
    spark.sparkContext.setLogLevel("ERROR")
    pid = jvm_pid(spark)
    lake = Lake(root)
    writer = Writer(spark, lake, "episodes", {})

    def steps(first: int, n: int, as_of: int) -> list[tuple[Any, ...]]:
        row = dict.fromkeys(EPISODE_COLUMNS)
        row.update(car_id="c1", rule="overspeed", severity="high", lifecycle="updated", status="open", started_at=0,
                   opened_at=0, last_seen_at=as_of, events=as_of, peak_speed=130.0, as_of=as_of)  # fmt: skip
        return [tuple({**row, "episode_id": f"e{i}"}.values()) for i in range(first, first + n)]

    episodes = "silver/alert_episodes"
    writer.write(0, {episodes: spark.createDataFrame(steps(0, table_rows, 1), EPISODE_SCHEMA)})  # created
    on_driver = Writer(spark, Lake(f"{root}/driver"), "episodes", {})  # (the same table, upserted by delta-rs)
    on_driver.write(0, {episodes: spark.createDataFrame(steps(0, table_rows, 1), EPISODE_SCHEMA)})
    appended = f"{root}/appended"
    spark.createDataFrame(steps(0, table_rows, 1), EPISODE_SCHEMA).write.format("delta").save(appended)

    def waiting(k: int, frame: Any) -> None:  # as an episodes batch writes its rows between upserts
        steps = F.struct(*EPISODE_COLUMNS).alias("episode")
        trip = F.lit(None).cast(f"STRUCT<{TRIP_SCHEMA}>").alias("trip")
        writer.write(k, {PENDING_TABLE: frame.select(F.lit("episodes").alias("query"), F.lit("episode").alias("kind"),
                                                     steps, trip)}, small=True)  # fmt: skip

    def emptied(k: int, frame: Any) -> None:  # as an upsert leaves it
        writer.empty(PENDING_TABLE, PENDING_SCHEMA)

    ways: dict[str, Callable[[int, Any], object]] = dict(zip(UPSERT_WAYS, (
        lambda k, frame: writer.upsert(episodes, frame),
        lambda k, frame: on_driver.upsert(episodes, frame, small=True),
        waiting,
        emptied,
        lambda k, frame: frame.write.format("delta").mode("append").save(appended),
    ), strict=True))  # fmt: skip
    took: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    for k in range(1, rounds + 3):
        for way, write in ways.items() if k % 2 else reversed(ways.items()):
            # from the second round on, half the rows are in the upserted table (newer steps of them)
            frame = spark.createDataFrame(steps(table_rows + (k - 1) * rows // 2, rows, 1 + k), EPISODE_SCHEMA)
            frame = frame.persist()
            frame.count()
            time.sleep(0.5)
            # the JVM's and this process's (delta-rs writes from here)
            cpu, own, began = process_cpu_s(pid), time.process_time(), time.monotonic()
            write(k, frame)
            after, own_after = process_cpu_s(pid), time.process_time()
            if k > 2 and cpu is not None and after is not None:  # two rounds to warm up
                took[way].append((after - cpu + own_after - own, time.monotonic() - began))
            frame.unpersist()
    spark.stop()
    values = {}
    for i, runs in enumerate(took.values()):
        values[f"cpu_s[{i}]"] = float(np.median([c for c, _ in runs]))
        values[f"wall_s[{i}]"] = float(np.median([w for _, w in runs]))
    return asdict(Result("upsert", f"{rows} episode steps, {table_rows:,} episodes in the table", values))


# --- running and reporting -------------------------------------------------------------------------


def run(settings: Settings, measures: tuple[str, ...], options: Options, say: Callable[[str], None]) -> list[Result]:
    """The chosen measures, against the configured Kafka (which must answer)."""
    results: list[Result] = []
    kafka = settings.kafka

    def collect(data: dict[str, Any]) -> None:
        result = Result(**data)
        results.append(result)
        say(f"{result.measure}, {result.label}: {_brief(result)}")

    for measure in measures:
        for i in range(options.repeat):
            if measure == "quiet":
                for variant in options.quiet_variants[:: 1 if i % 2 == 0 else -1]:
                    try:  # (a quarter of an hour each: one that fails does not take the others with it)
                        collect(in_subprocess(HERE, "quiet_worker", cars=options.quiet_cars,
                                              seconds=options.quiet_seconds, settle_s=options.quiet_settle_seconds,
                                              variant=variant, profile=options.quiet_profile))  # fmt: skip
                    except RuntimeError as exc:
                        say(f"quiet, {variant}: this run failed, left out of the medians: {exc}")
            elif measure == "publisher":
                for rate in options.publisher_rates:
                    for mode in MODES if i % 2 == 0 else MODES[::-1]:
                        collect(in_subprocess(HERE, "publisher_worker", kafka, mode=mode, rate=rate))
            elif measure == "episodes":
                collect(in_subprocess(HERE, "episodes_worker", cars=options.episodes_cars, seconds=60, batch_s=10))
            elif measure == "upsert":
                collect(in_subprocess(HERE, "upsert_worker", rounds=options.upsert_rounds))
            elif measure == "small":
                collect(in_subprocess(HERE, "small_worker", kafka))
            elif measure == "steady":
                runs = [(m, v) for m in options.steady_modes for v in options.steady_variants]
                for mode, variant in runs if i % 2 == 0 else runs[::-1]:
                    collect(in_subprocess(HERE, "steady_worker", kafka, mode=mode, rate=options.steady_rate,
                                          seconds=options.steady_seconds, warmup_s=options.warmup_seconds,
                                          trigger_s=options.trigger_s, variant=variant))  # fmt: skip
            elif measure == "burst":
                for mode in MODES if i % 2 == 0 else MODES[::-1]:
                    collect(in_subprocess(HERE, "burst_worker", kafka, mode=mode, burst=options.burst_events,
                                          rate=options.burst_rate, seconds=options.burst_seconds,
                                          trigger_s=options.trigger_s))  # fmt: skip
        if measure == "ceiling":
            results += ceiling(settings, options, say)
        if measure == "cluster":
            results += cluster(settings, options, say)
    return results


def _brief(result: Result) -> str:
    shown = ", ".join(f"{k} {v:,.3g}" for k, v in result.values.items() if not k.startswith(("cores[", "profile:")))
    return shown + ("" if result.correct else f" WRONG: {result.note}")


def _median(results: list[Result], key: str) -> float:
    values = [r.values[key] for r in results if key in r.values and not np.isnan(r.values[key])]
    return float(np.median(values)) if values else float("nan")


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if np.isnan(value) else f"{value:,.{digits}f}"


def _runs(results: list[Result], key: str, digits: int = 0) -> str:
    return ", ".join(_fmt(r.values.get(key, float("nan")), digits) for r in results)


def _by_label(results: list[Result], measure: str) -> dict[str, list[Result]]:
    grouped: dict[str, list[Result]] = {}
    for r in results:
        if r.measure == measure:
            grouped.setdefault(r.label, []).append(r)
    return grouped


def _flag(results: list[Result]) -> str:
    wrong = [r.note or "wrong" for r in results if not r.correct]
    return f" **({'; '.join(wrong)})**" if wrong else ""


def _rate_rows(by_label: dict[str, list[Result]]) -> list[str]:
    """A drain table's rows: events/s and wall seconds (medians), then each run's events/s."""
    return [
        f"| {label}{_flag(rows)} | {_fmt(_median(rows, 'rate'))} | {_fmt(_median(rows, 'wall_s'))} "
        f"| {_runs(rows, 'rate')} |"
        for label, rows in by_label.items()
    ]


def report(results: list[Result], machine: str, options: Options) -> str:
    """The docs/benchmarks.md block of the measures run: one sub-block per measure, between markers of
    its own (:func:`merge_report` keeps the other measures' sub-blocks of the block it replaces)."""
    sections: dict[str, list[str]] = {}

    def section(measure: str) -> list[str]:
        return sections.setdefault(measure, [])

    quiet = _by_label(results, "quiet")
    lines = section("quiet")
    for label, rows in quiet.items():
        kinds = sorted({k for r in rows for k in r.values if k.startswith("cores[")})
        profiled = list(dict.fromkeys(k for r in rows for k in r.values if k.startswith("profile:")))
        lines += [
            "",
            f"### Quiet fleet: `fleetstream run`, {label}",
            "",
            "Targets: the dashboard's data (every car, the charts' minutes) within 60 s of the command; the whole "
            f"stack <= 0.5 core (here over {options.quiet_seconds} s from {options.quiet_settle_seconds} s after the "
            "command); event to silver p95 <= 10 s.",
            "",
            "| figure | median | runs |",
            "| --- | ---: | --- |",
            f"| dashboard answers, s | {_fmt(_median(rows, 'dashboard_s'), 1)} | {_runs(rows, 'dashboard_s', 1)} |",
            f"| every car in gold/car_state, s | {_fmt(_median(rows, 'cars_s'), 1)} | {_runs(rows, 'cars_s', 1)} |",
            f"| first gold/car_minutes rows, s | {_fmt(_median(rows, 'charts_s'), 1)} | {_runs(rows, 'charts_s', 1)} |",
            f"| whole stack, cores{_flag(rows)} | {_fmt(_median(rows, 'cores'), 3)} | {_runs(rows, 'cores', 3)} |",
            *[f"| - {k[6:-1]}, cores | {_fmt(_median(rows, k), 3)} | {_runs(rows, k, 3)} |" for k in kinds],
            *[f"| - the lake JVM's profile: {k[8:].replace(':', ', ', 1)}, cores | {_fmt(_median(rows, k), 3)} "
              f"| {_runs(rows, k, 3)} |" for k in profiled],
            f"| peak resident memory, MiB | {_fmt(_median(rows, 'peak_mib'))} | {_runs(rows, 'peak_mib')} |",
            *[f"| event to silver {p}, s | {_fmt(_median(rows, f'silver_{p}_s'), 1)} "
              f"| {_runs(rows, f'silver_{p}_s', 1)} |" for p in ("p50", "p95", "p99")],
        ]  # fmt: skip
    publisher = _by_label(results, "publisher")
    lines = section("publisher")
    if publisher:
        lines += [
            "",
            "### The alert-data publisher alone: real-time against micro-batch",
            "",
            "`fleetstream stream --only alert-data`, the simulator paced at the rate (heavy faults), 60 s measured "
            "after 30 s; idle: 30 s after the input stopped. Micro-batch at its default trigger (0.1 s).",
            "",
            "| mode, rate | cores busy | cores idle | p50 ms | p99 ms | peak MiB | runs (cores busy) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, rows in publisher.items():
            lines.append(
                f"| {label}{_flag(rows)} | {_fmt(_median(rows, 'cores'), 3)} | {_fmt(_median(rows, 'idle_cores'), 3)} "
                f"| {_fmt(_median(rows, 'p50'))} | {_fmt(_median(rows, 'p99'))} | {_fmt(_median(rows, 'peak_mib'))} "
                f"| {_runs(rows, 'cores', 3)} |"
            )
    ceiling_rows = _by_label(results, "ceiling")
    lines = section("ceiling")
    if ceiling_rows:
        events = next(iter(ceiling_rows.values()))[0].values["events"]
        lines += [
            "",
            f"### Ceiling: a backlog of {events:,.0f} events, the pipeline against a minimal medallion",
            "",
            f"At most {options.max_records:,} records per batch. events/s from the lake query's start to its end; "
            "wall: the whole command. `fleetstream` is `fleetstream stream --available-now --only "
            f"{CEILING_SYSTEMS['fleetstream']}` (the lake's layers; its tables checked against the ground truth); "
            "`fleetstream, every query` is the command with its default queries, the stateful `episodes` "
            "too (it ends when it has drained silver); `minimal` is `fleetstream.bench.minimal`. "
            "Target: the pipeline (`fleetstream`) drains at >= 80 % of the minimal medallion's rate.",
            "",
            "| system | events/s | wall s | runs (events/s) |",
            "| --- | ---: | ---: | --- |",
        ]
        lines += _rate_rows(ceiling_rows)
        if {"fleetstream", "minimal"} <= set(ceiling_rows):
            share = _median(ceiling_rows["fleetstream"], "rate") / _median(ceiling_rows["minimal"], "rate")
            lines += ["", f"The pipeline drains at **{share:.0%}** of the minimal medallion's rate."]
    cluster_rows = _by_label(results, "cluster")
    lines = section("cluster")
    if cluster_rows:
        events = next(iter(cluster_rows.values()))[0].values["events"]
        lines += [
            "",
            f"### The same command on a local Spark standalone cluster: a backlog of {events:,.0f} events",
            "",
            f"`fleetstream stream --available-now --only {CEILING_SYSTEMS['fleetstream']}` in local mode (`local[*]`) "
            "and submitted to the cluster `fleetstream up --spark-workers 1` starts (one worker offering every core "
            "of this machine; the application takes them all: `spark.cores.max`; a 4 GiB executor in a JVM of its "
            "own, as on a real cluster), the order alternated per run; each lake checked against the ground truth. "
            "events/s from the lake query's start to its end; wall: the whole command.",
            "",
            "| Spark | events/s | wall s | runs (events/s) |",
            "| --- | ---: | ---: | --- |",
        ]
        lines += _rate_rows(cluster_rows)
    small = _by_label(results, "small")
    lines = section("small")
    for label, rows in small.items():
        lines += [
            "",
            f"### `fleetstream stream --available-now` on a small topic ({label})",
            "",
            "Target: within 30 s, the command's whole run (JVM start, reference data, the batch, the commits).",
            "",
            f"Wall time, median: **{_fmt(_median(rows, 'wall_s'), 1)} s** (runs: {_runs(rows, 'wall_s', 1)}); "
            f"of which the lake query {_fmt(_median(rows, 'drain_s'), 1)} s.",
        ]
    lines = section("episodes")
    for label, rows in _by_label(results, "episodes").items():
        lines += [
            "",
            f"### The alert episodes query alone ({label})",
            "",
            "The stateful query (`transformWithState`, RocksDB) over silver rows written as one Delta commit per "
            "batch, its outputs written (silver/alert_episodes, gold/trips); the first batch, which also starts "
            "the Python workers and creates the tables, left out.",
            "",
            f"Batch time, median: **{_fmt(_median(rows, 'batch_s'), 1)} s** for "
            f"{_fmt(_median(rows, 'events_per_batch'))} events ({_fmt(_median(rows, 'events_per_s'))} events/s; "
            f"runs: {_runs(rows, 'batch_s', 1)}); state at the end: {_fmt(_median(rows, 'state_rows'))} rows, "
            f"{_fmt(_median(rows, 'state_mib'), 1)} MiB in memory.",
        ]
    lines = section("upsert")
    for label, rows in _by_label(results, "upsert").items():
        lines += [
            "",
            f"### One write of the stateful queries' rows ({label})",
            "",
            "The driver's CPU time (its JVM's and its Python process's, where delta-rs writes) and the wall time "
            "of one write in one Spark driver, the five alternated "
            f"({options.upsert_rounds} rounds after two to warm up; medians, then the medians of "
            f"{len(rows)} runs).",
            "",
            "| write | CPU, s | wall, s |",
            "| --- | ---: | ---: |",
            *(f"| {way} | {_fmt(_median(rows, f'cpu_s[{i}]'), 2)} | {_fmt(_median(rows, f'wall_s[{i}]'), 2)} |"
              for i, way in enumerate(UPSERT_WAYS)),
        ]  # fmt: skip
    steady = _by_label(results, "steady")
    lines = section("steady")
    if steady:
        lines += [
            "",
            f"### Steady: every query at {options.steady_rate:,} events/s for {options.steady_seconds} s",
            "",
            f"After a {options.warmup_seconds} s warm-up at the rate. Lag: sensors-sample records the lake has not "
            f"committed when the input stops (target: under two triggers of input, {options.trigger_s:g} s each); "
            "the stateful query's: silver rows it has not taken in then. Targets: alerts p99 <= 1 s micro-batch, "
            "<= 100 ms real-time. Cores: both applications.",
            "",
            "| alerts mode | p50 ms | p95 ms | p99 ms | lake lag, s of input | stateful query's lag, s of input "
            "| cores | runs (p99 ms; lag s) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, rows in steady.items():
            lines.append(
                f"| {label}{_flag(rows)} | {_fmt(_median(rows, 'p50'))} | {_fmt(_median(rows, 'p95'))} "
                f"| {_fmt(_median(rows, 'p99'))} | {_fmt(_median(rows, 'lag_s'), 1)} "
                f"| {_fmt(_median(rows, 'stateful_lag_s'), 1)} | {_fmt(_median(rows, 'cores'), 2)} "
                f"| {_runs(rows, 'p99')}; {_runs(rows, 'lag_s', 1)} |"
            )
    burst = _by_label(results, "burst")
    lines = section("burst")
    if burst:
        lines += [
            "",
            f"### Burst: {options.burst_events:,} events at once, then {options.burst_rate:,} events/s",
            "",
            "Targets: the steady part's alerts p99 <= 2 s; the lake live again (behind by under two triggers of "
            "input) within 120 s of the burst's end.",
            "",
            "| alerts mode | steady part p50 ms | p99 ms | lake live again, s | runs (p99 ms; live again s) |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for label, rows in burst.items():
            lines.append(
                f"| {label}{_flag(rows)} | {_fmt(_median(rows, 'p50'))} | {_fmt(_median(rows, 'p99'))} "
                f"| {_fmt(_median(rows, 'live_again_s'))} | {_runs(rows, 'p99')}; {_runs(rows, 'live_again_s')} |"
            )
    lines = [
        MARK_BEGIN,
        "## Pipeline (`fleetstream bench pipeline`)",
        "",
        "The broker, the simulator and Spark (local mode) share the machine. Medians (each run's figure after "
        "it), the systems compared alternated. Each measure says when and where it ran: a run of some measures "
        "(`--measures`) replaces their tables and keeps the others'.",
    ]
    runs = f"{options.repeat} run{'' if options.repeat == 1 else 's'}"
    when = f"*Measured {time.strftime('%Y-%m-%d')} on {machine}; {runs} of each figure.*"
    for measure in MEASURES:
        if sections.get(measure):  # (its first title, then when and where, then the rest)
            body = sections[measure]
            title = next(i for i, line in enumerate(body) if line.startswith("### "))
            lines += ["", _sub(measure, True), *body[title : title + 1], "", when, *body[title + 1 :], "",
                      _sub(measure, False)]  # fmt: skip
    lines.append(MARK_END)
    return "\n".join(lines)


def _sub(measure: str, begin: bool) -> str:
    return f"<!-- bench:pipeline:{measure}:{'begin' if begin else 'end'} -->"


def merge_report(block: str, text: str) -> str:
    """The pipeline block to write over the one in ``text`` (a Markdown file's text): each measure's
    sub-block from ``block`` when it has one, else the old one's, in :data:`MEASURES` order (a run of
    some variants of a measure replaces its whole sub-block). An old block without sub-blocks (a
    hand-written one) is replaced whole, as before there were any.

    >>> cluster = Result("cluster", "local", {"events": 9, "rate": 3.0, "wall_s": 3.0})
    >>> old = report([Result("small", "9 events", {"wall_s": 20.0, "drain_s": 5.0}), cluster], "m", Options())
    >>> new = report([Result("small", "9 events", {"wall_s": 9.0, "drain_s": 2.0})], "m", Options())
    >>> merged = merge_report(new, "# Benchmarks\\n\\n" + old + "\\n")
    >>> "**9.0 s**" in merged and "**20.0 s**" not in merged and "| local | 3 | 3 | 3 |" in merged
    True
    >>> merged.index("bench:pipeline:small:begin") < merged.index("bench:pipeline:cluster:begin")
    True
    """
    if MARK_BEGIN not in text or MARK_END not in text:
        return block
    old = text.split(MARK_BEGIN, 1)[1].split(MARK_END, 1)[0]

    def subs(of: str) -> dict[str, str]:  # (a sub-block whose end marker is missing is not taken)
        return {
            m: of.split(_sub(m, True), 1)[1].split(_sub(m, False), 1)[0]
            for m in MEASURES
            if _sub(m, True) in of and _sub(m, False) in of.split(_sub(m, True), 1)[1]
        }

    kept, new = subs(old), subs(block)
    head = block.split(_sub(next(iter(new)), True), 1)[0] if new else block.rsplit(MARK_END, 1)[0]
    parts = [head.rstrip("\n")]
    for measure in MEASURES:
        if measure in new or measure in kept:
            parts += ["", _sub(measure, True) + new.get(measure, kept.get(measure, "")) + _sub(measure, False)]
    return "\n".join([*parts, MARK_END])
