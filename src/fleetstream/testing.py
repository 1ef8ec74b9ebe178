"""Helpers for tests of fleetstream and of code built on it (shipped with the package)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Mapping

from fleetstream.config import LOCAL_HOST, Settings
from fleetstream.local.process import port_is_free


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
    if not (airflow_server.airflow_dir(settings) / "airflow.db").exists():  # (a started Airflow migrated it)
        airflow_server.migrate(chosen)
    argv = [sys.executable, "-m", "airflow", "dags", "test", dag_id, "-c", json.dumps(dict(conf or {}))]
    return argv, chosen


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
