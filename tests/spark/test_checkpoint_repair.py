"""`fleetstream lake repair` on a real query's checkpoint: a torn newest offsets file is written again
from the input range its batch's commits recorded (nothing restored: a query reading the table as a
stream goes on); on a lake whose commits did not record it, the batch is undone in the tables and
written again whole; a torn newest commit file only reruns its batch; a table another writer
appended to since is not touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream.errors import FleetstreamError
from fleetstream.lake.repair import DAMAGED_DIR, damaged, refuse_damaged, repair
from fleetstream.pipeline.writer import Lake, Writer, marker


@pytest.fixture
def unrecorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits that do not record their batch's offsets file, as before fleetstream recorded it."""
    monkeypatch.setattr(Writer, "_marker", lambda self, batch_id: marker(self.writer, batch_id))


TABLE = "silver/duplicates"  # any appended table of the lake's catalogue: the repair looks at each


def _run(spark: SparkSession, root: Path, files: int) -> None:
    """Add ``files`` files of 20 new values (0, 1, 2, ... in order) to a source table, then drain it
    with a query that writes each batch (one file) to TABLE through the pipeline's writer (its commit
    marker, and its skip of a batch the table already holds)."""
    source = str(root.parent / "source")
    start = spark.read.format("delta").load(source).count() if (root.parent / "source").exists() else 0
    for n in range(files):
        first = start + 20 * n
        spark.range(first, first + 20, numPartitions=1).withColumnRenamed("id", "value").write.format("delta").mode(
            "append"
        ).save(source)

    writer = Writer(spark, Lake(str(root)), "q", {})  # the pipeline's writer, new as after a restart

    def write(batch: DataFrame, batch_id: int) -> None:
        writer.write(batch_id, {TABLE: batch.select("value", F.current_timestamp().alias("ingest_time"),
                                                    F.lit("car").alias("car_id"))})  # fmt: skip

    query = (
        spark.readStream.format("delta").option("maxFilesPerTrigger", 1).load(source)
        .writeStream.option("checkpointLocation", str(root / "_checkpoints" / "q")).trigger(availableNow=True)
        .foreachBatch(write).start()
    )  # fmt: skip
    query.awaitTermination(120)
    assert query.exception() is None, query.exception()


def _values(spark: SparkSession, root: Path) -> list[int]:
    return sorted(r[0] for r in spark.read.format("delta").load(str(root / TABLE)).collect())


def _lake(spark: SparkSession, tmp_path: Path, files: int) -> tuple[Path, Path, int]:
    """A lake written by ``files`` batches: its root, the query's checkpoint and its newest batch."""
    root = tmp_path / "lake"
    _run(spark, root, files)
    checkpoint = root / "_checkpoints" / "q"
    return root, checkpoint, max(int(p.name) for p in (checkpoint / "offsets").glob("[0-9]*"))


def _whole(spark: SparkSession, root: Path) -> list[int]:
    """The table's values, asserted whole: no value lost, none twice."""
    values = _values(spark, root)
    assert values == list(range(len(values)))
    return values


def _downstream(spark: SparkSession, root: Path) -> list[int]:
    """Drain TABLE as a Delta stream (as the episodes query reads silver) into a table of its own;
    returns that table's values."""
    sink = str(root.parent / "downstream")
    query = (
        spark.readStream.format("delta").load(str(root / TABLE)).select("value").writeStream.format("delta")
        .option("checkpointLocation", str(root.parent / "downstream_checkpoint")).trigger(availableNow=True)
        .start(sink)
    )  # fmt: skip
    query.awaitTermination(120)
    assert query.exception() is None, query.exception()
    return sorted(r[0] for r in spark.read.format("delta").load(sink).collect())


