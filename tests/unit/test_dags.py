"""fleetstream's Airflow DAGs as the dag-processor sees them: each parses, each task runs a real
`fleetstream` command with options and settings that command has, on the schedule docs/operations.md
gives. (Each DAG run for real: tests/integration/test_airflow.py and the tests it names.)"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from fleetstream.cli import app
from fleetstream.config import Settings
from fleetstream.local.airflow_server import dags_folder, environment

SCHEDULES = {
    "fleet_reference": None,
    "lake_maintenance": "15 3 * * *",
    "ml_retrain": "0 4 * * *",
    "alert_summary": "* * * * *",
    "replay": None,
    "data_quality": "5 * * * *",
    "stream_watchdog": "*/5 * * * *",
}


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(dags_folder()))
    assert bag.import_errors == {}
    return dict(bag.dags)


def _command(words: list[str]) -> tuple[Any, list[str]]:
    """The CLI command ``words`` name, and the words after its name (typer's click classes are its own)."""
    command: Any = typer.main.get_command(app)
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_each_dag_parses_on_its_schedule(dags: dict[str, Any]) -> None:
    assert set(dags) == set(SCHEDULES)
    for dag_id, dag in dags.items():
        assert dag.schedule == SCHEDULES[dag_id], dag_id
        assert dag.catchup is False  # a first start runs no backlog of missed days
        assert "fleetstream" in dag.tags


def test_each_task_runs_a_fleetstream_command_it_has(dags: dict[str, Any]) -> None:
    for dag in dags.values():
        for task in dag.tasks:
            argv = shlex.split(task.bash_command)
            assert argv[:3] == [sys.executable, "-m", "fleetstream"], task.bash_command
            command, rest = _command(argv[3:])
            assert not hasattr(command, "commands"), f"{dag.dag_id}: {argv[3:]} names no command"
            options = {name for p in command.params for name in getattr(p, "opts", [])}
            assert {w for w in rest if w.startswith("--")} <= options, (dag.dag_id, rest)
            envvars = {p.envvar for p in command.params if isinstance(getattr(p, "envvar", None), str)}
            assert set(task.env or {}) <= envvars, (dag.dag_id, task.env)  # parameters reach it as its settings
            assert task.append_env is True  # and the stack's settings too


def test_parameters_are_validated_before_they_reach_a_shell(dags: dict[str, Any]) -> None:
    """A parameter spliced into the command line is a number or matches a pattern; free text goes
    through the environment only."""
    from airflow.sdk.definitions.param import ParamValidationError

    since = dags["data_quality"].params.get_param("since")
    with pytest.raises(ParamValidationError):
        since.resolve("1h; rm -rf /")
    assert since.resolve("30m") == "30m"
    retain = dags["lake_maintenance"].params.get_param("retain_hours")
    with pytest.raises(ParamValidationError):
        retain.resolve("1 && reboot")
    for dag in dags.values():
        for task in dag.tasks:
            for name in dag.params:
                if f"params.{name}" in task.bash_command:
                    schema = dag.params.get_param(name).schema
                    assert schema.get("type") in ("number", "integer") or "pattern" in schema, (dag.dag_id, name)


def test_unchanged_dag_files_are_parsed_every_five_minutes_unless_told(tmp_path: Path) -> None:
    """Airflow's default (30 s) parsed every DAG file in a new process twice a minute: 0.05 core of an
    idle stack. A user's own setting stands."""
    settings = Settings(state_dir=tmp_path)
    env = environment(settings, {"PATH": "/bin"})
    assert env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] == "300"
    assert env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] == "30"  # (new and edited files: at the next listing)
    mine = environment(settings, {"PATH": "/bin", "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10"})
    assert mine["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] == "10"
