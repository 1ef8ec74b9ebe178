"""Where a JVM of the pipeline spends its CPU: a sampling profile by async-profiler, summed by thread
and by activity (`fleetstream bench pipeline --measures quiet --quiet-profile`).

async-profiler (``tools.profiler:async-profiler``, its native library for Linux on x86-64, locked in
jvm/jars.lock and fetched on first use) is loaded into the running JVM through the JDK's attach API
(``LoadAgent.java``, compiled on first use), started with a sample of the running thread's stack every
10 ms of the process's CPU time (``itimer``: it needs no perf events, which virtual machines often
lack; a sample is 10 ms of CPU, whichever thread it lands in) and stopped with the
samples written as collapsed stacks (one line per distinct stack: its frames, then its count).
:func:`summarize` reads that file. docs/benchmarks.md (session 63) shows what it found.
"""

from __future__ import annotations

import platform
import re
import subprocess
import zipfile
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from fleetstream.errors import FleetstreamError
from fleetstream.jvm import compiled_jar, ensure_jars, jar_dir
from fleetstream.local.java import find_java

#: a sample every 10 ms of the process's CPU time (``itimer``), its stack kept with its thread's name
START_OPTIONS = "start,event=itimer,interval=10ms,threads"
SAMPLE_S = 0.01
LIBRARY = "linux-x64/libasyncProfiler.so"

#: a sample's thread (the stack's first frame, ``[name tid=N]``) -> the group it counts in; the first match
THREADS: tuple[tuple[str, str], ...] = (
    ("HotSpot's compilers", r"CompilerThre"),
    ("garbage collector and VM thread", r"GC Thread|VM Thread|G1 |ParGC|VM Periodic"),
    ("the lake query's stream thread", r"^\[stream execution thread for lake\b"),
    ("the stateful query's stream thread", r"^\[stream execution thread for episodes"),
    ("other stream threads", r"^\[stream execution thread"),
    ("executor tasks and exchanges", r"Executor task|ResultQueryStage|shuffle-exchange|broadcast-exchange"),
    ("py4j threads (the batch's parallel steps)", r"^\[Thread-\d"),
    ("Arrow results to Python", r"serve-Arrow|serve-DataFrame"),
    ("the stateful query's state server", r"stateConnection|TransformWithState"),
    ("scheduler, listeners, RPC", r"dag-scheduler|listener|dispatcher|task-result|element-tracking|netty|Block|rpc"),
)
#: a sample's stack -> what it was doing; the first match
ACTIVITIES: tuple[tuple[str, str], ...] = (
    (
        "query planning (analysis, optimisation, physical plan)",
        r"QueryExecution\.(analyzed|optimizedPlan|sparkPlan|executedPlan|assertAnalyzed|assertOptimized)"
        r"|Analyzer\.execute|/Optimizer|SparkPlanner|prepareForExecution|QueryPlanner\.plan"
        r"|AdaptiveSparkPlanExec\.(reOptimize|newQueryStage|createQueryStages)",
    ),
    ("code generation (Janino)", r"CodeGenerator\$\.(compile|doCompile)|org/codehaus/janino"),
    (
        "the Delta log (snapshots, commits)",
        r"DeltaLog\.update|delta/Snapshot\.|OptimisticTransaction|DeltaHistoryManager",
    ),
    ("the Kafka client", r"org/apache/kafka/"),
    ("Arrow conversion", r"[Aa]rrow"),
    ("RocksDB (state store)", r"[Rr]ocks[Dd][Bb]"),
    # (before the streams of serialisation, compression and sockets, which the patterns above take first)
    (
        "Parquet and file I/O",
        r"parquet|FileFormatWriter|hadoop/fs/|FileInputStream|FileOutputStream|RandomAccessFile|S3A",
    ),
)


def library(cache_dir: Path) -> Path:
    """async-profiler's native library, fetched (checked against jars.lock) and unpacked on first use."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise FleetstreamError(
            f"The profile needs async-profiler's library for Linux on x86-64; this is {platform.system()} on "
            f"{platform.machine()}."
        )
    (jar,) = ensure_jars(cache_dir, "profiler")
    target = jar_dir(cache_dir, "profiler") / Path(LIBRARY).name
    if not target.exists() or target.stat().st_mtime < jar.stat().st_mtime:
        with zipfile.ZipFile(jar) as archive:
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.read(LIBRARY))
            partial.replace(target)
    return target


class Profiler:
    """async-profiler in the JVM of process ``pid``: :meth:`start`, then :meth:`stop` into a file."""

    def __init__(self, pid: int, cache_dir: Path, java_home: Path | None = None) -> None:
        self.pid, self.library = pid, library(cache_dir)
        sources = sorted(Path(str(resources.files("fleetstream.bench"))).joinpath("java").glob("*.java"))
        self.jar = compiled_jar(
            cache_dir, "profiler-loader", sources, java_home, "The profiler's loader (LoadAgent.java)"
        )
        exe = Path(f"/proc/{pid}/exe")  # (the attaching JVM is best the target's own)
        self.java = str(exe.resolve()) if exe.exists() else find_java(java_home)

    def _load(self, options: str) -> None:
        command = [self.java, "-cp", str(self.jar), "LoadAgent", str(self.pid), str(self.library), options]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise FleetstreamError(
                f"async-profiler in the JVM of process {self.pid} ({options.partition(',')[0]}) failed: "
                f"{(done.stderr or done.stdout).strip()[-1000:]}"
            )

    def start(self) -> None:
        self._load(START_OPTIONS)

    def stop(self, out: Path) -> Path:
        """Stop sampling and write the samples to ``out`` (collapsed stacks); returns ``out``."""
        self._load(f"stop,file={out},collapsed,threads")
        return out


def _first(patterns: tuple[tuple[str, str], ...], text: str, default: str) -> str:
    return next((label for label, pattern in patterns if re.search(pattern, text)), default)


def summarize(lines: Iterable[str], seconds: float) -> dict[str, float]:
    """Cores (CPU seconds per second of ``seconds``) by thread group (``thread:<group>``) and by
    activity (``activity:<what>``), and in all (``total``), from collapsed stacks with threads.

    >>> lines = ["[C2 CompilerThread0 tid=7];Compile 50",
    ...          "[stream execution thread for lake [id = 1] tid=9];a;QueryExecution.analyzed;b 30",
    ...          "[Thread-4 tid=12];x;org/apache/spark/sql/delta/DeltaLog.update;y 20"]
    >>> got = summarize(lines, 1.0)
    >>> got["total"], got["thread:HotSpot's compilers"], got["thread:the lake query's stream thread"]
    (1.0, 0.5, 0.3)
    >>> got["activity:query planning (analysis, optimisation, physical plan)"], got["activity:other"]
    (0.3, 0.5)
    """
    threads: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, _, frames = stack.partition(";")
        threads[_first(THREADS, thread, "other threads")] += int(count)
        activities[_first(ACTIVITIES, frames, "other")] += int(count)
    scale = SAMPLE_S / seconds
    return {
        "total": round(sum(threads.values()) * scale, 4),
        **{f"thread:{k}": round(v * scale, 4) for k, v in threads.most_common()},
        **{f"activity:{k}": round(v * scale, 4) for k, v in activities.most_common()},
    }
