"""What the command groups share: the consoles, the settings, failing cleanly, the shared options."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.ingest.kafka import require_kafka

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


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@contextlib.contextmanager
def failing(*also: type[Exception]) -> Iterator[None]:
    """A FleetstreamError (or one of `also`) raised in the block is shown as `error: <message>` on
    stderr, without a traceback, and the command exits 1."""
    caught: tuple[type[Exception], ...] = (FleetstreamError, *also)
    try:
        yield
    except caught as exc:
        raise _fail(exc) from None


def _settings_with_kafka() -> Settings:
    """The settings, once their Kafka answers (a benchmark's first check)."""
    settings = _settings()
    require_kafka(settings.kafka)
    return settings


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


def _preset(value: str, presets: Mapping[str, object], what: str) -> str:
    if value not in presets:
        raise typer.BadParameter(f"unknown {what} preset {value!r}; choose from {', '.join(presets)}")
    return value
