"""replay (manual): rebuild silver, quarantine, alerts and gold from bronze into fresh tables
(`fleetstream replay`; the live lake is not touched)."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from fleetstream.ops.dags._common import DEFAULTS, START, TAGS, task

with DAG(
    "replay",
    description="Rebuild the lake's tables from bronze into fresh tables",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULTS, "retries": 0},
    tags=TAGS,
    params={
        "to": Param("", type="string", description="lake root for the rebuilt tables; empty: <lake>/replays/<time>"),
        "publish": Param(False, type="boolean", description="also write the Kafka outputs again"),
    },
) as dag:
    task(
        "replay",
        "replay",
        env={
            "FLEETSTREAM_REPLAY_TO": "{{ params.to }}",
            "FLEETSTREAM_REPLAY_PUBLISH": "{{ 'true' if params.publish else 'false' }}",
        },
    )
