"""The lake's tables: maintenance and checkpoint repair, SQL over them, the data-quality gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fleetstream.cli.common import _settings, console, failing, out
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError

lake_app = typer.Typer(help="The lake's tables: maintenance (docs/operations.md).", no_args_is_help=True)
quality_app = typer.Typer(help="The data-quality gate (docs/quality.md).", no_args_is_help=True)


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
    with failing():
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
    A damaged newest offsets file is moved aside and written again from the input range its batch's
    commits recorded; on a lake whose commits did not record it, the Delta tables holding its batch
    are restored to the version before it, so the batch is planned and written again whole. Files
    are moved to the checkpoint's _damaged/ folder, never deleted. Stop every stream on the lake
    first."""
    import psutil

    from fleetstream.lake.repair import repair
    from fleetstream.pipeline.monitor import STATUS_FILE, read_status
    from fleetstream.pipeline.session import spark_session

    with failing():
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
    if not found:
        out.print(f"no damaged checkpoint under {settings.lake.root}/_checkpoints")
    else:
        verb = "would repair" if dry_run else "repaired"
        out.print(f"{verb} {len(found)} damaged checkpoint files; start the stream again")


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

    with failing():
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

    with failing():
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
