"""The fleet simulator: simulate, and its live display."""

from __future__ import annotations

import enum
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table

from fleetstream.cli.common import _preset, _settings, console, failing, log
from fleetstream.ingest.kafka import require_kafka
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.faults import FAULT_TYPES as FAULT_NAMES

if TYPE_CHECKING:  # (the simulator's modules load NumPy and Polars: not for every command's start)
    from fleetstream.sim.runner import SimStats


class SinkName(enum.StrEnum):
    kafka = "kafka"
    jsonl = "jsonl"
    null = "null"


def simulate(
    cars: Annotated[int, typer.Option(min=1, envvar="FLEETSTREAM_SIM_CARS", help="Number of cars.")] = 50,
    rate: Annotated[
        float, typer.Option(min=0.01, envvar="FLEETSTREAM_SIM_RATE", help="Reports per car per second.")
    ] = 1.0,
    duration: Annotated[
        float | None,
        typer.Option(min=0, envvar="FLEETSTREAM_SIM_DURATION", help="Simulated seconds; default: until Ctrl-C."),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast", envvar="FLEETSTREAM_SIM_FAST", help="As fast as possible, event_time in simulated time."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(envvar="FLEETSTREAM_SIM_SEED", help="Fleet, driving and faults.")] = 42,
    faults: Annotated[
        str, typer.Option(envvar="FLEETSTREAM_SIM_FAULTS", help="Fault preset: none, light, default, heavy.")
    ] = "default",
    bad_data: Annotated[
        str, typer.Option(envvar="FLEETSTREAM_SIM_BAD_DATA", help="Bad-data preset: none, light, default, heavy.")
    ] = "none",
    sink: Annotated[SinkName, typer.Option(envvar="FLEETSTREAM_SIM_SINK", help="Where events go.")] = SinkName.kafka,
    output: Annotated[
        Path | None, typer.Option(envvar="FLEETSTREAM_SIM_OUTPUT", help="The jsonl file (with --sink jsonl).")
    ] = None,
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            envvar="FLEETSTREAM_SIM_GROUND_TRUTH",
            help="Ground-truth file; default: beside --output, or under the state directory.",
        ),
    ] = None,
    start_ms: Annotated[
        int | None,
        typer.Option(
            envvar="FLEETSTREAM_SIM_START_MS", help="First event_time (ms); default: now, or 2026-01-01 with --fast."
        ),
    ] = None,
    listen: Annotated[
        bool,
        typer.Option(
            "--commands/--no-commands",
            envvar="FLEETSTREAM_SIM_COMMANDS",
            help="Obey driver commands from the driver-commands topic (kafka sink).",
        ),
    ] = True,
) -> None:
    """Simulate a fleet and publish its telemetry (key = car_id) to sensors-sample, a file, or nowhere.

    Injected faults and bad records are written to a ground-truth file so detection can be scored.
    Ctrl-C stops cleanly: everything produced is flushed and the ground truth is saved.
    """
    from fleetstream.ingest.commands import CommandListener
    from fleetstream.ingest.sinks import JsonlSink, KafkaSink, NullSink, Sink
    from fleetstream.sim.runner import SimOptions, Simulation

    with failing():
        settings = _settings()
        options = SimOptions(
            cars=cars,
            rate=rate,
            duration=duration,
            fast=fast,
            seed=seed,
            faults=FAULT_PRESETS[_preset(faults, FAULT_PRESETS, "fault")],
            bad_data=BAD_DATA_PRESETS[_preset(bad_data, BAD_DATA_PRESETS, "bad-data")],
            start_ms=start_ms,
        )
        target: Sink
        if sink is SinkName.jsonl:
            if output is None:
                raise typer.BadParameter("--sink jsonl needs --output PATH")
            target = JsonlSink(output)
        elif sink is SinkName.null:
            target = NullSink()
        else:
            require_kafka(settings.kafka)
            target = KafkaSink(settings.kafka, settings.kafka.topics.sensors, paced=not fast)
    listener = None
    if listen and sink is SinkName.kafka:
        listener = CommandListener(settings.kafka, settings.kafka.topics.commands).start()
    simulation = Simulation(options, target, listener)
    truth_path = ground_truth or (
        output.with_suffix(".truth.jsonl")
        if output is not None
        else settings.state_dir / "sim" / f"ground-truth-{simulation.encoder.run_id}.jsonl"
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info(
        "simulating %d cars at %s Hz%s, run %s, sink %s", cars, rate, " (fast)" if fast else "",
        simulation.encoder.run_id, sink.value,
    )  # fmt: skip
    try:
        with _SimDisplay(target) as display:
            stats = simulation.run(stop, display.update)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if listener is not None:
            listener.stop()
        simulation.ground_truth.save(truth_path)
    injected = {k: v for k, v in stats.injected.items() if v}
    console.print(
        f"{stats.events:,} events from {cars} cars over {stats.sim_seconds:,.0f} simulated s in "
        f"{stats.wall_seconds:,.1f} s ({stats.events_per_second:,.0f} events/s); delivered "
        f"{target.stats.delivered:,}, failed {target.stats.failed:,}; injected {injected or 'nothing'}; "
        f"ground truth: {truth_path}",
        soft_wrap=True,
    )
    if target.stats.failed:
        raise typer.Exit(1)


class _SimDisplay:
    """Live numbers while simulating: a rich table on a terminal, a log line every 10 s otherwise."""

    def __init__(self, sink: object) -> None:
        self.sink = sink
        self.live: Live | None = None
        self.last_log = 0.0

    def __enter__(self) -> _SimDisplay:
        if console.is_terminal:
            self.live = Live(console=console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, stats: SimStats) -> None:
        sink_stats = self.sink.stats  # type: ignore[attr-defined]
        if self.live is None:
            if time.monotonic() - self.last_log >= 10:
                self.last_log = time.monotonic()
                log.info(
                    "%s events, %.0f events/s, %d cars driving, sim time %.0f s, delivered %s, failed %s",
                    f"{stats.events:,}", stats.events_per_second, stats.driving, stats.sim_seconds,
                    f"{sink_stats.delivered:,}", sink_stats.failed,
                )  # fmt: skip
            return
        table = Table(title="fleetstream simulate", title_justify="left", show_header=False)
        table.add_row("simulated time", f"{stats.sim_seconds:,.0f} s")
        table.add_row("events", f"{stats.events:,}  ({stats.events_per_second:,.0f}/s)")
        table.add_row("delivered / failed", f"{sink_stats.delivered:,} / {sink_stats.failed:,}")
        table.add_row("cars driving", f"{stats.driving}")
        table.add_row(
            "faults injected", ", ".join(f"{k} {v}" for k, v in stats.injected.items() if v and k in FAULT_NAMES) or "-"
        )
        table.add_row(
            "bad records", ", ".join(f"{k} {v}" for k, v in stats.injected.items() if v and k not in FAULT_NAMES) or "-"
        )
        table.add_row("driver commands", f"{stats.commands}")
        self.live.update(table)
