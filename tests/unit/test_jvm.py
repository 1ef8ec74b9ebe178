from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fleetstream import jvm
from fleetstream.config import Settings


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    return Settings().cache_dir


def test_lock_covers_every_set_once() -> None:
    entries = jvm.read_lock()
    assert {e.jar_set for e in entries} == set(jvm.JAR_SETS)
    keys = [(e.jar_set, e.coordinate) for e in entries]
    assert len(keys) == len(set(keys))
    assert all(len(e.sha256) == 64 and e.size > 0 for e in entries)


def test_lock_pins_the_versions_we_promise() -> None:
    coordinates = {e.coordinate for e in jvm.read_lock()}
    assert "org.apache.kafka:kafka_2.13:4.3.0" in coordinates
    assert "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0" in coordinates
    assert "io.delta:delta-spark_4.2_2.13:4.4.0" in coordinates
    assert "org.apache.hadoop:hadoop-aws:3.5.0" in coordinates
    assert not any(c.startswith("software.amazon.awssdk:bundle:") for c in coordinates)


def test_spark_set_leaves_out_what_pyspark_ships() -> None:
    import pyspark

    shipped = {p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    hadoop = [name for name in shipped if name.startswith("hadoop-client-api-")]
    assert hadoop == ["hadoop-client-api-3.5.0.jar"], "hadoop-aws must match pyspark's Hadoop"
    for path in jvm.spark_jars(Settings().cache_dir):
        assert path.name not in shipped


def test_cached_jars_match_their_checksums(cache_dir: Path) -> None:
    for jar_set in jvm.SETUP_SETS:  # (the profiler's set is fetched when a profile is first asked for)
        paths = jvm.ensure_jars(cache_dir, jar_set)
        entries = [e for e in jvm.read_lock() if e.jar_set == jar_set]
        for path, entry in zip(paths, entries, strict=True):
            assert path.name == entry.filename
            assert jvm.sha256_of(path) == entry.sha256


def test_tampered_jar_is_refused(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = next(e for e in jvm.read_lock() if e.coordinate.startswith("org.jspecify:"))
    fake_repo_file = entry.repository_path(tmp_path / "m2")
    fake_repo_file.parent.mkdir(parents=True)
    shutil.copyfile(entry.repository_path(cache_dir / "m2"), fake_repo_file)
    with fake_repo_file.open("ab") as handle:
        handle.write(b"tampered")
    monkeypatch.setattr(jvm, "read_lock", lambda path=None: [entry])
    with pytest.raises(jvm.JarFetchError, match=r"Checksum mismatch for org\.jspecify:jspecify:1\.0\.0"):
        jvm.ensure_jars(tmp_path, entry.jar_set)
    assert not (tmp_path / "jars" / entry.jar_set / entry.filename).exists()


def test_lock_is_in_sync_with_the_poms(tmp_path: Path, cache_dir: Path) -> None:
    regenerated = jvm.write_lock(cache_dir, tmp_path / "jars.lock")
    assert regenerated == jvm.read_lock(), "run `fleetstream jars lock` after changing jvm/*/pom.xml"


def test_unfetchable_jar_names_the_coordinate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jvm_copy = tmp_path / "jvm"
    (jvm_copy / "broken").mkdir(parents=True)
    shutil.copy(jvm.jvm_dir() / "settings.xml", jvm_copy / "settings.xml")
    (jvm_copy / "broken" / "pom.xml").write_text(
        """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
        <groupId>x</groupId><artifactId>broken</artifactId><version>1</version><packaging>pom</packaging>
        <dependencies><dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-clients</artifactId>
        <version>0.0.404</version></dependency></dependencies></project>""",
        encoding="utf-8",
    )
    (jvm_copy / "jars.lock").write_text(
        "broken\torg.apache.kafka:kafka-clients:0.0.404\t" + "0" * 64 + "\t1\n", encoding="utf-8"
    )
    monkeypatch.setattr(jvm, "jvm_dir", lambda: jvm_copy)
    with pytest.raises(jvm.JarFetchError, match=r"Could not fetch org\.apache\.kafka:kafka-clients.*0\.0\.404"):
        jvm.ensure_jars(tmp_path / "cache", "broken")
