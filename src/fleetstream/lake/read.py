"""Bounded, recent slices of the Delta tables, read with delta-rs (Polars ``scan_delta``), no Spark.

Every reader filters on the table's partition column and on a time column, so delta-rs skips the
partitions and files (by their min/max statistics) outside the slice: a refresh costs the size of
the slice, not of the table. A table that does not exist yet reads as None.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from fleetstream.config import Settings

UTC = dt.UTC


def table_uri(settings: Settings, name: str) -> str:
    """Where delta-rs finds a table: the lake root (s3a:// is s3:// to delta-rs) plus its name; a
    reference table (``dims/cars``) is in the dims location."""
    root = settings.lake.root.rstrip("/")
    if name.startswith("dims/"):
        root, name = settings.lake.dims.rstrip("/"), name.removeprefix("dims/")
    if root.startswith("s3a://"):
        root = "s3://" + root.removeprefix("s3a://")
    return f"{root}/{name}"


def storage_options(settings: Settings) -> dict[str, str] | None:
    """Object-store options for an s3a:// lake (endpoint, path style, keys); None for a folder."""
    if not settings.lake.root.startswith("s3a://"):
        return None
    from fleetstream.clients import delta_rs_s3

    return delta_rs_s3(settings)


def scan(settings: Settings, name: str) -> pl.LazyFrame | None:
    """A lazy scan of one table, or None when it is not there (yet)."""
    from deltalake import DeltaTable

    uri, options = table_uri(settings, name), storage_options(settings)
    if not DeltaTable.is_deltatable(uri, options):
        return None
    return pl.scan_delta(uri, storage_options=options)


def table_rows(settings: Settings, name: str, version: int | None = None) -> int | None:
    """A table's rows (at ``version``: its newest by default) from its files' statistics (exact: the
    writers record them), or a count; None when the table is not there."""
    from deltalake import DeltaTable

    uri, options = table_uri(settings, name), storage_options(settings)
    if not DeltaTable.is_deltatable(uri, options):
        return None
    actions = pl.DataFrame(DeltaTable(uri, version=version, storage_options=options).get_add_actions(flatten=True))
    if actions.height and "num_records" in actions.columns and actions["num_records"].null_count() == 0:
        return int(actions["num_records"].sum())
    return int(pl.scan_delta(uri, version=version, storage_options=options).select(pl.len()).collect().item())


def _collect(frame: pl.LazyFrame | None) -> pl.DataFrame | None:
    return None if frame is None else frame.collect()


def car_state(settings: Settings) -> pl.DataFrame | None:
    """gold/car_state: one row per car, its latest report (small: the fleet's size)."""
    return _collect(scan(settings, "gold/car_state"))


def recent_windows(settings: Settings, name: str, since: dt.datetime) -> pl.DataFrame | None:
    """A gold window table's windows that start at or after ``since``."""
    return _collect(_where(scan(settings, f"gold/{name}"), pl.col("window_start") >= since))


def car_history(settings: Settings, car_id: str, since: dt.datetime, columns: list[str]) -> pl.DataFrame | None:
    """One car's silver rows since ``since``, oldest first."""
    since = since.astimezone(UTC)
    wanted = (pl.col("event_date") >= since.date()) & (pl.col("event_ts") >= since) & (pl.col("car_id") == car_id)
    frame = _where(scan(settings, "silver/telemetry"), wanted)
    return _collect(None if frame is None else frame.select(columns).sort("event_ts"))


def recent_quarantine(settings: Settings, since: dt.datetime) -> pl.DataFrame | None:
    """Quarantined records ingested since ``since`` (reason, detail, a prefix of the raw payload)."""
    since = since.astimezone(UTC)
    wanted = (pl.col("quarantine_date") >= since.date()) & (pl.col("ingest_time") >= since)
    frame = _where(scan(settings, "quarantine/telemetry"), wanted)
    if frame is None:
        return None
    return frame.select(
        "ingest_time", "reason", "reason_detail", "car_id", pl.col("raw").str.slice(0, 300).alias("raw")
    ).collect()


def recent_alerts(settings: Settings, since: dt.datetime) -> pl.DataFrame | None:
    """silver/alerts rows whose event happened since ``since``."""
    since_ms = int(since.timestamp() * 1000)
    return _collect(_where(scan(settings, "silver/alerts"), pl.col("event_time") >= since_ms))


def _waiting(settings: Settings, kind: str, wanted: pl.Expr) -> pl.DataFrame | None:
    """The ``kind`` rows (episode, trip) in silver/pending_upserts that match ``wanted``: the newest
    steps the episodes query has not upserted into their table yet."""
    frame = scan(settings, "silver/pending_upserts")
    if frame is None:
        return None
    rows = frame.filter(pl.col("kind") == kind).select(pl.col(kind)).unnest(kind).filter(wanted).collect()
    return rows if rows.height else None


def _newest(frame: pl.DataFrame, waiting: pl.DataFrame, key: str, done: str) -> pl.DataFrame:
    """The newest row per ``key`` of a table's rows and the rows waiting for it (at the same
    ``as_of``, the ended one), in the table's columns."""
    rows = pl.concat([frame, waiting.select(frame.columns)], how="vertical_relaxed")
    order = ["as_of", "_done"]  # (a stable sort: of equal rows, the waiting one, concatenated last)
    rows = rows.with_columns((pl.col("status") == done).fill_null(False).alias("_done"))
    rows = rows.sort(order, maintain_order=True)
    return rows.group_by(key, maintain_order=True).last().drop("_done").select(frame.columns)


def episodes(settings: Settings, since: dt.datetime) -> pl.DataFrame | None:
    """silver/alert_episodes, with the steps waiting for it in silver/pending_upserts: the episodes
    open now and those resolved since ``since``."""
    since_ms = int(since.timestamp() * 1000)
    wanted = (pl.col("status") == "open") | (pl.col("resolved_at") >= since_ms)
    # the waiting rows first: upserted between the two reads, a row is then read twice, not missed
    waiting = _waiting(settings, "episode", pl.lit(True))
    table = scan(settings, "silver/alert_episodes")
    if waiting is None:
        return _collect(_where(table, wanted))
    if table is None:
        return waiting.filter(wanted)
    # the table's rows of the waiting episodes too: a waiting row may be older than the table's
    # (upserted since), and the newest decides whether the episode is wanted
    keys = waiting["episode_id"].unique().to_list()
    rows = table.filter(wanted | pl.col("episode_id").is_in(keys)).collect()
    return _newest(rows, waiting, "episode_id", "resolved").filter(wanted)


def car_trips(settings: Settings, car_id: str, limit: int = 10) -> pl.DataFrame | None:
    """One car's trips in gold/trips, with those waiting for it in silver/pending_upserts, newest
    first (its current one, if it is driving, on top)."""
    waiting = _waiting(settings, "trip", pl.col("car_id") == car_id)  # first, as for episodes
    frame = _collect(_where(scan(settings, "gold/trips"), pl.col("car_id") == car_id))
    if waiting is not None:
        frame = waiting if frame is None else _newest(frame, waiting, "trip_id", "closed")
    return None if frame is None else frame.sort("started_at", descending=True).head(limit)


def driver_styles(settings: Settings, since: dt.datetime) -> pl.DataFrame | None:
    """gold/driver_style: each car's latest scored window among those ending at or after ``since``."""
    frame = _where(
        scan(settings, "gold/driver_style"), pl.col("window_end") >= since.astimezone(UTC).replace(tzinfo=None)
    )
    return None if frame is None else frame.sort("window_end").group_by("car_id").last().collect()


def car_maintenance(settings: Settings, car_id: str) -> pl.DataFrame | None:
    """gold/maintenance's row for one car (wear, service, fuel)."""
    return _collect(_where(scan(settings, "gold/maintenance"), pl.col("car_id") == car_id))


def overheat_warnings(settings: Settings, car_id: str, since: dt.datetime) -> pl.DataFrame | None:
    """gold/overheat_warnings: one car's warned reports since ``since``, oldest first."""
    since_ms = int(since.timestamp() * 1000)
    frame = _where(
        scan(settings, "gold/overheat_warnings"), (pl.col("event_time") >= since_ms) & (pl.col("car_id") == car_id)
    )
    return _collect(None if frame is None else frame.sort("event_time"))


def latest_quality_run(settings: Settings) -> pl.DataFrame | None:
    """gold/dq_results: the rows of the newest data-quality run (None before the first run)."""
    frame = scan(settings, "gold/dq_results")
    if frame is None:
        return None
    # by run_id, not run_at: Delta's file statistics keep timestamps to the millisecond, so an equality
    # on a microsecond run_at would skip the very file that holds it
    newest = frame.select(pl.col("run_id").sort_by("run_at").last()).collect().item()
    return None if newest is None else frame.filter(pl.col("run_id") == newest).collect()


def quality_hold(settings: Settings) -> dict[str, Any] | None:
    """The data-quality marker (``_quality/hold.json``: the tables failing their critical
    expectations, :mod:`fleetstream.quality.hold`), or None when no table fails."""
    import json

    from fleetstream.quality.hold import HOLD_FILE

    root = settings.lake.root
    if "://" not in root or root.startswith("file:"):
        path = Path(root.removeprefix("file:")) / HOLD_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    from botocore.exceptions import ClientError

    from fleetstream.reference.publish import read as read_object

    try:
        loaded: dict[str, Any] = json.loads(read_object(settings, root, HOLD_FILE))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return loaded


def _where(frame: pl.LazyFrame | None, predicate: pl.Expr) -> pl.LazyFrame | None:
    return None if frame is None else frame.filter(predicate)
