"""`fleetstream bench pipeline`: throughput and event-to-alert latency of the streaming pipeline.

- Sustained throughput: a backlog of simulated telemetry (faults and bad data included) is put in
  Kafka, then every query (bronze, silver, alerts, gold) runs at once with a cap on records per
  bronze batch, as under a steady flow. Timed from the start of the queries until every query is idle
  and bronze, silver + quarantine + duplicates all hold the backlog. The alert set is compared with
  the simulator's ground truth: a fast but wrong run is reported as wrong.
- Latency: the simulator sends in real time at a fixed rate (one report per car per second) while
  the pipeline runs; a Kafka consumer on alert-data takes, for every alert, the time it is readable
  minus the event_time stamped by the producer. Micro-batch and real-time alert modes.

Each measure runs in its own process (its own Spark driver) against fresh topics and a fresh lake.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fleetstream.config import KafkaSettings, LakeSettings, Settings, TopicNames, process_env
from fleetstream.pipeline import ALERTS_TRIGGER_S, LAKE_NICE, LAKE_TRIGGER_S

MARK_BEGIN = "<!-- bench:pipeline:begin -->"
MARK_END = "<!-- bench:pipeline:end -->"
PROBE_PREFIX = "probe-"


def percentiles(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": ..., "p95": ..., "p99": ...} (linear interpolation); empty input gives NaN."""
    if not values:
        return {f"p{p}": float("nan") for p in points}
    got = np.percentile(np.asarray(values, dtype=float), points)
    return {f"p{p}": float(v) for p, v in zip(points, got, strict=True)}


def alert_score(got: set[tuple[str, str]], expected: set[tuple[str, str]]) -> tuple[float, float]:
    """(precision, recall) of an alert set against the expected one (1.0 each when equal)."""
    hits = len(got & expected)
    precision = hits / len(got) if got else (1.0 if not expected else 0.0)
    return precision, hits / len(expected) if expected else 1.0


@dataclass
class Result:
    measure: str
    events: int
    seconds: float
    alerts_expected: int
    alerts_got: int
    precision: float
    recall: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    peak_rss_mib: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def correct(self) -> bool:
        return self.precision == 1.0 and self.recall == 1.0


def _settings(bootstrap: str, lake: str, master: str | None = None, suffix: str | None = None) -> Settings:
    """Settings for one measure: its own topics (``bench-<name>-<suffix>``) and lake."""
    base = Settings()
    topics = TopicNames().tagged(suffix or uuid.uuid4().hex[:8], "bench-")
    update: dict[str, Any] = {
        "kafka": KafkaSettings(**{**base.kafka.model_dump(), "bootstrap_servers": bootstrap, "topics": topics}),
        "lake": LakeSettings(root=lake),
    }
    if master:
        update["spark"] = base.spark.model_copy(update={"master": master})
    return base.model_copy(update=update)


def _prepare(settings: Settings, cars: int, seed: int) -> None:
    from fleetstream.ingest.kafka import ensure_topics
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.reference.publish import publish

    ensure_topics(settings.kafka, settings.kafka.topics.all())
    publish(settings, settings.lake.dims, generate_cars(cars, seed))


def _idle(queries: list[Any]) -> bool:
    return all(not q.status["isDataAvailable"] and not q.status["isTriggerActive"] for q in queries)


