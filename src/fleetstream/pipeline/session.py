"""The one place Spark sessions are built: pinned jars, Delta, S3A, and settings-driven master.

>>> conf = session_conf(Settings())
>>> conf["spark.sql.extensions"]
'io.delta.sql.DeltaSparkSessionExtension'
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from fleetstream.clients import spark_s3, spark_s3_keys
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.jvm import compiled_jar, compiled_jar_path, spark_jars
from fleetstream.local import spark_cluster
from fleetstream.pipeline import class_archive

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


#: The driver JVM's options (in local mode the executors run in it too). The parallel collector
#: spends less CPU than G1 on a batch engine's short-lived objects (G1's concurrent marking was a
#: steady share of a quiet lake's CPU). Tiered compilation stays on: without it `make run`'s
#: dashboard showed its first data 92 s after the command (53 s with it), and with C1 alone the
#: code cache's sweeper kept recompiling (docs/benchmarks.md). C2, the optimising compiler, takes
#: a method ten times later than HotSpot's defaults: a quiet lake runs thousands of planning
#: methods a few times per batch, and with the defaults C2 compiled them one by one for minutes
#: (0.4 to 0.7 of a core in the fifth minute, against 0.13 with these); a backlog drained as fast
#: (3,142 events/s with them, 3,326 without, one run each). The alert publisher's JVM keeps the
#: defaults (G1's short pauses).
BATCH_JVM_OPTIONS = " ".join(
    (
        "-XX:+UseParallelGC",
        "-XX:Tier4InvocationThreshold=50000",
        "-XX:Tier4MinInvocationThreshold=6000",
        "-XX:Tier4CompileThreshold=150000",
        "-XX:Tier4BackEdgeThreshold=400000",
    )
)


#: The driver's log settings: Spark's defaults at WARN, without the lines that repeat in every run
#: and tell an operator nothing (each is named in the file with what it printed)
LOG4J2 = Path(__file__).with_name("log4j2.properties")


def spark_conf_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder Spark's launcher puts first on the driver's class path: ``SPARK_CONF_DIR``, else
    ``$SPARK_HOME/conf``, else the installed pyspark's ``conf``."""
    if environ.get("SPARK_CONF_DIR"):
        return Path(environ["SPARK_CONF_DIR"])
    return Path(environ.get("SPARK_HOME") or spark_cluster.spark_home(), "conf")


#: the files log4j2 finds on the class path by itself (Spark's configuration folder is on it)
LOG4J2_OWN = tuple(
    f"log4j2{test}.{ext}" for test in ("", "-test") for ext in ("properties", "xml", "yaml", "yml", "json", "jsn")
)


def log_options(environ: Mapping[str, str] = os.environ, config: Path = LOG4J2) -> str:
    """The driver JVM's options: any ``spark.driver.defaultJavaOptions`` of Spark's own
    ``spark-defaults.conf`` (an administrator's: this setting replaces it), then the one that
    selects ``config``; or just the former when Spark's configuration folder (:func:`spark_conf_dir`)
    has a log4j2 file of its own (``LOG4J2_OWN``): the user's settings stand.

    >>> print(log_options({"SPARK_CONF_DIR": "/nonexistent"}, Path("/a b/it's.properties")))
    "-Dlog4j2.configurationFile=/a b/it's.properties"
    """
    folder = spark_conf_dir(environ)
    admin = _spark_default(folder, "spark.driver.defaultJavaOptions")
    if any((folder / name).is_file() for name in LOG4J2_OWN):
        return admin
    option = f"-Dlog4j2.configurationFile={config}"
    if any(c in option for c in " \t'\"\\"):  # Spark's launcher splits at spaces outside quotes
        option = '"' + option.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{admin} {option}".strip()


def _spark_default(folder: Path, key: str) -> str:
    """A setting of ``spark-defaults.conf`` in ``folder`` ("" when absent): a Java properties file,
    key and value apart by whitespace, ``=`` or ``:``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = Path(d, "spark-defaults.conf").write_text("# x\\nspark.driver.defaultJavaOptions  -Da=1 -Db=2\\n")
    ...     _spark_default(Path(d), "spark.driver.defaultJavaOptions")
    '-Da=1 -Db=2'
    """
    try:
        lines = (folder / "spark-defaults.conf").read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for text in (line.strip() for line in lines):
        if text.startswith(key) and text[len(key) : len(key) + 1] in (" ", "\t", "=", ":"):
            return text[len(key) :].lstrip(" \t").removeprefix("=").removeprefix(":").strip()
    return ""


