"""Helpers for tests of fleetstream and of code built on it (shipped with the package)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from fleetstream.config import LOCAL_HOST, Settings
from fleetstream.local.process import port_is_free

#: the hang guard (pytest-timeout, s) of a test that runs a heavy scenario once in its richest form:
#: several minutes on an ordinary day, up to 10 on a slow one, over the suite's 600 s
HEAVY_TIMEOUT_S = 1500


def reset_spark_gateway() -> None:
    """Forget this process's Spark driver JVM and stop it, so that the next session starts a new one.

    For a test run after a test was interrupted in the middle of a call into the JVM (pytest-timeout's
    signal): py4j's connection then holds the call's late answer, and every later call in this thread
    reads an earlier one's ("SparkConf does not exist in the JVM", ``KeyError: 'c'``).

    >>> reset_spark_gateway()  # (nothing to reset when no JVM was started)
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql.context import SQLContext

    gateway, context = SparkContext._gateway, SparkContext._active_spark_context
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    if context is not None:  # (its accumulator server: a thread and a port of this process)
        server = getattr(context, "_accumulatorServer", None)
        with contextlib.suppress(Exception):
            if server is not None:
                server.shutdown()
        context._jsc = None
    with contextlib.suppress(Exception):
        gateway.shutdown()
    if proc is not None:
        proc.kill()
        proc.wait(30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):  # (pyspark holds the JVM's stdin open)
            if pipe is not None:
                pipe.close()
    SparkContext._gateway = SparkContext._jvm = SparkContext._active_spark_context = None
    SparkSession._instantiatedSession = SparkSession._activeSession = None
    SQLContext._instantiatedContext = None


def free_port_base(count: int, grpc_offset: int | None = None, low: int = 20000, high: int = 30000) -> int:
    """A port P such that P..P+count-1 (and the same plus ``grpc_offset``) are free on loopback.

    >>> base = free_port_base(2)
    >>> 20000 <= base < 30000
    True
    """
    rng = random.Random()  # noqa: S311 - not for security
    for _ in range(200):
        base = rng.randrange(low, high - count)
        ports = list(range(base, base + count))
        if grpc_offset is not None:
            ports += [p + grpc_offset for p in ports]
        if all(port_is_free(LOCAL_HOST, p) for p in ports):
            return base
    raise RuntimeError(f"no block of {count} free ports found between {low} and {high}")


