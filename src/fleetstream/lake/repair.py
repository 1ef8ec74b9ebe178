"""Damaged streaming checkpoints: found before a query starts, repaired by `fleetstream lake repair`.

A streaming query's checkpoint holds, per micro-batch ``N``, ``offsets/N`` (the input range of
the batch, written before it runs) and ``commits/N`` (written once it is done). On a restart
Spark reads the newest of each; a newest file that is torn (a crash or a full disk while it was
written) or otherwise unreadable stops the query with a parse error deep in Spark. The stream
checks them first (:func:`damaged`) and says what to run; the repair then:

- a damaged ``commits/N``: moves it aside. Batch ``N`` runs again from its offsets (the same
  input), and the pipeline's writer skips every table that already holds it (exactly once);
- a damaged ``offsets/N`` of a batch some table holds: each commit of the pipeline's writer
  records its batch's ``offsets`` file (:func:`fleetstream.pipeline.writer.marker`), so the repair
  moves the damaged file aside and writes it again from such a commit. Nothing is restored: batch
  ``N`` runs again on the same input, the writer skips the tables that hold it, and queries that
  read those tables as a stream (the episodes read silver) go on as they were;
- a damaged ``offsets/N`` of a batch no table holds: moved aside (with ``commits/N``); the batch
  is planned again from ``offsets/N-1``;
- a damaged ``offsets/N`` of a batch held only by commits that did not record it (a lake written
  before fleetstream recorded them): its input range is lost, so batch ``N`` cannot run again as
  it was. The repair restores every Delta table that holds the batch to the version before it
  (``RESTORE``), so that the batch planned again from ``offsets/N-1`` writes its whole input
  once. A table where another writer appended after batch ``N`` is not restored: the repair stops
  and says so (nothing is lost). A query that reads a restored table as a Delta stream cannot
  go on across the restore (Delta refuses deleted files in a streaming source).

The rebuilt file is written beside the torn one first (``.N.rebuilt``), then renamed into place
after the torn one is moved aside: a write that fails moves nothing.

Files moved aside go to ``<checkpoint>/_damaged/`` with the time of the repair: nothing is deleted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from fleetstream.errors import FleetstreamError
from fleetstream.lake.tables import TABLES

log = logging.getLogger(__name__)
DAMAGED_DIR = "_damaged"
#: operations that change no data: undone by a restore without loss
_NEUTRAL = {"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "FSCK", "RESTORE"}


def log_problem(text: str, kind: str) -> str | None:
    """What is wrong with the text of an ``offsets`` or ``commits`` file (None: it reads).

    >>> log_problem('v1\\n{"batchWatermarkMs":0}\\n{"t":{"0":5}}', "offsets")
    >>> log_problem('v1\\n{"batchWatermarkMs":0}\\n{"t":{"0"', "offsets")
    'line 3 is not JSON'
    >>> log_problem('v1\\n{"nextBatchWatermarkMs":0}', "commits")
    >>> log_problem("", "commits")
    'empty'
    >>> log_problem("v9\\n{}", "commits")
    "version line 'v9', not v1"
    """
    lines = text.split("\n")
    if not text.strip():
        return "empty"
    if lines[0] != "v1":
        return f"version line {lines[0][:20]!r}, not v1"
    body = [line for line in lines[1:] if line != ""]
    if not body:
        return "no content after the version line"
    if kind == "commits" and len(body) != 1:
        return f"{len(body)} lines after the version line, not 1"
    if kind == "offsets" and len(body) < 2:
        return "no source offsets after the batch metadata"
    for number, line in enumerate(lines[1:], start=2):
        if line in ("", "-"):  # "-": a source with no offsets yet
            continue
        try:
            json.loads(line)
        except ValueError:
            return f"line {number} is not JSON"
    return None


@dataclass(frozen=True)
class Damage:
    """A damaged newest file of a checkpoint."""

    checkpoint: str  # the checkpoint's folder
    kind: str  # "offsets" or "commits"
    batch: int
    problem: str

    @property
    def path(self) -> str:
        return f"{self.checkpoint}/{self.kind}/{self.batch}"

    @property
    def query(self) -> str:
        """The query (and writer) the checkpoint belongs to: the folder's name."""
        return self.checkpoint.rstrip("/").rsplit("/", 1)[-1]


