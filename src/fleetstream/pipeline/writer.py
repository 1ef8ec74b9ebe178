"""The one place a micro-batch's outputs are written: Delta tables and Kafka records, all at once.

Exactly once on Delta: each commit carries ``fleetstream <writer> batch <id>`` as its user
metadata, followed on the next lines by the batch's ``offsets/<id>`` file from the query's
checkpoint (its input range), so that ``fleetstream lake repair`` can rebuild a torn one from any
table that holds the batch (docs/operations.md). A streaming query runs a batch again only after a
restart, and only the batch that was under way, so the writer reads each table's recent commits
once per run (a small Spark job on the log, no state reconstruction) to learn the last batch it
committed there, and skips a table that already holds the batch. Delta's own
``txnAppId``/``txnVersion`` options give the same guarantee, but Delta 4.4 answers them by
rebuilding the table's whole state at every commit, which more than tripled the CPU of a small
append (docs/benchmarks.md).

On a lake on this machine's disk, a small batch's Delta outputs are written from the driver by
delta-rs (Arrow tables: the batch's rows fetched by one job each), the same markers in their commits;
Spark writes the tables' creation, large batches, and every table of a lake elsewhere (S3, HDFS).

Kafka writes are at least once: a batch run again writes its records again, with the same ids
(``event_id``, ``alert_id``) so that consumers can drop repeats.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from fleetstream.errors import first_line
from fleetstream.lake.tables import TABLES

log = logging.getLogger(__name__)
KAFKA = "kafka"  # the output name of a batch's Kafka records (topic, key, value)
#: commits between Delta checkpoints of the pipeline's tables (Delta's default is 10): a checkpoint
#: is a Spark job over the table's state, and the pipeline commits every table every batch
CHECKPOINT_INTERVAL = 50
#: an upsert that meets another writer's commit on the same table is tried this many times
MERGE_ATTEMPTS = 5
#: one lock per table path for the upserts of this process: two MERGEs at once (two stateful
#: queries did, before the offline one joined the episodes query) make one fail on the other's
#: commit and run again whole (a second or two of CPU each time); in turn, neither is wasted. Writers in other
#: processes (the maintenance's OPTIMIZE) are still met by the retries. (A table's creation, an
#: append, is not under it: the stream creates the episode tables before their queries start.)
_UPSERT_LOCKS: dict[str, threading.Lock] = {}
_UPSERT_LOCKS_GUARD = threading.Lock()
_HISTORY = ("version", "operation", "operationParameters", "userMetadata")
_MARKER = re.compile(r"fleetstream (?P<writer>\S+) batch (?P<batch>\d+)(?:\n(?P<offsets>.*))?", re.S)


def local_frame(spark: SparkSession, rows: Sequence[Sequence[Any]], schema: str) -> DataFrame:
    """A frame of ``rows`` held in the driver (tuples in the order of ``schema``, a DDL string; a
    struct as a tuple or None), handed to the JVM as one Arrow table.

    ``spark.createDataFrame`` of a list parallelizes the pickled rows, and every job over the frame
    runs them through Python worker tasks (an identity map that re-serializes them). Each task ends
    with the worker's full ``gc.collect()`` (pyspark's daemon), over all a worker that imported
    pandas and pyarrow holds: in the quiet fleet's episodes batches, 82 to 97 % of its Python
    workers' samples (docs/benchmarks.md, Session 57). An Arrow table starts no Python task.
    """
    struct, arrow = _arrow_schema(schema)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in arrow]
    table = pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, arrow, strict=True)], schema=arrow
    )
    return spark.createDataFrame(table, struct)


def arrow_cast(table: pa.Table, struct: StructType) -> pa.Table:
    """An Arrow table as the Arrow form of ``struct``: its columns of those names cast to the
    struct's types, and a column it lacks (a table an earlier version wrote) null."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow = to_arrow_schema(struct, timezone="UTC")
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in arrow
    ]
    return pa.Table.from_arrays(columns, schema=arrow)


def arrow_frame(spark: SparkSession, table: pa.Table, struct: StructType) -> DataFrame:
    """An Arrow table held in the driver as a Spark frame of ``struct`` (:func:`arrow_cast`; no job,
    no Python task: see :func:`local_frame`)."""
    return spark.createDataFrame(arrow_cast(table, struct), struct)


