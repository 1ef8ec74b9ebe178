"""The `fleetstream` command: a thin Typer app over the package. Every option has an env variable."""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table

from fleetstream import jvm
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.ingest.kafka import require_kafka
from fleetstream.local import stack
from fleetstream.local.process import Service
from fleetstream.local.process import stop as stop_service
from fleetstream.pipeline import (
    ALERTS_MODE,
    ALERTS_TRIGGER_S,
    EPISODES_TRIGGER_S,
    LAKE_GOLD_S,
    LAKE_MAX_DELAY_S,
    LAKE_MAX_RECORDS,
    LAKE_MIN_RECORDS,
    LAKE_NICE,
    LAKE_TRIGGER_S,
    OFFLINE_AFTER_S,
    REALTIME_BATCH_S,
)
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS
from fleetstream.sim.faults import FAULT_TYPES as FAULT_NAMES
from fleetstream.sim.runner import SimStats

app = typer.Typer(
    name="fleetstream",
    help="Real-time vehicle telemetry: Kafka, Spark Structured Streaming, Delta Lake.\n\n"
    "Settings come from FLEETSTREAM_* environment variables or a .env file; nested keys use a double "
    "underscore, for example FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
jars_app = typer.Typer(help="The pinned JVM jars (Kafka broker, Spark connectors, Delta, S3A).", no_args_is_help=True)
app.add_typer(jars_app, name="jars")
reference_app = typer.Typer(
    help="Reference data: car models, colors, the fleet's cars and speed zones.", no_args_is_help=True
)
app.add_typer(reference_app, name="reference")
ml_app = typer.Typer(
    help="Driving-style model: train on gold/driving_features, track and register in MLflow (docs/ml.md).",
    no_args_is_help=True,
)
app.add_typer(ml_app, name="ml")
lake_app = typer.Typer(help="The lake's tables: maintenance (docs/operations.md).", no_args_is_help=True)
app.add_typer(lake_app, name="lake")

log = logging.getLogger("fleetstream")
console = Console(stderr=True)
RulesFile = Annotated[
    Path | None,
    typer.Option(envvar="FLEETSTREAM_RULES", help="Rules YAML; default: the built-in rules (docs/rules.md)."),
]
out = Console()


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise FleetstreamError(f"Invalid FLEETSTREAM_* setting: {problems}.") from None


def _fail(exc: FleetstreamError) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", envvar="FLEETSTREAM_VERBOSE", help="Debug logs.")] = False,
) -> None:
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # a log file or CI: one plain line per record, no wrapping
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    # httpx logs every request's URL at INFO, and a Telegram URL holds the bot's token
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "py4j", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_SECURE_OPTION = typer.Option(
    "--secure",
    envvar="FLEETSTREAM_KAFKA__SECURE",
    help="Run the local broker secured: SASL_SSL only (SCRAM-SHA-512, one user per service, passwords "
    "generated under <state>/kafka/users), TLS with a generated CA (<state>/kafka/tls/ca.pem) and ACLs. "
    "Other commands connect to it when FLEETSTREAM_KAFKA__SECURE=true.",
)


_BROKERS_OPTION = typer.Option(
    "--brokers",
    min=1,
    max=5,
    envvar="FLEETSTREAM_KAFKA__BROKERS",
    help="Nodes of the local Kafka cluster (KRaft; each a broker and a controller). With 3, topics get 3 "
    "replicas and min.insync.replicas 2, so one node may fail. Other commands reach it when "
    "FLEETSTREAM_KAFKA__BROKERS is set alike.",
)


def _secure_env(secure: bool, brokers: int | None = None, spark_workers: int | None = None) -> None:
    """--secure, --brokers and --spark-workers reach the settings, and every process started from
    here, as settings."""
    if secure:
        os.environ["FLEETSTREAM_KAFKA__SECURE"] = "true"
    if brokers is not None:
        os.environ["FLEETSTREAM_KAFKA__BROKERS"] = str(brokers)
    if spark_workers is not None:
        os.environ["FLEETSTREAM_SPARK__WORKERS"] = str(spark_workers)


@app.command()
def up(
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", envvar="FLEETSTREAM_DETACH", help="Return once healthy; leave it running."),
    ] = False,
    s3: Annotated[
        bool, typer.Option("--s3", envvar="FLEETSTREAM_WITH_S3", help="Also run the SeaweedFS S3 server.")
    ] = False,
    with_mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow",
            envvar="FLEETSTREAM_WITH_MLFLOW",
            help="Also run the MLflow tracking server (SQLite and artifacts under the state directory).",
        ),
    ] = False,
    with_sql: Annotated[
        bool,
        typer.Option(
            "--sql",
            envvar="FLEETSTREAM_WITH_SQL",
            help="Also run the SQL endpoint (`fleetstream sql serve`: Spark's Thrift server on the lake's tables).",
        ),
    ] = False,
    with_airflow: Annotated[
        bool,
        typer.Option(
            "--airflow",
            envvar="FLEETSTREAM_WITH_AIRFLOW",
            help="Also run Airflow (API server and UI, scheduler, dag-processor) with fleetstream's DAGs.",
        ),
    ] = False,
    secure: Annotated[bool, _SECURE_OPTION] = False,
    brokers: Annotated[int | None, _BROKERS_OPTION] = None,
    spark_workers: Annotated[
        int | None,
        typer.Option(
            "--spark-workers",
            min=0,
            max=8,
            envvar="FLEETSTREAM_SPARK__WORKERS",
            help="Also run a Spark standalone cluster: a master on 127.0.0.1:7077 and N workers, from the "
            "pyspark installation. Commands run with FLEETSTREAM_SPARK__WORKERS=N submit their applications to it.",
        ),
    ] = None,
) -> None:
    """Start the local stack (Kafka broker, topics, optionally SeaweedFS, MLflow, Airflow, a Spark
    standalone cluster and the SQL endpoint) and wait until it is healthy. Parts that stopped are
    started again; running ones are left as they are.

    In the foreground (the default) Ctrl-C stops everything it started; with --detach it keeps running
    until `fleetstream down`. Parts that settings point at an existing cluster are only checked.
    """
    _secure_env(secure, brokers, spark_workers)
    settings, services = _start_stack(s3, with_mlflow, with_airflow)
    if with_airflow:
        _print_airflow_login(settings)
    if with_sql:
        try:
            with console.status("starting the SQL endpoint..."):
                services.append(stack.start_sql(settings, [sys.executable, "-m", "fleetstream", "sql", "serve"]))
        except FleetstreamError as exc:
            stack.down(settings)
            raise _fail(exc) from None
    if detach:
        _print_status(stack.status(settings))
        console.print("stack running in the background; stop it with [bold]fleetstream down[/]")
        return
    if not services:
        _print_status(stack.status(settings))
        console.print("nothing to supervise: every part is external")
        return
    _supervise_foreground(settings, services, lambda: None)


def _start_stack(
    with_s3: bool, with_mlflow: bool = False, with_airflow: bool = False
) -> tuple[Settings, list[Service]]:
    """`stack.up` for a command: clear errors, and Ctrl-C during start-up stops what had started."""
    try:
        settings = _settings()
        with console.status("starting the local stack..."):
            return settings, stack.up(settings, with_s3=with_s3, with_mlflow=with_mlflow, with_airflow=with_airflow)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        console.print("interrupted during start-up; what had started was stopped")
        raise typer.Exit(130) from None


