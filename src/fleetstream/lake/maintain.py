"""`fleetstream lake maintain`: compaction, Z-order of closed days and VACUUM, safe beside a running stream.

The stream commits every table every few seconds, so the tables fill with small files. Per table:

1. **Compaction** (Delta's ``OPTIMIZE``, bin-packing): files under :data:`SMALL_BYTES` are rewritten
   into larger ones, per partition. Its commit changes no data (``dataChange=false``): the stream's
   appends go on beside it (no conflict), its upserts retry on a conflict (the pipeline's writer),
   and streaming readers of the table skip the commit. Tables rewritten whole every batch
   (``gold/car_state``, ``gold/maintenance``: one file each) are not compacted.
2. **Z-order** where readers filter on two columns at once (``Table.zorder``: silver's car and
   time): a day partition is Z-ordered once, after the day has closed (before the compaction, which
   then leaves it alone); the open day is only compacted.
3. **VACUUM**: deletes the files compaction and overwrites removed, once older than the retention.
   The retention is refused when it is shorter than safe (:func:`safe_hours`): a streaming query
   that reads a table (the episodes query reads silver) must still find every file of
   the versions it has not read, and a batch reads a pinned version for minutes at most.

Delta's own housekeeping goes on as configured per table: a checkpoint every 50 commits (the
pipeline's writer), and the log entries older than ``delta.logRetentionDuration`` (30 days) removed
at each checkpoint. Before and after: files, bytes and small files per table, read with delta-rs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.lake.tables import TABLES

if TYPE_CHECKING:
    import polars as pl
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
MIB = 1 << 20
#: files under this size are compacted (Delta's minFileSize for OPTIMIZE; its default, 1 GiB, would
#: rewrite a day's whole partition at every run)
SMALL_BYTES = 32 * MIB
#: the shortest retention ever accepted: a batch reads a version it pinned for minutes at most
FLOOR_HOURS = 1.0
#: added to the age of the oldest version a streaming query still has to read
MARGIN_HOURS = 1.0
DEFAULT_RETAIN_HOURS = 168.0
LISTING_TASKS = 8  # Delta's default (delta.deletedFileRetentionDuration: 7 days)


@dataclass(frozen=True)
class Files:
    """A table's data files at one version."""

    files: int
    bytes: int
    small: int  # files under SMALL_BYTES
    #: partition values (as text; "" when unpartitioned) that hold two small files or more: what
    #: compaction rewrites
    compactable: tuple[str, ...] = ()

    @classmethod
    def of(cls, sizes: Iterable[tuple[str, int]]) -> Files:
        """From (partition, size in bytes) of each file.

        >>> f = Files.of([("2026-01-01", 10), ("2026-01-01", 20), ("2026-01-02", 5), ("2026-01-02", 40 * MIB)])
        >>> f.files, f.small, f.compactable
        (4, 3, ('2026-01-01',))
        """
        rows = list(sizes)
        small: dict[str, int] = {}
        for part, size in rows:
            if size < SMALL_BYTES:
                small[part] = small.get(part, 0) + 1
        return cls(
            files=len(rows),
            bytes=sum(size for _, size in rows),
            small=sum(small.values()),
            compactable=tuple(sorted(p for p, n in small.items() if n >= 2)),
        )


@dataclass
class Outcome:
    """What maintenance did to one table (or would do, in a dry run)."""

    table: str
    before: Files
    after: Files | None = None
    compacted: bool = False
    zordered: list[str] = field(default_factory=list)  # the day partitions Z-ordered
    vacuumed: int = 0  # files deleted (a dry run: files that would be)
    seconds: float = 0.0