def nullable(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field nullable, nested ones too, as Spark's Delta writes a table's
    schema: a column a later version adds (non-null in its rows, a literal say) must read as null in
    the files written before it, which Spark refuses for a column the table says is never null.

    >>> s = pa.schema([pa.field("a", pa.int64(), nullable=False),
    ...                pa.field("b", pa.struct([pa.field("c", pa.string(), nullable=False)]), nullable=False)])
    >>> [(f.name, f.nullable, f.type.field(0).nullable if pa.types.is_struct(f.type) else None) for f in nullable(s)]
    [('a', True, None), ('b', True, True)]
    """
    return pa.schema([pa.field(f.name, _nullable_type(f.type), True, f.metadata) for f in schema], schema.metadata)


def _nullable_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _nullable_type(f.type), True, f.metadata) for f in kind])
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = pa.field(kind.value_field.name, _nullable_type(kind.value_type), True)
        return pa.list_(item) if pa.types.is_list(kind) else pa.large_list(item)
    if pa.types.is_map(kind):  # (its keys are never null)
        return pa.map_(kind.key_type, pa.field(kind.item_field.name, _nullable_type(kind.item_type), True))
    return kind


@functools.lru_cache(maxsize=16)
def _arrow_schema(ddl: str) -> tuple[StructType, pa.Schema]:
    from pyspark.sql.pandas.types import to_arrow_schema

    struct = StructType.fromDDL(ddl)
    assert isinstance(struct, StructType), ddl
    return struct, to_arrow_schema(struct, timezone="UTC")


def marker(writer: str, batch_id: int, offsets: str | None = None) -> str:
    """The user metadata of a commit: the writer and its batch, then the batch's checkpoint
    ``offsets`` file, when known.

    >>> marker("lake", 7)
    'fleetstream lake batch 7'
    >>> marker("lake", 7, 'v1\\n{}\\n{"t":{"0":5}}').splitlines()
    ['fleetstream lake batch 7', 'v1', '{}', '{"t":{"0":5}}']
    """
    return f"fleetstream {writer} batch {batch_id}" + (f"\n{offsets}" if offsets else "")


def read_marker(text: str | None) -> tuple[str, int, str | None] | None:
    """A commit's user metadata as (writer, batch, the batch's offsets file or None); None when it
    is not a marker.

    >>> read_marker(marker("lake", 7, "v1\\n{}\\n{}"))
    ('lake', 7, 'v1\\n{}\\n{}')
    >>> read_marker("fleetstream lake batch 7"), read_marker("someone else"), read_marker(None)
    (('lake', 7, None), None, None)
    """
    found = _MARKER.fullmatch(text or "")
    return (found["writer"], int(found["batch"]), found["offsets"]) if found else None


def hadoop_path(spark: SparkSession, location: str) -> tuple[Any, Any]:
    """A location's Hadoop ``Path`` and its ``FileSystem`` (a local path or an ``s3a://`` key alike)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def read_text(spark: SparkSession, location: str) -> str | None:
    """A small file's text through Hadoop's FileSystem (a local path or ``s3a://`` alike); None when
    it is not there."""
    path, fs = hadoop_path(spark, location)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        return str(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))  # type: ignore[union-attr]
    finally:
        stream.close()