def _rss_mib(pid: int) -> float:
    """Resident memory of a process (the Spark driver JVM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def throughput_worker(
    bootstrap: str, lake: str, cars: int, seconds: int, max_offsets: int, suffix: str | None = None
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.pipeline.session import spark_session
    from fleetstream.pipeline.stream import QUERIES, Pipeline
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    settings = _settings(bootstrap, lake, suffix=suffix)
    _prepare(settings, cars, seed=7)
    options = SimOptions(
        cars=cars,
        fast=True,
        duration=seconds,
        seed=7,
        faults=FAULT_PRESETS["default"],
        bad_data=BAD_DATA_PRESETS["default"],
    )
    simulation = Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors))
    events = simulation.run().events
    spark = spark_session(settings, "fleetstream-bench-throughput")
    spark.sparkContext.setLogLevel("ERROR")
    pipeline = Pipeline(spark, settings, max_offsets=max_offsets)
    pipeline.create_tables()

    def count(name: str) -> int:
        return int(spark.read.format("delta").load(pipeline.lake.table(name)).count())

    began = time.perf_counter()
    queries = pipeline.start(QUERIES, {"processingTime": "1 second"})
    finished = None
    quiet = 0
    while time.perf_counter() - began < 1800:
        time.sleep(0.5)
        if any(q.exception() for q in queries):
            raise RuntimeError(f"a query failed: {[str(q.exception()) for q in queries if q.exception()]}")
        quiet = quiet + 1 if _idle(queries) else 0
        if quiet >= 2 and count("bronze/telemetry") == events:
            accounted = count("silver/telemetry") + count("quarantine/telemetry") + count("silver/duplicates")
            if accounted == events and _idle(queries):
                finished = time.perf_counter() - 0.5  # it was idle at the previous poll already
                break
    for query in queries:
        query.stop()
    if finished is None:
        raise RuntimeError("the pipeline did not drain the backlog within 30 minutes")
    fired = spark.read.format("delta").load(pipeline.lake.table("silver/alerts")).select("event_id", "rule")
    got = {(r["event_id"], r["rule"]) for r in fired.where(F.col("rule").isNotNull()).collect()}
    expected = simulation.ground_truth.expected_alerts()
    jvm_pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())  # type: ignore[union-attr]
    rss = _rss_mib(jvm_pid)
    spark.stop()
    return asdict(
        Result(
            measure=f"throughput, backlog of {events:,} events ({cars:,} cars), max {max_offsets:,} per batch",
            events=events,
            seconds=finished - began,
            alerts_expected=len(expected),
            alerts_got=len(got),
            peak_rss_mib=rss,
            precision=alert_score(got, expected)[0],
            recall=alert_score(got, expected)[1],
        )
    )


class AlertClock(threading.Thread):
    """Consumes alert-data and records, for every alert, readable-at minus event_time (ms)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.subscribe([topic])
        self.samples: list[tuple[int, float]] = []  # (event_time, latency ms)
        self.alerts: set[tuple[str, str]] = set()
        self.seen: dict[tuple[str, str], tuple[int, float]] = {}  # first (event_time, readable-at ms)
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            messages = self.consumer.consume(1000, 0.05)
            now = time.time() * 1000
            if self.consumer.assignment():
                self.ready.set()
            for m in messages:
                if m.error() is not None:
                    continue
                alert = json.loads(m.value() or b"{}")
                if "event_time" not in alert:
                    continue
                if str(alert.get("event_id", "")).startswith(PROBE_PREFIX):
                    continue  # the readiness probe's, not the measured run's
                key = (alert["event_id"], alert["rule"])
                self.samples.append((int(alert["event_time"]), now - alert["event_time"]))
                self.alerts.add(key)
                self.seen.setdefault(key, (int(alert["event_time"]), now))
        self.consumer.close()


