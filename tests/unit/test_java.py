from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetstream.errors import FleetstreamError
from fleetstream.local.java import find_java, parse_java_major


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("something else", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_installed_java_is_accepted() -> None:
    assert Path(find_java(None)).exists()


def test_missing_java_home_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FleetstreamError, match=r"No Java runtime found.*FLEETSTREAM_JAVA_HOME"):
        find_java(tmp_path / "no-jdk")


def test_too_old_java_is_refused(tmp_path: Path) -> None:
    # A stand-in JDK folder whose `java -version` reports Java 11, as an old install would.
    java = tmp_path / "jdk11" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n", encoding="utf-8")
    os.chmod(java, 0o755)
    with pytest.raises(FleetstreamError, match=r"is Java 11; the local Kafka broker needs Java 17"):
        find_java(tmp_path / "jdk11")
