"""The class-data archive `make setup` makes (`fleetstream jars fetch`): every Spark session's driver
JVM maps it, and a session without one, or for another Java, starts without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import Settings, SparkSettings
from fleetstream.pipeline import class_archive
from fleetstream.pipeline.session import session_conf


def test_the_session_maps_the_archive_setup_made(spark: SparkSession) -> None:
    archive = class_archive.archive_path(Settings().cache_dir)
    assert archive is not None
    assert archive.is_file(), "`make setup` (fleetstream jars fetch) made no archive"
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()  # type: ignore[union-attr]
    mapped = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if ".jsa" in line}
    assert str(archive) in mapped, mapped  # the JVM uses it (a mismatch would leave only the JDK's own)


def test_no_archive_no_option_and_another_java_looks_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(cache_dir=tmp_path)
    assert class_archive.java_options(tmp_path) == ""  # none made in this cache: the JVM starts as before
    assert "SharedArchiveFile" not in session_conf(settings)["spark.driver.extraJavaOptions"]
    made = class_archive.archive_path(tmp_path)
    assert made is not None
    made.parent.mkdir(parents=True)
    made.write_bytes(b"")
    options = session_conf(settings)["spark.driver.extraJavaOptions"]
    assert f"-XX:SharedArchiveFile={made}" in options
    assert "-Xlog:cds=off" in options
    off = Settings(cache_dir=tmp_path, spark=SparkSettings(class_archive=False))
    assert "SharedArchiveFile" not in session_conf(off)["spark.driver.extraJavaOptions"]
    fake_home = tmp_path / "jdk"
    (fake_home / "bin").mkdir(parents=True)
    (fake_home / "bin" / "java").write_text("")
    (fake_home / "release").write_text('JAVA_VERSION="99"\n')
    monkeypatch.setenv("JAVA_HOME", str(fake_home))
    assert class_archive.archive_path(tmp_path) not in (None, made)  # another Java: another archive
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "none"))
    assert class_archive.archive_path(tmp_path) is None
