"""Silver: parse, validate, enrich and deduplicate bronze rows; rejected rows to the quarantine.

:func:`silver_batch` turns one batch of bronze rows into named frames (:class:`SilverBatch`); the
writer writes them. Every bronze row ends in exactly one of ``silver`` (the first copy of a valid
event), ``quarantine`` (rejected, with a reason code) or ``duplicates`` (a later copy of an event).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fleetstream import schema
from fleetstream.pipeline.bronze import BRONZE_COLUMNS
from fleetstream.pipeline.enrich import Reference, enrich
from fleetstream.pipeline.gold import STATE_COLUMNS
from fleetstream.pipeline.runtime import with_values
from fleetstream.pipeline.validate import parse_telemetry
from fleetstream.pipeline.writer import arrow_frame

if TYPE_CHECKING:
    import pyarrow as pa

SILVER_COLUMNS = (
    *schema.FIELD_NAMES,
    "event_ts",
    "event_date",
    "model_id",
    "model",
    "color_id",
    "color",
    "driver_profile",
    "year",
    "expected_gear",
    "zone_id",
    "zone_limit",
    "kafka_partition",
    "kafka_offset",
    "kafka_ts",
    "ingest_time",
    "silver_batch",  # the micro-batch that wrote the row: lets a retried batch decide as the first try did
)
QUARANTINE_COLUMNS = (
    "reason",
    "reason_detail",
    "raw",
    "event_id",
    "car_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_ts",
    "ingest_time",
    "quarantine_date",
)
COPY_KEYS = ("kafka_partition", "kafka_offset")  # a Kafka record's coordinates: they name one copy


def bronze_for_parsing(bronze: DataFrame) -> DataFrame:
    """The columns validation works on: the payload as text and the send time in milliseconds."""
    return bronze.withColumn("raw", F.col("value").cast("string")).withColumn(
        "kafka_ts_ms", F.unix_millis(F.col("kafka_ts"))
    )


def with_event_time(df: DataFrame) -> DataFrame:
    return df.withColumn("event_ts", F.timestamp_millis(F.col("event_time"))).withColumn(
        "event_date", F.to_date(F.col("event_ts"))
    )


def parse_bronze(bronze: DataFrame) -> DataFrame:
    """Parse and validate bronze rows: every row stays, ``reason`` is null on the good ones."""
    return with_event_time(parse_telemetry(bronze_for_parsing(bronze)))


def check_telemetry(bronze: DataFrame, reference: Reference) -> DataFrame:
    """Parse, validate and enrich bronze rows: every row stays, ``reason`` is null on the good ones."""
    return enrich(parse_bronze(bronze), reference)


def later_copies(valid: DataFrame, seen: DataFrame | None = None) -> DataFrame:
    """The Kafka coordinates (``COPY_KEYS``) of every copy of an event but the first (by partition and
    offset), and of every copy of an event_id already in ``seen`` (a frame with an ``event_id`` column).

    Only three narrow columns are read and aggregated, never the batch's wide rows. There are at most
    as many copies as rows in the batch, and usually a few.
    """
    keys = valid.select("event_id", *COPY_KEYS)
    first = F.min(F.struct(*COPY_KEYS))
    repeated = keys.groupBy("event_id").agg(F.count(F.lit(1)).alias("_n"), first.alias("_first")).where("_n > 1")
    copies = (
        keys.join(F.broadcast(repeated.drop("_n")), "event_id")
        .where(F.struct(*COPY_KEYS) != F.col("_first"))
        .select(*COPY_KEYS)
    )
    if seen is not None:
        known = F.broadcast(known_ids(keys, seen))
        copies = copies.unionByName(keys.join(known, "event_id", "left_semi").select(*COPY_KEYS))
    return copies.distinct()


def known_ids(rows: DataFrame, seen: DataFrame) -> DataFrame:
    """The distinct event_ids of ``rows`` that ``seen`` holds.

    Only the batch's own ids are looked up: the window of silver can hold millions of ids, the
    batch a few thousand, so the batch's side is broadcast and the window's side only scanned.
    """
    ids = F.broadcast(rows.select("event_id").distinct())
    return seen.select("event_id").join(ids, "event_id", "left_semi").distinct()


def later_copies_local(keys: pa.Table, known: pa.Array) -> pa.Table:
    """:func:`later_copies` on the driver, for a small batch's ``keys`` (``event_id`` and
    ``COPY_KEYS``) and the ids silver already holds among them (``known``): the coordinates of every
    copy but the first by partition and offset, and of every copy of a known id. A Spark job or
    two fewer per batch than the joins and aggregations of :func:`later_copies`.

    >>> import pyarrow as pa
    >>> keys = pa.table({"event_id": ["a", "a", "a", "b", "c"], "kafka_partition": [1, 0, 0, 2, 0],
    ...                  "kafka_offset": [9, 50, 7, 1, 3]})
    >>> later_copies_local(keys, pa.array([], pa.string())).to_pydict()
    {'kafka_partition': [0, 1], 'kafka_offset': [50, 9]}
    >>> later_copies_local(keys, pa.array(["c"])).to_pydict()
    {'kafka_partition': [0, 1, 0], 'kafka_offset': [50, 9, 3]}

    A row at its id's first copy's own coordinates is not a later copy, as in :func:`later_copies`
    (one topic: coordinates name one record):

    >>> keys = pa.table({"event_id": ["a", "a", "a", "a"], "kafka_partition": [0, 0, 0, 0],
    ...                  "kafka_offset": [7, 7, 9, 9]})
    >>> later_copies_local(keys, pa.array([], pa.string())).to_pydict()
    {'kafka_partition': [0, 0], 'kafka_offset': [9, 9]}
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ordered = keys.sort_by([("event_id", "ascending"), *((key, "ascending") for key in COPY_KEYS)])
    ids = ordered["event_id"].combine_chunks()
    n = ordered.num_rows
    if n < 2:
        repeat = pa.array([False] * n)
    else:  # a row of the same id as the row before, at other coordinates than its id's first copy
        same = pa.concat_arrays([pa.array([False]), pc.fill_null(pc.equal(ids.slice(1), ids.slice(0, n - 1)), False)])
        moved = pa.array([False] * n)
        for key in COPY_KEYS:
            column = ordered[key].combine_chunks()
            first = pc.fill_null_forward(pc.if_else(same, pa.nulls(n, column.type), column))  # the id's first copy's
            moved = pc.or_(moved, pc.not_equal(column, first))
        repeat = pc.and_(same, moved)
    later = pc.or_(repeat, pc.is_in(ids, value_set=known.cast(ids.type))) if len(known) else repeat
    return ordered.filter(later).select(list(COPY_KEYS))


