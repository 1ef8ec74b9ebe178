"""Pinned JVM dependencies: resolved from Maven Central once, verified by sha256, then used offline.

The jar sets are declared in ``jvm/<set>/pom.xml``; ``jvm/jars.lock`` pins every jar of every set
(coordinate, sha256, size). :func:`ensure_jars` makes sure the cache under
``~/.cache/fleetstream/jars/<set>/`` holds exactly the locked jars, running Maven only when something
is missing. :func:`spark_jars` is what a Spark session puts in ``spark.jars``, so no session resolves
anything at start-up.

>>> LockEntry.parse("spark\\torg.example:demo:1.0\\t" + "0" * 64 + "\\t12").filename
'demo-1.0.jar'
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fleetstream.errors import FleetstreamError

JAR_SETS = ("broker", "spark", "profiler")
#: the sets `fleetstream jars fetch` (and so `make setup`) fetches; the others on first use
SETUP_SETS = ("broker", "spark")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COORD_IN_MAVEN_OUTPUT = re.compile(r"artifact:?\s+([\w.\-]+:[\w.\-]+(?::[\w.\-]+){1,3})")
_VERSION_SUFFIX = re.compile(r"-\d[\w.\-]*\.jar$")
# Artifacts whose classes pyspark ships under another artifact name (jcl-over-slf4j).
_SHIPPED_UNDER_OTHER_NAMES = {"commons-logging"}


class JarFetchError(FleetstreamError):
    """A locked jar could not be fetched or did not match its checksum."""


@dataclass(frozen=True)
class LockEntry:
    """One locked jar: the set it belongs to, its Maven coordinate, sha256 and size."""

    jar_set: str
    coordinate: str  # group:artifact:version[:classifier]
    sha256: str
    size: int

    @classmethod
    def parse(cls, line: str) -> LockEntry:
        jar_set, coordinate, sha256, size = line.split("\t")
        return cls(jar_set, coordinate, sha256, int(size))

    def render(self) -> str:
        return f"{self.jar_set}\t{self.coordinate}\t{self.sha256}\t{self.size}"

    @property
    def parts(self) -> tuple[str, str, str, str | None]:
        group, artifact, version, *rest = self.coordinate.split(":")
        return group, artifact, version, (rest[0] if rest else None)

    @property
    def filename(self) -> str:
        _, artifact, version, classifier = self.parts
        return f"{artifact}-{version}{'-' + classifier if classifier else ''}.jar"

    def repository_path(self, repo: Path) -> Path:
        """Where Maven keeps this jar in a local repository."""
        group, artifact, version, _ = self.parts
        return repo.joinpath(*group.split("."), artifact, version, self.filename)


def jvm_dir() -> Path:
    """The folder with the poms, Maven settings and jars.lock (in a checkout, or inside the wheel)."""
    packaged = Path(str(resources.files("fleetstream"))) / "_jvm"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "jvm"


def read_lock(path: Path | None = None) -> list[LockEntry]:
    """The entries of jars.lock, in file order."""
    lock = path or jvm_dir() / "jars.lock"
    lines = lock.read_text(encoding="utf-8").splitlines()
    return [LockEntry.parse(line) for line in lines if line.strip() and not line.startswith("#")]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _set_digest(entries: Iterable[LockEntry]) -> str:
    return hashlib.sha256("\n".join(e.render() for e in entries).encode()).hexdigest()


def jar_dir(cache_dir: Path, jar_set: str) -> Path:
    return cache_dir / "jars" / jar_set


def _is_ready(directory: Path, entries: list[LockEntry]) -> bool:
    marker = directory / ".verified"
    return (
        marker.is_file()
        and marker.read_text(encoding="utf-8") == _set_digest(entries)
        and all((directory / e.filename).is_file() for e in entries)
    )


def _maven_repo(cache_dir: Path) -> Path:
    return cache_dir / "m2"


def _run_maven(pom: Path, repo: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("mvn") is None:
        raise JarFetchError(
            "Maven (`mvn`) is not installed, and fleetstream resolves its JVM jars with it on first use. "
            "Install it (Debian: `apt-get install maven`) or run `make setup`, then try again."
        )
    command = [
        "mvn", "-B", "-q", "-Dstyle.color=never", "-s", str(jvm_dir() / "settings.xml"), "-f", str(pom),
        f"-Dmaven.repo.local={repo}", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _maven_failure(jar_set: str, output: str) -> JarFetchError:
    errors = [line.removeprefix("[ERROR] ").strip() for line in output.splitlines() if "[ERROR]" in line]
    cause = next((line for line in errors if line), output.strip()[-500:] or "no output")
    match = _COORD_IN_MAVEN_OUTPUT.search(cause)
    coordinate = match.group(1) if match else f"the '{jar_set}' jar set"
    return JarFetchError(
        f"Could not fetch {coordinate} from Maven Central. Cause: {cause[:600]} "
        "Check that this machine reaches Maven Central (or a mirror configured in jvm/settings.xml), "
        "then run `fleetstream jars fetch` again."
    )


def ensure_jars(cache_dir: Path, jar_set: str) -> list[Path]:
    """Make the cache hold the locked jars of ``jar_set``; return their paths in lock order.

    Network is used only when a jar is missing from the cache; every jar taken from Maven's local
    repository is checked against its sha256 before it is used.
    """
    entries = [e for e in read_lock() if e.jar_set == jar_set]
    if not entries:
        raise JarFetchError(f"jars.lock has no jars for the set '{jar_set}'; known sets: {JAR_SETS}.")
    target = jar_dir(cache_dir, jar_set)
    paths = [target / e.filename for e in entries]
    if _is_ready(target, entries):
        return paths
    repo = _maven_repo(cache_dir)
    if not all(e.repository_path(repo).is_file() for e in entries):
        result = _run_maven(jvm_dir() / jar_set / "pom.xml", repo, [f"{DEPENDENCY_PLUGIN}:resolve"])
        if result.returncode != 0:
            raise _maven_failure(jar_set, result.stdout + result.stderr)
    target.mkdir(parents=True, exist_ok=True)
    (target / ".verified").unlink(missing_ok=True)
    for entry, path in zip(entries, paths, strict=True):
        source = entry.repository_path(repo)
        if not source.is_file():
            raise JarFetchError(
                f"Maven resolved the '{jar_set}' set but not {entry.coordinate}: jvm/{jar_set}/pom.xml "
                "and jvm/jars.lock disagree. Run `fleetstream jars lock` after changing a pom."
            )
        actual = sha256_of(source)
        if actual != entry.sha256:
            raise JarFetchError(
                f"Checksum mismatch for {entry.coordinate}: jars.lock says sha256 {entry.sha256}, the "
                f"downloaded file {source} has {actual}. The file was not used. Delete it and run "
                "`fleetstream jars fetch` again; if it persists, the artifact on the server changed."
            )
        shutil.copyfile(source, path)
    for stale in set(target.glob("*.jar")) - set(paths):
        stale.unlink()
    (target / ".verified").write_text(_set_digest(entries), encoding="utf-8")
    return paths


def spark_jars(cache_dir: Path) -> list[Path]:
    """The jars every Spark session loads through ``spark.jars`` (Kafka connector, Delta, S3A)."""
    return ensure_jars(cache_dir, "spark")


def broker_classpath(cache_dir: Path) -> str:
    """The class path of the local Kafka broker."""
    return ":".join(str(p) for p in ensure_jars(cache_dir, "broker"))


def javac(java_home: Path | None, purpose: str) -> str:
    """The JDK's ``javac`` (``java_home``'s, else the one on PATH); ``purpose`` (what it compiles)
    goes into the error when there is none."""
    found = str(java_home / "bin" / "javac") if java_home else shutil.which("javac")
    if found is None or not Path(found).exists():
        raise JarFetchError(
            f"{purpose} needs a JDK's javac (Debian: `apt-get install openjdk-17-jdk-headless`), or "
            "FLEETSTREAM_JAVA_HOME set to a JDK."
        )
    return found


def compiled_jar_path(cache_dir: Path, name: str, sources: Sequence[Path]) -> Path:
    """Where :func:`compiled_jar` keeps the jar of ``sources``: named by a digest of their text and
    of the pyspark they are compiled against, so a change of either makes another jar."""
    import pyspark

    digest = hashlib.sha256(pyspark.__version__.encode())
    for source in sources:
        digest.update(source.read_bytes())
    return cache_dir / "jars" / name / f"fleetstream-{name}-{digest.hexdigest()[:16]}.jar"


def compiled_jar(cache_dir: Path, name: str, sources: Sequence[Path], java_home: Path | None, purpose: str) -> Path:
    """The jar of some of fleetstream's own Java ``sources``, compiled with the JDK's ``javac``
    against pyspark's jars on first use (about a second) and kept in the cache; ``purpose``: what
    they are, for the error when they cannot be compiled."""
    import pyspark

    jar = compiled_jar_path(cache_dir, name, sources)
    if jar.exists():
        return jar
    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory() as tmp:
        command = [javac(java_home, purpose), "--release", "17", "-nowarn", "-d", tmp, "-cp", classpath]
        build = subprocess.run([*command, *map(str, sources)], capture_output=True, text=True, check=False)
        if build.returncode != 0:
            raise JarFetchError(f"compiling {purpose} failed:\n{build.stderr.strip()}")
        jar.parent.mkdir(parents=True, exist_ok=True)
        # written beside its name, then renamed: two processes compiling at once each rename a whole jar
        with (
            tempfile.NamedTemporaryFile(dir=jar.parent, suffix=".partial", delete=False) as partial,
            zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out,
        ):
            for path in sorted(Path(tmp).rglob("*.class")):
                out.write(path, path.relative_to(tmp).as_posix())
        Path(partial.name).chmod(0o644)  # (a temporary file is its owner's alone)
        Path(partial.name).replace(jar)
    # (those of other sources stay: a few KB each, and another checkout sharing the cache, or a JVM
    # already started, may have one on its class path)
    return jar


def _pyspark_artifacts() -> set[str]:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return {_VERSION_SUFFIX.sub("", p.name) for p in jars.glob("*.jar")} | _SHIPPED_UNDER_OTHER_NAMES


def _resolved(jar_set: str, repo: Path) -> list[tuple[str, Path]]:
    """(coordinate, file) of every runtime jar Maven resolves for a set."""
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "list.txt"
        result = _run_maven(
            jvm_dir() / jar_set / "pom.xml",
            repo,
            [
                f"{DEPENDENCY_PLUGIN}:list",
                "-DincludeScope=runtime",
                "-DoutputAbsoluteArtifactFilename=true",
                "-DexcludeTransitive=false",
                f"-DoutputFile={listing}",
            ],
        )
        if result.returncode != 0:
            raise _maven_failure(jar_set, result.stdout + result.stderr)
        lines = listing.read_text(encoding="utf-8").splitlines()
    found = []
    for raw in lines:
        line = raw.strip().split(" -- ")[0]
        fields = line.split(":")
        if len(fields) < 6 or fields[2] != "jar":
            continue
        # group:artifact:jar[:classifier]:version:scope:/path
        group, artifact = fields[0], fields[1]
        classifier, version = (fields[3], fields[4]) if len(fields) >= 7 else (None, fields[3])
        path = Path(fields[-1])
        coordinate = f"{group}:{artifact}:{version}" + (f":{classifier}" if classifier else "")
        found.append((coordinate, path))
    return found


def write_lock(cache_dir: Path, path: Path | None = None) -> list[LockEntry]:
    """Resolve every set with Maven and write jars.lock (a maintainer's command after a pom change).

    The spark set leaves out any artifact that the pyspark wheel already ships.
    """
    repo = _maven_repo(cache_dir)
    shipped = _pyspark_artifacts()
    entries = []
    for jar_set in JAR_SETS:
        for coordinate, jar in sorted(_resolved(jar_set, repo)):
            if jar_set == "spark" and coordinate.split(":")[1] in shipped:
                continue
            entries.append(LockEntry(jar_set, coordinate, sha256_of(jar), jar.stat().st_size))
    header = (
        "# Every JVM jar fleetstream uses: set, Maven coordinate, sha256, size in bytes.\n"
        "# Generated by `fleetstream jars lock` from jvm/*/pom.xml; do not edit by hand.\n"
    )
    target = path or jvm_dir() / "jars.lock"
    target.write_text(header + "".join(e.render() + "\n" for e in entries), encoding="utf-8")
    return entries