def _print_airflow_login(settings: Settings) -> None:
    """Where Airflow is and how to log in: a password generated by this command is shown this once;
    after that only the file that holds it is named."""
    from fleetstream.local import airflow_server

    console.print(f"Airflow: [bold]{settings.airflow.base_url}[/] (user {settings.airflow.user})")
    if not settings.airflow.managed or settings.airflow.password is not None:
        return
    if airflow_server.generated_now(settings):
        password, _ = airflow_server.admin_password(settings)
        console.print(f"  its password, generated now and shown this once: {password}", highlight=False)
    console.print(f"  the password is in {airflow_server.password_file(settings)}", highlight=False)


def _supervise_foreground(
    settings: Settings, services: list[Service], start_more: Callable[[], list[Service] | None]
) -> None:
    """Start the extra jobs, show the status, and stay until Ctrl-C or until a process dies.

    Whatever goes wrong here (a Ctrl-C before supervision began, a failed job start), the processes
    this command started must not outlive it.
    """
    try:
        services = services + (start_more() or [])
        _print_status(stack.status(settings))
        console.print("running; press [bold]Ctrl-C[/] to stop everything")
        code = stack.supervise(services, settings, lambda why: console.print(f"stopping: {why}"))
    except BaseException:
        stack.down(settings)
        raise
    console.print("stopped")
    raise typer.Exit(code)


@app.command()
def down() -> None:
    """Stop every process the local stack started (and nothing else)."""
    try:
        stopped = stack.down(_settings())
    except FleetstreamError as exc:
        raise _fail(exc) from None
    if stopped:
        console.print("stopped " + ", ".join(f"{s.name} (pid {s.pid})" for s in stopped))
    else:
        console.print("nothing was running")


@app.command()
def status(
    as_json: Annotated[
        bool, typer.Option("--json", envvar="FLEETSTREAM_JSON", help="Machine-readable output.")
    ] = False,
) -> None:
    """Show each part of the stack (pid, address, health) and the topics with partitions and offsets.

    Exits 0 when every part is healthy, 1 otherwise.
    """
    try:
        result = stack.status(_settings())
    except FleetstreamError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps({"healthy": result.healthy, **asdict(result)}))
    else:
        _print_status(result)
    raise typer.Exit(0 if result.healthy else 1)


def _print_status(result: stack.StackStatus) -> None:
    parts = Table(title="fleetstream stack", title_justify="left")
    for column in ("part", "mode", "pid", "address", "health"):
        parts.add_column(column)
    for part in result.parts:
        health = "[green]healthy[/]" if part.healthy else f"[red]{part.detail}[/]"
        mode = "local" if part.managed else "external"
        parts.add_row(part.name, mode, str(part.pid or "-"), part.address, health)
    out.print(parts)
    if result.topics:
        topics = Table(title="topics", title_justify="left")
        for column in ("topic", "partitions", "end offsets", "messages"):
            topics.add_column(column)
        for topic in result.topics:
            offsets = ",".join(map(str, topic.end_offsets))
            topics.add_row(topic.name, str(topic.partitions), offsets, str(topic.messages))
        out.print(topics)


@jars_app.command("fetch")
def jars_fetch() -> None:
    """Resolve every locked jar into the cache (~/.cache/fleetstream/jars) and verify its sha256."""
    settings = _settings()
    try:
        for jar_set in jvm.JAR_SETS:
            with console.status(f"fetching the {jar_set} jars..."):
                paths = jvm.ensure_jars(settings.cache_dir, jar_set)
            size = sum(p.stat().st_size for p in paths) / 2**20
            console.print(f"{jar_set}: {len(paths)} jars, {size:.0f} MiB, verified, in {paths[0].parent}")
    except FleetstreamError as exc:
        raise _fail(exc) from None


@jars_app.command("lock")
def jars_lock() -> None:
    """Re-resolve jvm/*/pom.xml with Maven and rewrite jvm/jars.lock (after changing a pom)."""
    try:
        entries = jvm.write_lock(_settings().cache_dir)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    console.print(f"wrote {len(entries)} jars to {jvm.jvm_dir() / 'jars.lock'}")


@jars_app.command("path")
def jars_path(
    jar_set: Annotated[str, typer.Argument(help="broker or spark")] = "spark",
) -> None:
    """Print the locked jars of a set, comma-separated (for spark-submit --jars)."""
    try:
        paths = jvm.ensure_jars(_settings().cache_dir, jar_set)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    out.print(",".join(str(p) for p in paths), soft_wrap=True)


@app.command("config")
def show_config() -> None:
    """Print the effective settings (secrets masked)."""
    try:
        settings = _settings()
    except FleetstreamError as exc:
        raise _fail(exc) from None
    out.print_json(settings.model_dump_json())


class SinkName(enum.StrEnum):
    kafka = "kafka"
    jsonl = "jsonl"
    null = "null"


def _preset(value: str, presets: Mapping[str, object], what: str) -> str:
    if value not in presets:
        raise typer.BadParameter(f"unknown {what} preset {value!r}; choose from {', '.join(presets)}")
    return value


@app.command()
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

    try:
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
    except FleetstreamError as exc:
        raise _fail(exc) from None
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


@reference_app.command("publish")
def reference_publish(
    to: Annotated[
        str | None,
        typer.Option(
            "--to", envvar="FLEETSTREAM_REFERENCE_TO", help="Folder or s3://bucket/prefix; default: the lake's dims."
        ),
    ] = None,
    cars: Annotated[int, typer.Option(min=1, envvar="FLEETSTREAM_SIM_CARS", help="Number of cars.")] = 50,
    seed: Annotated[int, typer.Option(envvar="FLEETSTREAM_SIM_SEED", help="Same seed as the simulator.")] = 42,
    zones: Annotated[
        Path | None,
        typer.Option(
            "--zones",
            exists=True,
            dir_okay=False,
            help="A GeoJSON FeatureCollection of speed zones (Polygons "
            "with zone_id, name and limit_kmh) to publish instead of the simulated city's (docs/rules.md).",
        ),
    ] = None,
) -> None:
    """Write car_models.json, car_colors.json and cars.json (JSON lines), as the simulator's fleet, and
    speed_zones.geojson (the simulated city's speed zones, or --zones)."""
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.reference.publish import publish
    from fleetstream.reference.zones import read_zones

    try:
        settings = _settings()
        chosen = read_zones(zones.read_text(encoding="utf-8"), str(zones)) if zones else None
        written = publish(settings, to or settings.lake.dims, generate_cars(cars, seed), chosen)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    for item in written:
        console.print(f"wrote {item}")


@app.command("schema")
def schema_command(
    write: Annotated[
        bool, typer.Option("--write", help="Regenerate docs/schema.md and docs/telemetry-v1.schema.json.")
    ] = False,
    docs: Annotated[Path, typer.Option(help="The docs folder (with --write).")] = Path("docs"),
) -> None:
    """Print the telemetry event's JSON Schema (one definition, also rendered to docs and Spark)."""
    from fleetstream import schema

    if write:
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "schema.md").write_text(schema.markdown(), encoding="utf-8")
        (docs / "telemetry-v1.schema.json").write_text(
            json.dumps(schema.json_schema(), indent=2) + "\n", encoding="utf-8"
        )
        console.print(f"wrote {docs / 'schema.md'} and {docs / 'telemetry-v1.schema.json'}")
    else:
        out.print_json(json.dumps(schema.json_schema()))


