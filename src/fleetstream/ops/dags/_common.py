"""What fleetstream's DAGs share: one way to run a `fleetstream` command as a task."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.bash import BashOperator

#: the first logical date of the scheduled DAGs (catchup is off: no run before the first start)
START = pendulum.datetime(2026, 1, 1, tz="UTC")
DEFAULTS: dict[str, Any] = {"owner": "fleetstream", "retries": 1, "retry_delay": timedelta(minutes=1)}
TAGS = ["fleetstream"]


def fleetstream(*args: str) -> str:
    """The shell command that runs ``fleetstream <args>`` with this interpreter (the one Airflow runs in).

    >>> fleetstream("lake", "maintain").endswith("-m fleetstream lake maintain")
    True
    """
    return shlex.join([sys.executable, "-m", "fleetstream", *args])


def task(task_id: str, *args: str, env: Mapping[str, str] | None = None, **kwargs: Any) -> BashOperator:
    """A task that runs ``fleetstream <args>``: it fails when the command exits non-zero. Parameters
    reach the command through ``env`` (FLEETSTREAM_* variables, templated), never spliced into the
    shell line unvalidated."""
    return BashOperator(
        task_id=task_id, bash_command=fleetstream(*args), env=dict(env) if env else None, append_env=True, **kwargs
    )
