"""Java's class-data sharing (AppCDS) for the driver JVM of every Spark session: the classes Spark,
Delta and the Kafka connector load at start-up, parsed and verified once into an archive that
each JVM maps instead of loading them again from the jars. `fleetstream stream --available-now` on
a small topic took 42.6 s against 46.6 s without it (medians of three alternating runs on two
cores; docs/benchmarks.md "Session 49").

`fleetstream jars fetch` (`make setup`) builds the archive once per Java, pyspark and jar set: a
short representative run of Spark with ``-XX:ArchiveClassesAtExit``, about 45 s and 200 MB in the
cache folder. A session started before it exists, or on a changed Java or pyspark (another archive
name, see :func:`archive_path`), starts as before. A JVM that cannot map the archive starts without
it too, silently (``-Xlog:cds=off``): the archive is a speed-up, never a condition.
``FLEETSTREAM_SPARK__CLASS_ARCHIVE=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: With the archive: the JVM maps it; a mismatch (it checks the Java build and the class path's
#: jars) is not reported, and the JVM then loads its classes from the jars as without it.
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
#: Archives of other installs kept beside the one made (each about 200 MB).
KEEP_OTHERS = 2


def _java() -> Path | None:
    """The java that pyspark's launcher runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(java).resolve() if java and Path(java).exists() else None


def archive_path(cache_dir: Path) -> Path | None:
    """Where the archive for this Java, this pyspark install and the locked Spark jars is (whether or
    not it exists yet); None without a java. Its name is a digest of what the JVM checks before it
    maps an archive, so a reinstalled pyspark or another Java looks for another file."""
    java = _java()
    if java is None:
        return None
    import pyspark

    from fleetstream.jvm import read_lock

    digest = hashlib.sha256()
    release = java.parent.parent / "release"
    digest.update(str(java).encode())
    digest.update(release.read_bytes() if release.is_file() else b"")
    digest.update(pyspark.__version__.encode())
    jars = Path(pyspark.__file__).parent / "jars"  # the JVM's class path: its place, its jars' sizes and times
    digest.update(str(jars.resolve()).encode())
    for jar in sorted(jars.glob("*.jar")):
        stat = jar.stat()
        digest.update(f"{jar.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    digest.update("\n".join(e.render() for e in read_lock() if e.jar_set == "spark").encode())
    return cache_dir / "class-archive" / f"spark-{pyspark.__version__}-{digest.hexdigest()[:16]}.jsa"


def java_options(cache_dir: Path) -> str:
    """The driver JVM's options that map the archive, or "" when there is none (yet).

    >>> java_options(Path("/nonexistent"))
    ''
    """
    path = archive_path(cache_dir)
    return f"-XX:SharedArchiveFile={path} {_QUIET}" if path is not None and path.is_file() else ""


def build(cache_dir: Path, timeout_s: float = 600) -> tuple[Path | None, float | None]:
    """Make the archive unless it is there: (its path, seconds it took; None when it was there).
    (None, None) without a java. Of the archives of other installs (another checkout's .venv, an
    older Java), the two newest are kept: several checkouts share the cache folder."""
    path = archive_path(cache_dir)
    if path is None or path.is_file():
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fleetstream-class-archive-") as scratch:
        partial = Path(scratch) / path.name
        # the archive is written when the JVM exits, which it does when this child process ends
        done = subprocess.run(
            [sys.executable, "-m", __name__, str(partial), scratch],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not partial.is_file():
            raise RuntimeError(f"the class-data archive was not made:\n{(done.stdout + done.stderr)[-3000:]}")
        shutil.move(str(partial), path)  # whole, or not there: a session never maps half a file
    others = sorted((p for p in path.parent.glob("*.jsa") if p != path), key=lambda p: p.stat().st_mtime)
    for old in others[:-KEEP_OTHERS]:
        old.unlink(missing_ok=True)
    return path, time.monotonic() - started


def _workload(target: Path, scratch: Path) -> None:
    """A short run of what the stream does at start-up, in a JVM that archives its classes at exit:
    Delta writes, reads, a MERGE and a streaming query with state (RocksDB), a Kafka source's plan,
    JSON parsing and a broadcast join."""
    from pyspark.sql import functions as F

    from fleetstream.config import Settings
    from fleetstream.pipeline.session import BATCH_JVM_OPTIONS, spark_session

    settings = Settings()
    spark = spark_session(
        settings,
        "fleetstream-class-archive",
        extra={
            "spark.master": "local[2]",
            "spark.driver.extraJavaOptions": f"{BATCH_JVM_OPTIONS} -XX:ArchiveClassesAtExit={target} {_QUIET}",
            "spark.sql.streaming.stateStore.providerClass": (
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
            ),
        },
    )
    table, copy = str(scratch / "t"), str(scratch / "copy")
    events = spark.range(2000).select(
        (F.col("id") % 20).cast("string").alias("car_id"),
        F.to_json(F.struct((F.col("id") % 180).alias("speed"), F.lit("x").alias("gear"))).alias("value"),
        F.timestamp_seconds(F.col("id")).alias("event_time"),
    )
    parsed = events.withColumn("v", F.from_json("value", "speed DOUBLE, gear STRING")).select(
        "car_id", "v.*", "event_time"
    )
    cars = spark.range(20).select(F.col("id").cast("string").alias("car_id"), F.lit("m").alias("model"))
    parsed.join(F.broadcast(cars), "car_id").write.format("delta").save(table)
    spark.read.format("delta").load(table).where("speed > 100").groupBy("car_id").count().collect()
    from delta.tables import DeltaTable

    latest = spark.read.format("delta").load(table).groupBy("car_id").agg(F.max("event_time").alias("event_time"))
    latest.write.format("delta").save(copy)
    (
        DeltaTable.forPath(spark, copy).alias("t").merge(latest.alias("s"), "t.car_id = s.car_id")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    )  # fmt: skip
    stream = (
        spark.readStream.format("delta").load(table)
        .withWatermark("event_time", "1 minute").dropDuplicatesWithinWatermark(["car_id", "event_time"])
        .groupBy(F.window("event_time", "1 minute"), "car_id").agg(F.max("speed").alias("speed"))
        .writeStream.format("delta").outputMode("append").option("checkpointLocation", str(scratch / "cp"))
        .trigger(availableNow=True).start(str(scratch / "agg"))
    )  # fmt: skip
    stream.awaitTermination()
    spark.readStream.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:9").option("subscribe", "x").load()
    spark.stop()


if __name__ == "__main__":
    _workload(Path(sys.argv[1]), Path(sys.argv[2]))
