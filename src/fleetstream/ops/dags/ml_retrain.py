"""ml_retrain (daily, 04:00 UTC): train the driving-style classifier on gold/driving_features, log
it to MLflow, and move the `champion` alias only when it beats the champion on the same held-out
cars (`fleetstream ml train`; docs/ml.md). The stream scores with the champion."""

from __future__ import annotations

from airflow.sdk import DAG

from fleetstream.ops.dags._common import DEFAULTS, START, TAGS, task

with DAG(
    "ml_retrain",
    description="Retrain the driving-style model; promote it when it beats the champion",
    schedule="0 4 * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=TAGS,
) as dag:
    task("train", "ml", "train")