def safe_hours(needed: dict[str, int], commit_times_ms: dict[str, dict[int, int]], now_ms: int) -> dict[str, float]:
    """The shortest safe retention per table id: the age of the oldest version a streaming query
    still has to read, plus a margin, and never under the floor.

    ``needed``: table id -> the oldest version any checkpoint still reads; ``commit_times_ms``:
    table id -> version -> commit time (a version whose entry has expired from the log: the oldest
    one known stands for it).

    >>> hour = 3_600_000
    >>> safe_hours({"t": 7}, {"t": {6: 0, 7: 5 * hour}}, now_ms=30 * hour)
    {'t': 26.0}
    >>> safe_hours({"t": 7}, {"t": {7: 30 * hour - 60_000}}, now_ms=30 * hour)  # a minute old
    {'t': 1.02}
    >>> safe_hours({"t": 7}, {"t": {7: 31 * hour}}, now_ms=30 * hour)  # a clock behind the log: the floor
    {'t': 1.0}
    """
    out = {}
    for table, version in needed.items():
        times = commit_times_ms.get(table, {})
        known = [t for v, t in times.items() if v <= version] or list(times.values()) or [now_ms]
        age_h = (now_ms - max(known)) / 3_600_000
        out[table] = max(FLOOR_HOURS, round(age_h + MARGIN_HOURS, 2))
    return out


def reservoir_versions(lines: Iterable[tuple[str, int, str]]) -> dict[str, int]:
    """The oldest Delta version each streaming query still reads, per table id, from the lines of
    its checkpoints' offset files: (checkpoint, batch, line). A query resumes from its last batch's
    start or end, so the older of its two newest batches counts. The checkpoints an earlier version's
    stateful queries left (``RETIRED``) count only until the episodes query's own has been written:
    nothing resumes from them after that.

    >>> line = lambda v: json.dumps({"sourceVersion": 1, "reservoirId": "t", "reservoirVersion": v, "index": -1})
    >>> reservoir_versions([("q", 1, line(3)), ("q", 2, line(5)), ("q", 3, line(9)), ("r", 0, "{}")])
    {'t': 5}
    >>> reservoir_versions([("offline", 0, line(2)), ("q", 3, line(9))])
    {'t': 2}
    >>> reservoir_versions([("offline", 0, line(2)), ("q", 3, line(9)), ("episodes-v4", 0, line(8))])
    {'t': 8}
    """
    from fleetstream.pipeline.episodes import RETIRED, STATE_LAYOUTS

    lines = list(lines)
    retired = set(RETIRED) if any(c == STATE_LAYOUTS[-1] for c, _, _ in lines) else set()
    batches: dict[str, list[tuple[int, str, int]]] = {}
    for checkpoint, batch, text in lines:
        if checkpoint in retired:
            continue
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if isinstance(entry, dict) and "reservoirId" in entry and "reservoirVersion" in entry:
            batches.setdefault(checkpoint, []).append((batch, entry["reservoirId"], int(entry["reservoirVersion"])))
    needed: dict[str, int] = {}
    for entries in batches.values():
        newest = sorted({b for b, _, _ in entries})[-2:]
        for batch, table, version in entries:
            if batch in newest:
                needed[table] = min(version, needed.get(table, version))
    return needed


def files_of(settings: Settings, name: str) -> Files | None:
    """A table's files now (delta-rs), or None when the table is not there."""
    adds = _adds(settings, name)
    if adds is None:
        return None
    part = TABLES[name].partition
    parts = adds[f"partition.{part}"].to_list() if part else [""] * adds.height
    return Files.of(zip((str(p) for p in parts), adds["size_bytes"].to_list(), strict=True))


def _adds(settings: Settings, name: str) -> pl.DataFrame | None:
    """A table's live files (path, size, partition values, statistics), or None when it is not there."""
    import polars as pl
    from deltalake import DeltaTable

    from fleetstream.lake.read import storage_options, table_uri

    uri, options = table_uri(settings, name), storage_options(settings)
    if not DeltaTable.is_deltatable(uri, options):
        return None
    return pl.DataFrame(DeltaTable(uri, storage_options=options).get_add_actions(flatten=True))