def split_copies(valid: DataFrame, copies: DataFrame) -> tuple[DataFrame, DataFrame]:
    """``valid`` split into first copies and later copies by ``later_copies``' coordinates (broadcast)."""
    flagged = F.broadcast(copies.select(*COPY_KEYS))
    return valid.join(flagged, list(COPY_KEYS), "left_anti"), valid.join(flagged, list(COPY_KEYS), "left_semi")


def quarantine_rows(rejected: DataFrame) -> DataFrame:
    return rejected.withColumn("quarantine_date", F.to_date(F.col("ingest_time"))).select(*QUARANTINE_COLUMNS)


def duplicate_rows(later_copies: DataFrame) -> DataFrame:
    """What silver/duplicates keeps of a later copy of an event: which one it was and where it came from."""
    return later_copies.select("event_id", "car_id", "kafka_partition", "kafka_offset", "kafka_ts", "ingest_time")


def dlq_messages(quarantined: DataFrame, topic: str) -> DataFrame:
    """Kafka records for sensors-dlq: key = car_id (when known), value = reason, detail, raw payload."""
    return quarantined.select(
        F.lit(topic).alias("topic"),
        F.col("car_id").alias("key"),
        F.to_json(
            F.struct("reason", "reason_detail", "raw", "kafka_topic", "kafka_partition", "kafka_offset", "kafka_ts")
        ).alias("value"),
    )


