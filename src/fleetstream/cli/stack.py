"""The local stack: up, down, status, run (everything in the foreground) and the dashboard."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from fleetstream.cli.common import (
    _BROKERS_OPTION,
    _SECURE_OPTION,
    _preset,
    _secure_env,
    _settings,
    console,
    failing,
    log,
    out,
)
from fleetstream.config import Settings
from fleetstream.local import stack
from fleetstream.local.process import Service
from fleetstream.sim.faults import BAD_DATA_PRESETS, FAULT_PRESETS


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
        with failing(), _stopping_all_on_failure(settings), console.status("starting the SQL endpoint..."):
            services.append(stack.start_sql(settings, [sys.executable, "-m", "fleetstream", "sql", "serve"]))
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
        with failing(), _terminate_as_interrupt():
            settings = _settings()
            with console.status("starting the local stack..."):
                return settings, stack.up(settings, with_s3=with_s3, with_mlflow=with_mlflow, with_airflow=with_airflow)
    except KeyboardInterrupt:
        console.print(INTERRUPTED)
        raise typer.Exit(130) from None


INTERRUPTED = "interrupted during start-up; what had started was stopped"


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, as Ctrl-C does, so that a start-up stopped by
    either stops what it had started (Python's default for SIGTERM ends the process at once, and the
    processes it started, each in a session of its own, would run on). Only the first SIGTERM
    raises: one sent again while the parts are being stopped does not cut that short."""
    raised = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _stopping_all_on_failure(settings: Settings) -> Iterator[None]:
    """Whatever ends the block early (Ctrl-C or SIGTERM, an error) stops every part of the stack; an
    interruption says so and exits 130."""
    with _terminate_as_interrupt():
        try:
            yield
        except KeyboardInterrupt:
            stack.down(settings)
            console.print(INTERRUPTED)
            raise typer.Exit(130) from None
        except BaseException:
            stack.down(settings)
            raise


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
    with _stopping_all_on_failure(settings):  # (the supervisor handles both signals itself while it runs)
        services = services + (start_more() or [])
        _print_status(stack.status(settings))
        console.print("running; press [bold]Ctrl-C[/] to stop everything")
        code = stack.supervise(services, settings, lambda why: console.print(f"stopping: {why}"))
    console.print("stopped")
    raise typer.Exit(code)


def down() -> None:
    """Stop every process the local stack started (and nothing else)."""
    with failing():
        stopped = stack.down(_settings())
    if stopped:
        console.print("stopped " + ", ".join(f"{s.name} (pid {s.pid})" for s in stopped))
    else:
        console.print("nothing was running")