def write_text(spark: SparkSession, location: str, text: str | None) -> None:
    """Write a small file through Hadoop's FileSystem (replacing it), or remove it (``text`` None)."""
    path, fs = hadoop_path(spark, location)
    if text is None:
        fs.delete(path, False)
        return
    out = fs.create(path, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def in_effect(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The commits of a table's history (newest first: ``version``, ``operation``,
    ``operationParameters``, ``userMetadata``) whose changes the table still holds.

    A ``RESTORE`` to version V (as ``fleetstream lake repair`` does to undo a batch) undoes every
    commit after V and before itself; their markers must not count, or the batch they held would be
    skipped as "already written" when it runs again. A restore by timestamp (Delta records its
    version as "null") is not followed: the repair restores by version.

    >>> def commit(version, operation="WRITE", to=None):
    ...     return {"version": version, "operation": operation, "userMetadata": f"v{version}",
    ...             "operationParameters": {"version": str(to), "timestamp": "null"} if to is not None else {}}
    >>> [c["version"] for c in in_effect([commit(4), commit(3, "RESTORE", to=1), commit(2), commit(1), commit(0)])]
    [4, 1, 0]
    >>> [c["version"] for c in in_effect([commit(5, "RESTORE", to=3), commit(4), commit(3, "RESTORE", to=1), commit(2),
    ...                                    commit(1)])]
    [1]
    """
    kept: list[Mapping[str, Any]] = []
    below: int | None = None  # a restore seen: commits above this version are undone
    for commit in history:
        version = int(commit["version"])
        if below is not None and version > below:
            continue
        if commit["operation"] == "RESTORE":
            target = (commit["operationParameters"] or {}).get("version")
            if target not in (None, "", "null"):  # a restore by timestamp (by hand) names no version: see above
                below = int(target)
            continue
        kept.append(commit)
    return kept


def table_history(spark: SparkSession, path: str, depth: int | None = None) -> list[Mapping[str, Any]]:
    """A table's newest ``depth`` commits (all if None), newest first, as :func:`in_effect` reads them."""
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, path)
    rows = (table.history(depth) if depth else table.history()).select(*_HISTORY).collect()
    return [row.asDict() for row in rows]


def writer_history(
    spark: SparkSession, path: str, writer: str, depth: int = 20
) -> tuple[int | None, list[Mapping[str, Any]]]:
    """A table's newest version (None: no commits) and its commits in effect (:func:`in_effect`),
    newest first: the newest ``depth``, or the whole history when those hold no marker of ``writer``
    (other writers, maintenance, committed since). A writer's markers only grow, so its newest one
    in the window bounds every batch of its that the table can still be asked about."""
    for window in (depth, None):
        commits = table_history(spark, path, window)
        history = in_effect(commits)
        if window is None or len(commits) < window or last_batch([c["userMetadata"] for c in history], writer) >= 0:
            break
    return (int(commits[0]["version"]) if commits else None), history


def last_batch(metadata: list[str | None], writer: str) -> int:
    """The newest batch ``writer`` committed among commits' user metadata (newest first); -1 if none.

    >>> last_batch(["fleetstream lake batch 9", None, "fleetstream other batch 12"], "lake")
    9
    >>> last_batch([None], "lake")
    -1
    """
    for text in metadata:
        found = read_marker(text)
        if found and found[0] == writer:
            return found[1]
    return -1


@dataclass(frozen=True)
class Lake:
    """Where the tables and checkpoints live. ``bronze_root``, when set, is where bronze is read
    from instead (a replay rebuilds everything after bronze into a fresh root)."""

    root: str
    bronze_root: str | None = None

    def table(self, name: str) -> str:
        root = self.bronze_root if name.startswith("bronze/") and self.bronze_root else self.root
        return f"{root.rstrip('/')}/{name}"

    def checkpoint(self, query: str) -> str:
        return f"{self.root.rstrip('/')}/_checkpoints/{query}"


def delta_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def delta_version(spark: SparkSession, path: str) -> int:
    """A Delta table's newest version; -1 when there is no table at ``path``."""
    from delta.tables import DeltaTable

    if not delta_exists(spark, path):
        return -1
    newest = DeltaTable.forPath(spark, path).history(1).select("version").first()
    return int(newest["version"]) if newest is not None else -1