def enriched_messages(silver: DataFrame, topic: str) -> DataFrame:
    """Kafka records for samples-enriched: the silver row as JSON, keyed by car_id."""
    internal = ("kafka_partition", "kafka_offset", "kafka_ts", "ingest_time", "silver_batch")
    keep = [c for c in SILVER_COLUMNS if c not in internal]
    return silver.select(
        F.lit(topic).alias("topic"), F.col("car_id").alias("key"), F.to_json(F.struct(*keep)).alias("value")
    )


@dataclass(frozen=True)
class SilverBatch:
    """What silver makes of one batch of bronze rows; a frame is None when it has no rows."""

    bronze: DataFrame | None  # the batch's bronze rows, when asked for (read from the same materialised rows)
    silver: DataFrame | None  # first copies of valid events, SILVER_COLUMNS
    quarantine: DataFrame | None  # rejected rows, QUARANTINE_COLUMNS
    duplicates: DataFrame | None  # later copies
    #: the valid events' event_time range (ms), None when there is no valid row
    event_range: tuple[int, int] | None
    rows: int = 0  # bronze rows in the batch
    #: the first copies' event_id and event_time on the driver, when the batch was deduplicated there
    first_ids: pa.Table | None = None
    #: the same rows' ``car_id``, ``gold.STATE_COLUMNS`` (what gold's car state takes from them) and
    #: ``oil_temp`` (with the coolant, the overheat trends' readings)
    first_state: pa.Table | None = None
    #: the event_ids of the same rows on which a rule fires (``fires``), when asked for
    fired_ids: pa.Array | None = None

    @property
    def empty(self) -> bool:
        return self.silver is None and self.quarantine is None and self.duplicates is None


#: (lowest, highest event_time in ms of a batch's valid rows) -> the event_ids silver already holds
#: near them, or None when it holds none
Seen = Callable[[int, int], DataFrame | None]
#: the same for a small batch, on the driver: (lowest, highest event_time, the batch's valid event_ids)
#: -> those of them silver holds near those times, or None when the driver cannot tell (then ``Seen``)
Known = Callable[[int, int, "pa.Array"], "pa.Array | None"]


