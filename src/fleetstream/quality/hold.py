"""Holding gold while the data fails its critical expectations (``FLEETSTREAM_QUALITY__HOLD_GOLD``).

`fleetstream quality check` keeps a marker in the lake, ``_quality/hold.json``: the tables whose
critical expectations failed at their last check, with the run. A check of a table that passes
takes it off; the marker goes when no table is left. The stream, when told to honour it, reads the
marker (at most every ``every_s``) and, while it is there, leaves gold as it is: silver, quarantine
and the alerts go on, and gold takes in every silver row it skipped, from silver's table, at its
first update after the hold (the same path as after a restart), so nothing is lost or counted twice.

>>> from fleetstream.quality.check import Result, Run
>>> import datetime as dt
>>> at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
>>> bad = Run("r1", [Result("r1", at, "silver/telemetry", "unique(event_id)", "critical", False, "2 rows", 9)])
>>> held = updated_hold(None, bad, ["silver/telemetry"])
>>> held["tables"]
{'silver/telemetry': {'run_id': 'r1', 'failed': ['unique(event_id)']}}
>>> good = Run("r2", [Result("r2", at, "silver/telemetry", "unique(event_id)", "critical", True, "ok", 9)])
>>> updated_hold(held, good, ["silver/telemetry"]) is None
True
>>> updated_hold(held, good, ["gold/car_state"])["tables"].keys()  # a check of another table keeps it
dict_keys(['silver/telemetry'])
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fleetstream.config import Settings
from fleetstream.quality.check import Run

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

HOLD_FILE = "_quality/hold.json"


def updated_hold(current: dict[str, Any] | None, run: Run, checked: Iterable[str]) -> dict[str, Any] | None:
    """The marker after ``run`` checked the tables ``checked``: None when no table holds gold."""
    tables = dict((current or {}).get("tables", {}))
    for table in checked:
        failed = [r.expectation for r in run.results if r.table == table and not r.passed and r.severity == "critical"]
        if failed:
            tables[table] = {"run_id": run.run_id, "failed": failed}
        else:
            tables.pop(table, None)
    return {"tables": tables} if tables else None


def _location(settings: Settings) -> str:
    return f"{settings.lake.root.rstrip('/')}/{HOLD_FILE}"


def read_hold(spark: SparkSession, settings: Settings) -> dict[str, Any] | None:
    """The marker, or None when gold is not held."""
    from fleetstream.pipeline.writer import read_text  # (the dashboard imports this module: no Spark)

    text = read_text(spark, _location(settings))
    if text is None:
        return None
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def write_hold(spark: SparkSession, settings: Settings, marker: dict[str, Any] | None) -> None:
    """Write the marker, or remove it (``marker`` None)."""
    from fleetstream.pipeline.writer import write_text

    write_text(spark, _location(settings), None if marker is None else json.dumps(marker, indent=1))


class HoldGate:
    """The stream's view of the marker: whether gold is held, read at most every ``every_s``."""

    def __init__(self, spark: SparkSession, settings: Settings, every_s: float = 10.0) -> None:
        self.spark, self.settings, self.every_s = spark, settings, every_s
        self._checked = -float("inf")
        self._held: dict[str, Any] | None = None

    def held(self) -> dict[str, Any] | None:
        if time.monotonic() - self._checked >= self.every_s:
            self._checked = time.monotonic()
            try:
                now = read_hold(self.spark, self.settings)
            except Exception as exc:  # an unreadable marker holds nothing: say so, keep gold going
                log.warning("reading the data-quality hold marker failed, gold goes on: %s", exc)
                now = None
            if (now is None) != (self._held is None):
                if now is None:
                    log.info("gold resumes: no table fails its critical expectations any more")
                else:
                    log.warning("gold held: critical expectations failed: %s (%s)", ", ".join(now["tables"]), HOLD_FILE)
            self._held = now
        return self._held
