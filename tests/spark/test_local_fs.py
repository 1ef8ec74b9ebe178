"""Hadoop's local file system as the sessions use it (``session.LOCAL_FS_CONF``): no process per file,
the same results as Hadoop's own.

Without Hadoop's native library, its local file system starts a ``chmod`` for every file it creates
and two ``readlink`` for every rename through a FileContext (Delta's commits). Those processes are
children of the Spark JVM, so the CPU they used shows in its reaped children's CPU time.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import Settings
from fleetstream.pipeline import session
from fleetstream.pipeline.session import LOCAL_FS_CONF, local_fs_jar, local_fs_path


def _jvm(spark: SparkSession):  # type: ignore[no-untyped-def]
    return spark.sparkContext._jvm


def _children_ticks(spark: SparkSession) -> int:
    """The CPU time (clock ticks) of the JVM's children that it has reaped."""
    pid = _jvm(spark).ProcessHandle.current().pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[13]) + int(fields[14])  # cutime, cstime


def _uri(path: Path) -> str:
    return path.resolve().as_uri()


def test_the_sessions_use_the_local_file_system_of_their_own(spark: SparkSession, tmp_path: Path) -> None:
    jvm = _jvm(spark)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI(_uri(tmp_path)), conf)
    assert fs.getClass().getName() == LOCAL_FS_CONF["spark.hadoop.fs.file.impl"]
    assert fs.getRaw().getClass().getName() == "io.fleetstream.hadoop.NoForkRawLocalFileSystem"
    context = jvm.org.apache.hadoop.fs.FileContext.getFileContext(jvm.java.net.URI(_uri(tmp_path)), conf)
    assert (
        context.getDefaultFileSystem().getClass().getName()
        == LOCAL_FS_CONF["spark.hadoop.fs.AbstractFileSystem.file.impl"]
    )
    # and a Delta table written and read through them, with its checksum sidecars as before
    spark.range(5).write.format("delta").save(str(tmp_path / "t"))
    assert spark.read.format("delta").load(str(tmp_path / "t")).count() == 5
    log = tmp_path / "t" / "_delta_log"
    assert (log / "00000000000000000000.json").is_file()
    assert (log / ".00000000000000000000.json.crc").is_file()


def test_files_get_the_modes_hadoop_gave_them(spark: SparkSession, tmp_path: Path) -> None:
    jvm = _jvm(spark)
    hadoop = jvm.org.apache.hadoop.fs
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    ours = hadoop.FileSystem.get(jvm.java.net.URI(_uri(tmp_path)), conf)
    stock = hadoop.RawLocalFileSystem()
    stock.initialize(jvm.java.net.URI("file:///"), conf)
    for fs, name in ((ours, "ours"), (stock, "stock")):
        made = hadoop.Path(_uri(tmp_path / f"{name}.txt"))
        fs.create(made, True).close()
        fs.setPermission(made, hadoop.permission.FsPermission.createImmutable(0o640))
        folder = hadoop.Path(_uri(tmp_path / f"{name}-dir"))
        fs.mkdirs(folder, hadoop.permission.FsPermission.createImmutable(0o750))
    for name in ("ours", "stock"):
        assert stat.S_IMODE((tmp_path / f"{name}.txt").stat().st_mode) == 0o640
        assert stat.S_IMODE((tmp_path / f"{name}-dir").stat().st_mode) == 0o750
    with pytest.raises(Exception, match="FileNotFoundException"):
        ours.setPermission(
            hadoop.Path(_uri(tmp_path / "absent")), hadoop.permission.FsPermission.createImmutable(0o600)
        )


def test_links_read_as_hadoop_reads_them(spark: SparkSession, tmp_path: Path) -> None:
    jvm = _jvm(spark)
    hadoop = jvm.org.apache.hadoop.fs
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = hadoop.FileSystem.get(jvm.java.net.URI(_uri(tmp_path)), conf).getRaw()
    (tmp_path / "target.txt").write_text("x")
    os.symlink(tmp_path / "target.txt", tmp_path / "link")
    os.symlink(tmp_path / "gone.txt", tmp_path / "dangling")
    plain = fs.getFileLinkStatus(hadoop.Path(_uri(tmp_path / "target.txt")))
    assert not plain.isSymlink()
    assert plain.getLen() == 1
    link = fs.getFileLinkStatus(hadoop.Path(str(tmp_path / "link")))
    assert link.isSymlink()
    assert link.getSymlink().toUri().getPath() == str(tmp_path / "target.txt")
    dangling = fs.getFileLinkStatus(hadoop.Path(str(tmp_path / "dangling")))
    assert dangling.isSymlink()
    assert dangling.getLen() == 0
    assert fs.getLinkTarget(hadoop.Path(str(tmp_path / "link"))).toString() == str(tmp_path / "target.txt")
    with pytest.raises(Exception, match="FileNotFoundException"):
        fs.getFileLinkStatus(hadoop.Path(str(tmp_path / "nothing")))


def test_no_process_is_started_per_file(spark: SparkSession, tmp_path: Path) -> None:
    """Hadoop's own file system (the control) spends its children's CPU on the same calls; ours none."""
    jvm = _jvm(spark)
    hadoop = jvm.org.apache.hadoop.fs
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    gateway = spark.sparkContext._gateway
    ours = hadoop.FileContext.getFileContext(jvm.java.net.URI(_uri(tmp_path)), conf)
    hadoops = jvm.org.apache.hadoop.conf.Configuration(conf)
    hadoops.set("fs.AbstractFileSystem.file.impl", "org.apache.hadoop.fs.local.LocalFs")
    stock = hadoop.FileContext.getFileContext(jvm.java.net.URI(_uri(tmp_path)), hadoops)
    assert stock.getDefaultFileSystem().getClass().getName() == "org.apache.hadoop.fs.local.LocalFs"
    create = jvm.java.util.EnumSet.of(hadoop.CreateFlag.CREATE)
    no_options = gateway.new_array(getattr(hadoop, "Options$CreateOpts"), 0)
    rename = gateway.new_array(getattr(hadoop, "Options$Rename"), 0)
    used = {}
    for name, context in (("stock", stock), ("ours", ours), ("stock again", stock)):
        before = _children_ticks(spark)
        for i in range(60):  # a commit's pattern: a file made, then renamed into place
            made = hadoop.Path(_uri(tmp_path / f"{name}-{i}.tmp"))
            context.create(made, create, no_options).close()
            context.rename(made, hadoop.Path(_uri(tmp_path / f"{name}-{i}.json")), rename)
        used[name] = _children_ticks(spark) - before
    assert sorted(p.name for p in tmp_path.glob("ours-*.json")) == sorted(f"ours-{i}.json" for i in range(60))
    # 180 processes of the control take tens of ticks; a stray child of the JVM meanwhile takes a few
    assert min(used["stock"], used["stock again"]) >= 10, used
    assert used["ours"] <= 3, used


def test_without_a_javac_sessions_keep_hadoops_own(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jre = tmp_path / "jre"
    (jre / "bin").mkdir(parents=True)
    settings = Settings(cache_dir=tmp_path / "cache", java_home=jre)
    session._warn_once.cache_clear()  # (said once per process: an earlier test may have said it)
    with caplog.at_level(logging.WARNING, logger="fleetstream.pipeline.session"):
        assert local_fs_jar(settings) is None
    assert "javac" in caplog.text
    assert "Hadoop's own" in caplog.text
    # with one, the classes are compiled into the cache
    built = local_fs_jar(settings.model_copy(update={"java_home": None}))
    assert built == local_fs_path(settings.cache_dir)
    assert built.is_file()