def _checkpoint_lines(spark: SparkSession, root: str) -> list[tuple[str, int, str]]:
    """(checkpoint, batch, line) of the two newest offset files of every checkpoint under the lake,
    read through Hadoop's file system (a folder or s3a://). A running query writes and purges its
    offset files meanwhile: one that is gone when read is skipped."""
    from fleetstream.pipeline.writer import Lake

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop = jvm.org.apache.hadoop.fs
    base = hadoop.Path(Lake(root).checkpoint(""))
    fs = base.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(base):
        return []
    out = []
    for query in fs.listStatus(base):
        offsets = hadoop.Path(query.getPath(), "offsets")
        if not query.isDirectory() or not fs.exists(offsets):
            continue
        batches = sorted(int(f.getPath().getName()) for f in fs.listStatus(offsets) if f.getPath().getName().isdigit())
        for batch in batches[-2:]:
            try:
                stream = fs.open(hadoop.Path(offsets, str(batch)))
            except Exception as exc:  # purged since the listing
                if "FileNotFound" in str(exc):
                    continue
                raise
            try:
                text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
            finally:
                stream.close()
            out += [(query.getPath().getName(), batch, line) for line in str(text).splitlines()]
    return out


def retention_floor(spark: SparkSession, settings: Settings, names: Iterable[str]) -> dict[str, float]:
    """The shortest safe retention in hours for each table (:func:`safe_hours`)."""
    from delta.tables import DeltaTable

    root = settings.lake.root.rstrip("/")
    needed = reservoir_versions(_checkpoint_lines(spark, root))
    ids: dict[str, str] = {}
    times: dict[str, dict[int, int]] = {}
    for name in names:
        path = f"{root}/{name}"
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
        assert detail is not None
        table_id = str(detail["id"])
        ids[name] = table_id
        if table_id in needed:
            history = DeltaTable.forPath(spark, path).history().select("version", "timestamp").collect()
            times[table_id] = {int(r["version"]): int(r["timestamp"].timestamp() * 1000) for r in history}
    floors = safe_hours(needed, times, int(time.time() * 1000))
    return {name: floors.get(ids[name], FLOOR_HOURS) for name in names}


def _zordered_days(spark: SparkSession, path: str, partition: str) -> set[str]:
    """The day partitions an earlier run Z-ordered (from the table's history)."""
    from delta.tables import DeltaTable

    done = set()
    history = DeltaTable.forPath(spark, path).history().where("operation = 'OPTIMIZE'")
    for row in history.select("operationParameters").collect():
        params = row["operationParameters"] or {}
        if params.get("zOrderBy", "[]") not in ("[]", ""):
            for predicate in json.loads(params.get("predicate", "[]")):
                if partition in predicate:
                    done.update(re.findall(r"\d{4}-\d{2}-\d{2}", predicate))
    return done


