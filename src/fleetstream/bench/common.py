"""What the pipeline and compare benchmarks share: a measure's private topics and lake, the alert
clock on alert-data, the CPU and memory meter, `fleetstream stream` as a process, and running a
worker in a process of its own."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fleetstream.clients import librdkafka
from fleetstream.config import KafkaSettings, LakeSettings, Settings, TopicNames, process_env

log = logging.getLogger(__name__)

PROBE_PREFIX = "probe-"


def percentiles(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": ..., "p95": ..., "p99": ...} (linear interpolation); empty input gives NaN."""
    if not values:
        return {f"p{p}": float("nan") for p in points}
    got = np.percentile(np.asarray(values, dtype=float), points)
    return {f"p{p}": float(v) for p, v in zip(points, got, strict=True)}


#: the rules every system of ``bench compare`` implements (the seeds' three): alerts of other rules
#: (our pipeline's zone_overspeed) are left out of its scores
COMPARED_RULES = ("overspeed", "engine_stress", "gear_mismatch")


def alert_score(got: set[tuple[str, str]], expected: set[tuple[str, str]]) -> tuple[float, float]:
    """(precision, recall) of an alert set against the expected one (1.0 each when equal)."""
    hits = len(got & expected)
    precision = hits / len(got) if got else (1.0 if not expected else 0.0)
    return precision, hits / len(expected) if expected else 1.0


def bench_settings(bootstrap: str, lake: str, master: str | None = None, suffix: str | None = None) -> Settings:
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


def prepare(settings: Settings, cars: int, seed: int) -> None:
    """The measure's topics, and reference data for ``cars`` cars."""
    from fleetstream.ingest.kafka import ensure_topics
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.reference.publish import publish

    ensure_topics(settings.kafka, settings.kafka.topics.all())
    publish(settings, settings.lake.dims, generate_cars(cars, seed))


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


