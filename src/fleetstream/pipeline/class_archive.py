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

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

#: With the archive: the JVM maps it; a mismatch (it checks the Java build and the class path's
#: jars) is not reported, and the JVM then loads its classes from the jars as without it.
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
#: Archives of other installs kept beside the one made (each about 200 MB).
KEEP_OTHERS = 2
#: Environment variables that add to the driver JVM's class path (Spark's launcher reads them).
_CLASS_PATH_VARIABLES = ("SPARK_HOME", "SPARK_CONF_DIR", "HADOOP_CONF_DIR", "YARN_CONF_DIR", "SPARK_DIST_CLASSPATH")


def _java() -> Path | None:
    """The java that pyspark's launcher runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(java).resolve() if java and Path(java).exists() else None


def _jars_dir() -> Path:
    """The folder of the jars the driver JVM runs: the install an archive belongs to."""
    from fleetstream.local.spark_cluster import spark_home

    return Path(os.environ.get("SPARK_HOME") or spark_home()) / "jars"


def archive_path(cache_dir: Path, spark_conf: Mapping[str, str] | None = None) -> Path | None:
    """Where the archive for this Java, this pyspark install and the locked Spark jars is (whether or
    not it exists yet); None without a java. Its name is a digest of what makes the driver JVM's
    class path (the java and its build; pyspark's jars, their place, sizes and times; the locked
    Spark jars; the variables and the ``spark_conf`` setting that add to the class path), so
    another install looks for another file. The JVM checks the class path again itself and ignores
    an archive that does not match."""
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
    jars = _jars_dir()  # the JVM's class path: its place, its jars' sizes and times
    digest.update(str(jars.resolve()).encode())
    for jar in sorted(jars.glob("*.jar")):
        stat = jar.stat()
        digest.update(f"{jar.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    for name in _CLASS_PATH_VARIABLES:
        digest.update(f"{name}={os.environ.get(name, '')}\n".encode())
    digest.update(f"{(spark_conf or {}).get('spark.driver.extraClassPath', '')}\n".encode())
    from fleetstream.pipeline.session import local_fs_path

    digest.update(f"{local_fs_path(cache_dir)}\n".encode())  # (first on the class path: session.with_class_path)
    digest.update("\n".join(e.render() for e in read_lock() if e.jar_set == "spark").encode())
    return cache_dir / "class-archive" / f"spark-{pyspark.__version__}-{digest.hexdigest()[:16]}.jsa"


def java_options(cache_dir: Path, spark_conf: Mapping[str, str] | None = None) -> str:
    """The driver JVM's options that map the archive, or "" when there is none (yet), or it cannot
    be named on Spark's command line (a space in its path: Spark splits the options on spaces).

    >>> java_options(Path("/nonexistent"))
    ''
    """
    try:
        path = archive_path(cache_dir, spark_conf)
        usable = path is not None and path.is_file() and " " not in str(path)
    except OSError:  # a jar replaced while its folder was read: start as without the archive
        return ""
    if not usable or path is None:
        return ""
    with contextlib.suppress(OSError):  # its time of last use: the newest are the ones kept (build)
        os.utime(path)
    return f"-XX:SharedArchiveFile={path} {_QUIET}"


def build(
    cache_dir: Path, spark_conf: Mapping[str, str] | None = None, timeout_s: float = 600
) -> tuple[Path | None, float | None]:
    """Make the archive unless it is there: (its path, seconds it took; None when it was there).
    ``spark_conf``: the sessions' extra Spark settings (their class path names the archive).
    (None, None) without a java. Of the archives of other installs (another checkout's .venv, an
    older Java), those of installs that are gone are removed and the two used last kept
    (:func:`prune`): several checkouts share the cache folder, and a fresh clone's setup must not
    remove the archive of the checkout in daily use."""
    path = archive_path(cache_dir, spark_conf)
    if path is None or path.is_file():
        return path, None
    if " " in str(path):
        raise RuntimeError(f"{path.parent} has a space in its path, which Spark's JVM options cannot carry")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(".making-*"):  # left by a build that was killed
        with contextlib.suppress(OSError):  # (or another build's, gone meanwhile)
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    # made beside its final name, then renamed: a session never maps half a file, and a JVM that has
    # mapped an older one keeps it (a rename does not change a file already open)
    with tempfile.TemporaryDirectory(prefix=".making-", dir=path.parent, ignore_cleanup_errors=True) as scratch:
        partial = Path(scratch) / path.name
        # its own process group: on a timeout or Ctrl-C the child and its JVM are killed together
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(partial), scratch],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
        )  # fmt: skip
        try:
            said, _ = child.communicate(timeout=timeout_s)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        if child.returncode != 0 or not partial.is_file():
            raise RuntimeError(f"the class-data archive was not made:\n{said[-3000:]}")
        os.replace(partial, path)
    with contextlib.suppress(OSError):  # whose it is: an archive of an install removed since goes first
        path.with_suffix(OWNER).write_text(str(_jars_dir().resolve()), encoding="utf-8")
    prune(path)
    return path, time.monotonic() - started


OWNER = ".owner"  # beside each archive: the jars folder of the install it was made for


def prune(keep: Path, others: int = KEEP_OTHERS) -> list[Path]:
    """Remove the archives beside ``keep`` of installs that are gone (their jars folder, named in
    their ``.owner`` file, no longer there: a deleted clone's), then all but the ``others`` used last
    (the newest modification times: :func:`java_options` sets it at each use); returns those removed.
    A file that cannot be removed (another user's) is left."""
    live = []
    gone = []
    for other in keep.parent.glob("*.jsa"):
        with contextlib.suppress(OSError):  # removed by another checkout's setup meanwhile
            if other == keep:
                continue
            owner = other.with_suffix(OWNER)
            if owner.is_file() and not Path(owner.read_text(encoding="utf-8").strip()).is_dir():
                gone.append(other)
            else:
                live.append((other.stat().st_mtime, other))
    live.sort()
    removed = []
    for old in gone + [old for _, old in live[: max(len(live) - others, 0)]]:
        try:
            old.unlink(missing_ok=True)
            old.with_suffix(OWNER).unlink(missing_ok=True)
        except OSError:
            continue
        removed.append(old)
    return removed


def _workload(target: Path, scratch: Path) -> None:
    """A short run of what the stream does at start-up, in a JVM that archives its classes at exit:
    Delta writes, reads, a MERGE and a streaming query with state (RocksDB), a Kafka source's plan,
    JSON parsing and a broadcast join."""
    from pyspark.sql import functions as F

    from fleetstream.config import Settings
    from fleetstream.pipeline.session import BATCH_JVM_OPTIONS, spark_session

    settings = Settings()
    # the dump's option over any driver options of the settings (which would replace it)
    conf = {k: v for k, v in settings.spark.conf.items() if k != "spark.driver.extraJavaOptions"}
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"conf": conf})})
    spark = spark_session(
        settings,
        "fleetstream-class-archive",
        extra={
            "spark.master": "local[2]",
            # without -Xlog:cds=off: why an archive could not be written reaches the build's message
            "spark.driver.extraJavaOptions": f"{BATCH_JVM_OPTIONS} -XX:ArchiveClassesAtExit={target}",
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
    # the JVM writes the archive as it exits, which it does when its stdin closes: wait for it here,
    # so that this process's exit code is the JVM's
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.proc.stdin.close()
        sys.exit(gateway.proc.wait(timeout=300))


if __name__ == "__main__":
    _workload(Path(sys.argv[1]), Path(sys.argv[2]))
