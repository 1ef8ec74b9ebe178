"""The local MLflow tracking server: `mlflow server` with a SQLite store and artifacts under the state
directory, bound to 127.0.0.1, one worker.

MLflow 3's server also starts a job runner (seven Huey consumer processes, for its GenAI jobs) by
default; fleetstream uses none of those jobs, so it is switched off
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): two processes, not nine.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from fleetstream.config import LOCAL_HOST, Settings


def mlflow_dir(settings: Settings) -> Path:
    return settings.state_dir / "mlflow"


def prepare(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The server's command line and environment; creates its folder."""
    home = mlflow_dir(settings)
    (home / "artifacts").mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination", str(home / "artifacts"),
        "--host", LOCAL_HOST, "--port", str(settings.mlflow.port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return argv, env


def healthy(uri: str, timeout: float = 2.0) -> bool:
    """True when the tracking server at ``uri`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
