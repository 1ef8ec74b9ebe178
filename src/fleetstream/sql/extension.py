"""The SQL endpoint's two JVM classes (``java/``): the read-only check (a Spark session extension)
and the password check (HiveServer2's CUSTOM authentication). Compiled on first use with the JDK's
``javac`` against pyspark's own jars, into the cache; a change of their source compiles them again.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fleetstream.jvm import compiled_jar

READ_ONLY_EXTENSION = "io.fleetstream.sql.ReadOnly"
PASSWORD_AUTH = "io.fleetstream.sql.PasswordAuth"  # noqa: S105 (a class name)


def _sources() -> list[Path]:
    return sorted(Path(str(resources.files("fleetstream.sql"))).joinpath("java").glob("*.java"))


def extension_jar(cache_dir: Path, java_home: Path | None = None) -> Path:
    """The jar of the classes in ``java/``, built once per version of their source."""
    return compiled_jar(cache_dir, "sql", _sources(), java_home, "The SQL endpoint's two small classes")
