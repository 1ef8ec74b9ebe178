"""The lake's tables by name: each table (``silver/telemetry``) is ``fleet.silver_telemetry`` in a
Spark catalog, the SQL endpoint (docs/sql.md) and the docs.

Tables are registered as external Delta tables over their folders, so the files stay where the
pipeline writes them. In Spark's default in-memory catalog, a session registers them when it
starts (:func:`register`); with a Hive metastore (``spark.sql.catalogImplementation=hive`` in
``FLEETSTREAM_SPARK__CONF``) the names persist and other engines see them too.

>>> sql_name("silver/telemetry")
'fleet.silver_telemetry'
>>> sql_name("dims/cars")
'fleet.dims_cars'
>>> table_of("fleet.gold_car_state")
'gold/car_state'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fleetstream.config import Settings
from fleetstream.lake.tables import DIM_TABLES, TABLES, Table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SCHEMA = "fleet"

#: Every table with a name: the medallion's and the reference data's.
NAMED: dict[str, Table] = {**TABLES, **DIM_TABLES}


def sql_name(table: str) -> str:
    """The SQL name of a lake table (``layer/name`` -> ``fleet.layer_name``)."""
    return f"{SCHEMA}.{table.replace('/', '_')}"


def table_of(name: str) -> str:
    """The lake table of a SQL name; raises KeyError for a name that is not one."""
    return {sql_name(t): t for t in NAMED}[name.lower()]


def location(settings: Settings, table: str) -> str:
    """The table's folder as Spark addresses it: a local root made absolute, an s3a:// URI as it is.
    The reference tables (``dims/...``) are in the dims location, beside the JSON lines."""
    root = settings.lake.root.rstrip("/")
    if table.startswith("dims/"):
        root, table = settings.lake.dims.rstrip("/"), table.removeprefix("dims/")
    if "://" not in root:
        root = str(Path(root).resolve())
    return f"{root}/{table}"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register(spark: SparkSession, settings: Settings, known: set[str] | None = None) -> list[str]:
    """Create the schema and register every table that exists in the lake and is not registered
    yet (a table the stream has not written yet is registered by a later call). Returns the SQL
    names registered by this call; ``known``, when given, holds the names already registered and
    is updated."""
    from fleetstream.pipeline.writer import delta_exists

    known = known if known is not None else set()
    if not spark.catalog.databaseExists(SCHEMA):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA} COMMENT 'fleetstream: the lake of vehicle telemetry'")
    existing = {row.tableName.lower() for row in spark.sql(f"SHOW TABLES IN {SCHEMA}").collect()}
    known.update(f"{SCHEMA}.{name}" for name in existing)
    added = []
    for table, spec in NAMED.items():
        name = sql_name(table)
        if name in known:
            continue
        path = location(settings, table)
        if not delta_exists(spark, path):
            continue
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {name} USING delta COMMENT {_quote(spec.description)} LOCATION {_quote(path)}"
        )
        known.add(name)
        added.append(name)
    if added:
        log.info("registered %d tables: %s", len(added), ", ".join(added))
    return added
