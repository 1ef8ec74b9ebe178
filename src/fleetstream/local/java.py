"""Finding a Java runtime that can run the Kafka broker (17 or newer)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from fleetstream.errors import FleetstreamError

MIN_JAVA = 17
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def parse_java_major(version_output: str) -> int | None:
    """The major version from `java -version` output ("1.8.0_x" is 8, "17.0.15" is 17).

    >>> parse_java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> parse_java_major('java version "1.8.0_392"')
    8
    """
    match = _VERSION.search(version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java(java_home: Path | None) -> str:
    """The path of a Java 17+ executable, or an error that says how to get one."""
    java = str(java_home / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        where = f"at {java_home}/bin/java (FLEETSTREAM_JAVA_HOME)" if java_home else "on PATH"
        raise FleetstreamError(
            f"No Java runtime found {where}. The local Kafka broker needs Java {MIN_JAVA} or newer: "
            "install it (Debian: `apt-get install openjdk-17-jre-headless`) or set FLEETSTREAM_JAVA_HOME "
            "to a JDK folder, or point FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS at an existing Kafka cluster."
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(result.stderr + result.stdout)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major else "a Java whose version could not be read"
        raise FleetstreamError(
            f"{java} is {found}; the local Kafka broker needs Java {MIN_JAVA} or newer. Install a newer "
            "JDK and put it on PATH, or set FLEETSTREAM_JAVA_HOME to its folder."
        )
    return java
