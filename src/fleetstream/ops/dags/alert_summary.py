"""alert_summary (every minute): one message per channel for the closed minutes of
gold/alerts_per_minute not sent yet: alerts by rule and color, top cars, episodes opened and
resolved (`fleetstream notify summary`). A run that finds nothing new sends nothing; a channel that
failed gets the same range at the next run."""

from __future__ import annotations

from airflow.sdk import DAG

from fleetstream.ops.dags._common import START, TAGS, task

with DAG(
    "alert_summary",
    description="Alert summaries to Telegram, Slack and the webhook",
    schedule="* * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "fleetstream", "retries": 0},  # the next minute's run takes the range anyway
    tags=TAGS,
) as dag:
    task("send", "notify", "summary")
