"""The SQL endpoint's two JVM classes (``java/``): the read-only check (a Spark session extension)
and the password check (HiveServer2's CUSTOM authentication). Compiled on first use with the JDK's
``javac`` against pyspark's own jars, into the cache; a change of their source compiles them again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

from fleetstream.errors import FleetstreamError

READ_ONLY_EXTENSION = "io.fleetstream.sql.ReadOnly"
PASSWORD_AUTH = "io.fleetstream.sql.PasswordAuth"  # noqa: S105 (a class name)


def _sources() -> list[Path]:
    return sorted(Path(str(resources.files("fleetstream.sql"))).joinpath("java").glob("*.java"))


def _javac(java_home: Path | None) -> str:
    javac = str(java_home / "bin" / "javac") if java_home else shutil.which("javac")
    if javac is None or not Path(javac).exists():
        raise FleetstreamError(
            "The SQL endpoint compiles two small classes on first use and needs a JDK's javac "
            "(Debian: `apt-get install openjdk-17-jdk-headless`), or FLEETSTREAM_JAVA_HOME set to a JDK."
        )
    return javac


def extension_jar(cache_dir: Path, java_home: Path | None = None) -> Path:
    """The jar of the classes in ``java/``, built once per version of their source."""
    import pyspark

    sources = _sources()
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    jar = cache_dir / "sql" / f"fleetstream-sql-{digest}.jar"
    if jar.exists():
        return jar
    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory() as tmp:
        build = subprocess.run(
            [_javac(java_home), "--release", "17", "-nowarn", "-d", tmp, "-cp", classpath, *map(str, sources)],
            capture_output=True,
            text=True,
            check=False,
        )
        if build.returncode != 0:
            raise FleetstreamError(f"compiling the SQL endpoint's classes failed:\n{build.stderr.strip()}")
        jar.parent.mkdir(parents=True, exist_ok=True)
        partial = jar.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
            for path in sorted(Path(tmp).rglob("*.class")):
                out.write(path, path.relative_to(tmp).as_posix())
        partial.replace(jar)
    return jar
