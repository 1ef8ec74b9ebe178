"""Damaged streaming checkpoints: found before a query starts, repaired by `fleetstream lake repair`.

A streaming query's checkpoint holds, per micro-batch ``N``, ``offsets/N`` (the input range of
the batch, written before it runs) and ``commits/N`` (written once it is done). On a restart
Spark reads the newest of each; a newest file that is torn (a crash or a full disk while it was
written) or otherwise unreadable stops the query with a parse error deep in Spark. The stream
checks them first (:func:`damaged`) and says what to run; the repair then:

- a damaged ``commits/N``: moves it aside. Batch ``N`` runs again from its offsets (the same
  input), and the pipeline's writer skips every table that already holds it (exactly once);
- a damaged ``offsets/N``: its input range is lost, so batch ``N`` cannot run again as it was.
  The repair moves ``offsets/N`` (and ``commits/N``) aside and restores every Delta table that
  holds batch ``N`` of this query to the version before it (``RESTORE``), so that the batch
  planned again from ``offsets/N-1`` writes its whole input once. A table where another writer
  appended after batch ``N`` is not restored: the repair stops and says so (nothing is lost).

Files moved aside go to ``<checkpoint>/_damaged/`` with the time of the repair: nothing is deleted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import SparkSession

from fleetstream.errors import FleetstreamError
from fleetstream.lake.tables import TABLES
from fleetstream.pipeline.writer import marker

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
        stream = self._fs(location).open(self._path(location))
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

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
            "undoes the batch they belonged to; docs/operations.md), then start the stream again."
        )


@dataclass(frozen=True)
class Restored:
    table: str
    from_version: int
    to_version: int


def _undo_batch(spark: SparkSession, root: str, writer: str, batch: int, dry_run: bool) -> list[Restored]:
    """Restore every Delta table that holds ``batch`` of ``writer`` to the version before it. Every
    table is checked before any is restored: a refusal leaves them all as they were."""
    from delta.tables import DeltaTable

    from fleetstream.pipeline.writer import delta_exists, writer_history

    want, planned = marker(writer, batch), []
    for name in TABLES:
        path = f"{root.rstrip('/')}/{name}"
        if not delta_exists(spark, path):
            continue
        newest, history = writer_history(spark, path, writer, 50)  # (a batch an earlier repair undid is not there)
        at = next((int(r["version"]) for r in history if r["userMetadata"] == want), None)
        if at is None:
            continue
        later = [r for r in history if int(r["version"]) > at and r["operation"] not in _NEUTRAL]
        if later:
            raise FleetstreamError(
                f"{name}: batch {batch} of {writer} is version {at}, but {len(later)} commits changed the table "
                f"since (the newest: version {later[0]['version']}, {later[0]['operation']}, "
                f"{later[0]['userMetadata'] or 'no marker'}); nothing restored. Is another stream writing this lake?"
            )
        if at == 0:
            raise FleetstreamError(
                f"{name}: batch {batch} of {writer} created the table (its version 0), so there is no version "
                f"before it to restore; nothing restored. Move the folder {path} aside (the batch, run again, "
                "writes it anew), then run `fleetstream lake repair` again."
            )
        assert newest is not None
        planned.append((name, path, newest, at - 1))
    for _, path, _, to in planned:
        if not dry_run:
            DeltaTable.forPath(spark, path).restoreToVersion(to)
    return [Restored(name, newest, to) for name, _, newest, to in planned]


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
        if "offsets" in kinds:
            batch = kinds["offsets"].batch
            for undone in _undo_batch(spark, root, kinds["offsets"].query, batch, dry_run):
                say(
                    f"{'would restore' if dry_run else 'restored'} {undone.table} from version {undone.from_version} "
                    f"to {undone.to_version} (before batch {batch} of {kinds['offsets'].query})"
                )
            moved = [f"{folder}/offsets/{batch}"] + [f"{folder}/commits/{b}" for b in
                                                      checkpoints.batches(folder, "commits") if b >= batch]  # fmt: skip
        elif "commits" in kinds:
            moved = [kinds["commits"].path]
        else:
            continue
        for location in moved:
            if dry_run:
                say(f"would move {location} aside")
            else:
                say(f"moved {location} to {checkpoints.move_aside(location, stamp)}")
    return found
