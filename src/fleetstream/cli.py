"""The `fleetstream` command: a thin Typer app over the package. Every option has an env variable."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from fleetstream import jvm
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.local import stack

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

console = Console(stderr=True)
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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)],
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def up(
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", envvar="FLEETSTREAM_DETACH", help="Return once healthy; leave it running."),
    ] = False,
    s3: Annotated[
        bool, typer.Option("--s3", envvar="FLEETSTREAM_WITH_S3", help="Also run the SeaweedFS S3 server.")
    ] = False,
) -> None:
    """Start the local stack (Kafka broker, topics, optionally SeaweedFS) and wait until it is healthy.

    In the foreground (the default) Ctrl-C stops everything it started; with --detach it keeps running
    until `fleetstream down`. Parts that settings point at an existing cluster are only checked.
    """
    try:
        settings = _settings()
        with console.status("starting the local stack..."):
            services = stack.up(settings, with_s3=s3)
    except FleetstreamError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        console.print("interrupted during start-up; what had started was stopped")
        raise typer.Exit(130) from None
    if detach:
        _print_status(stack.status(settings))
        console.print("stack running in the background; stop it with [bold]fleetstream down[/]")
        return
    if not services:
        _print_status(stack.status(settings))
        console.print("nothing to supervise: every part is external")
        return
    try:
        _print_status(stack.status(settings))
        console.print("stack running; press [bold]Ctrl-C[/] to stop it")
        code = stack.supervise(services, settings, lambda why: console.print(f"stopping the stack: {why}"))
    except BaseException:
        # Whatever goes wrong in the foreground (a Ctrl-C before supervision began, a failed status
        # query), the processes this command started must not outlive it.
        stack.down(settings)
        raise
    console.print("stack stopped")
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
