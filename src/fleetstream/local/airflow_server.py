"""The local Airflow 3: its API server (REST API and UI), scheduler and dag-processor, each a process
of the stack, on a SQLite database under ``<state_dir>/airflow``, bound to 127.0.0.1.

- **Executor**: LocalExecutor, ``FLEETSTREAM_AIRFLOW__PARALLELISM`` (2) tasks at once; a task is a
  process of the scheduler's, with the stack's FLEETSTREAM_* settings in its environment.
- **DAGs**: the package's ``fleetstream/ops/dags`` folder (docs/operations.md lists them).
- **Login**: Airflow's simple auth manager, one user (``admin``, ``FLEETSTREAM_AIRFLOW__USER``); its
  password is ``FLEETSTREAM_AIRFLOW__PASSWORD`` or, unset, one generated at the first start into
  ``passwords.json`` (mode 600), which `up` prints once, then only points at.
- **Secrets**: the API's JWT key and session key are generated once into ``secrets.json`` (mode
  600), so that tokens stay valid across the three processes and restarts.
- No triggerer (fleetstream's DAGs defer nothing), and the scheduler serves no logs over HTTP
  (``--skip-serve-logs``: the API server reads the task logs from the same disk): no port but the
  API server's is opened.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from fleetstream.config import LOCAL_HOST, Settings, settings_env
from fleetstream.errors import FleetstreamError

#: the stack's names of the local Airflow's processes, in start order
PROCESSES = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor")
#: what each process is in the API server's health answer
HEALTH_KEYS = {"airflow-api-server": "metadatabase", "airflow-scheduler": "scheduler",
               "airflow-dag-processor": "dag_processor"}  # fmt: skip
MIGRATE_TIMEOUT_S = 300.0


def airflow_dir(settings: Settings) -> Path:
    return settings.state_dir / "airflow"


def dags_folder() -> Path:
    """The DAGs shipped in the package."""
    return Path(str(resources.files("fleetstream.ops.dags")))


def _private_json(path: Path, make: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """``path``'s JSON object, or ``make`` written there first (mode 600); True when just written."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))), False
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise FleetstreamError(f"{path} is unreadable ({exc}); remove it to generate a new one") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(dict(make), out)
    return dict(make), True


_GENERATED: set[Path] = set()  # passwords files this process wrote


def generated_now(settings: Settings) -> bool:
    """True when this process generated the password (the one time it may be shown)."""
    return password_file(settings) in _GENERATED


def password_file(settings: Settings) -> Path:
    return airflow_dir(settings) / "passwords.json"


def admin_password(settings: Settings) -> tuple[str, bool]:
    """The password fleetstream and the user log in with (Airflow reads it from the passwords file);
    True when generated just now."""
    if settings.airflow.password is not None:  # the user's: the file says the same
        chosen = settings.airflow.password.get_secret_value()
        password_file(settings).unlink(missing_ok=True)
        _private_json(password_file(settings), {settings.airflow.user: chosen})
        return chosen, False
    stored, generated = _private_json(password_file(settings), {settings.airflow.user: secrets.token_urlsafe(18)})
    if generated:
        _GENERATED.add(password_file(settings))
    if settings.airflow.user not in stored:
        raise FleetstreamError(
            f"{password_file(settings)} has no password for {settings.airflow.user!r} (FLEETSTREAM_AIRFLOW__USER); "
            "remove the file to generate one"
        )
    return stored[settings.airflow.user], generated


DAG_REPARSE_S = "300"


def environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of every Airflow process: every setting of the stack (its tasks run
    `fleetstream` commands), and Airflow's own configuration (nothing from an airflow.cfg elsewhere)."""
    home = airflow_dir(settings)
    keys, _ = _private_json(home / "secrets.json", {"jwt": secrets.token_hex(32), "session": secrets.token_hex(32)})
    admin_password(settings)  # the passwords file exists before the API server starts
    url = f"http://{LOCAL_HOST}:{settings.airflow.port}"
    env = settings_env(settings, base)  # a task sees this stack's settings, .env's included
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow.parallelism),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow.user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file(settings)),
        "AIRFLOW__API__HOST": LOCAL_HOST,
        "AIRFLOW__API__PORT": str(settings.airflow.port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__SECRET_KEY": keys["session"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    # An unchanged DAG file is parsed again every 5 minutes, not Airflow's 30 s: each parse is a new
    # process importing the DAG's modules, and at 30 s the DAG processor used 0.05 core of an idle
    # stack (docs/benchmarks.md, session 59). A new or edited file is still parsed at the next
    # listing (REFRESH_INTERVAL; Airflow re-parses a file whose time changed). Yours wins if set.
    env.setdefault("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", DAG_REPARSE_S)
    return env


def migrate(env: Mapping[str, str]) -> None:
    """Create or upgrade Airflow's database (seconds; idempotent)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=dict(env), capture_output=True, text=True, timeout=MIGRATE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise FleetstreamError(f"`airflow db migrate` took over {MIGRATE_TIMEOUT_S:.0f} s; nothing started") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise FleetstreamError(f"`airflow db migrate` failed (exit {done.returncode}); nothing was started:\n{tail}")


def commands() -> dict[str, list[str]]:
    """Each process's command line (its settings come from :func:`environment`)."""
    airflow = [sys.executable, "-m", "airflow"]
    return {
        "airflow-api-server": [*airflow, "api-server"],
        "airflow-scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
        "airflow-dag-processor": [*airflow, "dag-processor"],
    }


def health(base_url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The API server's health answer (no login needed), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=timeout) as answer:  # noqa: S310
            return dict(json.load(answer))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def part_healthy(answer: Mapping[str, Any] | None, process: str) -> bool:
    """Whether the health answer says ``process`` (one of :data:`PROCESSES`) is healthy.

    >>> answer = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"},
    ...           "dag_processor": {"status": None}}
    >>> [part_healthy(answer, p) for p in PROCESSES], part_healthy(None, "airflow-scheduler")
    ([True, True, False], False)
    """
    if answer is None:
        return False
    return bool((answer.get(HEALTH_KEYS[process]) or {}).get("status") == "healthy")