def at_once(steps: Mapping[str, Callable[[], object]]) -> dict[str, object]:
    """Run independent steps of one micro-batch (writes to different places) at the same time, and
    return each step's result by its name.

    Each step runs in a thread of its own, so Spark schedules their jobs side by side: a step's
    fixed costs (planning, a Delta commit) overlap the others' work when a core is free. The
    threads inherit the batch's Spark local properties (its job group), so stopping the query
    cancels their jobs too. Every step is waited for; then the first failure, if any, is raised,
    which fails the batch: it runs again on restart and its writes are idempotent.

    >>> at_once({"a": lambda: 1, "b": lambda: 2})
    {'a': 1, 'b': 2}
    """
    from pyspark import InheritableThread, SparkContext

    # (InheritableThread needs a SparkContext; without one there are no properties to inherit)
    thread_class = InheritableThread if SparkContext._active_spark_context is not None else threading.Thread
    results: dict[str, object] = {}
    failures: list[BaseException] = []

    def guarded(name: str, step: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                results[name] = step()
            except BaseException as exc:  # raised in the batch's thread below
                failures.append(exc)

        return run

    named = list(steps.items())
    threads = [thread_class(target=guarded(name, step), daemon=True) for name, step in named[1:]]
    for thread in threads:
        thread.start()
    if named:
        guarded(*named[0])()  # the first in this thread
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return {name: results[name] for name, _ in named}


def upsert_lock(path: str) -> threading.Lock:
    """The lock this process's upserts into the table at ``path`` take (one per path).

    >>> upsert_lock("/lake/silver/alert_episodes") is upsert_lock("/lake/silver/alert_episodes")
    True
    >>> upsert_lock("/lake/silver/alert_episodes") is upsert_lock("/lake/gold/trips")
    False
    """
    with _UPSERT_LOCKS_GUARD:
        return _UPSERT_LOCKS.setdefault(path, threading.Lock())


class Writer:
    """Writes one query's batches: ``write(batch_id, {table name or KAFKA: frame})``."""

    def __init__(
        self, spark: SparkSession, lake: Lake, writer: str, kafka_options: Mapping[str, str], from_driver: bool = True
    ) -> None:
        """``from_driver``: tables on this machine's disk may be written from the driver by delta-rs
        (:meth:`write`); False: Spark writes every table."""
        self.spark, self.lake, self.writer, self.from_driver = spark, lake, writer, from_driver
        self.kafka_options = dict(kafka_options)
        self._committed: dict[str, int] = {}  # table -> the last batch this writer committed there
        self._exists: set[str] = set()  # tables known to exist
        self._from_driver_done: set[str] = set()  # tables this writer has rewritten from the driver
        self._by_spark: set[str] = set()  # tables delta-rs could not rewrite: Spark's for the run
        self._local: dict[str, str | None] = {}  # a table's path on this machine's disk (None: elsewhere)
        self._offsets: tuple[int, str | None] = (-1, None)  # the last batch's id and its offsets file
        self._lock = threading.Lock()

    def committed(self, table: str) -> int:
        """The last batch this writer committed to ``table`` (-1: none; looked up once per run)."""
        with self._lock:
            known = self._committed.get(table)
        if known is not None:
            return known
        path = self.lake.table(table)
        found = -1
        exists = delta_exists(self.spark, path)
        if exists:
            _, history = writer_history(self.spark, path, self.writer)
            found = last_batch([c["userMetadata"] for c in history], self.writer)
        with self._lock:
            self._committed[table] = found
            if exists:
                self._exists.add(table)
        return found

    def recent(self, table: str) -> dict[int, int]:
        """The batches this writer committed to ``table`` among its newest commits in effect (its
        whole history when those hold none of its), each with the version it was committed as."""
        path = self.lake.table(table)
        if not delta_exists(self.spark, path):
            return {}
        _, history = writer_history(self.spark, path, self.writer)
        found: dict[int, int] = {}
        for commit in history:  # (newest first)
            mark = read_marker(commit["userMetadata"])
            if mark is not None and mark[0] == self.writer:
                found.setdefault(mark[1], int(commit["version"]))
        return found

    def version_of(self, table: str, batch_id: int) -> int | None:
        """The version of ``table`` this writer committed ``batch_id`` as (None: not in its log)."""
        recent = self.recent(table).get(batch_id)
        if recent is not None:
            return recent
        rows = in_effect(table_history(self.spark, self.lake.table(table)))
        want = (self.writer, batch_id)
        return next((int(r["version"]) for r in rows if (read_marker(r["userMetadata"]) or ())[:2] == want), None)

    def write(
        self, batch_id: int, outputs: Mapping[str, DataFrame | pa.Table | None], small: bool = False
    ) -> list[str]:
        """Write every output that is not None, at once; returns the names written (a table that
        already holds this batch is not written again). An output may be an Arrow table the driver
        holds (of the table's columns, :func:`arrow_cast`): a table rewritten whole is then written
        from the driver (:meth:`_from_driver`). ``small``: the batch's rows fit the driver, so the
        tables it appends to are appended to from there too (each output fetched by one job), on a
        lake on this machine's disk, unless the writer was made with ``from_driver`` False."""
        steps: dict[str, Callable[[], object]] = {}
        mark = self._marker(batch_id) if any(f is not None and n != KAFKA for n, f in outputs.items()) else ""
        for name, frame in outputs.items():
            if frame is None:
                continue
            if name == KAFKA:
                steps[name] = lambda f=frame: self._kafka(f)  # type: ignore[misc]
            else:
                steps[name] = lambda n=name, f=frame: self._delta(n, f, batch_id, mark, small)  # type: ignore[misc]
        done = at_once(steps)
        return [name for name, wrote in done.items() if wrote is not False]

    def _marker(self, batch_id: int) -> str:
        """This batch's commit marker, with the batch's ``offsets`` file from the query's checkpoint
        (read once per batch; a writer without a checkpoint records the batch alone)."""
        if self._offsets[0] != batch_id:
            try:
                text = read_text(self.spark, f"{self.lake.checkpoint(self.writer)}/offsets/{batch_id}")
            except Exception as exc:  # the marker still makes the batch exactly once: go on without the range
                log.warning("%s: batch %d's offsets file not read (%s); its commits record the batch alone",
                            self.writer, batch_id, first_line(exc))  # fmt: skip
                text = None
            self._offsets = (batch_id, text.strip() if text else None)
        return marker(self.writer, batch_id, self._offsets[1])

    def _kafka(self, frame: DataFrame) -> None:
        frame.write.format("kafka").options(**self.kafka_options).save()

    def _delta(self, name: str, frame: DataFrame | pa.Table, batch_id: int, mark: str, small: bool = False) -> bool:
        table = TABLES[name]
        if table.mode == "merge" and (name in self._exists or delta_exists(self.spark, self.lake.table(name))):
            assert isinstance(frame, DataFrame)
            return self._merge(name, frame, small)
        if self.committed(name) >= batch_id:
            log.info("%s: batch %d is already in %s (written before a restart)", self.writer, batch_id, name)
            return False
        path = self.lake.table(name)
        local = self._driver_path(name) if table.mode in ("overwrite", "append", "pending") else None
        if isinstance(frame, DataFrame) and small and local is not None and table.mode in ("append", "pending"):
            frame = frame.toArrow()  # (one job: a small batch's rows)
        if isinstance(frame, pa.Table):
            if local is not None and self._from_driver(name, local, frame, mark):
                with self._lock:
                    self._committed[name] = batch_id
                return True
            # (the table's creation, a lake not on a local disk, or delta-rs failed: by Spark)
            frame = self.spark.createDataFrame(frame)
        mode = "append" if table.mode in ("merge", "pending") else table.mode
        writer = frame.write.format("delta").mode(mode).option("userMetadata", mark)
        if name not in self._exists:  # created by this write: with the table's properties
            writer = writer.options(**table.properties(CHECKPOINT_INTERVAL))
        if mode == "append":  # a table an earlier version wrote gains the columns added since
            writer = writer.option("mergeSchema", "true")
        elif table.mode == "overwrite":  # a table rewritten whole takes the columns of this version
            writer = writer.option("overwriteSchema", "true")
        if table.partition:
            writer = writer.partitionBy(table.partition)
        writer.save(path)
        with self._lock:
            self._committed[name] = batch_id
            self._exists.add(name)
        return True

    def _driver_path(self, name: str) -> str | None:
        """Where on this machine's disk the driver writes table ``name`` by delta-rs, or None when
        Spark writes it: a writer made with ``from_driver`` False, a table not known to exist yet
        (created by Spark, with its properties), one delta-rs could not write this run, or a lake
        elsewhere."""
        if not self.from_driver or name not in self._exists or name in self._by_spark:
            return None
        return self._local_path(self.lake.table(name))

    def _local_path(self, path: str) -> str | None:
        """The path on this machine's disk of a table at ``path``, as Spark resolves it (a path
        without a scheme is on Hadoop's default file system, which may be a cluster's); None when it
        is elsewhere (S3, HDFS)."""
        if path not in self._local:
            where, fs = hadoop_path(self.spark, path)
            local = str(fs.getUri().getScheme()) == "file"
            self._local[path] = str(fs.makeQualified(where).toUri().getPath()) if local else None
        return self._local[path]

    def _from_driver(self, name: str, local: str, table: pa.Table, mark: str) -> bool:
        """Write an Arrow table on the driver into a table by delta-rs: rewrite it whole (an
        ``overwrite`` table) or append to it. A Delta overwrite by Spark runs five jobs that rebuild
        the table's state, 0.7 to 0.9 s of the JVM's CPU for one car per row, against 12 ms of the
        driver's here (docs/benchmarks.md, session 61); an append by Spark, a job and a commit of
        about 0.15 s each per table and batch, against a few tens of ms (session 62). Its commit
        carries the batch's marker as Spark's do (``userMetadata``). A lake on a local disk only
        (``local``): delta-rs creates its commit's log file only if it is not there (on S3 it would
        need a locking provider, so an S3 lake's are written by Spark; a commit of Spark's in
        another process, `lake maintain`'s, can still replace one of either's in a moment's race,
        as between two Spark processes). The first write of a run takes the columns of this
        version (a table an earlier version wrote: rewritten with them, or merged into it). False
        when delta-rs cannot write the table (a table feature it lacks, a conflict it cannot
        resolve, a file system without hard links): said once, and Spark writes it for the rest of
        the run."""
        from deltalake import CommitProperties, DeltaTable, write_deltalake

        first = name not in self._from_driver_done
        mode = TABLES[name].mode
        try:
            write_deltalake(
                DeltaTable(local),  # (an existing table: a missing one is an error, not created here)
                table.cast(nullable(table.schema)),  # (as Spark's Delta writes: a column added later is null before)
                mode="overwrite" if mode == "overwrite" else "append",
                # (an append merges: a table may hold a column this version does not write, or one a
                # large batch's Spark append added; merged, nothing is rewritten when nothing changed)
                schema_mode="merge" if mode != "overwrite" else ("overwrite" if first else None),
                commit_properties=CommitProperties(custom_metadata={"userMetadata": mark}),
            )
        except Exception as exc:
            if self._marked(local, mark):  # (committed; what failed came after: a checkpoint, the log's cleanup)
                log.warning("%s: %s's commit of this batch by delta-rs is in; what failed after it: %s",
                            self.writer, name, first_line(exc))  # fmt: skip
                self._from_driver_done.add(name)
                return True
            self._driver_failed(name, " not written", exc)
            return False
        self._from_driver_done.add(name)
        return True

    @staticmethod
    def _marked(local: str, mark: str) -> bool:
        """Whether one of the table's newest commits carries ``mark`` (a write that raised after its
        commit, in delta-rs's post-commit steps, must not be written again by Spark)."""
        from deltalake import DeltaTable

        try:
            return any(c.get("userMetadata") == mark for c in DeltaTable(local).history(10))
        except Exception:  # (the table unreadable: not known to be written)
            return False

    def _merge(self, name: str, frame: DataFrame, small: bool = False) -> bool:
        self.upsert(name, frame, small)
        return True

    def empty(self, name: str, schema: str, partition: str | None = None) -> None:
        """Empty this writer's partition of a ``pending`` table (or ``partition``: an earlier
        version's name of the writer) (no commit marker: emptying it again changes nothing): from the
        driver by delta-rs (:meth:`_delete_from_driver`) where this writer appends from there, else
        by Spark (an overwrite with ``replaceWhere``, about four appends' cost; docs/benchmarks.md)."""
        table = TABLES[name]
        assert table.mode == "pending"
        assert table.partition is not None
        where = f"{table.partition} = '{partition or self.writer}'"
        path = self.lake.table(name)
        local = self._driver_path(name)
        if local is not None and self._delete_from_driver(name, local, where):
            return
        frame = local_frame(self.spark, [], schema).write.format("delta").mode("overwrite")
        frame.option("replaceWhere", where).save(path)

    def _delete_from_driver(self, name: str, local: str, where: str) -> bool:
        """Delete a partition's rows (``where``: a predicate on the partition column alone, so no file
        is rewritten) by delta-rs, as :meth:`_from_driver` writes; False when it did not (Spark
        empties it: :meth:`_driver_failed`)."""
        from deltalake import DeltaTable

        try:
            DeltaTable(local).delete(where)
        except Exception as exc:  # (emptied again by Spark: emptying twice changes nothing)
            self._driver_failed(name, "'s partition not emptied", exc)
            return False
        return True

    def _driver_failed(self, name: str, what: str, exc: Exception) -> None:
        """A write from the driver by delta-rs failed: Spark does it. On a commit conflict (another
        process's commit on the table, `lake maintain`'s OPTIMIZE) just this once; else, said once,
        for the rest of the run."""
        from deltalake.exceptions import CommitFailedError

        if isinstance(exc, CommitFailedError):
            log.info("%s: %s%s by delta-rs, another commit in the way (%s); by Spark this time",
                     self.writer, name, what, first_line(exc))  # fmt: skip
            return
        log.warning("%s: %s%s from the driver by delta-rs (%s); Spark writes it from now on",
                    self.writer, name, what, first_line(exc))  # fmt: skip
        self._by_spark.add(name)

    def upsert(self, name: str, frame: DataFrame, small: bool = False) -> None:
        """Upsert ``frame`` by the table's key, a row replacing the table's only when it is as new
        (``as_of``; at the same ``as_of``, not when the table's has ended and it has not): a batch
        run again changes nothing, so no commit marker is needed. ``small``: the rows fit the driver
        (a stateful query's), so a table on this machine's disk that this writer has upserted before
        is upserted from there by delta-rs (:meth:`_merge_from_driver`)."""
        from delta.tables import DeltaTable

        table = TABLES[name]
        newer = "s.as_of >= t.as_of"
        if table.done is not None:
            ended = f"s.status = '{table.done}' OR t.status <> '{table.done}'"
            newer = f"s.as_of > t.as_of OR (s.as_of = t.as_of AND ({ended}))"
        path = self.lake.table(name)
        local = self._driver_path(name) if small else None
        with upsert_lock(path):
            assert table.key is not None
            if local is not None and self._merge_from_driver(name, local, table.key, frame.toArrow(), newer):
                return
            self._merge_retried(name, table.key, DeltaTable.forPath(self.spark, path), frame, newer)
        with self._lock:
            self._exists.add(name)

    def _merge_from_driver(self, name: str, local: str, key: str, rows: pa.Table, newer: str) -> bool:
        """Upsert ``rows`` into a table on this machine's disk by delta-rs, as :meth:`upsert` does by
        Spark: a Delta MERGE by Spark plans and runs several jobs, 3.2 s of the driver's CPU for 20
        episode steps into 3,000 episodes, against 0.13 s here (docs/benchmarks.md, session 64); the
        stateful queries upsert two tables a minute. False when delta-rs did not (Spark upserts it:
        :meth:`_driver_failed`; an upsert done twice changes nothing)."""
        from deltalake import DeltaTable

        try:
            (
                DeltaTable(local)
                .merge(rows.cast(nullable(rows.schema)), f"t.{key} = s.{key}", source_alias="s", target_alias="t")
                .when_matched_update_all(predicate=newer)
                .when_not_matched_insert_all()
                .execute()
            )
        except Exception as exc:  # (upserted again by Spark: an upsert done twice changes nothing)
            self._driver_failed(name, " not upserted", exc)
            return False
        return True

    def _merge_retried(
        self, name: str, key: str | None, target: Any, frame: DataFrame, newer: str = "s.as_of >= t.as_of"
    ) -> None:
        for attempt in range(MERGE_ATTEMPTS):  # another process's commit on the table: tried again
            try:
                (
                    target.alias("t")
                    .merge(frame.alias("s"), f"t.{key} = s.{key}")
                    .whenMatchedUpdateAll(condition=newer)
                    .whenNotMatchedInsertAll()
                    .execute()
                )
                break
            except Exception as exc:
                if "Concurrent" not in type(exc).__name__ + str(exc)[:300] or attempt == MERGE_ATTEMPTS - 1:
                    raise
                log.info("%s: %s changed under the upsert (%s); again", self.writer, name, type(exc).__name__)
                time.sleep(0.2 * (attempt + 1))