@ml_app.command("train")
def ml_train(
    test_share: Annotated[
        float, typer.Option(min=0.05, max=0.9, help="Share of each driving style's cars held out for the test.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Random state of the split and the forest.")] = 42,
    trees: Annotated[int, typer.Option(min=1, help="Trees in the forest (the seed's model: 300).")] = 300,
    depth: Annotated[int, typer.Option(min=1, help="Their maximum depth (the seed's model: 12).")] = 12,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Train the driving-style forest on gold/driving_features, log the run to MLflow, register the
    model, and make it the `champion` if it beats the current one on the same held-out cars.

    Needs the tracking server (`fleetstream up --mlflow`, started by `make run`, or
    FLEETSTREAM_MLFLOW__TRACKING_URI) and a few closed 5-minute feature windows per car.
    """
    from fleetstream.ml.train import TrainOptions, train

    try:
        settings = _settings()
        with console.status("training the driving-style model..."):
            result = train(settings, TrainOptions(test_share=test_share, seed=seed, trees=trees, depth=depth))
    except FleetstreamError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(asdict(result)))
        return
    table = Table(title=f"driving style, {result.test_windows} windows of {result.test_cars} held-out cars",
                  title_justify="left")  # fmt: skip
    for column in ("model", "accuracy", "macro F1"):
        table.add_column(column)
    table.add_row("random forest", f"{result.forest.accuracy:.3f}", f"{result.forest.macro_f1:.3f}")
    for name, scores in result.baselines.items():
        table.add_row(f"baseline: {name}", f"{scores.accuracy:.3f}", f"{scores.macro_f1:.3f}")
    if result.champion_f1 is not None:
        table.add_row("previous champion", "-", f"{result.champion_f1:.3f}")
    out.print(table)
    verdict = "is now the champion" if result.promoted else "did not beat the champion; the alias stays"
    console.print(
        f"{settings.mlflow.model_name} version {result.version} {verdict} (run {result.run_id}, "
        f"{settings.mlflow.uri}); trained on {result.train_windows} windows of {result.train_cars} cars "
        f"in {result.seconds:.1f} s"
    )


@ml_app.command("score")
def ml_score() -> None:
    """Score the feature windows gold/driver_style does not hold yet (closed before there was a
    champion, or while MLflow was down) with the registry's champion: a backfill of what the stream
    does live. Runs a local Spark job (or on FLEETSTREAM_SPARK__MASTER)."""
    from fleetstream.ml.score import backfill
    from fleetstream.pipeline.session import spark_session

    try:
        settings = _settings()
        with console.status("scoring the driving-feature windows..."):
            spark = spark_session(settings, "fleetstream-ml-score", with_s3=settings.lake.root.startswith("s3a://"))
            try:
                count, version = backfill(settings, spark)
            finally:
                spark.stop()
    except FleetstreamError as exc:
        raise _fail(exc) from None
    console.print(
        f"scored {count:,} windows with {settings.mlflow.model_name} version {version} into gold/driver_style"
    )


@lake_app.command("maintain")
def lake_maintain(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; change nothing.")] = False,
    retain_hours: Annotated[
        float,
        typer.Option(
            min=0,
            help="VACUUM deletes removed files older than this. Refused when shorter than safe: the age of the "
            "oldest version a streaming query still reads, plus an hour (at least 1 h).",
        ),
    ] = 168.0,
    tables: Annotated[
        str | None, typer.Option(help="Comma-separated tables (e.g. silver/telemetry); default: all of them.")
    ] = None,
) -> None:
    """Compact the tables' small files, Z-order silver's closed days by car and time, and VACUUM the
    files compaction removed: safe while the stream writes. Prints files, MiB and small files per
    table before and after. Runs a local Spark job (or on FLEETSTREAM_SPARK__MASTER); meant to run
    daily (the Airflow DAG `lake_maintenance`, or cron)."""
    from fleetstream.lake.maintain import maintain
    from fleetstream.pipeline.session import spark_session

    chosen = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
    try:
        settings = _settings()
        spark = spark_session(settings, "fleetstream-lake-maintain", with_s3=settings.lake.root.startswith("s3a://"))
        try:
            with console.status("maintaining the lake's tables..."):
                outcomes = maintain(
                    settings,
                    spark,
                    retain_hours,
                    dry_run,
                    chosen,
                    say=lambda line: console.print(line, highlight=False),
                )
        finally:
            spark.stop()
    except FleetstreamError as exc:
        raise _fail(exc) from None
    files = sum(o.before.files for o in outcomes)
    after = sum((o.after or o.before).files for o in outcomes)
    verb = "would change" if dry_run else "maintained"
    out.print(f"{verb} {len(outcomes)} tables: {files:,} files{'' if dry_run else f' -> {after:,}'}")


@lake_app.command("repair")
def lake_repair(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; change nothing.")] = False,
) -> None:
    """Repair the streaming checkpoints a crash or a full disk damaged (the stream refuses to start on
    them and names this command). A damaged newest commit file is moved aside: its batch runs again.
    A damaged newest offsets file is moved aside and the Delta tables holding its batch are restored
    to the version before it, so the batch is planned and written again whole. Files are moved to
    the checkpoint's _damaged/ folder, never deleted. Stop every stream on the lake first."""
    import psutil

    from fleetstream.lake.repair import repair
    from fleetstream.pipeline.monitor import STATUS_FILE, read_status
    from fleetstream.pipeline.session import spark_session

    try:
        settings = _settings()
        status = read_status(settings.state_dir / STATUS_FILE)
        if status is not None and status.phase != "stopped" and status.pid and psutil.pid_exists(status.pid):
            raise FleetstreamError(
                f"The stream runs (pid {status.pid}, {settings.state_dir / STATUS_FILE}): stop it before the repair."
            )
        spark = spark_session(settings, "fleetstream-lake-repair", with_s3=settings.lake.root.startswith("s3a://"))
        try:
            with console.status("checking the lake's checkpoints..."):
                found = repair(
                    spark,
                    settings.lake.root,
                    dry_run,
                    say=lambda line: console.print(line, highlight=False, soft_wrap=True),
                )
        finally:
            spark.stop()
    except FleetstreamError as exc:
        raise _fail(exc) from None
    if not found:
        out.print(f"no damaged checkpoint under {settings.lake.root}/_checkpoints")
    else:
        verb = "would repair" if dry_run else "repaired"
        out.print(f"{verb} {len(found)} damaged checkpoint files; start the stream again")


@app.command("sql")
def sql_command(
    statement: Annotated[
        str | None,
        typer.Argument(
            help='A question in SQL ("SELECT ... FROM fleet.silver_telemetry ..."); or `serve` to run the SQL '
            "endpoint; or `shell` (the default) for beeline connected to it."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows printed at most (a query without a running endpoint).")] = 100,
) -> None:
    """SQL over the lake's named tables (fleet.silver_telemetry, fleet.gold_car_state, fleet.dims_cars,
    ...; docs/sql.md), read-only.

    `fleetstream sql serve` runs the endpoint in the foreground: Spark's Thrift server (HiveServer2's
    protocol, for beeline, JDBC and ODBC clients) on 127.0.0.1:10000 (FLEETSTREAM_SQL__HOST, __PORT;
    beyond loopback only with FLEETSTREAM_SQL__PASSWORD). `fleetstream up --sql` runs it with the stack.
    `fleetstream sql "SELECT ..."` asks a running endpoint, or, when none runs, a local Spark session
    (about 20 s to start). `fleetstream sql` opens beeline on the running endpoint.
    """
    from fleetstream.local.stack import sql_answers
    from fleetstream.sql import client

    try:
        settings = _settings()
        if statement == "serve":
            _serve_sql(settings)
            return
        running = sql_answers(settings)
        if statement in (None, "shell"):
            if not running:
                raise FleetstreamError(
                    f"no SQL endpoint answers on {settings.sql.url}: start it with `fleetstream sql serve` "
                    '(or `fleetstream up --sql`), or ask one question without it: fleetstream sql "SELECT ..."'
                )
            raise typer.Exit(client.run_beeline(settings, "--showHeader=true"))
        assert statement is not None
        if running:
            raise typer.Exit(client.run_beeline(settings, "--silent=true", "--outputformat=table", "-e", statement))
        with console.status("no SQL endpoint running: asking a local Spark session..."):
            columns, rows, more = client.query_local(settings, statement, limit)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    table = Table(*columns, title_justify="left")
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    out.print(table)
    console.print(f"{len(rows)} rows{f' (the first {limit}; --limit for more)' if more else ''}")


def _serve_sql(settings: Settings) -> None:
    """The SQL endpoint in the foreground until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from fleetstream.sql.server import check_exposure, serve

    check_exposure(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"starting the SQL endpoint on {settings.sql.host}:{settings.sql.port}; Ctrl-C stops it")
    serve(settings, stop)


notify_app = typer.Typer(
    help="Alert summaries and critical alerts to Telegram, Slack and a webhook (docs/operations.md).",
    no_args_is_help=True,
)
app.add_typer(notify_app, name="notify")


def _print_sent(results: list[Any]) -> int:
    failed = 0
    for r in results:
        span = f"{r.start:%Y-%m-%d %H:%M} to {r.end:%H:%M} UTC"
        if r.error:
            failed += 1
            console.print(f"[red]{r.channel}[/]: {span}: {r.error}", highlight=False)
        elif r.message is None:
            console.print(f"{r.channel}: {span}: nothing to send", highlight=False)
        else:
            console.print(f"{r.channel}: sent {r.message.id} ({span}, {r.message.data['alerts']:,} alerts)",
                          highlight=False)  # fmt: skip
    return failed


@notify_app.command("summary")
def notify_summary(
    minutes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Summarise the newest N closed minutes again, whatever was sent (progress unchanged)."
        ),
    ] = None,
    send_empty: Annotated[
        bool, typer.Option("--send-empty", help="Send a summary of a range without alerts too.")
    ] = False,
    every: Annotated[
        int | None,
        typer.Option(min=5, help="Keep running: a summary run every this many seconds, until Ctrl-C (as cron would)."),
    ] = None,
) -> None:
    """One message per channel for the closed minutes of gold/alerts_per_minute it has not taken yet:
    alerts by rule and color, the top cars, episodes opened and resolved. Run it every minute (the
    alert_summary DAG, or cron); a pause or a burst gives one message for the whole range. Exits 1 when
    a channel failed (it gets the same range next run)."""
    import signal
    import threading

    from fleetstream.ops.notify import send_summaries

    if every is None:
        try:
            results = send_summaries(_settings(), minutes=minutes, send_empty=send_empty)
        except FleetstreamError as exc:
            raise _fail(exc) from None
        raise typer.Exit(1 if _print_sent(results) else 0)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"a summary run every {every} s; Ctrl-C stops")
    while not stop.is_set():
        try:
            _print_sent(send_summaries(_settings(), minutes=minutes, send_empty=send_empty))
        except FleetstreamError as exc:  # (a channel's failure is printed above; this is the lake or settings)
            console.print(f"[red]error:[/] {exc}", highlight=False)
        stop.wait(every)


@notify_app.command("critical")
def notify_critical(
    once: Annotated[
        bool, typer.Option("--once", help="Send what alert-data holds (from its start on a first run), then stop.")
    ] = False,
) -> None:
    """Critical alerts from alert-data as they come (an escalated episode, a rule declared critical):
    those within FLEETSTREAM_NOTIFY__CRITICAL_WINDOW_S (10 s) go out as one message. Runs until
    Ctrl-C; a first run starts at the topic's end. Exits 1 when a channel failed (nothing committed)."""
    import signal
    import threading

    from fleetstream.ops.notify import follow_critical

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        settings = _settings()
        if not once:
            console.print(f"sending critical alerts from {settings.kafka.topics.alerts}; Ctrl-C stops")
        sent = follow_critical(settings, stop, once=once, on_sent=lambda m: console.print(f"sent {m.id}"))
    except FleetstreamError as exc:
        raise _fail(exc) from None
    console.print(f"{sent} messages sent")


@notify_app.command("test")
def notify_test() -> None:
    """Send a test message to every configured channel."""
    from fleetstream.ops.channels import SendError, channels
    from fleetstream.ops.notify import probe_message

    try:
        settings = _settings()
        chosen = channels(settings)
        if not chosen:
            raise FleetstreamError("no notification channel is configured (see `fleetstream notify --help`)")
        message = probe_message(settings)
        failed = 0
        for channel in chosen:
            try:
                channel.send(message)
                console.print(f"{channel.name}: sent")
            except SendError as exc:
                failed += 1
                console.print(f"[red]{channel.name}[/]: {exc}", highlight=False)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    raise typer.Exit(1 if failed else 0)


@app.command("watchdog")
def watchdog_command(
    max_lag: Annotated[
        int, typer.Option(min=1, help="A query this many Kafka records behind its input is falling behind.")
    ] = 50_000,
    notify: Annotated[
        bool, typer.Option("--notify", help="Tell the notification channels (once per change, and when it is over).")
    ] = False,
    repeat_minutes: Annotated[
        float, typer.Option(min=1, help="With --notify: say it again after this long while it stays wrong.")
    ] = 60.0,
) -> None:
    """Is the streaming pipeline of this state directory running and keeping up? Reads its status
    file (as the dashboard's health page does), the broker, and each query's lag. Exits 0 when all is
    well or it is starting, 1 when something is wrong (each problem printed). Run it every few
    minutes: the Airflow DAG `stream_watchdog`, or cron. It does not restart the stream."""
    import time

    from fleetstream.ops import watchdog
    from fleetstream.ops.channels import SendError, channels

    try:
        settings = _settings()
        found = watchdog.check(settings, max_lag)
        for problem in found:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        if not found:
            console.print("the streaming pipeline is running and keeping up")
        failed = 0
        if notify:
            chosen = channels(settings)
            if not chosen:
                console.print("--notify: no notification channel is configured (`fleetstream notify --help`)")
            now = time.time()
            verdict = watchdog.decide(found, watchdog.load_state(settings), now, repeat_minutes * 60)
            if chosen and verdict.message is not None:
                for channel in chosen:
                    try:
                        channel.send(verdict.message)
                        console.print(f"{channel.name}: sent {verdict.message.id}")
                    except SendError as exc:
                        failed += 1
                        console.print(f"[red]{channel.name}[/]: {exc}", highlight=False)
                if not failed:  # a failed channel is told again next run
                    watchdog.save_state(settings, verdict.problems, now)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    raise typer.Exit(1 if found or failed else 0)


@app.command("bot")
def bot_command() -> None:
    """The ops bot on Telegram (long polling): /status, /alerts [car|rule], /car <id>, /tables,
    /count <table>, /sql <SELECT ...>, /dashboards, /ai <question> (with FLEETSTREAM_BOT__AI_BASE_URL and
    __AI_MODEL: an OpenAI-compatible model using the other commands as tools), /help. It answers only the chats in
    FLEETSTREAM_TELEGRAM__ALLOWED_CHAT_IDS (a JSON list); others are refused and logged. Token:
    FLEETSTREAM_TELEGRAM__TOKEN. Runs until Ctrl-C."""
    from fleetstream.ops import bot

    try:
        bot.run(_settings())
    except FleetstreamError as exc:
        raise _fail(exc) from None


quality_app = typer.Typer(help="The data-quality gate (docs/quality.md).", no_args_is_help=True)
app.add_typer(quality_app, name="quality")


@quality_app.command("check")
def quality_check(
    since: Annotated[
        str,
        typer.Option(
            help="Check the rows of the last 30m, 1h, 24h... of each table's slice column; `all`: everything."
        ),
    ] = "1h",
    tables: Annotated[
        str | None, typer.Option(help="Comma-separated tables (e.g. silver/telemetry); default: every suite.")
    ] = None,
    suites: Annotated[
        Path | None,
        typer.Option(help="A suites YAML file; default: FLEETSTREAM_QUALITY__SUITES, or the built-in suites."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Where to write the HTML report; default: <state dir>/quality/report.html.")
    ] = None,
    write: Annotated[bool, typer.Option(help="Append the results to gold/dq_results.")] = True,
) -> None:
    """Check silver and gold against their expectation suites (completeness, ranges, uniqueness,
    references to the dims, freshness, row counts): results in gold/dq_results and an HTML report.

    Exits 0 when every critical expectation holds (warnings are printed), 2 when one fails: meant for
    cron or the Airflow DAG `data_quality`, hourly. A table that fails a critical expectation is
    marked in the lake (_quality/hold.json) until a check of it passes; with
    FLEETSTREAM_QUALITY__HOLD_GOLD=true the stream leaves gold as it is meanwhile.
    """
    import datetime as dt

    from fleetstream.pipeline.session import spark_session
    from fleetstream.quality.check import check, load_suites, write_results
    from fleetstream.quality.hold import read_hold, updated_hold, write_hold
    from fleetstream.quality.report import html_report
    from fleetstream.rules.engine import duration_s

    try:
        settings = _settings()
        chosen_suites = load_suites(suites or settings.quality.suites)
        try:
            window = None if since == "all" else dt.timedelta(seconds=duration_s(since))
        except ValueError as exc:
            raise FleetstreamError(f"--since: {exc}, or all") from None
        chosen = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
        spark = spark_session(settings, "fleetstream-quality", with_s3=settings.lake.root.startswith("s3a://"))
        try:
            with console.status("checking the lake's expectations..."):
                run = check(spark, settings, chosen_suites, window, chosen, say=console.print)
            if write:
                write_results(spark, settings, run)
                checked = sorted({r.table for r in run.results})
                write_hold(spark, settings, updated_hold(read_hold(spark, settings), run, checked))
        finally:
            spark.stop()
    except FleetstreamError as exc:
        raise _fail(exc) from None
    page = report or settings.state_dir / "quality" / "report.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(html_report(run), encoding="utf-8")
    table = Table("table", "expectation", "severity", "result", "observed", title_justify="left")
    for r in sorted(run.results, key=lambda r: (r.passed, r.table)):
        result = "[green]pass[/]" if r.passed else ("[red]FAIL[/]" if r.severity == "critical" else "[yellow]warn[/]")
        table.add_row(r.table, r.expectation, r.severity, result, r.observed)
    out.print(table)
    where = f"gold/dq_results (run {run.run_id}) and {page}" if write else str(page)
    console.print(f"{len(run.results) - len(run.failed)}/{len(run.results)} expectations hold; results in {where}")
    if run.critical_failed:
        raise typer.Exit(2)


bench_app = typer.Typer(help="Benchmarks; results go to docs/benchmarks.md.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


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

    try:
        settings = _settings()
        with console.status("benchmarking the simulator..."):
            measures = bench.run(settings, cars, ticks, repeat)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    section = bench.report(measures, cars, ticks, repeat)
    out.print(section)
    if write is not None:
        bench.write_report(section, write)
        console.print(f"updated {write}")


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
    from fleetstream.bench.sim import machine, write_report

    try:
        settings = _settings()
        require_kafka(settings.kafka)
        with console.status("benchmarking the dashboard...") as status:
            where = workdir or settings.cache_dir / "bench-dashboard"
            timings, paint = bench.run(settings, where, repeat, lambda what: status.update(f"writing {what}"))
    except FleetstreamError as exc:
        raise _fail(exc) from None
    section = bench.report(timings, paint, machine())
    out.print(section)
    if write is not None:
        write_report(section, write)
        console.print(f"updated {write}")


@bench_app.command("pipeline")
def bench_pipeline(
    measures: Annotated[
        str,
        typer.Option(help="Comma-separated measures: quiet, publisher, ceiling, small, steady, burst, episodes."),
    ] = "quiet,publisher,ceiling,small,steady,burst,episodes",
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each measure; the median is reported.")] = 3,
    quiet_seconds: Annotated[int, typer.Option(min=10, help="Quiet fleet: seconds of CPU measured.")] = 300,
    quiet_settle_seconds: Annotated[
        int,
        typer.Option(
            min=0,
            help="Quiet fleet: seconds from the command to the measure. The gold windows and feature windows "
            "close 10 minutes of event time after they start (the lateness validation accepts): 720 measures "
            "them too.",
        ),
    ] = 60,
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
    write: Annotated[Path | None, typer.Option(help="Markdown file whose pipeline section is replaced.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """What the pipeline costs and how fast it is, against its targets: a quiet fleet through `fleetstream
    run` (time to the dashboard's data, the whole stack's CPU, event-to-silver latency); the alert
    publisher alone in real-time and micro-batch mode; the drain rate against a minimal one-query Spark
    medallion on the same backlog; --available-now on a small topic; a steady 10,000 events/s; a burst.
    Needs the stack for everything but the quiet fleet (which starts its own): `fleetstream up --detach`.
    The whole run takes about two hours on two cores; --measures and --repeat make it shorter."""
    from fleetstream.bench import pipeline as bench
    from fleetstream.bench.sim import machine, write_report

    chosen = tuple(m.strip() for m in measures.split(",") if m.strip())
    unknown = [m for m in chosen if m not in bench.MEASURES]
    if unknown:
        raise _fail(FleetstreamError(f"unknown measures {unknown}; choose from {', '.join(bench.MEASURES)}"))
    options = bench.Options(
        repeat=repeat, quiet_seconds=quiet_seconds, quiet_settle_seconds=quiet_settle_seconds,
        ceiling_cars=ceiling_cars, ceiling_seconds=ceiling_seconds,
        max_records=max_offsets, steady_rate=steady_rate, steady_seconds=steady_seconds,
        warmup_seconds=warmup_seconds, burst_events=burst_events, burst_seconds=burst_seconds,
    )  # fmt: skip
    try:
        settings = _settings()
        if set(chosen) - {"quiet"}:
            require_kafka(settings.kafka)
        results = bench.run(settings, chosen, options, say=lambda line: console.print(line, highlight=False))
    except (FleetstreamError, RuntimeError) as exc:
        raise _fail(FleetstreamError(str(exc))) from None
    section = bench.report(results, machine(), options)
    out.print(section)
    if write is not None:
        write_report(section, write)
        console.print(f"updated {write}")
    wrong = [f"{r.measure}, {r.label}" for r in results if not r.correct]
    if wrong:
        console.print(f"[bold red]outputs differ from the ground truth:[/] {wrong}")
        raise typer.Exit(1)


def _settings_with_kafka() -> Settings:
    """The settings, once their Kafka answers (a benchmark's first check)."""
    settings = _settings()
    require_kafka(settings.kafka)
    return settings


def _write_section(section: str, write: Path | None) -> None:
    """Print a benchmark's report section and put it in its Markdown file."""
    from fleetstream.bench.sim import write_report

    out.print(section)
    if write is not None:
        write_report(section, write)
        console.print(f"updated {write}")


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

    try:
        settings = _settings_with_kafka()
        figures = bench.run(settings, cars, seconds, million, say=lambda line: console.print(line, highlight=False))
    except (FleetstreamError, RuntimeError) as exc:
        raise _fail(FleetstreamError(str(exc))) from None
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

    try:
        settings = _settings_with_kafka()
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        figures = bench.run(settings, cars, seconds, repeat, lambda line: console.print(line, highlight=False), workdir)
    except (FleetstreamError, RuntimeError) as exc:
        raise _fail(FleetstreamError(str(exc))) from None
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
    from fleetstream.bench.sim import machine, write_report

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
        settings = _settings()
        require_kafka(settings.kafka)
        logs = settings.state_dir / "bench-compare"
        console.print(f"logs of the systems under test: {logs}", highlight=False)
        # SIGTERM as Ctrl-C: the systems under test run in process groups of their own, and only an
        # interrupt (not a bare exit) stops them on the way out
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        results = bench.run(
            settings, workload, chosen, say=lambda line: console.print(line, highlight=False), logs=logs
        )
    except (FleetstreamError, RuntimeError) as exc:
        raise _fail(FleetstreamError(str(exc))) from None
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
    section = bench.report(results, workload, machine(), str(relative))
    out.print(section)
    if write is not None:
        write_report(section, write)
        console.print(f"updated {write}")


@app.command("run")
def run_all(
    cars: Annotated[int, typer.Option(min=1, envvar="FLEETSTREAM_SIM_CARS", help="Simulated cars.")] = 50,
    rate: Annotated[
        float, typer.Option(min=0.01, envvar="FLEETSTREAM_SIM_RATE", help="Reports per car per second.")
    ] = 1.0,
    faults: Annotated[str, typer.Option(envvar="FLEETSTREAM_SIM_FAULTS", help="Fault preset.")] = "default",
    bad_data: Annotated[str, typer.Option(envvar="FLEETSTREAM_SIM_BAD_DATA", help="Bad-data preset.")] = "light",
    seed: Annotated[int, typer.Option(envvar="FLEETSTREAM_SIM_SEED")] = 42,
    s3: Annotated[bool, typer.Option("--s3", envvar="FLEETSTREAM_WITH_S3", help="Also run SeaweedFS.")] = False,
    with_stream: Annotated[
        bool,
        typer.Option("--stream/--no-stream", envvar="FLEETSTREAM_RUN_STREAM", help="Also run the Spark pipeline."),
    ] = True,
    with_dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard/--no-dashboard", envvar="FLEETSTREAM_RUN_DASHBOARD", help="Also serve the dashboard."
        ),
    ] = True,
    with_mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow/--no-mlflow",
            envvar="FLEETSTREAM_RUN_MLFLOW",
            help="Also run the MLflow tracking server (started last: the stream and dashboard come first).",
        ),
    ] = True,
    with_airflow: Annotated[
        bool,
        typer.Option(
            "--airflow/--no-airflow",
            envvar="FLEETSTREAM_RUN_AIRFLOW",
            help="Also run Airflow with fleetstream's DAGs (about 1 GiB of memory; started after MLflow).",
        ),
    ] = True,
    secure: Annotated[bool, _SECURE_OPTION] = False,
    brokers: Annotated[int | None, _BROKERS_OPTION] = None,
) -> None:
    """Everything, in the foreground: the local stack, the reference data, the simulator, the pipeline,
    the dashboard (its address is printed), MLflow and Airflow; the notifications and the ops bot when
    configured (FLEETSTREAM_TELEGRAM__*, FLEETSTREAM_NOTIFY__*).

    Ctrl-C stops it all. This is what `make run` starts.
    """
    from fleetstream import ops
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.reference.publish import publish

    _preset(faults, FAULT_PRESETS, "fault")
    _preset(bad_data, BAD_DATA_PRESETS, "bad-data")
    _secure_env(secure, brokers)
    settings, services = _start_stack(s3)

    def start_simulator() -> list[Service]:
        from fleetstream.pipeline.monitor import STATUS_FILE, drop_stale_status

        for item in publish(settings, settings.lake.dims, generate_cars(cars, seed)):
            log.info("reference data: %s", item)
        started = []
        if with_stream:  # first: its JVM takes the longest to start
            drop_stale_status(settings.state_dir / STATUS_FILE)
            started.append(stack.start_app(settings, "stream", [sys.executable, "-m", "fleetstream", "stream"],
                                           user="pipeline"))  # fmt: skip
        simulate = [sys.executable, "-m", "fleetstream", "simulate", "--cars", str(cars), "--rate", str(rate),
                    "--faults", faults, "--bad-data", bad_data, "--seed", str(seed)]  # fmt: skip
        started.append(stack.start_app(settings, "simulator", simulate, user="simulator"))
        if with_dashboard:
            started.append(stack.start_app(settings, "dashboard", [sys.executable, "-m", "fleetstream", "dashboard"],
                                           user="dashboard"))  # fmt: skip
            console.print(f"dashboard: [bold]{settings.dashboard.url}[/]")
        if with_mlflow:
            try:
                server = stack.start_mlflow(settings)
            except FleetstreamError as exc:
                console.print(f"[yellow]MLflow not started:[/] {exc}")
            else:
                if server is not None:
                    started.append(server)
                console.print(f"MLflow: [bold]{settings.mlflow.uri}[/]")
        if with_airflow:
            try:
                with console.status("starting Airflow..."):
                    started += stack.start_airflow(settings)
            except FleetstreamError as exc:
                console.print(f"[yellow]Airflow not started:[/] {exc}")
            else:
                _print_airflow_login(settings)
        for name, argv in ops.apps(settings):  # when a channel or the bot is configured
            # notifications only read alerts; the bot acts for the operators (status, replay, Airflow)
            started.append(stack.start_app(settings, name, argv, user=None if name == "bot" else "ops"))
        return started

    _supervise_foreground(settings, services, start_simulator)


@app.command()
def stream(
    only: Annotated[
        str,
        typer.Option(
            envvar="FLEETSTREAM_STREAM_ONLY",
            help="Comma-separated layers: bronze,silver,alerts,gold (one query reads Kafka and computes every "
            "layer chosen; a layer without its input layer reads that layer's table); episodes (alert "
            "episodes and trips) and offline (cars that stopped reporting), stateful queries over silver's "
            "table; alert-data is the alert-data publisher alone "
            "(part of alerts otherwise).",
        ),
    ] = "bronze,silver,alerts,gold,episodes,offline",
    available_now: Annotated[
        bool,
        typer.Option(
            "--available-now",
            envvar="FLEETSTREAM_STREAM_AVAILABLE_NOW",
            help="Process what is there, then exit (backfills, tests); alert-data is then published by the "
            "lake's batches.",
        ),
    ] = False,
    trigger_seconds: Annotated[
        float,
        typer.Option(min=0, envvar="FLEETSTREAM_STREAM_TRIGGER_SECONDS", help="How often the lake looks for input."),
    ] = LAKE_TRIGGER_S,
    min_offsets_per_trigger: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="FLEETSTREAM_STREAM_MIN_OFFSETS_PER_TRIGGER",
            help="A lake batch starts once this many Kafka records wait, or after --max-trigger-delay-seconds "
            "(1: at every trigger).",
        ),
    ] = LAKE_MIN_RECORDS,
    max_trigger_delay_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="FLEETSTREAM_STREAM_MAX_TRIGGER_DELAY_SECONDS",
            help="The longest a lake batch waits for --min-offsets-per-trigger records: a quiet fleet's freshness.",
        ),
    ] = LAKE_MAX_DELAY_S,
    max_offsets_per_trigger: Annotated[
        int,
        typer.Option(
            min=1, envvar="FLEETSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER", help="Kafka records per lake batch at most."
        ),
    ] = LAKE_MAX_RECORDS,
    gold_interval_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="FLEETSTREAM_STREAM_GOLD_INTERVAL_SECONDS",
            help="While the lake's batches are small, update gold at most this often (0: every batch).",
        ),
    ] = LAKE_GOLD_S,
    episodes_trigger_seconds: Annotated[
        float,
        typer.Option(
            min=0.1,
            envvar="FLEETSTREAM_STREAM_EPISODES_TRIGGER_SECONDS",
            help="How often the alert episodes query looks for new silver rows.",
        ),
    ] = EPISODES_TRIGGER_S,
    offline_after_seconds: Annotated[
        float,
        typer.Option(
            min=1,
            envvar="FLEETSTREAM_STREAM_OFFLINE_AFTER_SECONDS",
            help="A car that stops reporting this long while the fleet goes on opens a vehicle_offline episode.",
        ),
    ] = OFFLINE_AFTER_S,
    master: Annotated[
        str | None, typer.Option(envvar="FLEETSTREAM_SPARK__MASTER", help="Spark master; default local[*].")
    ] = None,
    alerts_mode: Annotated[
        str,
        typer.Option(
            envvar="FLEETSTREAM_STREAM_ALERTS_MODE",
            help="Who publishes alert-data: realtime, a Spark real-time query reading Kafka (milliseconds, "
            "little CPU when quiet); microbatch, a micro-batch query (trade-offs in docs/rules.md).",
        ),
    ] = ALERTS_MODE,
    realtime_checkpoint_seconds: Annotated[
        float,
        typer.Option(
            min=1,
            envvar="FLEETSTREAM_STREAM_REALTIME_CHECKPOINT_SECONDS",
            help="Real-time mode: the batch length, after which offsets are checkpointed and progress is "
            "reported; each new batch holds alerts up for a moment (docs/rules.md).",
        ),
    ] = REALTIME_BATCH_S,
    alerts_trigger_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="FLEETSTREAM_STREAM_ALERTS_TRIGGER_SECONDS",
            help="Micro-batch mode: the alert-data publisher's interval (a batch that takes longer is "
            "followed at once by the next).",
        ),
    ] = ALERTS_TRIGGER_S,
    separate_alert_app: Annotated[
        bool,
        typer.Option(
            "--separate-alert-app/--one-app",
            envvar="FLEETSTREAM_STREAM_SEPARATE_ALERT_APP",
            help="Run the alert-data publisher as a Spark application of its own (a child process, log in "
            "<state_dir>/logs/stream-alert-data.log), and this application's queries at a lower CPU priority "
            "(--lake-nice): alerts are then not held up by the lake's batches (the default; --one-app saves "
            "the second driver JVM at the cost of alert latency, docs/benchmarks.md).",
        ),
    ] = True,
    lake_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            envvar="FLEETSTREAM_STREAM_LAKE_NICE",
            help="With --separate-alert-app: how much to lower the lake queries' CPU priority (nice).",
        ),
    ] = LAKE_NICE,
    rules: RulesFile = None,
    show_gold: Annotated[
        bool,
        typer.Option(
            "--console", envvar="FLEETSTREAM_STREAM_CONSOLE", help="Also print the newest gold windows every 10 s."
        ),
    ] = False,
) -> None:
    """Run the streaming pipeline: bronze, silver, alerts and gold on Delta Lake, and alert-data.

    One checkpointed query reads Kafka and writes every layer from the same micro-batch; it restarts
    where it stopped. Each query's rates, batch duration and lag are shown live (and written to
    <state_dir>/stream-status.json for the dashboard). Ctrl-C stops the queries cleanly.
    """
    from fleetstream.config import SparkSettings
    from fleetstream.pipeline import separate
    from fleetstream.pipeline.monitor import STATUS_FILE, write_status
    from fleetstream.pipeline.plan import plan

    began = time.time()
    try:
        run_plan = plan(
            [q.strip() for q in only.split(",") if q.strip()], alerts_mode, separate_alert_app, available_now
        )
    except FleetstreamError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        settings = _settings()
    except FleetstreamError as exc:
        raise _fail(exc) from None
    status_path = None
    if not available_now:
        # "starting" at once, so that the dashboard tells a pipeline starting up from one gone; the
        # publisher alone writes a status of its own (merged by the application that started it)
        alone = not run_plan.lake and run_plan.publisher == "here"
        status_path = settings.state_dir / (separate.PUBLISHER_STATUS_FILE if alone else STATUS_FILE)
        write_status(status_path, [], began, "starting", began, os.getpid())
    try:
        asked_master = master
        realtime_here = run_plan.alerts_mode == "realtime" and run_plan.publisher == "here"
        if not master and realtime_here and settings.spark.master == "local[*]":
            # real-time mode runs one long task per Kafka partition at once, besides the other queries
            master = f"local[{max(os.cpu_count() or 2, settings.kafka.partitions + 2)}]"
            log.info("real-time alerts: Spark master %s (a task slot for every Kafka partition)", master)
        if master:
            spark_settings = SparkSettings(**{**settings.spark.model_dump(), "master": master})
            settings = settings.model_copy(update={"spark": spark_settings})
        from fleetstream.rules.engine import load_rules

        chosen_rules = load_rules(rules) if rules else None
        require_kafka(settings.kafka)
        publisher = None
        if run_plan.publisher == "child":
            argv = separate.publisher_argv(
                run_plan.alerts_mode, alerts_trigger_seconds, realtime_checkpoint_seconds, asked_master, rules
            )
            publisher = separate.start_publisher(settings, argv)
            log.info("alert-data publisher started (pid %d), log: %s", publisher.pid, publisher.log)
            # this process and the JVM it starts (inherited) yield the cores to the publisher
            os.nice(lake_nice)
        try:
            from fleetstream.pipeline.session import spark_session
            from fleetstream.pipeline.stream import Streams, Triggers

            spark = spark_session(
                settings, "fleetstream-stream", with_s3=settings.lake.root.startswith("s3a://"),
                batch_jvm=bool(run_plan.lake),  # the publisher alone keeps the JVM's defaults
            )  # fmt: skip
            spark.sparkContext.setLogLevel("WARN")
            triggers = Triggers(
                lake_s=trigger_seconds, min_records=min_offsets_per_trigger, max_delay_s=max_trigger_delay_seconds,
                max_records=max_offsets_per_trigger, alerts_s=alerts_trigger_seconds,
                realtime_batch_s=realtime_checkpoint_seconds, gold_s=gold_interval_seconds,
                episodes_s=episodes_trigger_seconds, offline_s=offline_after_seconds,
            )  # fmt: skip
            streams = Streams(spark, settings, run_plan, rules=chosen_rules, triggers=triggers)
            if available_now:
                streams.run_available_now(lambda name: log.info("processing what is available: %s", name))
                log.info("done in %.1f s", time.time() - began)
                spark.stop()
                return
            queries = streams.start()
        except BaseException:
            if publisher is not None:
                stop_service(publisher, group=False)  # it stops its own JVM
            raise
    except FleetstreamError as exc:
        if status_path is not None:
            write_status(status_path, [], time.time(), "stopped", began, os.getpid())
        raise _fail(exc) from None
    from fleetstream.pipeline.supervise import rows_table, supervise

    snapshot = None
    if show_gold:

        def snapshot() -> list[Table]:
            return [rows_table(name, rows) for name, rows in streams.gold_snapshot().items()]

    others = None
    if publisher is not None:
        others = functools.partial(
            separate.publisher_rows, publisher, settings.state_dir / separate.PUBLISHER_STATUS_FILE
        )
    assert status_path is not None
    try:
        code = supervise(
            queries, status_path, console, snapshot=snapshot, others=others, stop_when=separate.parent_gone,
            started_at=began, restart=streams.restart,
        )  # fmt: skip
    finally:
        if publisher is not None:
            stop_service(publisher, group=False)  # it stops its own JVM
            log.info("alert-data publisher stopped")
        spark.stop()
        log.info("pipeline stopped")
    if code:
        raise typer.Exit(code)


