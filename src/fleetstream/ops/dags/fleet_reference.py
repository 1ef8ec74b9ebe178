"""fleet_reference (manual): publish the reference data (car models, colors, the fleet's cars, speed
zones) to the lake's dims; the stream picks it up at its next refresh."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from fleetstream.ops.dags._common import DEFAULTS, START, TAGS, task

with DAG(
    "fleet_reference",
    description="Publish the reference data (models, colors, cars, speed zones) to the lake",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args=DEFAULTS,
    tags=TAGS,
    params={
        "cars": Param(50, type="integer", minimum=1, description="cars in the fleet"),
        "seed": Param(42, type="integer", description="the simulator's seed (the same cars)"),
    },
) as dag:
    task(
        "publish",
        "reference",
        "publish",
        env={"FLEETSTREAM_SIM_CARS": "{{ params.cars }}", "FLEETSTREAM_SIM_SEED": "{{ params.seed }}"},
    )
