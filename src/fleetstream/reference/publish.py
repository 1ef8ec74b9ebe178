"""Publishing the reference data to a folder or an S3 prefix, where the pipeline reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetstream.clients import s3_client
from fleetstream.config import Settings
from fleetstream.reference.catalog import Car, tables, to_json_lines
from fleetstream.reference.zones import ZONES_FILE, Zone, generate_zones, to_geojson


def publish(settings: Settings, target: str, cars: list[Car], zones: list[Zone] | None = None) -> list[str]:
    """Write car_models.json, car_colors.json and cars.json (JSON lines) under ``target``, and the
    speed zones (default: the simulated city's) as speed_zones.geojson. Published to the lake's own
    reference data (``target`` is the settings' dims location), the same three tables are written
    beside them as Delta tables (:data:`~fleetstream.lake.tables.DIM_TABLES`, named
    ``fleet.dims_<name>`` in SQL); published anywhere else, they are not.

    ``target`` is a folder, or ``s3://bucket/prefix`` / ``s3a://bucket/prefix`` on the configured S3
    endpoint. Returns what was written.
    """
    written = []
    records = tables(cars)
    files = {f"{name}.json": to_json_lines(rows) for name, rows in records.items()}
    files[ZONES_FILE] = to_geojson(generate_zones() if zones is None else zones)
    for name, body in files.items():
        if target.startswith(("s3://", "s3a://")):
            bucket, _, prefix = target.split("://", 1)[1].partition("/")
            key = f"{prefix.strip('/')}/{name}".lstrip("/")
            s3_client(settings).put_object(Bucket=bucket, Key=key, Body=body)
            written.append(f"s3://{bucket}/{key}")
        else:
            path = Path(target) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            written.append(str(path))
    if target.rstrip("/") == settings.lake.dims.rstrip("/"):
        written.extend(publish_delta(settings, records))
    return written


def publish_delta(settings: Settings, records: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each dimension as a Delta table under the lake's root, replaced whole (delta-rs; no Spark)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from fleetstream.lake.read import storage_options, table_uri

    written = []
    for name, rows in records.items():
        uri = table_uri(settings, f"dims/{name}")
        frame = pa.Table.from_pylist(rows)
        write_deltalake(
            uri, frame, mode="overwrite", schema_mode="overwrite", storage_options=storage_options(settings)
        )
        written.append(uri)
    return written


def read(settings: Settings, target: str, name: str) -> bytes:
    """One published file (``name``, e.g. cars.json) from a folder or an S3 prefix, as ``publish``
    wrote it."""
    if target.startswith(("s3://", "s3a://")):
        bucket, _, prefix = target.split("://", 1)[1].partition("/")
        key = f"{prefix.strip('/')}/{name}".lstrip("/")
        body: bytes = s3_client(settings).get_object(Bucket=bucket, Key=key)["Body"].read()
        return body
    return (Path(target) / name).read_bytes()
