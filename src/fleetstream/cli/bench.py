"""Benchmarks: bench sim, dashboard, pipeline, ml, lake and compare; results go to docs/."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetstream.cli.common import _fail, _settings, _settings_with_kafka, console, failing, out
from fleetstream.errors import FleetstreamError
from fleetstream.ingest.kafka import require_kafka
from fleetstream.pipeline import LAKE_MAX_RECORDS

bench_app = typer.Typer(help="Benchmarks; results go to docs/benchmarks.md.", no_args_is_help=True)


def _write_section(section: str, write: Path | None) -> None:
    """Print a benchmark's report section and put it in its Markdown file."""
    from fleetstream.bench.sim import write_report

    out.print(section)
    if write is not None:
        write_report(section, write)
        console.print(f"updated {write}")


@bench_app.command("sim")
def bench_sim(
    cars: Annotated[int, typer.Option(min=1, help="Fleet size.")] = 10_000,
    ticks: Annotated[int, typer.Option(min=1, help="Ticks (one report per car each) per run.")] = 60,
    repeat: Annotated[int, typer.Option(min=1, help="Runs per measure; the median is reported.")] = 5,
    write: Annotated[Path | None, typer.Option(help="Markdown file whose simulator section is replaced.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """Simulator throughput: generator alone on one core, and delivered into the local broker."""
    from fleetstream.bench import sim as bench

    with failing():
        settings = _settings()
        with console.status("benchmarking the simulator..."):
            measures = bench.run(settings, cars, ticks, repeat)
    _write_section(bench.report(measures, cars, ticks, repeat), write)


@bench_app.command("dashboard")
def bench_dashboard(
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where the benchmark lake is written, kept for the next run [<cache_dir>/bench-dashboard]."),
    ] = None,
    repeat: Annotated[int, typer.Option(min=3, help="Refreshes timed per panel; the median is reported.")] = 20,
    write: Annotated[Path | None, typer.Option(help="Markdown file whose dashboard section is replaced.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """Dashboard panel refresh against a 1M-row gold and a 10M-row silver table, and first paint in Chromium.

    Writes the tables once with delta-rs under --workdir (about 1 GB); needs the stack for the
    page's Kafka feeds: `fleetstream up --detach`.
    """
    from fleetstream.bench import dashboard as bench
    from fleetstream.bench.sim import machine

    with failing():
        settings = _settings_with_kafka()
        with console.status("benchmarking the dashboard...") as status:
            where = workdir or settings.cache_dir / "bench-dashboard"
            timings, paint = bench.run(settings, where, repeat, lambda what: status.update(f"writing {what}"))
    _write_section(bench.report(timings, paint, machine()), write)


@bench_app.command("pipeline")
def bench_pipeline(
    measures: Annotated[
        str,
        typer.Option(
            help="Comma-separated measures: quiet, publisher, ceiling, small, steady, burst, episodes, upsert (one "
            "write of the stateful queries' rows: a MERGE against an append to silver/pending_upserts, emptying "
            "it, and a plain append), cluster (the ceiling's backlog in local mode and on a local Spark "
            "standalone cluster it starts)."
        ),
    ] = "quiet,publisher,ceiling,small,steady,burst,episodes,upsert",
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each measure; the median is reported.")] = 3,
    quiet_seconds: Annotated[int, typer.Option(min=10, help="Quiet fleet: seconds of CPU measured.")] = 300,
    quiet_settle_seconds: Annotated[
        int,
        typer.Option(
            min=0,
            help="Quiet fleet: seconds from the command to the measure. The gold windows and feature windows "
            "close 10 minutes of event time after they end (the lateness validation accepts), the feature "
            "windows 5 at a time (the first about 15 minutes in): 720 with --quiet-seconds 600 or more measures "
            "them too.",
        ),
    ] = 60,
    quiet_profile: Annotated[
        bool,
        typer.Option(
            help="Quiet fleet: also sample the lake's JVM over the measure with async-profiler (fetched on first "
            "use; Linux on x86-64) and report its CPU by thread and by activity (query planning, the Delta log, "
            "compilers, the collector...); the stacks are kept in the temporary folder."
        ),
    ] = False,
    quiet_variants: Annotated[
        str,
        typer.Option(
            help="Quiet fleet: comma-separated variants, run alternately: default (as `make run` starts it), "
            "no-stateful (without the stateful queries), no-ml (without the ML tables: `stream --no-ml`), "
            "rollup-5 (gold's windows closed every 5 minutes), features-1 and features-5 (the driving features "
            "closed and scored every minute, every 5 minutes: the default); several joined by + (no-ml+rollup-5)."
        ),
    ] = "default,no-stateful",
    steady_modes: Annotated[
        str, typer.Option(help="Steady: comma-separated alerts modes, run alternately: realtime, microbatch.")
    ] = "realtime,microbatch",
    steady_variants: Annotated[
        str,
        typer.Option(help="Steady: comma-separated variants (as --quiet-variants), each run in every mode."),
    ] = "default",
    ceiling_cars: Annotated[int, typer.Option(min=1, help="Ceiling: fleet size of the backlog.")] = 1000,
    ceiling_seconds: Annotated[
        int, typer.Option(min=10, help="Ceiling: simulated seconds of backlog (cars x seconds events).")
    ] = 600,
    max_offsets: Annotated[
        int, typer.Option(min=1000, help="Ceiling: Kafka records per batch at most.")
    ] = LAKE_MAX_RECORDS,
    steady_rate: Annotated[int, typer.Option(min=100, help="Steady: events/s (cars at 1 Hz).")] = 10_000,
    steady_seconds: Annotated[int, typer.Option(min=10, help="Steady: measured seconds after the warm-up.")] = 300,
    warmup_seconds: Annotated[int, typer.Option(min=0, help="Steady: seconds at the rate before the measure.")] = 60,
    burst_events: Annotated[int, typer.Option(min=1000, help="Burst: events sent at once.")] = 200_000,
    burst_seconds: Annotated[int, typer.Option(min=10, help="Burst: seconds at 1,000 events/s after it.")] = 180,
    write: Annotated[
        Path | None,
        typer.Option(help="Markdown file whose pipeline section gets the measures run (the others' tables kept)."),
    ] = Path("docs/benchmarks.md"),
) -> None:
    """What the pipeline costs and how fast it is, against its targets: a quiet fleet through `fleetstream
    run` (time to the dashboard's data, the whole stack's CPU, event-to-silver latency); the alert
    publisher alone in real-time and micro-batch mode; the drain rate against a minimal one-query Spark
    medallion on the same backlog; --available-now on a small topic; a steady 10,000 events/s; a burst.
    Needs the stack for everything but the quiet fleet (which starts its own), episodes and upsert (Spark
    alone): `fleetstream up --detach`.
    The whole run takes about two hours on two cores; --measures and --repeat make it shorter.
    Ctrl-C (or SIGTERM) stops what the measure under way started and writes nothing."""
    from fleetstream.bench import pipeline as bench
    from fleetstream.bench.sim import machine

    chosen = tuple(m.strip() for m in measures.split(",") if m.strip())
    unknown = [m for m in chosen if m not in bench.MEASURES]
    if unknown:
        raise _fail(FleetstreamError(f"unknown measures {unknown}; choose from {', '.join(bench.MEASURES)}"))
    picked = {}
    for name, given, modes in (("--quiet-variants", quiet_variants, False),
                               ("--steady-variants", steady_variants, False),
                               ("--steady-modes", steady_modes, True)):  # fmt: skip
        picked[name] = tuple(dict.fromkeys(v.strip() for v in given.split(",") if v.strip()))
        parts = picked[name] if modes else [part for v in picked[name] for part in v.split("+")]
        allowed = bench.MODES if modes else tuple(bench.VARIANTS)
        odd = [part for part in parts if part not in allowed]
        if odd or not picked[name]:
            joined = "" if modes else " (several joined by +)"
            raise _fail(FleetstreamError(f"{name} {given!r}: choose from {', '.join(allowed)}{joined}"))
    options = bench.Options(
        repeat=repeat, quiet_seconds=quiet_seconds, quiet_settle_seconds=quiet_settle_seconds,
        quiet_profile=quiet_profile, quiet_variants=picked["--quiet-variants"], steady_modes=picked["--steady-modes"],
        steady_variants=picked["--steady-variants"],
        ceiling_cars=ceiling_cars, ceiling_seconds=ceiling_seconds,
        max_records=max_offsets, steady_rate=steady_rate, steady_seconds=steady_seconds,
        warmup_seconds=warmup_seconds, burst_events=burst_events, burst_seconds=burst_seconds,
    )  # fmt: skip
    try:
        with failing(RuntimeError):
            settings = _settings()
            if set(chosen) - {"quiet", "episodes", "upsert"}:  # (the ones that start no stream of the stack)
                require_kafka(settings.kafka)
            # SIGTERM and SIGHUP as Ctrl-C (and Ctrl-C itself, if started with SIGINT ignored): each
            # measure's worker is passed the interrupt and stops what it started
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.default_int_handler)
            results = bench.run(settings, chosen, options, say=lambda line: console.print(line, highlight=False))
    except KeyboardInterrupt:
        console.print("interrupted: what the measures started is stopped; nothing was written")
        raise typer.Exit(130) from None
    block = bench.report(results, machine(), options)
    if write is not None and write.exists():  # the measures not run this time keep their tables
        block = bench.merge_report(block, write.read_text(encoding="utf-8"))
    _write_section(block, write)
    wrong = [f"{r.measure}, {r.label}" for r in results if not r.correct]
    if wrong:
        console.print(f"[bold red]outputs differ from the ground truth:[/] {wrong}")
        raise typer.Exit(1)


@bench_app.command("ml")
def bench_ml(
    cars: Annotated[int, typer.Option(min=10, help="Simulated cars.")] = 300,
    seconds: Annotated[
        int,
        typer.Option(
            min=1200,
            help="Simulated seconds of driving. A feature window closes once the newest event is 10 minutes "
            "past its end (the lateness validation accepts), so the last 10 minutes train nothing.",
        ),
    ] = 1800,
    million: Annotated[
        bool, typer.Option("--million", help="Also time the forest on one million feature rows (minutes).")
    ] = False,
    write: Annotated[Path | None, typer.Option(help="Markdown file whose figures section is replaced.")] = Path(
        "docs/ml.md"
    ),
) -> None:
    """The driving-style model end to end: a simulated fleet streamed into the lake, the forest trained
    on its feature windows, scored on held-out cars beside the baselines, logged and registered in
    MLflow (the configured server, or a private one). Needs Kafka (`fleetstream up --detach`); about
    5 minutes for the defaults on two cores."""
    from fleetstream.bench import ml as bench
    from fleetstream.bench.sim import machine

    with failing(RuntimeError):
        settings = _settings_with_kafka()
        figures = bench.run(settings, cars, seconds, million, say=lambda line: console.print(line, highlight=False))
    _write_section(bench.report(figures, machine()), write)


@bench_app.command("lake")
def bench_lake(
    cars: Annotated[int, typer.Option(min=10, help="Simulated cars, each reporting at 1 Hz (events/s).")] = 1000,
    seconds: Annotated[int, typer.Option(min=60, help="Seconds of live driving streamed before maintenance.")] = 3600,
    repeat: Annotated[int, typer.Option(min=3, help="Refreshes timed per panel; the median is reported.")] = 20,
    workdir: Annotated[
        Path | None, typer.Option(help="Where the lake is written and kept (default: a temporary folder, removed).")
    ] = None,
    write: Annotated[Path | None, typer.Option(help="Markdown file whose lake section is replaced.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """What `fleetstream lake maintain` does to a lake the stream wrote: a fleet streamed live
    (every query, the default triggers) for --seconds; then files per table and the dashboard's panel
    refreshes before and after maintenance. Needs Kafka (`fleetstream up --detach`); the defaults take
    about 70 minutes on two cores, with nothing else running."""
    from fleetstream.bench import lake as bench
    from fleetstream.bench.sim import machine

    with failing(RuntimeError):
        settings = _settings_with_kafka()
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        figures = bench.run(settings, cars, seconds, repeat, lambda line: console.print(line, highlight=False), workdir)
    _write_section(bench.report(figures, machine()), write)


@bench_app.command("compare")
def bench_compare(
    quick: Annotated[
        bool, typer.Option("--quick", help="A small version (1,000 cars, one rate, a 20k burst): about 5 minutes.")
    ] = False,
    systems: Annotated[
        str,
        typer.Option(help="Comma-separated systems: fleetstream-microbatch,fleetstream-realtime,seed-style,quix."),
    ] = "fleetstream-microbatch,fleetstream-realtime,seed-style,quix",
    rates: Annotated[
        str | None, typer.Option(help="Comma-separated fixed input rates (events/s) [1000,5000,20000; quick: 1000].")
    ] = None,
    cars: Annotated[int | None, typer.Option(min=1, help="Fleet size [5,000; quick: 1,000].")] = None,
    seconds: Annotated[int | None, typer.Option(min=5, help="Measured seconds per fixed rate [45; quick: 15].")] = None,
    burst: Annotated[
        int | None,
        typer.Option(min=0, help="Events of the as-fast-as-possible burst; 0 skips it [200,000; quick: 20,000]."),
    ] = None,
    write: Annotated[Path | None, typer.Option(help="Markdown file whose compare section is replaced.")] = Path(
        "docs/benchmarks.md"
    ),
    plot_file: Annotated[Path, typer.Option("--plot", help="Where the latency plot (PNG) goes.")] = Path(
        "docs/images/bench-compare.png"
    ),
) -> None:
    """fleetstream (micro-batch and real-time), the seed-style pipeline (three Spark applications chained
    through Kafka, a Python UDF) and a Quix Streams application on the same workload, one after the other:
    event-to-alert latency at fixed input rates, burst throughput, CPU, peak memory and alert correctness
    against the simulator's ground truth. Needs the stack: `fleetstream up --detach`. The full run took
    20 minutes on two cores (a system is not run at rates above the first it cannot hold); --quick, part
    of `make test`, about 5. Ctrl-C (or SIGTERM) stops the systems under test and writes nothing.
    """
    from dataclasses import replace

    from fleetstream.bench import compare as bench
    from fleetstream.bench.contenders import SYSTEMS
    from fleetstream.bench.sim import machine

    chosen = tuple(s.strip() for s in systems.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SYSTEMS]
    if unknown:
        raise _fail(FleetstreamError(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}"))
    workload = bench.QUICK if quick else bench.Workload()
    changes: dict[str, Any] = {}
    if rates:
        try:
            changes["rates"] = tuple(sorted(int(r) for r in rates.split(",") if r.strip()))
        except ValueError:
            raise _fail(FleetstreamError(f"--rates takes whole numbers separated by commas, not {rates!r}")) from None
    for key, value in (("cars", cars), ("seconds", seconds), ("max_events", burst)):
        if value is not None:
            changes[key] = value
    workload = replace(workload, **changes)
    try:
        # inside the try: around it, failing would take the typer.Exit(130) below (a RuntimeError) for a failure
        with failing(RuntimeError):
            settings = _settings_with_kafka()
            logs = settings.state_dir / "bench-compare"
            console.print(f"logs of the systems under test: {logs}", highlight=False)
            # SIGTERM as Ctrl-C: the systems under test run in process groups of their own, and only an
            # interrupt (not a bare exit) stops them on the way out
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            results = bench.run(
                settings, workload, chosen, say=lambda line: console.print(line, highlight=False), logs=logs
            )
    except KeyboardInterrupt:
        console.print("interrupted: the systems under test are stopped; nothing was written")
        raise typer.Exit(130) from None
    bench.plot(results, plot_file)
    console.print(f"wrote {plot_file}")
    relative = plot_file
    if write is not None:
        try:
            relative = plot_file.resolve().relative_to(write.resolve().parent)
        except ValueError:
            relative = plot_file.resolve()
    _write_section(bench.report(results, workload, machine(), str(relative)), write)
