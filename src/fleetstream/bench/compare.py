"""`fleetstream bench compare`: fleetstream side by side with the seed-style pipeline and Quix Streams.

One workload (fleet size, fault preset, seed) is produced by the simulator into fresh topics at
each input rate in turn, then once as fast as it can. Every system (``bench.contenders``) is
started once, said READY, and then meets the same segments in the same order:

- fixed rates: the simulator sends in real time; for every alert readable on the system's alert
  topic the bench takes readable-at minus the producer's event_time (after a warm-up). Latency
  that keeps rising through the segment means the system falls behind (``lag_grows``); after the
  input stops it has ``drain_s`` to deliver every expected alert. A system that falls behind or does
  not deliver is not run at the higher rates;
- "max": a backlog-sized burst as fast as the simulator sends; throughput is the burst's events
  over the time until its last expected alert was readable.

CPU (cores busy on average) and peak resident memory cover every process of the system (JVMs and
Python workers included), sampled with psutil. Every segment's alert set is compared with the
simulator's ground truth: a fast but wrong system is reported as wrong.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from fleetstream.bench.common import (
    COMPARED_RULES,
    AlertClock,
    TreeMeter,
    alert_score,
    bench_settings,
    percentiles,
    prepare,
    wait_until,
)
from fleetstream.bench.contenders import SYSTEMS
from fleetstream.bench.contenders._common import READY
from fleetstream.config import Settings, process_env

MARK_BEGIN = "<!-- bench:compare:begin -->"
MARK_END = "<!-- bench:compare:end -->"
MAX = "max"


@dataclass(frozen=True)
class Workload:
    """What every system meets: the fleet, the faults, the seed, the rates and how long each lasts."""

    cars: int = 5000
    rates: tuple[int, ...] = (1000, 5000, 20000)
    seconds: int = 45  # measured per fixed rate, after the warm-up
    warmup_s: int = 10
    max_events: int = 200_000  # the "as fast as possible" burst; 0 skips it
    faults: str = "heavy"
    seed: int = 7
    drain_s: int = 60  # after a fixed-rate input stops, time to deliver the last alerts
    burst_timeout_s: int = 600  # after the burst is sent, time to deliver all its alerts
    start_timeout_s: int = 300


QUICK = Workload(cars=1000, rates=(1000,), seconds=15, warmup_s=5, max_events=20_000, drain_s=30, burst_timeout_s=180)


@dataclass
class Run:
    system: str
    rate: str  # "1,000" events/s, or "max"
    events: int
    seconds: float  # how long the input lasted
    alerts_expected: int
    alerts_got: int
    precision: float
    recall: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    lag_grows: bool = False
    delivered: bool = True  # every expected alert was readable within the drain time
    throughput: float = 0.0  # "max" only: events/s until the last expected alert was readable
    cpu_cores: float = 0.0
    peak_rss_mib: float = 0.0
    note: str = ""

    @property
    def correct(self) -> bool:
        return self.precision == 1.0 and self.recall == 1.0

    @property
    def sustained(self) -> bool:
        """The system kept up: latency did not keep rising, and every alert came, and only those."""
        return self.correct and self.delivered and not self.lag_grows

    @property
    def input_rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


# --- measuring (pure) ------------------------------------------------------------------------------


def lag_grows(samples: list[tuple[int, float]], min_slope: float = 0.05, min_rise_ms: float = 1000.0) -> bool:
    """Whether latency keeps rising through a run: the system consumes slower than the input comes.

    ``samples`` are (event_time ms, latency ms). A least-squares line through them must rise faster
    than ``min_slope`` (ms of latency per ms of input: 0.05 means 5 % slower than the input) and by
    more than ``min_rise_ms`` over the run; micro-batch jitter does neither.

    >>> steady = [(t, 500.0 + (t % 7)) for t in range(0, 60_000, 100)]
    >>> lag_grows(steady)
    False
    >>> behind = [(t, 200.0 + 0.3 * t) for t in range(0, 60_000, 100)]
    >>> lag_grows(behind)
    True
    """
    if len(samples) < 10:
        return False
    times = np.asarray([s[0] for s in samples], dtype=float)
    latency = np.asarray([s[1] for s in samples], dtype=float)
    span = float(times.max() - times.min())
    if span <= 0:
        return False
    slope = float(np.polyfit(times - times.min(), latency, 1)[0])
    return slope > min_slope and slope * span > min_rise_ms


def segment_alerts(
    seen: dict[tuple[str, str], tuple[int, float]], lo_ms: int, hi_ms: int
) -> dict[tuple[str, str], tuple[int, float]]:
    """The alerts of the compared rules whose event_time lies in [lo_ms, hi_ms): one segment's share
    of everything read."""
    return {key: value for key, value in seen.items() if lo_ms <= value[0] < hi_ms and key[1] in COMPARED_RULES}


def max_sustained(runs: list[Run]) -> dict[str, int | None]:
    """Per system, the highest fixed input rate it sustained (None: not even the lowest)."""
    best: dict[str, int | None] = {}
    for run in runs:
        best.setdefault(run.system, None)
        if run.rate != MAX and run.sustained:
            rate = int(run.rate.replace(",", ""))
            best[run.system] = max(rate, best[run.system] or 0)
    return best


# --- running ---------------------------------------------------------------------------------------


def contender_env(settings: Settings) -> dict[str, str]:
    """The environment a contender reads its settings from (as any fleetstream process does).
    fleetstream's own choose their Spark master as `fleetstream stream` does (docs/rules.md)."""
    return process_env(settings, os.environ)


