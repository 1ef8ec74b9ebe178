"""stream_watchdog (every 5 minutes): is the streaming pipeline running and keeping up? Tells the
notification channels when it is not, and when it is well again (`fleetstream watchdog --notify`).
The task fails while something is wrong, so the DAG's runs show it too."""

from __future__ import annotations

from airflow.sdk import DAG

from fleetstream.ops.dags._common import START, TAGS, task

with DAG(
    "stream_watchdog",
    description="Check the stream's status and lag; notify when it is down or behind",
    schedule="*/5 * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "fleetstream", "retries": 0},
    tags=TAGS,
) as dag:
    task("check", "watchdog", "--notify")