def status(
    as_json: Annotated[
        bool, typer.Option("--json", envvar="FLEETSTREAM_JSON", help="Machine-readable output.")
    ] = False,
) -> None:
    """Show each part of the stack (pid, address, health) and the topics with partitions and offsets.

    Exits 0 when every part is healthy, 1 otherwise.
    """
    with failing():
        result = stack.status(_settings())
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
            help="Also run the MLflow tracking server (started once the stream's queries have each written a batch, "
            "so that the stream's start is not slowed down).",
        ),
    ] = True,
    with_airflow: Annotated[
        bool,
        typer.Option(
            "--airflow/--no-airflow",
            envvar="FLEETSTREAM_RUN_AIRFLOW",
            help="Also run Airflow with fleetstream's DAGs (about 1 GiB of memory; started beside MLflow).",
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
            started.append(stack.start_app(settings, stack.STREAM, [sys.executable, "-m", "fleetstream", "stream"],
                                           user="pipeline"))  # fmt: skip
        simulate = [sys.executable, "-m", "fleetstream", "simulate", "--cars", str(cars), "--rate", str(rate),
                    "--faults", faults, "--bad-data", bad_data, "--seed", str(seed)]  # fmt: skip
        started.append(stack.start_app(settings, "simulator", simulate, user="simulator"))
        if with_dashboard:
            started.append(stack.start_app(settings, "dashboard", [sys.executable, "-m", "fleetstream", "dashboard"],
                                           user="dashboard"))  # fmt: skip
            console.print(f"dashboard: [bold]{settings.dashboard.url}[/]")
        # the stream exited: the supervisor stops everything next, so MLflow and Airflow are not started
        more = not (with_stream and (with_mlflow or with_airflow)) or _await_lake(settings, started[0])
        if more and (with_mlflow or with_airflow):  # (both at once: each mostly waits on its Python processes)
            parts = " and ".join(p for p, wanted in (("MLflow", with_mlflow), ("Airflow", with_airflow)) if wanted)
            with console.status(f"starting {parts}..."):
                servers, failed = stack.start_servers(settings, mlflow=with_mlflow, airflow=with_airflow)
            started += servers
            if with_mlflow:
                if stack.MLFLOW in failed:
                    console.print(f"[yellow]MLflow not started:[/] {failed[stack.MLFLOW]}")
                else:
                    console.print(f"MLflow: [bold]{settings.mlflow.uri}[/]")
            if with_airflow:
                if "airflow" in failed:
                    console.print(f"[yellow]Airflow not started:[/] {failed['airflow']}")
                else:
                    _print_airflow_login(settings)
        for name, argv in ops.apps(settings):  # when a channel or the bot is configured
            # notifications only read alerts; the bot acts for the operators (status, replay, Airflow)
            started.append(stack.start_app(settings, name, argv, user=None if name == "bot" else "ops"))
        return started

    _supervise_foreground(settings, services, start_simulator)


#: `run` starts MLflow and Airflow once the stream's queries have each written a first batch, or after
#: this long: on two cores their start-ups (tens of seconds of CPU) beside the stream's cold queries
#: delay the first data, and a Python worker of the stateful query given 10 s to connect back missed
#: them (the query failed and was restarted). The stream starts that query at the latest 120 s after
#: its own start (``stream.DEFER_MAX_S``), and its first batch takes tens of seconds on two busy cores.
LAKE_FIRST_BATCH_WAIT_S = 180.0


def _await_lake(settings: Settings, stream: Service, timeout_s: float = LAKE_FIRST_BATCH_WAIT_S) -> bool:
    """Wait until the stream's queries have each finished a batch (its status file: the lake's, then
    the stateful query's, started after it; :func:`~fleetstream.pipeline.monitor.started_up`), the
    stream has exited, or ``timeout_s`` has passed; False when the stream has exited."""
    import time

    from fleetstream.pipeline.monitor import STATUS_FILE, lake_has_written, read_status, started_up

    began = time.monotonic()
    lake_at: float | None = None  # when the first status the lake had written in was written
    with console.status("waiting for the lake's first batch; MLflow and Airflow start after it...") as shown:
        while time.monotonic() - began < timeout_s:
            status = read_status(settings.state_dir / STATUS_FILE)
            if status is not None and lake_at is None and lake_has_written(status):
                lake_at = status.written_at
                log.info("the lake wrote its first batch (waited %.0f s)", time.monotonic() - began)
                shown.update("waiting for the stateful query's first batch; MLflow and Airflow start after it...")
            # (from a later status: the stream starts the stateful query at its next turn after the
            # lake's first batch, so the status that first shows that batch may not list it yet)
            if status is not None and lake_at is not None and status.written_at > lake_at and started_up(status):
                log.info("the stream's queries have each written a batch (waited %.0f s); starting the rest",
                         time.monotonic() - began)  # fmt: skip
                return True
            if stream.process() is None:
                return False
            time.sleep(0.5)
    log.warning("the stream's queries had not each written a batch within %.0f s; starting the rest anyway",
                timeout_s)  # fmt: skip
    return True


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

    with failing():
        settings = _settings()
    chosen = DashboardSettings(
        **{**settings.dashboard.model_dump(), **({"host": host} if host else {}), **({"port": port} if port else {})}
    )
    console.print(f"dashboard on [bold]{chosen.url}[/] (Ctrl-C stops it)")
    env = {**os.environ, "FLEETSTREAM_DASHBOARD__HOST": chosen.host, "FLEETSTREAM_DASHBOARD__PORT": str(chosen.port)}
    argv = streamlit_argv(chosen)
    os.execve(argv[0], argv, env)  # noqa: S606 (argv is ours) Streamlit owns the process from here: its Ctrl-C handling, no orphan child