class Checkpoints:
    """The lake's checkpoints (``<root>/_checkpoints/*``), read through Hadoop's FileSystem, so a
    local folder and an ``s3a://`` prefix are read alike."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark, self.root = spark, f"{root.rstrip('/')}/_checkpoints"
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, location: str):  # type: ignore[no-untyped-def]
        return self._jvm.org.apache.hadoop.fs.Path(location)

    def _fs(self, location: str):  # type: ignore[no-untyped-def]
        return self._path(location).getFileSystem(self._conf)

    def _list(self, location: str) -> list[str]:
        fs = self._fs(location)
        if not fs.exists(self._path(location)):
            return []
        return [status.getPath().getName() for status in fs.listStatus(self._path(location))]

    def folders(self) -> list[str]:
        return sorted(f"{self.root}/{name}" for name in self._list(self.root) if not name.startswith(("_", ".")))

    def batches(self, checkpoint: str, kind: str) -> list[int]:
        return sorted(int(name) for name in self._list(f"{checkpoint}/{kind}") if name.isdigit())

    def read(self, location: str) -> str:
        """A file's text; a checksum mismatch (a local file changed under its ``.crc``) raises."""
        from fleetstream.pipeline.writer import read_text

        text = read_text(self.spark, location)
        if text is None:
            raise FileNotFoundError(location)
        return text

    def damage(self, checkpoint: str) -> list[Damage]:
        """The damaged newest ``offsets`` and ``commits`` files of one checkpoint (the only ones Spark
        reads on a restart)."""
        found = []
        for kind in ("offsets", "commits"):
            batches = self.batches(checkpoint, kind)
            if not batches:
                continue
            newest = batches[-1]
            try:
                problem = log_problem(self.read(f"{checkpoint}/{kind}/{newest}"), kind)
            except Exception as exc:  # py4j's error for an IOException (checksum, truncated read)
                problem = f"unreadable ({_java_cause(exc)})"
            if problem:
                found.append(Damage(checkpoint, kind, newest, problem))
        return found

    def stage(self, location: str, text: str) -> str:
        """Write a checkpoint file's text beside it, under a name Spark does not read (``.N.rebuilt``;
        a local one with its ``.crc``, as Spark's own are); returns where."""
        folder, name = location.rsplit("/", 1)
        staged = f"{folder}/.{name}.rebuilt"
        stream = self._fs(staged).create(self._path(staged), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        return staged

    def put_in_place(self, staged: str, location: str) -> None:
        """Rename a staged file (:meth:`stage`) to the checkpoint file it was written for."""
        if not self._fs(location).rename(self._path(staged), self._path(location)):
            raise FleetstreamError(
                f"could not rename {staged} to {location}: rename it by hand, then start the stream again"
            )

    def move_aside(self, location: str, stamp: str) -> str:
        """Move a checkpoint file (and its ``.crc``, if any) into the checkpoint's ``_damaged`` folder."""
        folder, name = location.rsplit("/", 1)
        checkpoint, kind = folder.rsplit("/", 1)
        target = f"{checkpoint}/{DAMAGED_DIR}/{stamp}-{kind}-{name}"
        fs = self._fs(location)
        fs.mkdirs(self._path(f"{checkpoint}/{DAMAGED_DIR}"))
        if not fs.rename(self._path(location), self._path(target)):
            raise FleetstreamError(f"could not move {location} to {target}")
        crc = self._path(f"{folder}/.{name}.crc")
        if fs.exists(crc):
            fs.delete(crc, False)
        return target


def _java_cause(exc: Exception) -> str:
    """The Java exception behind a py4j error (``org.apache.hadoop.fs.ChecksumException: ...``)."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    return (text.strip().splitlines() or ["unknown error"])[0][:300]


def damaged(spark: SparkSession, root: str) -> list[Damage]:
    """Every damaged newest checkpoint file of the lake at ``root``."""
    checkpoints = Checkpoints(spark, root)
    return [d for folder in checkpoints.folders() for d in checkpoints.damage(folder)]


def refuse_damaged(spark: SparkSession, root: str) -> None:
    """Raise a :class:`FleetstreamError` naming the damaged files and the command that repairs them."""
    found = damaged(spark, root)
    if found:
        files = "; ".join(f"{d.path}: {d.problem}" for d in found)
        raise FleetstreamError(
            f"Damaged streaming checkpoint files ({files}): the queries cannot restart from them. Stop "
            "every stream on this lake and run `fleetstream lake repair` (it moves the files aside and "
            "writes a torn offsets file again from the input its batch's commits recorded, or undoes that "
            "batch; docs/operations.md), then start the stream again."
        )


@dataclass(frozen=True)
class Restored:
    table: str
    from_version: int
    to_version: int


@dataclass(frozen=True)
class Held:
    """A table that holds a batch of a writer: its commit of the batch, and what came after."""

    table: str
    path: str
    newest: int  # the table's newest version
    version: int  # the version the batch was committed as
    offsets: str | None  # the batch's offsets file, as the commit recorded it (None: not recorded)
    later: list[Mapping[str, Any]]  # commits since that changed data (newest first)


def _holding(spark: SparkSession, root: str, writer: str, batch: int) -> list[Held]:
    """Every Delta table of the lake that holds ``batch`` of ``writer`` (a batch an earlier repair
    undid does not count)."""
    from fleetstream.pipeline.writer import delta_exists, read_marker, writer_history

    held = []
    for name in TABLES:
        path = f"{root.rstrip('/')}/{name}"
        if not delta_exists(spark, path):
            continue
        newest, history = writer_history(spark, path, writer, 50)
        for commit in history:
            found = read_marker(commit["userMetadata"])
            if found and found[:2] == (writer, batch):
                at = int(commit["version"])
                later = [r for r in history if int(r["version"]) > at and r["operation"] not in _NEUTRAL]
                assert newest is not None
                held.append(Held(name, path, newest, at, found[2], later))
                break
    return held


def _undo_batch(spark: SparkSession, held: list[Held], writer: str, batch: int, dry_run: bool) -> list[Restored]:
    """Restore every Delta table that holds ``batch`` of ``writer`` to the version before it. Every
    table is checked before any is restored: a refusal leaves them all as they were."""
    from delta.tables import DeltaTable

    for h in held:
        if h.later:
            first = h.later[0]
            raise FleetstreamError(
                f"{h.table}: batch {batch} of {writer} is version {h.version}, but {len(h.later)} commits changed the "
                f"table since (the newest: version {first['version']}, {first['operation']}, "
                f"{(first['userMetadata'] or 'no marker').splitlines()[0]}); nothing restored. Is another stream "
                "writing this lake?"
            )
        if h.version == 0:
            raise FleetstreamError(
                f"{h.table}: batch {batch} of {writer} created the table (its version 0), so there is no version "
                f"before it to restore; nothing restored. Move the folder {h.path} aside (the batch, run again, "
                "writes it anew), then run `fleetstream lake repair` again."
            )
    for h in held:
        if not dry_run:
            DeltaTable.forPath(spark, h.path).restoreToVersion(h.version - 1)
    return [Restored(h.table, h.newest, h.version - 1) for h in held]


def repair(
    spark: SparkSession, root: str, dry_run: bool = False, say: Callable[[str], None] = log.info
) -> list[Damage]:
    """Repair every damaged checkpoint of the lake at ``root`` (see the module's text); returns what
    was damaged. The streams on this lake must be stopped."""
    checkpoints = Checkpoints(spark, root)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    found = []
    for folder in checkpoints.folders():
        damage = checkpoints.damage(folder)
        found += damage
        kinds = {d.kind: d for d in damage}
        for d in damage:
            say(f"{d.path}: {d.problem}")
        rebuilt: tuple[str, str] | None = None  # (offsets file, its text) written again after the moves
        if "offsets" in kinds:
            batch, query = kinds["offsets"].batch, kinds["offsets"].query
            held = _holding(spark, root, query, batch)
            recorded = next((h for h in held if h.offsets and log_problem(h.offsets, "offsets") is None), None)
            if recorded is not None:  # the batch's input range, as its commit recorded it: nothing to undo
                say(f"batch {batch}'s input range is recorded in its commit to {recorded.table} "
                    f"(version {recorded.version}): {kinds['offsets'].path} "
                    f"{'would be' if dry_run else 'is'} written again from it; no table restored")  # fmt: skip
                rebuilt = (kinds["offsets"].path, recorded.offsets or "")
                moved = [rebuilt[0]] + ([kinds["commits"].path] if "commits" in kinds else [])
            else:
                for undone in _undo_batch(spark, held, query, batch, dry_run):
                    say(
                        f"{'would restore' if dry_run else 'restored'} {undone.table} from version "
                        f"{undone.from_version} to {undone.to_version} (before batch {batch} of {query})"
                    )
                later = [b for b in checkpoints.batches(folder, "commits") if b >= batch]
                moved = [f"{folder}/offsets/{batch}"] + [f"{folder}/commits/{b}" for b in later]
        elif "commits" in kinds:
            moved = [kinds["commits"].path]
        else:
            continue
        staged = None
        if rebuilt is not None and not dry_run:  # written before anything moves: a failed write changes nothing
            staged = checkpoints.stage(*rebuilt)
        for location in moved:
            if dry_run:
                say(f"would move {location} aside")
            else:
                say(f"moved {location} to {checkpoints.move_aside(location, stamp)}")
        if rebuilt is not None:
            if staged is None:
                say(f"would write {rebuilt[0]} again")
            else:
                checkpoints.put_in_place(staged, rebuilt[0])
                say(f"wrote {rebuilt[0]} again")
    return found
