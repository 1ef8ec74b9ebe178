"""fleetstream's Airflow DAGs (the local Airflow's DAGs folder; docs/operations.md): each task runs one
`fleetstream` command, in a process of its own, with the settings of the stack that started Airflow.
The streaming queries are long-running services of the stack, not tasks."""