def silver_batch(
    parsed: DataFrame,
    reference: Reference,
    seen: Seen,
    batch_id: int,
    bronze: bool = False,
    small: int = 0,
    mark: Callable[[str], None] = lambda step: None,
    known: Known | None = None,
    fires: Column | None = None,
) -> SilverBatch:
    """Enrich and deduplicate one batch of parsed bronze rows (:func:`parse_bronze`); with ``bronze``,
    also return the batch's bronze rows.

    The checked rows are materialised once (lineage cut), so that each action below plans a small
    tree and the source is read once. The payload is kept once: as bytes for bronze (when asked for),
    and as text only where the quarantine needs it (rejected rows).

    ``small``: a batch of at most this many rows is deduplicated on the driver (its ids, offsets
    and event times fetched in one job: :func:`later_copies_local`); a larger one, or any with 0,
    by Spark's joins (:func:`later_copies`). The two give the same frames. A small batch asks
    ``known`` first, when given, which ids silver holds (no Spark job), then ``seen``. The same job
    fetches the columns of gold's car state: a small batch's first copies come back with them
    (``first_state``), and gold updates the cars' state on the driver. With ``fires`` (a boolean
    column over silver rows: :func:`fleetstream.rules.engine.fires`), it also fetches whether a rule
    fires on each valid row (``fired_ids``): a batch on which none fires needs no alerts job.

    ``mark`` is called with each step's name when it ends (the batch's step log).
    """
    checked = enrich(parsed, reference)
    checked = checked.withColumn("raw", F.when(F.col("reason").isNotNull(), F.col("raw")))
    checked = (checked if bronze else checked.drop("value")).localCheckpoint(eager=True)
    mark("silver: checked")
    bronze_rows = checked.select(*BRONZE_COLUMNS) if bronze else None
    # Valid rows keep silver's columns only: every later step reads them, some several times.
    valid = checked.where(F.col("reason").isNull()).select(*[c for c in SILVER_COLUMNS if c != "silver_batch"])
    keys = _keys_if_small(checked, small, fires)
    mark("silver: keys")
    if keys is not None:
        import pyarrow.compute as pc

        rows, ok = keys.num_rows, keys["ok"]
        rejected = rows - pc.sum(ok).as_py() if rows else 0
        times = pc.min_max(pc.filter(keys["event_time"], ok)) if rows else None
        lo, hi = (times["min"].as_py(), times["max"].as_py()) if times is not None else (None, None)
    else:
        stats = checked.agg(
            F.min(F.when(F.col("reason").isNull(), F.col("event_time"))).alias("lo"),
            F.max(F.when(F.col("reason").isNull(), F.col("event_time"))).alias("hi"),
            F.count("reason").alias("rejected"),
            F.count(F.lit(1)).alias("rows"),
        ).first()
        assert stats is not None  # an aggregate without grouping has one row
        rows, rejected, lo, hi = int(stats["rows"]), int(stats["rejected"]), stats["lo"], stats["hi"]
    quarantine = quarantine_rows(checked.where(F.col("reason").isNotNull())) if rejected else None
    if lo is None or hi is None:
        return SilverBatch(bronze_rows, None, quarantine, None, None, rows)
    lo, hi = int(lo), int(hi)
    first_ids, first_state, fired_ids = None, None, None
    if keys is not None:
        ok = keys.filter(keys["ok"])
        held = known(lo, hi, ok["event_id"].combine_chunks()) if known is not None else None
        held = held if held is not None else _known(valid, seen(lo, hi))
        mark("silver: known ids")
        copies = later_copies_local(ok, held)
        # (a local frame of the few copies: split_copies broadcasts it)
        copies_at = copies_frame(checked, copies) if copies.num_rows else None
        firsts = ok.join(copies, list(COPY_KEYS), join_type="left anti") if copies.num_rows else ok
        first_ids = firsts.select(["event_id", "event_time"])
        first_state = firsts.select(["car_id", *STATE_COLUMNS, "oil_temp"])
        if fires is not None:
            fired_ids = firsts.filter(firsts["fires"])["event_id"].combine_chunks()
    else:  # only the copies' coordinates are materialised; the rows are read from ``checked`` again
        copies_at = later_copies(valid, seen(lo, hi)).localCheckpoint(eager=True)
        copies_at = copies_at if copies_at.count() else None
    first, later = split_copies(valid, copies_at) if copies_at is not None else (valid, None)
    first = with_values(first, silver_batch=batch_id).select(*SILVER_COLUMNS)
    duplicates = duplicate_rows(later) if later is not None else None
    return SilverBatch(bronze_rows, first, quarantine, duplicates, (lo, hi), rows, first_ids, first_state, fired_ids)


def _keys_if_small(checked: DataFrame, small: int, fires: Column | None = None) -> pa.Table | None:
    """A batch's ids, Kafka coordinates, event times, validity (``ok``), the columns of gold's car
    state and, with ``fires``, whether a rule fires on a valid row (``fires``) on the driver, when it
    has at most ``small`` rows (one job, at most ``small + 1`` rows fetched); else None."""
    if small <= 0:
        return None
    state = [c for c in ("car_id", *STATE_COLUMNS, "oil_temp") if c not in ("event_id", "event_time")]
    ok = F.col("reason").isNull()
    fired = (
        [] if fires is None else [F.when(ok, fires).otherwise(F.lit(False)).alias("fires")]
    )  # (rules: valid rows only)
    keys = (
        checked.select("event_id", *COPY_KEYS, "event_time", ok.alias("ok"), *state, *fired).limit(small + 1).toArrow()
    )
    return keys if keys.num_rows <= small else None


def _known(valid: DataFrame, seen: DataFrame | None) -> pa.Array:
    """:func:`known_ids` on the driver (one job)."""
    import pyarrow as pa

    if seen is None:
        return pa.array([], pa.string())
    return known_ids(valid, seen).toArrow()["event_id"].combine_chunks().cast(pa.string())


def copies_frame(checked: DataFrame, copies: pa.Table) -> DataFrame:
    """Copies' coordinates (:func:`later_copies_local`) as a Spark frame of ``checked``'s types,
    handed to the JVM as Arrow: a frame of a Python list would run Python worker tasks in every job
    over it (see :func:`fleetstream.pipeline.writer.local_frame`)."""
    return arrow_frame(checked.sparkSession, copies, checked.select(*COPY_KEYS).schema)