def airflow_dag_test_command(
    settings: Settings, dag_id: str, conf: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``airflow dags test <dag_id>`` (Airflow's ``dag.test()``:
    one run, its tasks in that process) on the Airflow database under ``settings``' state directory
    (migrated here when missing), with ``settings`` (and ``env`` over them) as the tasks' settings.
    It exits 0 when the run succeeded."""
    from fleetstream.local import airflow_server

    chosen = {**airflow_server.environment(settings, os.environ), **(env or {})}
    database = airflow_server.airflow_dir(settings) / "airflow.db"
    if not database.exists():  # (a started Airflow migrated it)
        _migrated_copy(database, chosen)
    argv = [sys.executable, "-m", "airflow", "dags", "test", dag_id, "-c", json.dumps(dict(conf or {}))]
    return argv, chosen


#: a database ``airflow db migrate`` made in this process, copied for each state directory after it
_MIGRATED: list[Path] = []


def _migrated_copy(database: Path, env: Mapping[str, str]) -> None:
    """A freshly migrated Airflow database at ``database``: migrated there the first time in this
    process (seconds of CPU on two cores), copied from that one after (an empty migrated database
    holds no path or DAG of its own: the same file for every state directory)."""
    import atexit
    import shutil
    import tempfile

    if _MIGRATED and _MIGRATED[0].exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_MIGRATED[0], database)
        return
    from fleetstream.local import airflow_server

    airflow_server.migrate(env)
    kept = Path(tempfile.mkdtemp(prefix="fleetstream-airflow-db-")) / "airflow.db"
    atexit.register(shutil.rmtree, kept.parent, True)
    shutil.copyfile(database, kept)
    _MIGRATED[:] = [kept]


def airflow_dag_test(
    settings: Settings,
    dag_id: str,
    conf: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run :func:`airflow_dag_test_command` to its end."""
    argv, chosen = airflow_dag_test_command(settings, dag_id, conf, env)
    return subprocess.run(argv, env=chosen, capture_output=True, text=True, timeout=timeout, check=False)


def interrupt_all(processes: list[subprocess.Popen[bytes]], grace_s: float = 60.0) -> None:
    """Ctrl-C each process group still running (each started with ``start_new_session``), wait for
    them; SIGKILL a group that outlives ``grace_s``."""
    import signal

    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
    for process in processes:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def private_run(settings: Settings, lake: Path) -> Settings:
    """``settings`` with topics of their own (a random tag) and a lake at ``lake``: a test's run that
    shares the broker with others and sees none of their records.

    >>> run = private_run(Settings(), Path("/tmp/lake"))
    >>> run.lake.root, run.kafka.topics.sensors.startswith("sensors-sample-")
    ('/tmp/lake', True)
    """
    from fleetstream.config import KafkaSettings, LakeSettings, TopicNames

    topics = TopicNames().tagged(uuid.uuid4().hex[:8])
    return settings.model_copy(
        update={
            "kafka": KafkaSettings(**{**settings.kafka.model_dump(), "topics": topics}),
            "lake": LakeSettings(root=str(lake)),
        }
    )


def join_and(items: list[str]) -> str:
    """Items in a sentence.

    >>> join_and(["0"]), join_and(["0", "2"]), join_and(["0", "2", "3"])
    ('0', '0 and 2', '0, 2 and 3')
    """
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


_FIGURE = re.compile(r"<!-- chaos:([\w-]+) -->(.*?)<!-- /chaos -->", re.DOTALL)
_DATED = re.compile(r"<!-- chaos:date -->.*?<!-- /chaos -->")


def render_figures(doc: str, figures: Mapping[str, str], day: dt.date) -> str:
    r"""``doc`` (docs/reliability.md) with each marked cell's figures replaced by a run's, and the
    run's day; a marked cell the run has no figures for is an error (the run was partial or failed).

    >>> doc = "| kill | <!-- chaos:kills -->old<!-- /chaos --> |\nRun of <!-- chaos:date -->x<!-- /chaos -->."
    >>> print(render_figures(doc, {"kills": "3 kills"}, dt.date(2026, 12, 4)))
    | kill | <!-- chaos:kills -->3 kills<!-- /chaos --> |
    Run of <!-- chaos:date -->2026-12-04<!-- /chaos -->.
    >>> render_figures(doc, {}, dt.date(2026, 12, 4))
    Traceback (most recent call last):
    ...
    ValueError: the run recorded no figures for: kills
    """
    wanted = {key for key, _ in _FIGURE.findall(doc)} - {"date"}
    if missing := sorted(wanted - set(figures)):
        raise ValueError(f"the run recorded no figures for: {', '.join(missing)}")
    doc = _DATED.sub(f"<!-- chaos:date -->{day.isoformat()}<!-- /chaos -->", doc)
    return _FIGURE.sub(
        lambda m: (
            m.group(0) if m.group(1) == "date" else f"<!-- chaos:{m.group(1)} -->{figures[m.group(1)]}<!-- /chaos -->"
        ),
        doc,
    )


def write_reliability(doc: Path, recorded: Path) -> None:
    """Rewrite ``doc``'s figures from the JSON lines the chaos tests recorded (`make chaos`)."""
    figures = {}
    for line in recorded.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        figures[item["key"]] = item["text"]
    doc.write_text(render_figures(doc.read_text(encoding="utf-8"), figures, dt.date.today()), encoding="utf-8")


if __name__ == "__main__":  # python -m fleetstream.testing reliability <doc> <recorded figures>
    if sys.argv[1:2] != ["reliability"] or len(sys.argv) != 4:
        sys.exit("usage: python -m fleetstream.testing reliability docs/reliability.md <figures.jsonl>")
    write_reliability(Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"updated {sys.argv[2]}")
