"""Asking the lake from the command line: through a running SQL endpoint with beeline (the HiveServer2
client pyspark ships), or, when none runs, in a short-lived local Spark session with the same names
and the same read-only check."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError, first_line


def beeline() -> Path:
    """pyspark's beeline script."""
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "beeline"


@contextlib.contextmanager
def beeline_argv(settings: Settings, *extra: str) -> Iterator[list[str]]:
    """beeline's command line for the configured endpoint; the password, when there is one, goes in a
    file only this user reads (removed afterwards), never on the command line."""
    argv = [str(beeline()), "-u", settings.sql.url, "-n", settings.sql.user, *extra]
    if settings.sql.password is None:
        yield argv
        return
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="sql-login-", dir=settings.state_dir)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(settings.sql.password.get_secret_value())
        yield [*argv, "-w", name]
    finally:
        Path(name).unlink(missing_ok=True)


def run_beeline(settings: Settings, *extra: str) -> int:
    """Run beeline against the endpoint in this terminal; its exit code."""
    with beeline_argv(settings, *extra) as argv:
        return subprocess.run(argv, check=False).returncode


def query_local(settings: Settings, statement: str, limit: int) -> tuple[list[str], list[tuple[object, ...]], bool]:
    """Run one statement in a local read-only Spark session: (columns, at most ``limit`` rows, whether
    there were more)."""
    from fleetstream.sql.server import sql_session

    spark = sql_session(settings, "fleetstream-sql-query")
    try:
        try:
            frame = spark.sql(statement)
            rows = frame.limit(limit + 1).collect()
        except Exception as exc:  # the analyser's or the read-only check's message, without the JVM trace
            raise FleetstreamError(first_line(exc, 10_000)) from None
        return frame.columns, [tuple(r) for r in rows[:limit]], len(rows) > limit
    finally:
        spark.stop()