#: Hadoop's local file system without the processes it starts for every file it creates (a ``chmod``)
#: and every rename through a FileContext (two ``readlink``) when its native library, which Spark does
#: not ship, is absent: ``java/NoFork*.java``. A quiet fleet's lake started about 480 such processes a
#: minute, 0.04 core of CPU outside the JVM (docs/benchmarks.md, session 59).
LOCAL_FS_CONF = {
    "spark.hadoop.fs.file.impl": "io.fleetstream.hadoop.NoForkLocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "io.fleetstream.hadoop.NoForkLocalFs",
}
_LOCAL_FS_PURPOSE = "Hadoop's local file system without a process per file (pipeline/java)"


def _local_fs_sources() -> list[Path]:
    return sorted(Path(str(resources.files("fleetstream.pipeline"))).joinpath("java").glob("*.java"))


def local_fs_path(cache_dir: Path) -> Path:
    """Where the jar of ``LOCAL_FS_CONF``'s classes is (whether or not it is built yet)."""
    return compiled_jar_path(cache_dir, "localfs", _local_fs_sources())


def local_fs_jar(settings: Settings) -> Path | None:
    """The jar of ``LOCAL_FS_CONF``'s classes, compiled on first use; None when it cannot be (no
    JDK's javac): sessions then use Hadoop's own local file system, as before, and say so once."""
    try:
        return compiled_jar(settings.cache_dir, "localfs", _local_fs_sources(), settings.java_home, _LOCAL_FS_PURPOSE)
    except FleetstreamError as exc:
        _warn_once(f"{exc}; Spark uses Hadoop's own, which starts a process per local file")
        return None


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def with_class_path(conf: dict[str, str], jar: Path) -> None:
    """Put ``jar`` first on the driver's and the executors' class paths in ``conf`` (before any
    there): Hadoop loads a file system's class with whatever class loader its thread has, so the
    classes must be on the JVM's own class path, not only in ``spark.jars``."""
    for key in ("spark.driver.extraClassPath", "spark.executor.extraClassPath"):
        there = [p for p in conf.get(key, "").split(os.pathsep) if p]
        if str(jar) not in there:
            conf[key] = os.pathsep.join([str(jar), *there])


LOCAL_CHECKPOINT_FILE_MANAGER = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)