class AlertClock(threading.Thread):
    """Consumes alert-data and records, for every alert, readable-at minus event_time (ms)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            {
                **librdkafka(kafka),
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


class TreeMeter(threading.Thread):
    """CPU seconds and peak resident memory of some processes and all their descendants.

    A process's CPU includes what its children that it has reaped used, less what the meter saw
    them use itself: short-lived processes (Hadoop's ``chmod`` per local file, before session 59)
    end between two samples, and their CPU shows only in their parent's reaped children's time.
    """

    def __init__(self, pids: list[int], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.cpu: dict[int, float] = {}  # pid -> its CPU seconds counted at its last sample
        self.parents: dict[int, int] = {}  # pid -> its parent's, for the processes of the last sample
        self.credited: dict[int, float] = {}  # pid -> CPU of its ended children already counted as theirs
        self.marked: dict[int, float] = {}
        self.peak_mib = 0.0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def _tree(self) -> list[psutil.Process]:
        out = []
        for root in self.roots:
            try:
                out += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return out

    def sample(self) -> None:
        rss = 0
        now: dict[int, tuple[float, float, int]] = {}  # pid -> (own CPU, reaped children's CPU, parent)
        for proc in self._tree():
            try:
                times = proc.cpu_times()
                now[proc.pid] = (times.user + times.system, times.children_user + times.children_system, proc.ppid())
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        with self.lock:
            for pid in self.parents.keys() - now.keys():  # ended (and reaped: what it used is its parent's now)
                parent = self.parents.pop(pid)
                self.credited[parent] = self.credited.get(parent, 0.0) + self.cpu.get(pid, 0.0)
            for pid, (own, reaped, parent) in now.items():
                self.cpu[pid] = own + reaped - self.credited.get(pid, 0.0)
                self.parents[pid] = parent
            self.peak_mib = max(self.peak_mib, rss / 2**20)

    def mark(self) -> None:
        """Start a new measure: CPU counted from now, peak memory reset."""
        self.sample()
        with self.lock:
            self.marked = dict(self.cpu)
            self.peak_mib = 0.0

    def since_mark(self) -> tuple[float, float]:
        """(CPU seconds, peak MiB) since the last mark."""
        self.sample()
        with self.lock:
            cpu = sum(v - self.marked.get(pid, 0.0) for pid, v in self.cpu.items())
            return cpu, self.peak_mib

    def by_name(self) -> dict[str, float]:
        """CPU seconds since the last mark per process kind (its command's most telling word)."""
        self.sample()
        names: dict[str, float] = {}
        for proc in self._tree():
            try:
                kind = process_kind(proc.cmdline())
            except psutil.Error:
                continue
            with self.lock:
                used = self.cpu.get(proc.pid, 0.0) - self.marked.get(proc.pid, 0.0)
            names[kind] = names.get(kind, 0.0) + used
        return names

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()


def process_kind(argv: list[str]) -> str:
    """What a process of the stack is, from its command line.

    >>> process_kind(["python", "-m", "fleetstream", "stream", "--only", "alert-data"])
    'alert-data publisher'
    >>> process_kind(["java", "-cp", "x", "kafka.Kafka", "server.properties"])
    'kafka broker'
    """
    text = " ".join(argv)
    for needle, kind in (("alert-data", "alert-data publisher"), ("kafka.Kafka", "kafka broker"),
                         ("fleetstream-stream", "stream JVM"), ("SparkSubmit", "Spark JVM"),
                         (" simulate", "simulator"), ("streamlit", "dashboard"), (" dashboard", "dashboard"),
                         (" stream", "stream"), ("pyspark", "Spark Python workers")):  # fmt: skip
        if needle in text:
            return kind
    return argv[0].rsplit("/", 1)[-1] if argv else "?"


class StreamProcess:
    """`fleetstream stream` as the product runs it, in a session of its own (or, not
    ``new_session``, in the caller's process group), stopped with Ctrl-C's signal."""

    def __init__(
        self, settings: Settings, argv: list[str], new_session: bool = True, env: Mapping[str, str] | None = None
    ) -> None:
        """``env``: variables over the settings' (a variant's stream options)."""
        from fleetstream.pipeline.monitor import STATUS_FILE

        self.state_dir = Path(f"{settings.lake.root}-state")
        self.status_path = self.state_dir / STATUS_FILE
        self.log_path = self.state_dir / "stream.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleetstream", "stream", *argv],
                env={**process_env(settings, os.environ), "FLEETSTREAM_STATE_DIR": str(self.state_dir), **(env or {})},
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
        {**librdkafka(kafka), "group.id": f"probe-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafka.topics.alerts])
    producer = Producer(librdkafka(kafka))
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


#: how long an interrupted worker may take to stop what it started (a `fleetstream run` takes up to
#: two minutes) before it and its process group are killed
WORKER_STOP_S = 150.0


def stop_worker(worker: subprocess.Popen[str], timeout_s: float = WORKER_STOP_S) -> None:
    """Interrupt a worker (SIGINT: its ``finally`` stops what it started) and wait for it; kill its
    process group if it is still there after ``timeout_s`` or on a second interrupt."""
    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGINT)
    try:
        worker.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(worker)
    except BaseException:
        _kill_group(worker)
        raise


def _kill_group(worker: subprocess.Popen[str]) -> None:
    log.warning("the measure's worker did not stop in time: killed; a `fleetstream run` it started may be left "
                "running (`fleetstream down` with its FLEETSTREAM_STATE_DIR stops it)")  # fmt: skip
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def in_subprocess(module: str, function: str, topics: KafkaSettings | None = None, **kwargs: Any) -> Any:
    """Run ``module.function(**kwargs)`` in a process of its own and return what it returns (JSON).
    When ``topics`` is given, the worker gets a fresh topic suffix (``suffix=``) and its topics
    (tens to hundreds of MB on the broker) are deleted when it ends, failed or not."""
    from fleetstream.ingest.kafka import delete_topics

    suffix = uuid.uuid4().hex[:8]
    arguments = {**kwargs, **({"suffix": suffix, "bootstrap": topics.bootstrap} if topics is not None else {})}
    code = (  # (an interrupt raises: a shell's `cmd &` starts its jobs with SIGINT ignored, and so theirs)
        f"import json, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"from {module} import {function}; "
        f"print('RESULT ' + json.dumps({function}(**json.loads({json.dumps(json.dumps(arguments))}))))"
    )
    # in a session of its own: a Ctrl-C at the terminal reaches this process alone, which passes it on
    # once (below), so the worker's own `finally` stops what it started (a whole `fleetstream run`)
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = worker.communicate()
    except BaseException:  # Ctrl-C, or SIGTERM taken as one
        stop_worker(worker)
        raise
    finally:
        if topics is not None:
            delete_topics(topics, TopicNames().tagged(suffix, "bench-").all())
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    tail = "\n".join(stderr.strip().splitlines()[-25:])
    if not lines:
        raise RuntimeError(f"{function} failed (exit {worker.returncode}):\n{tail}")
    if worker.returncode != 0:  # its measure is whole: it died on its way out (a native library's threads)
        log.warning("%s printed its result, then exited %s: %s", function, worker.returncode, tail[-300:])
    return json.loads(lines[-1][len("RESULT ") :])