def maintain(
    settings: Settings,
    spark: SparkSession,
    retain_hours: float = DEFAULT_RETAIN_HOURS,
    dry_run: bool = False,
    tables: Iterable[str] | None = None,
    say: Callable[[str], None] = log.info,
    floor: Callable[[SparkSession, Settings, list[str]], dict[str, float]] = retention_floor,
) -> list[Outcome]:
    """Maintain the lake's tables (all of them, or ``tables``); returns what was done per table.

    Refuses, before touching anything, a retention shorter than safe for any table."""
    chosen = list(tables) if tables is not None else list(TABLES)
    unknown = [n for n in chosen if n not in TABLES]
    if unknown:
        raise FleetstreamError(f"unknown tables {unknown}; the lake's tables are {', '.join(TABLES)}")
    present = {n: f for n in chosen if (f := files_of(settings, n)) is not None}
    if not present:
        raise FleetstreamError(f"There are no tables under {settings.lake.root}: nothing to maintain.")
    floors = floor(spark, settings, list(present))
    short = {n: h for n, h in floors.items() if retain_hours < h}
    if short:
        worst = max(short, key=lambda n: short[n])
        raise FleetstreamError(
            f"A retention of {retain_hours:g} h is shorter than safe for {', '.join(sorted(short))}: "
            f"{worst} needs at least {short[worst]:g} h (a streaming query still reads versions that old, "
            f"or a batch may read a pinned version). Nothing was changed."
        )
    root = settings.lake.root.rstrip("/")
    spark.conf.set("spark.databricks.delta.optimize.minFileSize", str(SMALL_BYTES))
    # the safety check above replaces Delta's fixed 7-day one
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    # Delta 4 ignores RETAIN n HOURS (but 0) by default, and uses the table's
    # delta.deletedFileRetentionDuration (7 days) instead: the retention asked for is the one applied
    spark.conf.set("spark.databricks.delta.vacuum.retentionWindowIgnore.enabled", "false")
    # VACUUM lists a table's folders in a Spark job of this many tasks (default 10,000: a minute of
    # task overhead per table on two cores)
    spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(LISTING_TASKS))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    outcomes = []
    for name, before in present.items():
        began = time.monotonic()
        table, path = TABLES[name], f"{root}/{name}"
        outcome = Outcome(name, before)
        target = f"delta.`{path}`"
        if table.zorder and table.partition:
            done = _zordered_days(spark, path, table.partition)
            closed = [p for p in sorted(_partitions(settings, name)) if p < today]
            outcome.zordered = [p for p in closed if p not in done]
            if not dry_run:
                for day in outcome.zordered:
                    spark.sql(
                        f"OPTIMIZE {target} WHERE {table.partition} = '{day}' ZORDER BY ({', '.join(table.zorder)})"
                    ).collect()
        if table.mode in ("append", "merge") and before.compactable:  # (a pending table's writer empties it)
            outcome.compacted = True
            if not dry_run:
                spark.sql(f"OPTIMIZE {target}").collect()
        # Delta rounds the hours to a whole number: rounded up, never shorter than asked
        vacuum = f"VACUUM {target} RETAIN {math.ceil(retain_hours)} HOURS"
        outcome.vacuumed = spark.sql(f"{vacuum} DRY RUN").count()  # (lists the files; deletes nothing)
        if not dry_run:
            if outcome.vacuumed:
                spark.sql(vacuum).collect()
            outcome.after = files_of(settings, name)
        outcome.seconds = time.monotonic() - began
        say(describe(outcome, dry_run))
        outcomes.append(outcome)
    return outcomes


def _partitions(settings: Settings, name: str) -> set[str]:
    """The partition values a table holds now."""
    part = TABLES[name].partition
    adds = _adds(settings, name) if part else None
    return set() if adds is None else {str(p) for p in adds[f"partition.{part}"].to_list()}


def describe(outcome: Outcome, dry_run: bool = False) -> str:
    """One line per table.

    >>> describe(Outcome("silver/telemetry", Files(120, 50 * MIB, 118, ("d",)), Files(3, 48 * MIB, 2), True, [], 4))
    'silver/telemetry: 120 -> 3 files, 50.0 -> 48.0 MiB, 118 -> 2 small; compacted; 4 files vacuumed'
    """
    b, a = outcome.before, outcome.after
    if dry_run or a is None:
        would = [f"would compact {b.small} small files in {len(b.compactable)} partitions"] if outcome.compacted else []
        would += [f"would Z-order {', '.join(outcome.zordered)}"] if outcome.zordered else []
        would.append(f"would vacuum {outcome.vacuumed} files")
        return f"{outcome.table}: {b.files} files, {b.bytes / MIB:.1f} MiB, {b.small} small; {'; '.join(would)}"
    done = ["compacted"] if outcome.compacted else []
    done += [f"Z-ordered {', '.join(outcome.zordered)}"] if outcome.zordered else []
    done.append(f"{outcome.vacuumed} files vacuumed")
    return (
        f"{outcome.table}: {b.files} -> {a.files} files, {b.bytes / MIB:.1f} -> {a.bytes / MIB:.1f} MiB, "
        f"{b.small} -> {a.small} small; {'; '.join(done)}"
    )