def session_conf(
    settings: Settings, with_s3: bool = False, batch_jvm: bool = True, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Spark configuration for fleetstream jobs; S3 credentials are added only when ``with_s3``;
    ``batch_jvm``: the driver JVM gets :data:`BATCH_JVM_OPTIONS`; ``extra``: a job's own settings
    (over the defaults, under ``settings.spark.conf``)."""
    conf = {
        "spark.master": settings.spark.master,
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.jars": ",".join(str(p) for p in spark_jars(settings.cache_dir)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        # Timestamps as Parquet INT64 microseconds, not Spark's default INT96, which carries no
        # row-group statistics: in a compacted file, a reader of the last minutes (the cockpit)
        # skips the row groups before them. On the bench lake's hour, the cockpit's read of a
        # compacted open day took 60 ms against 86 ms with INT96 (docs/benchmarks.md).
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.shuffle.partitions": "4",
        # Delta rebuilds a table's state (its files, and the transaction ids that make the
        # pipeline's writes idempotent) at every commit, with this many tasks. The default, 50,
        # costs 3.8 s of CPU per small commit on two cores, 2 costs 0.58 s and 1 costs 0.50 s
        # (docs/benchmarks.md). Raise it on a cluster, for tables of many files.
        "spark.databricks.delta.snapshotPartitions": "1",
        # A generated function longer than HotSpot compiles (8,000 bytes of bytecode) runs in the
        # JVM's interpreter: Spark's guide advises this limit on HotSpot, above which that part of
        # the plan is evaluated without whole-stage code generation instead. Validation's plan is
        # such a part: 8.4 against 14.5 µs per record with the default (docs/benchmarks.md).
        # Letting HotSpot compile huge methods instead (-XX:-DontCompileHugeMethods, default limit)
        # was faster on warm batches but drained the bench's backlog slower (8,993 and 8,579
        # against 10,771 and 10,498 events/s): not kept.
        "spark.sql.codegen.hugeMethodLimit": "8000",
        # Compiled generated code is kept by its source: the validation's plan alone generates tens of
        # classes, and with Spark's default of 100 entries every micro-batch compiled some again.
        "spark.sql.codegen.cache.maxEntries": "2000",
        # ...and by its source text, which holds the stage's number in the plan unless told not to:
        # the same code at another place in a plan (a union of one chunk more) compiled again.
        "spark.sql.codegen.useIdInClassName": "false",
        # Queries share the cores by pools (the alert path has its own), not first come first served.
        "spark.scheduler.mode": "FAIR",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        **spark_s3(settings),
    }
    # (on this machine only: a cluster elsewhere has neither the jar nor, for its lake, local files)
    on_this_machine = settings.spark.master.startswith("local") or settings.spark.on_local_cluster
    local_fs = local_fs_jar(settings) if on_this_machine else None
    if local_fs is not None:
        conf.update(LOCAL_FS_CONF)
    java_options = [BATCH_JVM_OPTIONS] if batch_jvm else []
    if settings.spark.class_archive:  # the classes Spark loads at start-up, mapped (class_archive.py)
        java_options.append(class_archive.java_options(settings.cache_dir, settings.spark.conf))
    if any(java_options):
        conf["spark.driver.extraJavaOptions"] = " ".join(o for o in java_options if o)
    if logs := log_options():
        # before the extra options (Spark's launcher puts these first): a job's own extraJavaOptions
        # (the SQL endpoint's) or a user's add to it, and a -Dlog4j2.configurationFile there wins
        conf["spark.driver.defaultJavaOptions"] = logs
    if "://" not in settings.lake.root or settings.lake.root.startswith("file:"):
        # Streaming checkpoints and Delta's checksum files on a local disk: written through Hadoop's
        # FileSystem, not its FileContext, which for a local file starts a `chmod` and two `readlink`
        # processes per file (about 600 processes a minute on a quiet fleet). A local rename is atomic.
        conf["spark.sql.streaming.checkpointFileManagerClass"] = LOCAL_CHECKPOINT_FILE_MANAGER
    conf.update(spark_cluster.session_conf(settings))
    conf.update(extra or {})
    conf.update(settings.spark.conf)
    if local_fs is not None and any(conf.get(key) == value for key, value in LOCAL_FS_CONF.items()):
        with_class_path(conf, local_fs)  # (after a job's or a user's own class path, which it joins)
    if with_s3:
        conf.update(spark_s3_keys(settings))
    return conf


#: SQL settings of the micro-batch alert-data publisher's own session (``publisher_session``). Its
#: batches are small (a few thousand records), so fixed costs per batch set its latency; measured
#: with the publisher alone at 5,000 events/s, they took a batch from 330 to 205 ms (docs/benchmarks.md):
PUBLISHER_SQL_CONF = {
    # Adaptive execution re-plans a query after each stage; the publisher's plan has no shuffle to
    # adapt, only its broadcast of the car dimension, after which the plan was optimised again.
    "spark.sql.adaptive.enabled": "false",
    # Above the method size limit, whole-stage code generation is dropped for the validation's part
    # of the plan, and each task then generates that projection's code again (its compiled class is
    # cached, but generating the source is not): tens of ms in every task of every batch.
    "spark.sql.codegen.hugeMethodLimit": "65535",
}


def publisher_session(spark: SparkSession) -> SparkSession:
    """A session for the micro-batch alert-data publisher: the same Spark context (cores, cached
    car dimension, jars), its own SQL settings (``PUBLISHER_SQL_CONF``)."""
    session = spark.newSession()
    for key, value in PUBLISHER_SQL_CONF.items():
        session.conf.set(key, value)
    return session


def spark_session(
    settings: Settings,
    app_name: str = "fleetstream",
    with_s3: bool = False,
    batch_jvm: bool = True,
    extra: dict[str, str] | None = None,
) -> SparkSession:
    """A SparkSession with every jar taken from the local cache (nothing is resolved at start-up);
    ``batch_jvm``, ``extra``: see :func:`session_conf`."""
    from pyspark.sql import SparkSession

    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per gateway call otherwise
    conf = session_conf(settings, with_s3, batch_jvm, extra)
    if settings.spark.master.startswith("local") or settings.spark.on_local_cluster:
        # local Python workers (UDFs) run this interpreter, where fleetstream is importable, unless
        # PYSPARK_PYTHON says otherwise; on a cluster elsewhere the executors' own Python applies
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if settings.spark.master.startswith("local"):
        # (the driver binds 127.0.0.1 by spark.driver.bindAddress; given here too, Spark does not warn
        # at each start that the host's name resolves to a loopback address)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    # getOrCreate may return a session that already runs (in tests, or a notebook); Hadoop settings
    # (S3A endpoint and keys) only reach it through its Hadoop configuration.
    hadoop = session.sparkContext._jsc.hadoopConfiguration()
    for key, value in conf.items():
        if key.startswith("spark.hadoop."):
            hadoop.set(key.removeprefix("spark.hadoop."), value)
    return session