class StreamProcess:
    """`fleetstream stream` as the product runs it, in a session of its own (or, not
    ``new_session``, in the caller's process group), stopped with Ctrl-C's signal."""

    def __init__(self, settings: Settings, argv: list[str], new_session: bool = True) -> None:
        from fleetstream.pipeline.monitor import STATUS_FILE

        self.state_dir = Path(f"{settings.lake.root}-state")
        self.status_path = self.state_dir / STATUS_FILE
        self.log_path = self.state_dir / "stream.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleetstream", "stream", *argv],
                env={**process_env(settings, os.environ), "FLEETSTREAM_STATE_DIR": str(self.state_dir)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"fleetstream stream exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def warm(self, names: set[str], timeout: float = 300) -> None:
        """Until every query named has finished a batch (the status file the dashboard reads)."""
        from fleetstream.pipeline.monitor import read_status

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            status = read_status(self.status_path)
            if status and names <= {q.name for q in status.queries if q.batch >= 0}:
                return
            time.sleep(1)
        raise RuntimeError(f"queries {sorted(names)} did not start within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        """Ctrl-C, then wait; a non-zero exit (a query failed) is an error."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise RuntimeError(f"fleetstream stream did not stop within 120 s:\n{self.tail()}") from None
        if code != 0:
            raise RuntimeError(f"fleetstream stream exited {code}:\n{self.tail()}")


def probe_until_alert(settings: Settings, car_id: str, timeout: float = 180) -> None:
    """Send overspeed reports until one's alert is readable on alert-data: the alert path is live
    (a real-time query starts at the latest offsets, so nothing measured may come before this)."""
    from confluent_kafka import Consumer, Producer

    from fleetstream import schema

    kafka = settings.kafka
    consumer = Consumer(
        {**kafka.client_config(), "group.id": f"probe-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafka.topics.alerts])
    producer = Producer(kafka.client_config())
    deadline, n = time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline:
            n += 1
            now = int(time.time() * 1000)
            event = {**schema.EXAMPLE, "event_id": f"{PROBE_PREFIX}{n}", "car_id": car_id, "event_time": now}
            event["speed"] = 150.0
            producer.produce(kafka.topics.sensors, json.dumps(event).encode(), key=car_id.encode(), timestamp=now)
            producer.flush(10)
            for m in consumer.consume(100, 2.0):
                if m.error() is None and str(json.loads(m.value() or b"{}").get("event_id", "")).startswith(
                    PROBE_PREFIX
                ):
                    return
    finally:
        consumer.close()
    raise RuntimeError(f"no alert for the probe within {timeout:.0f} s")


def latency_worker(
    bootstrap: str,
    lake: str,
    mode: str,
    rate: int,
    seconds: int,
    trigger_s: float,
    suffix: str | None = None,
    separate: bool = True,
    lake_nice: int = LAKE_NICE,
    realtime_checkpoint_s: float = 300.0,
    warmup_s: int = 60,
) -> dict[str, Any]:
    """Event-to-alert latency at ``rate`` events/s, measured for ``seconds`` after ``warmup_s`` at that
    rate, of `fleetstream stream` in a process of its own: the alert publisher in an application of
    its own (``separate``, the default) or every query in one (``--one-app``)."""
    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    settings = _settings(bootstrap, lake, suffix=suffix)
    _prepare(settings, rate, seed=11)
    argv = ["--alerts-mode", mode, "--trigger-seconds", f"{trigger_s:g}"]
    argv += ["--alerts-trigger-seconds", f"{ALERTS_TRIGGER_S:g}"]
    argv += ["--realtime-checkpoint-seconds", f"{realtime_checkpoint_s:g}"]
    argv += ["--separate-alert-app", "--lake-nice", str(lake_nice)] if separate else ["--one-app"]
    stream = StreamProcess(settings, argv)
    try:
        # a real-time query reports progress only at its batch end: the probe below waits for it
        stream.warm({"lake"} | ({"alerts"} if mode == "microbatch" else set()))
        probe_until_alert(settings, generate_cars(rate, 11)[0].car_id)
        clock = AlertClock(settings.kafka, settings.kafka.topics.alerts)
        clock.start()
        clock.ready.wait(30)
        options = SimOptions(
            cars=rate, rate=1.0, duration=seconds + warmup_s, seed=11, faults=FAULT_PRESETS["heavy"],
            bad_data=BAD_DATA_PRESETS["none"],
        )  # fmt: skip
        simulation = Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors, paced=True))
        stats = simulation.run()
        # the last alerts: until none has come for 10 s after the last one (at most 3 minutes)
        seen, quiet_since, deadline = len(clock.samples), time.monotonic(), time.monotonic() + 180
        while (not seen or time.monotonic() - quiet_since < 10) and time.monotonic() < deadline:
            time.sleep(0.5)
            stream.check()
            if len(clock.samples) != seen:
                seen, quiet_since = len(clock.samples), time.monotonic()
        clock.stop.set()
        clock.join()
    finally:
        stream.stop()
    measured_from = simulation.start_ms + warmup_s * 1000
    latencies = [lat for event_time, lat in clock.samples if event_time >= measured_from]
    expected = simulation.ground_truth.expected_alerts()
    how = f", alert app separate (lake nice {lake_nice})" if separate else ", one app"
    batches = (
        f", trigger {trigger_s:g} s (alert publisher {ALERTS_TRIGGER_S:g} s)"
        if mode == "microbatch"
        else f", checkpoint every {realtime_checkpoint_s:g} s"
    )
    return asdict(
        Result(
            measure=f"latency, {mode}, {rate:,} events/s, {seconds} s after {warmup_s} s warm-up{batches}{how}",
            events=stats.events,
            seconds=float(seconds + warmup_s),
            alerts_expected=len(expected),
            alerts_got=len(clock.alerts),
            latency_ms=percentiles(latencies),
            samples=len(latencies),
            precision=alert_score(clock.alerts, expected)[0],
            recall=alert_score(clock.alerts, expected)[1],
        )
    )


def _in_subprocess(function: str, kafka: KafkaSettings, **kwargs: Any) -> Result:
    """Run one worker in its own process; its topics (tens to hundreds of MB on the broker) are
    deleted when it ends, failed or not."""
    from fleetstream.ingest.kafka import delete_topics

    suffix = uuid.uuid4().hex[:8]
    arguments = {**kwargs, "bootstrap": kafka.bootstrap, "suffix": suffix}
    code = (
        f"import json; from fleetstream.bench.pipeline import {function}; "
        f"print('RESULT ' + json.dumps({function}(**json.loads({json.dumps(json.dumps(arguments))}))))"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    finally:
        delete_topics(kafka, TopicNames().tagged(suffix, "bench-").all())
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{function} failed (exit {done.returncode}):\n{tail}")
    data = json.loads(lines[-1][len("RESULT ") :])
    return Result(**data)


def run(
    settings: Settings,
    repeat: int = 3,
    cars: int = 1000,
    seconds: int = 1200,
    max_offsets: int = 250_000,
    rate: int = 5000,
    latency_seconds: int = 60,
    trigger_s: float = LAKE_TRIGGER_S,
    realtime_checkpoint_s: float = 300.0,
    warmup_s: int = 60,
) -> list[Result]:
    """Every measure, against the configured Kafka (which must answer)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-lake-") as tmp:
        for i in range(repeat):
            results.append(
                _in_subprocess(
                    "throughput_worker",
                    kafka=settings.kafka,
                    lake=f"{tmp}/t{i}",
                    cars=cars,
                    seconds=seconds,
                    max_offsets=max_offsets,
                )
            )
        for mode in ("microbatch", "realtime"):
            for separate in (False, True):
                results.append(
                    _in_subprocess(
                        "latency_worker",
                        kafka=settings.kafka,
                        lake=f"{tmp}/l-{mode}-{'separate' if separate else 'one'}",
                        mode=mode,
                        rate=rate,
                        # real-time: as long as one of its batches, so that one batch start (its
                        # checkpoint) falls in the run, as often as it does in a long run
                        seconds=max(latency_seconds, int(realtime_checkpoint_s))
                        if mode == "realtime"
                        else latency_seconds,
                        trigger_s=trigger_s,
                        separate=separate,
                        realtime_checkpoint_s=realtime_checkpoint_s,
                        warmup_s=warmup_s,
                    )
                )
    return results


def report(results: list[Result], machine: str) -> str:
    throughput = [r for r in results if r.measure.startswith("throughput")]
    latency = [r for r in results if r.measure.startswith("latency")]
    rates = sorted(r.rate for r in throughput)
    lines = [
        MARK_BEGIN,
        "## Pipeline (`fleetstream bench pipeline`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}; the broker, the simulator and Spark "
        "(local mode) share the machine. Targets: >= 50,000 events/s sustained; event-to-alert p99 <= 1 s "
        "micro-batch at 5,000 events/s, <= 100 ms in real-time mode.",
        "",
        "| measure | events/s | p50 ms | p95 ms | p99 ms | alerts (got / expected) | precision | recall "
        "| driver peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in throughput + latency:
        lat = [f"{r.latency_ms[k]:,.0f}" if r.latency_ms else "-" for k in ("p50", "p95", "p99")]
        rss = f"{r.peak_rss_mib:,.0f} MiB" if r.peak_rss_mib else "-"
        flag = "" if r.correct else " **(wrong alerts)**"
        lines.append(
            f"| {r.measure}{flag} | {r.rate:,.0f} | {' | '.join(lat)} | {r.alerts_got:,} / {r.alerts_expected:,} "
            f"| {r.precision:.3f} | {r.recall:.3f} | {rss} |"
        )
    lines += [
        "",
        "Latency rows measure the alerts of the reports sent after the warm-up (the input runs at the "
        "same rate from the start: JIT compilation, the first Delta and state store versions and the "
        "lake's first batches happen in it), and count the alerts readable on `alert-data` until none "
        "has come for 10 s after the input stopped (at most 3 minutes): a recall below 1 there means "
        "the pipeline had not caught up, a precision below 1 that it raised alerts the ground truth does not imply. "
        '"one app": every query in one Spark application (`fleetstream stream --one-app`); "alert app separate": '
        "the alert-data publisher in an application of its own and the lake's at a lower CPU priority "
        "(`fleetstream stream`, the default). A real-time run lasts one real-time batch, so it holds "
        "one batch start (its checkpoint), as a long run does once per batch.",
    ]
    if rates:
        lines += [
            "",
            f"Sustained throughput, median of {len(rates)} runs: **{float(np.median(rates)):,.0f} events/s**.",
        ]
    lines.append(MARK_END)
    return "\n".join(lines)
