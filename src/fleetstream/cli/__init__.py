"""The `fleetstream` command: a thin Typer app over the package. Every option has an env variable.

One module per command group (stack, stream, simulate, data, lake, ml, ops, bench); what they share is
in common.py. The commands are registered here, in the order `fleetstream --help` lists them.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from fleetstream.cli import bench, data, lake, ml, ops, simulate, stack, stream
from fleetstream.cli.common import console

__all__ = ["app"]

app = typer.Typer(
    name="fleetstream",
    help="Real-time vehicle telemetry: Kafka, Spark Structured Streaming, Delta Lake.\n\n"
    "Settings come from FLEETSTREAM_* environment variables or a .env file; nested keys use a double "
    "underscore, for example FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


app.command()(stack.up)
app.command()(stack.down)
app.command()(stack.status)
app.command("config")(data.show_config)
app.command()(simulate.simulate)
app.command("schema")(data.schema_command)
app.command("sql")(lake.sql_command)
app.command("watchdog")(ops.watchdog_command)
app.command("bot")(ops.bot_command)
app.command("run")(stack.run_all)
app.command()(stream.stream)
app.command()(stack.dashboard)
app.command()(stream.replay)
# the groups come after the commands in --help, in this order
app.add_typer(data.jars_app, name="jars")
app.add_typer(data.reference_app, name="reference")
app.add_typer(ml.ml_app, name="ml")
app.add_typer(lake.lake_app, name="lake")
app.add_typer(ops.notify_app, name="notify")
app.add_typer(lake.quality_app, name="quality")
app.add_typer(bench.bench_app, name="bench")