class System:
    """The processes of one system under test, started together, stopped together."""

    def __init__(self, name: str, settings: Settings, logs: Path) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[str]] = []
        self.ready: list[threading.Event] = []
        self._logs: list[IO[str]] = []
        self._watchers: list[threading.Thread] = []
        env = contender_env(settings)
        for process in SYSTEMS[name]:
            log = (logs / f"{name}-{process}.log").open("w", encoding="utf-8")
            self._logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, "-m", "fleetstream.bench.contenders", process],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # its own process group: stopped as a whole, never orphaned
            )
            event = threading.Event()
            watcher = threading.Thread(target=self._watch, args=(proc, event, log), daemon=True)
            watcher.start()
            self._watchers.append(watcher)
            self.procs.append(proc)
            self.ready.append(event)

    @staticmethod
    def _watch(proc: subprocess.Popen[str], ready: threading.Event, log: IO[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == READY:
                ready.set()
            else:
                log.write(line)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(e.is_set() for e in self.ready):
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{self.name}: a process exited with {dead[0].returncode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: not ready within {timeout:.0f} s")
            time.sleep(0.5)

    def failed(self) -> str | None:
        dead = [p for p in self.procs if p.poll() is not None]
        return f"a process exited with {dead[0].returncode}" if dead else None

    def stop(self, grace: float = 60.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group (JVM, workers)
            proc.wait()
        for proc, watcher in zip(self.procs, self._watchers, strict=True):
            watcher.join(10)  # it reads the process's output to the end
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self._logs:
            log.close()


def _segment(
    system: str, rate: int | None, workload: Workload, settings: Settings, clock: AlertClock, meter: TreeMeter,
    failed: Callable[[], str | None],
) -> Run:  # fmt: skip
    from fleetstream.ingest.sinks import KafkaSink
    from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
    from fleetstream.sim.runner import SimOptions, Simulation

    fast = rate is None
    per_car = 1.0 if fast else rate / workload.cars  # type: ignore[operator]
    duration = round(workload.max_events / workload.cars) if fast else workload.warmup_s + workload.seconds
    options = SimOptions(
        cars=workload.cars, rate=per_car, duration=duration, fast=fast, seed=workload.seed,
        faults=FAULT_PRESETS[workload.faults], bad_data=BAD_DATA_PRESETS["none"],
        # a burst runs ahead of the clock: its event times are put just behind now, so that they stay
        # apart from the next segment's (segments are told apart by event time)
        start_ms=int(time.time() * 1000) + (-(duration * 1000) - 5000 if fast else 1000),
    )  # fmt: skip
    simulation = Simulation(options, KafkaSink(settings.kafka, settings.kafka.topics.sensors, paced=not fast))
    meter.mark()
    began = time.time()
    stats = simulation.run()
    sent_s = time.time() - began
    expected = simulation.ground_truth.expected_alerts(COMPARED_RULES)
    lo, hi = simulation.start_ms, simulation.start_ms + int(duration * 1000) + 1000
    drain = workload.burst_timeout_s if fast else workload.drain_s
    delivered = wait_until(lambda: expected <= set(segment_alerts(clock.seen.copy(), lo, hi)) or bool(failed()), drain)
    delivered = delivered and failed() is None
    time.sleep(2)  # alerts still in flight (duplicates, false positives) count too
    cpu_s, peak = meter.since_mark()
    wall = time.time() - began
    mine = segment_alerts(clock.seen.copy(), lo, hi)
    precision, recall = alert_score(set(mine), expected)
    run = Run(
        system=system,
        rate=MAX if fast else f"{rate:,}",
        events=stats.events,
        seconds=sent_s,
        alerts_expected=len(expected),
        alerts_got=len(mine),
        precision=precision,
        recall=recall,
        delivered=delivered,
        cpu_cores=cpu_s / wall if wall else 0.0,
        peak_rss_mib=peak,
        note=failed() or ("" if delivered else f"alerts still missing {drain} s after the input stopped"),
    )
    if fast:
        arrivals = [mine[key][1] for key in expected if key in mine]
        if delivered and arrivals:
            run.throughput = stats.events / (max(arrivals) / 1000 - began)
    else:
        measured_from = simulation.start_ms + workload.warmup_s * 1000
        samples = [(t, lat) for t, lat in list(clock.samples) if measured_from <= t < hi]
        run.latency_ms = percentiles([lat for _, lat in samples])
        run.samples = len(samples)
        run.lag_grows = lag_grows(samples)
    return run


def run_system(
    name: str, workload: Workload, bootstrap: str, workdir: Path, say: Callable[[str], None], logs: Path | None = None
) -> list[Run]:
    """Start one system, put it through every segment, stop it; its processes' output goes to ``logs``
    (default: the work folder)."""
    settings = bench_settings(bootstrap, str(workdir / name / "lake"))
    (workdir / name).mkdir(parents=True, exist_ok=True)
    prepare(settings, workload.cars, workload.seed)
    say(f"{name}: starting")
    logs = logs or workdir / name
    logs.mkdir(parents=True, exist_ok=True)
    system = System(name, settings, logs)
    runs: list[Run] = []
    try:
        system.wait_ready(workload.start_timeout_s)
        clock = AlertClock(settings.kafka, settings.kafka.topics.alerts)
        clock.start()
        clock.ready.wait(30)
        meter = TreeMeter([p.pid for p in system.procs])
        meter.start()
        try:
            # the burst first: it warms the system up, and ends with nothing left behind
            plan: list[int | None] = [*((None,) if workload.max_events else ()), *workload.rates]
            for rate in plan:
                run = _segment(name, rate, workload, settings, clock, meter, system.failed)
                runs.append(run)
                say(f"{name} at {run.rate} events/s: {_summary(run)}")
                if not run.delivered or run.lag_grows:
                    later = [f"{r:,}" for r in plan[plan.index(rate) + 1 :] if r is not None]
                    if later:
                        say(f"{name}: fell behind; the higher rates ({', '.join(later)} events/s) are not run")
                        run.note = "; ".join(filter(None, [run.note, f"not run at {', '.join(later)} events/s"]))
                    break
        finally:
            meter.done.set()
            clock.stop.set()
            clock.join()
    except RuntimeError as exc:
        runs.append(Run(name, "-", 0, 0.0, 0, 0, 0.0, 0.0, delivered=False, note=str(exc)))
        say(f"{name}: {exc}")
    finally:
        system.stop()
        from fleetstream.ingest.kafka import delete_topics

        delete_topics(settings.kafka, settings.kafka.topics.all())  # the workload's data, on the broker
        say(f"{name}: stopped, its topics deleted")
    return runs


def _summary(run: Run) -> str:
    parts = [f"{run.alerts_got:,}/{run.alerts_expected:,} alerts"]
    if run.latency_ms:
        parts.append(f"p50 {run.latency_ms['p50']:,.0f} ms, p99 {run.latency_ms['p99']:,.0f} ms")
    if run.throughput:
        parts.append(f"{run.throughput:,.0f} events/s")
    parts.append(f"{run.cpu_cores:.2f} cores, {run.peak_rss_mib:,.0f} MiB")
    if not run.sustained:
        parts.append("NOT SUSTAINED" if run.rate != MAX else ("wrong" if not run.correct else ""))
    return ", ".join(p for p in parts if p)


def run(
    settings: Settings,
    workload: Workload,
    systems: tuple[str, ...] = tuple(SYSTEMS),
    say: Callable[[str], None] = print,
    logs: Path | None = None,
) -> list[Run]:
    """Every system through the workload, one after the other, against the configured Kafka.

    The lakes and checkpoints are temporary; the processes' logs are kept under ``logs`` if given.
    """
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-compare-") as tmp:
        for name in systems:
            results += run_system(name, workload, settings.kafka.bootstrap, Path(tmp), say, logs)
    return results


# --- reporting -------------------------------------------------------------------------------------


def ratio(value: float) -> str:
    """Three decimals, truncated: anything short of exactly 1 never shows as 1.000.

    >>> ratio(1.0), ratio(2772 / 2773), ratio(0.0)
    ('1.000', '0.999', '0.000')
    """
    return "1.000" if value == 1.0 else f"{math.floor(value * 1000) / 1000:.3f}"


def verdict(run: Run) -> str:
    if run.rate == "-":
        return "did not run"
    if not run.correct and run.delivered:
        return "**wrong alerts**"
    if not run.delivered:
        return "fell behind" if run.rate != MAX else "did not finish"
    if run.lag_grows:
        return "fell behind"
    return "kept up" if run.rate != MAX else "done"


def report(runs: list[Run], workload: Workload, machine: str, plot_path: str | None = None) -> str:
    """The docs/benchmarks.md section: the table, the best sustained rates, the plot."""
    lines = [
        MARK_BEGIN,
        "## Side by side (`fleetstream bench compare`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}; the broker, the simulator and the system under "
        f"test share the machine, one system at a time. Workload: {workload.cars:,} cars, fault preset "
        f"`{workload.faults}`, seed {workload.seed}; fixed rates {', '.join(f'{r:,}' for r in workload.rates)} "
        f"events/s for {workload.warmup_s} s warm-up + {workload.seconds} s measured each, after a burst of "
        f'{workload.max_events:,} events sent as fast as the simulator can ("max"). Latency is event_time at '
        "the producer to the alert readable on the system's alert topic. CPU is cores busy on average, memory "
        "the peak resident set, over every process of the system.",
        "",
        "| system | input | events/s in | p50 ms | p95 ms | p99 ms | burst events/s | alerts (got / expected) "
        "| precision | recall | CPU cores | peak RSS | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        lat = [f"{r.latency_ms[k]:,.0f}" if r.latency_ms and r.samples else "-" for k in ("p50", "p95", "p99")]
        burst = f"{r.throughput:,.0f}" if r.throughput else "-"
        note = f" ({r.note})" if r.note else ""
        lines.append(
            f"| {r.system} | {r.rate} | {r.input_rate:,.0f} | {' | '.join(lat)} | {burst} "
            f"| {r.alerts_got:,} / {r.alerts_expected:,} | {ratio(r.precision)} | {ratio(r.recall)} "
            f"| {r.cpu_cores:.2f} | {r.peak_rss_mib:,.0f} MiB | {verdict(r)}{note} |"
        )
    lines += ["", "Highest fixed input rate sustained (latency flat, every alert delivered, none wrong):", ""]
    for system, best in max_sustained(runs).items():
        lines.append(f"- {system}: " + (f"**{best:,} events/s**" if best else "none of the rates tried"))
    if plot_path:
        lines += ["", f"![p50 and p99 event-to-alert latency against input rate]({plot_path})"]
    lines.append(MARK_END)
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    """Latency (p50 solid, p99 dashed, log scale) against input rate, one colour per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for i, system in enumerate(dict.fromkeys(r.system for r in runs)):
        points = sorted(
            (r.input_rate, r.latency_ms["p50"], r.latency_ms["p99"])
            for r in runs
            if r.system == system and r.rate not in (MAX, "-") and r.samples
        )
        if not points:
            continue
        x, p50, p99 = zip(*points, strict=True)
        color = f"C{i}"
        ax.plot(x, p50, marker="o", color=color, label=f"{system} p50")
        ax.plot(x, p99, marker="x", linestyle="--", color=color, label=f"{system} p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input rate (events/s)")
    ax.set_ylabel("event-to-alert latency (ms)")
    ax.set_title("Event-to-alert latency against input rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
