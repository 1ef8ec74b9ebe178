"""lake_maintenance (daily, 03:15 UTC): compact every table, Z-order the closed days, VACUUM what is
older than the retention (`fleetstream lake maintain`; docs/operations.md)."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from fleetstream.ops.dags._common import DEFAULTS, START, TAGS, task

with DAG(
    "lake_maintenance",
    description="Compact, Z-order and VACUUM the lake's tables",
    schedule="15 3 * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=TAGS,
    params={"retain_hours": Param(168, type="number", minimum=0, description="VACUUM keeps removed files this long")},
) as dag:
    task("maintain", "lake", "maintain", "--retain-hours", "{{ params.retain_hours }}")