@app.command()
def dashboard(
    host: Annotated[
        str | None, typer.Option(envvar="FLEETSTREAM_DASHBOARD__HOST", help="Address to listen on [127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, envvar="FLEETSTREAM_DASHBOARD__PORT", help="Port to listen on [8501]."),
    ] = None,
) -> None:
    """Serve the live dashboard: fleet overview, alerts, vehicle cockpit, pipeline health.

    It reads the gold and silver tables with delta-rs (no Spark), alert-data and sensors-sample from
    Kafka, and the stream's status file; the cockpit sends driver commands to the simulator. Panels
    refresh by themselves every FLEETSTREAM_DASHBOARD__REFRESH_S seconds (2). Ctrl-C stops it.
    """
    from fleetstream.config import DashboardSettings
    from fleetstream.dashboard import streamlit_argv

    try:
        settings = _settings()
    except FleetstreamError as exc:
        raise _fail(exc) from None
    chosen = DashboardSettings(
        **{**settings.dashboard.model_dump(), **({"host": host} if host else {}), **({"port": port} if port else {})}
    )
    console.print(f"dashboard on [bold]{chosen.url}[/] (Ctrl-C stops it)")
    env = {**os.environ, "FLEETSTREAM_DASHBOARD__HOST": chosen.host, "FLEETSTREAM_DASHBOARD__PORT": str(chosen.port)}
    argv = streamlit_argv(chosen)
    os.execve(argv[0], argv, env)  # noqa: S606 (argv is ours) Streamlit owns the process from here: its Ctrl-C handling, no orphan child


@app.command()
def replay(
    to: Annotated[
        str | None,
        typer.Option(
            envvar="FLEETSTREAM_REPLAY_TO",
            help="Lake root for the rebuilt tables (folder or s3a://); default: <lake>/replays/<UTC time>.",
        ),
    ] = None,
    rules: RulesFile = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish",
            envvar="FLEETSTREAM_REPLAY_PUBLISH",
            help="Also write samples-enriched, sensors-dlq and alert-data again (consumers see repeats).",
        ),
    ] = False,
) -> None:
    """Rebuild silver, quarantine, alerts and gold from bronze into fresh tables.

    Bronze keeps every record exactly as received, so a replay with changed rules or reference data
    gives the tables they would have produced. The live lake is not touched: the new tables go to
    --to, with their own checkpoints. Nothing is written to Kafka unless --publish is given.
    """
    from fleetstream.config import LakeSettings
    from fleetstream.pipeline import ALERTS_MODE
    from fleetstream.pipeline.plan import plan
    from fleetstream.pipeline.session import spark_session
    from fleetstream.pipeline.stream import Streams
    from fleetstream.pipeline.writer import delta_exists
    from fleetstream.rules.engine import load_rules

    try:
        settings = _settings()
        source = settings.lake.root
        target = to or f"{source.rstrip('/')}/replays/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        if target.rstrip("/") == source.rstrip("/"):
            raise FleetstreamError("--to must differ from the live lake root: a replay writes fresh tables.")
        chosen_rules = load_rules(rules) if rules else None
        replayed = settings.model_copy(update={"lake": LakeSettings(root=target, dims_location=settings.lake.dims)})
        remote = source.startswith("s3a://") or target.startswith("s3a://")
        spark = spark_session(replayed, "fleetstream-replay", with_s3=remote)
        layers = plan(
            ["silver", "alerts", "gold", "episodes"], ALERTS_MODE, separate=False, available_now=True, publish=publish
        )
        streams = Streams(spark, replayed, layers, rules=chosen_rules, bronze_from=source)
        if not delta_exists(spark, streams.lake.table("bronze/telemetry")):
            raise FleetstreamError(f"No bronze table under {source}: run `fleetstream stream` first.")
    except FleetstreamError as exc:
        raise _fail(exc) from None
    spark.sparkContext.setLogLevel("WARN")
    began = time.monotonic()
    streams.run_available_now(lambda name: log.info("replaying %s", name))
    counts = streams.table_counts()
    spark.stop()
    log.info("replayed into %s in %.1f s", target, time.monotonic() - began)
    out.print_json(data={"to": target, "rows": counts})