def _tear(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_torn_offsets_file_is_written_again_from_its_batchs_commit_and_a_reader_goes_on(
    spark: SparkSession, tmp_path: Path
) -> None:
    root, checkpoint, newest = _lake(spark, tmp_path, 3)
    original = (checkpoint / "offsets" / str(newest)).read_text()
    held = _values(spark, root)
    assert _downstream(spark, root) == held  # a query reads the table as a stream

    _tear(checkpoint / "offsets" / str(newest))
    said: list[str] = []
    repair(spark, str(root), dry_run=True, say=said.append)
    assert any(f"offsets/{newest} would be written again from it; no table restored" in line for line in said), said
    assert (checkpoint / "offsets" / str(newest)).read_text() != original  # a dry run changes nothing

    said.clear()
    repair(spark, str(root), say=said.append)
    assert not any("restored " in line for line in said), said
    assert (checkpoint / "offsets" / str(newest)).read_text() == original  # as Spark wrote it
    assert not list((checkpoint / "offsets").glob("*rebuilt*"))  # written beside it, then renamed into place
    assert (checkpoint / "commits" / str(newest)).exists()  # the batch stays done
    assert _values(spark, root) == held
    assert [p.name.split("-", 1)[1] for p in (checkpoint / DAMAGED_DIR).iterdir() if not p.name.startswith(".")] == [
        f"offsets-{newest}"
    ]
    assert damaged(spark, str(root)) == []

    _run(spark, root, 2)  # goes on from the batch: no value lost, none twice
    again = _whole(spark, root)
    assert len(again) == len(held) + 40
    assert _downstream(spark, root) == again  # the reader went on (a restore would have stopped it)


def test_a_torn_offsets_file_of_a_batch_still_to_commit_is_written_again_and_the_batch_completed(
    spark: SparkSession, tmp_path: Path
) -> None:
    """The stream killed after its batch's writes, before its commit file; then the offsets file torn."""
    root, checkpoint, newest = _lake(spark, tmp_path, 3)
    (checkpoint / "commits" / str(newest)).unlink()
    (checkpoint / "commits" / f".{newest}.crc").unlink(missing_ok=True)
    held = _values(spark, root)
    _tear(checkpoint / "offsets" / str(newest))
    repair(spark, str(root))
    assert _values(spark, root) == held
    _run(spark, root, 1)  # the batch runs again (its table skipped), then one more
    again = _whole(spark, root)
    assert len(again) == len(held) + 20


@pytest.mark.usefixtures("unrecorded")
def test_a_torn_offsets_file_unrecorded_is_repaired_and_its_batch_written_again_whole(
    spark: SparkSession, tmp_path: Path
) -> None:
    root, checkpoint, newest = _lake(spark, tmp_path, 3)
    assert (checkpoint / "commits" / str(newest)).exists()  # the batch is in the table
    assert damaged(spark, str(root)) == []
    held = _values(spark, root)

    _tear(checkpoint / "offsets" / str(newest))
    found = damaged(spark, str(root))
    assert [(d.kind, d.batch) for d in found] == [("offsets", newest)]
    with pytest.raises(FleetstreamError, match=r"offsets/\d+.*fleetstream lake repair"):
        refuse_damaged(spark, str(root))

    said: list[str] = []
    assert repair(spark, str(root), dry_run=True, say=said.append) == found
    assert any(line.startswith(f"would restore {TABLE}") for line in said), said
    assert _values(spark, root) == held  # a dry run changes nothing

    said.clear()
    repair(spark, str(root), say=said.append)
    assert any(line.startswith(f"restored {TABLE}") for line in said), said
    undone = _values(spark, root)
    assert len(undone) < len(held)
    assert undone == held[: len(undone)]  # the lost batch's rows, and only those, are gone
    assert not (checkpoint / "offsets" / str(newest)).exists()
    assert not (checkpoint / "commits" / str(newest)).exists()
    moved = [p for p in (checkpoint / DAMAGED_DIR).iterdir() if not p.name.startswith(".")]  # (not .crc files)
    assert {p.name.split("-", 1)[1] for p in moved} == {
        f"offsets-{newest}",
        f"commits-{newest}",
    }
    assert damaged(spark, str(root)) == []

    _run(spark, root, 2)  # batch `newest` again, planned from the batch before: whole, once
    again = _whole(spark, root)
    assert len(again) > len(held)


def test_a_torn_commit_file_only_reruns_its_batch(spark: SparkSession, tmp_path: Path) -> None:
    root, checkpoint, newest = _lake(spark, tmp_path, 2)
    _tear(checkpoint / "commits" / str(newest))
    held = _values(spark, root)
    said: list[str] = []
    repair(spark, str(root), say=said.append)
    assert not any("restore" in line for line in said), said
    assert _values(spark, root) == held
    assert (checkpoint / "offsets" / str(newest)).exists()
    assert not (checkpoint / "commits" / str(newest)).exists()

    _run(spark, root, 1)  # batch `newest` runs again: the writer skips it (the table holds it), then one more
    again = _whole(spark, root)
    assert len(again) == len(held) + 20


@pytest.mark.usefixtures("unrecorded")
def test_a_table_appended_to_by_another_writer_since_is_not_restored(spark: SparkSession, tmp_path: Path) -> None:
    root, checkpoint, newest = _lake(spark, tmp_path, 2)
    spark.range(1).toDF("value").write.format("delta").mode("append").option("userMetadata", "someone else").save(
        str(root / TABLE)
    )
    _tear(checkpoint / "offsets" / str(newest))
    held = _values(spark, root)
    with pytest.raises(FleetstreamError, match=r"commits changed the table since.*nothing restored"):
        repair(spark, str(root))
    assert _values(spark, root) == held
    assert (checkpoint / "offsets" / str(newest)).exists()  # nothing moved either


@pytest.mark.usefixtures("unrecorded")
def test_a_torn_offsets_file_of_the_batch_that_created_a_table_is_refused_clearly(
    spark: SparkSession, tmp_path: Path
) -> None:
    root = tmp_path / "lake"
    _run(spark, root, 1)  # one batch: it created the table (version 0), there is no version before it
    checkpoint = root / "_checkpoints" / "q"
    _tear(checkpoint / "offsets" / "0")
    held = _values(spark, root)
    with pytest.raises(FleetstreamError, match=r"created the table \(its version 0\).*nothing restored.*aside"):
        repair(spark, str(root))
    assert _values(spark, root) == held
    assert (checkpoint / "offsets" / "0").exists()  # nothing moved either
