"""The class-data archive `make setup` makes (`fleetstream jars fetch`): every Spark session's driver
JVM maps it, and a session without one, or for another Java, starts without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import Settings, SparkSettings
from fleetstream.pipeline import class_archive
from fleetstream.pipeline.session import session_conf


def test_the_session_maps_the_archive_setup_made(spark: SparkSession) -> None:
    settings = Settings()
    if not settings.spark.class_archive:
        pytest.skip("FLEETSTREAM_SPARK__CLASS_ARCHIVE=false: no archive is made or used")
    # the JVM of this process's sessions (tests/conftest.py's `spark`: no FLEETSTREAM_SPARK__CONF)
    archive = class_archive.archive_path(settings.cache_dir, {})
    assert archive is not None
    assert archive.is_file(), "`make setup` (fleetstream jars fetch) made no archive"
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()  # type: ignore[union-attr]
    maps = Path(f"/proc/{pid}/maps").read_text()
    # the JVM uses it (one that does not match is not mapped: only the JDK's own archive would be)
    assert any(str(archive) in line for line in maps.splitlines()), [m for m in maps.splitlines() if ".jsa" in m]


def test_no_archive_no_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Settings().cache_dir  # the real one: its jars are there (an empty one would fetch them)
    made = tmp_path / "class-archive" / "spark.jsa"
    monkeypatch.setattr(class_archive, "archive_path", lambda *_: made)
    assert class_archive.java_options(cache) == ""  # none made: the JVM starts as before
    on = Settings(spark=SparkSettings(class_archive=True))  # whatever the environment says
    assert "SharedArchiveFile" not in session_conf(on)["spark.driver.extraJavaOptions"]
    made.parent.mkdir(parents=True)
    made.write_bytes(b"")
    options = session_conf(on)["spark.driver.extraJavaOptions"]
    assert f"-XX:SharedArchiveFile={made}" in options
    assert "-Xlog:cds=off" in options  # a JVM that cannot map it says nothing and starts without it
    off = Settings(spark=SparkSettings(class_archive=False))
    assert "SharedArchiveFile" not in session_conf(off)["spark.driver.extraJavaOptions"]
    spaced = tmp_path / "a b" / "spark.jsa"  # Spark splits the options on spaces: left out
    spaced.parent.mkdir()
    spaced.write_bytes(b"")
    monkeypatch.setattr(class_archive, "archive_path", lambda *_: spaced)
    assert class_archive.java_options(cache) == ""


def test_the_archives_used_last_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several checkouts share the cache: a fresh clone's setup removes the archives of installs that
    are gone (a deleted clone's), then keeps the two used last; each session marks its archive used
    (the checkout in daily use keeps its archive)."""
    folder = tmp_path / "class-archive"
    folder.mkdir()
    names = ("daily", "deleted-clone", "clone1", "clone2", "clone3")
    archives = {name: folder / f"spark-4.2.0-{name}.jsa" for name in names}
    for age, (name, path) in enumerate(archives.items()):  # made in this order: "daily" first, the oldest
        path.write_bytes(b"")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
        jars = tmp_path / name / "jars"
        if name != "deleted-clone":
            jars.mkdir(parents=True)
        path.with_suffix(class_archive.OWNER).write_text(str(jars))
    os.utime(archives["deleted-clone"])  # used last of all, but its install is gone
    monkeypatch.setattr(class_archive, "archive_path", lambda *_: archives["daily"])
    assert class_archive.java_options(tmp_path).startswith(f"-XX:SharedArchiveFile={archives['daily']}")
    new = folder / "spark-4.2.0-clone4.jsa"  # a fresh clone's setup made its own
    new.write_bytes(b"")
    removed = class_archive.prune(new)
    assert removed == [archives["deleted-clone"], archives["clone1"], archives["clone2"]]
    assert sorted(p.name for p in folder.glob("*.jsa")) == sorted([new.name, archives["daily"].name,
                                                                   archives["clone3"].name])  # fmt: skip
    assert not archives["deleted-clone"].with_suffix(class_archive.OWNER).exists()  # its note goes too
    # a file that cannot be removed (another user's, in a shared cache) is left, and said so by omission
    monkeypatch.setattr(Path, "unlink", lambda *_, **__: (_ for _ in ()).throw(PermissionError("not yours")))
    assert class_archive.prune(new, others=0) == []


def test_the_archive_is_named_by_the_java_and_the_class_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("")
    (home / "release").write_text('JAVA_VERSION="99"\n')
    monkeypatch.setenv("JAVA_HOME", str(home))
    first = class_archive.archive_path(tmp_path)
    assert first is not None
    assert class_archive.archive_path(tmp_path) == first  # the same install: the same name
    (home / "release").write_text('JAVA_VERSION="99.0.1"\n')  # the JDK updated in place
    updated = class_archive.archive_path(tmp_path)
    assert updated not in (None, first)
    assert class_archive.archive_path(tmp_path, {"spark.driver.extraClassPath": "/x.jar"}) not in (first, updated)
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert class_archive.archive_path(tmp_path) not in (first, updated)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "none"))
    assert class_archive.archive_path(tmp_path) is None  # no java: no archive
