"""data_quality (hourly, at :05): check silver and gold against their expectation suites
(`fleetstream quality check`; docs/quality.md). A critical failure fails the task (exit 2), marks the
table in the lake and, with FLEETSTREAM_QUALITY__HOLD_GOLD, holds gold until a check passes."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from fleetstream.ops.dags._common import DEFAULTS, START, TAGS, task

with DAG(
    "data_quality",
    description="Check silver and gold against their expectation suites",
    schedule="5 * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULTS, "retries": 0},  # a failed expectation is an answer, not a glitch
    tags=TAGS,
    params={
        "since": Param("1h", type="string", pattern=r"^(all|[0-9]+[mhd])$", description="rows of the last 30m, 1h..."),
    },
) as dag:
    task("check", "quality", "check", "--since", "{{ params.since }}")
