"""Airflow 3's REST API (``/api/v2``), as the ops bot uses it: list the DAGs, trigger one, list its
runs, mark a run failed (which stops its running tasks). It logs in with the configured user and
password (the local Airflow's generated one by default) and asks for a token per client."""

from __future__ import annotations

from typing import Any

import httpx

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError


class AirflowError(FleetstreamError):
    """Airflow refused or did not answer; the message says which and why."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = body.get("detail") if isinstance(body, dict) else body
    return str(detail)[:300]


class AirflowClient:
    def __init__(self, settings: Settings, timeout: float = 15.0) -> None:
        self.settings = settings
        self.base = settings.airflow.base_url
        self._http = httpx.Client(base_url=self.base, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _login(self) -> str:
        from fleetstream.local.airflow_server import admin_password

        if self.settings.airflow.password is not None:
            password = self.settings.airflow.password.get_secret_value()
        elif self.settings.airflow.managed:
            password, _ = admin_password(self.settings)
        else:
            raise AirflowError("set FLEETSTREAM_AIRFLOW__PASSWORD to log in to the Airflow at " + self.base)
        body = {"username": self.settings.airflow.user, "password": password}
        try:
            answer = self._http.post("/auth/token", json=body)
        except httpx.HTTPError as exc:
            raise AirflowError(f"Airflow at {self.base} does not answer ({exc.__class__.__name__})") from None
        if answer.status_code not in (200, 201):
            raise AirflowError(f"Airflow refused the login of {self.settings.airflow.user!r}: {_detail(answer)}")
        return str(answer.json()["access_token"])

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            self._token = self._login()
        try:
            answer = self._http.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
        except httpx.HTTPError as exc:
            raise AirflowError(f"Airflow at {self.base} does not answer ({exc.__class__.__name__})") from None
        if answer.status_code == 404:
            raise AirflowError(f"not found: {_detail(answer)}")
        if answer.status_code >= 400:
            raise AirflowError(f"Airflow answered HTTP {answer.status_code}: {_detail(answer)}")
        return answer.json()

    def dags(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v2/dags", params={"limit": 100, "order_by": "dag_id"})["dags"])

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v2/importErrors")["import_errors"])

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """A run of ``dag_id`` now (a paused DAG's run waits until the DAG is unpaused)."""
        body = {"logical_date": None, "conf": conf or {}}
        return dict(self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body))

    def runs(self, dag_id: str, limit: int = 10) -> list[dict[str, Any]]:
        params = {"limit": limit, "order_by": "-run_after"}
        return list(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def kill(self, run_id: str) -> dict[str, Any]:
        """Mark the run ``run_id`` (of whichever DAG has it) failed: its running tasks are stopped."""
        for dag in self.dags():
            try:
                self.run(dag["dag_id"], run_id)
            except AirflowError as exc:
                if str(exc).startswith("not found"):
                    continue
                raise
            path = f"/api/v2/dags/{dag['dag_id']}/dagRuns/{run_id}"
            return dict(self.request("PATCH", path, json={"state": "failed"}))
        raise AirflowError(f"no DAG has a run {run_id!r} (see /runs <dag_id>)")
