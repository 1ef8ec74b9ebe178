"""Enrichment: the stream-static join with the reference data, the expected gear and the speed zone.

>>> # expected_gear_col(speed, upshift) is the Spark twin of fleetstream.rules.expected_gear
>>> # zone_columns(lat, lon, zones) is the Spark twin of fleetstream.reference.zones.zone_index
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream.pipeline.writer import hadoop_path
from fleetstream.reference.catalog import PROFILES
from fleetstream.reference.zones import ZONES_FILE, Zone, read_zones
from fleetstream.rules import STOP_KMH

log = logging.getLogger(__name__)


def expected_gear_col(speed: Column, upshift_kmh: Column) -> Column:
    """0 below STOP_KMH, else 1 + the number of upshift speeds at or below ``speed`` (see rules.gear)."""
    count = F.aggregate(upshift_kmh, F.lit(0), lambda acc, t: acc + F.when(speed >= t, 1).otherwise(0))
    return F.when(speed < F.lit(STOP_KMH), F.lit(0)).otherwise(F.lit(1) + count).cast("bigint")


def zone_columns(lat: Column, lon: Column, zones: Sequence[Zone]) -> tuple[Column, Column]:
    """(zone_id, zone_limit) of the first zone that holds the point, nulls outside every zone: the
    even-odd ray cast of :func:`fleetstream.reference.zones.zone_index`, the same operations on the
    same doubles, behind a bounding-box test (built-in expressions only: real-time mode runs it)."""
    if not zones:
        return F.lit(None).cast("string"), F.lit(None).cast("double")
    index = None
    for z, zone in enumerate(zones):
        lat_lo, lat_hi, lon_lo, lon_hi = zone.bbox
        crossings = [
            F.when(
                ((F.lit(yi) > lat) != (F.lit(yj) > lat)) & (lon < F.lit(xi) + (lat - F.lit(yi)) * F.lit(slope)), 1
            ).otherwise(0)
            for yi, xi, yj, xj in zone.edges()
            for slope in [(xj - xi) / (yj - yi)]
        ]
        odd = sum(crossings[1:], crossings[0]) % 2 == 1
        inside = lat.between(lat_lo, lat_hi) & lon.between(lon_lo, lon_hi) & odd
        index = F.when(inside, F.lit(z)) if index is None else index.when(inside, F.lit(z))
    assert index is not None
    ids = F.array(*[F.lit(zone.zone_id) for zone in zones])
    limits = F.array(*[F.lit(zone.limit_kmh) for zone in zones])
    return F.get(ids, index), F.get(limits, index)  # a null index (no zone) gives null


@dataclass(frozen=True)
class Reference:
    """What the stream joins telemetry with: the car dimension (one row per car, small: broadcast
    it) and the speed zones (few: compiled into the plan as expressions)."""

    cars: DataFrame
    zones: tuple[Zone, ...] = ()

    @functools.cached_property
    def zone_columns(self) -> tuple[Column, Column]:
        """:func:`zone_columns` of the reports' ``lat`` and ``lon``, built once: the expressions of
        a dozen zones are about a thousand calls to the JVM, most of a second per micro-batch when
        built anew for each (``py-spy`` on a quiet stream)."""
        return zone_columns(F.col("lat"), F.col("lon"), self.zones)


@dataclass(frozen=True)
class Dims:
    cars: DataFrame
    models: DataFrame
    colors: DataFrame


#: the dimension tables' files (JSON lines) under the dims location, by table
DIM_FILES = {"cars": "cars.json", "models": "car_models.json", "colors": "car_colors.json"}
#: the fields the pipeline reads from each (a file may hold more): given, so that reading the small
#: files runs no schema inference (a Spark job per file, seconds at a cold start)
DIM_SCHEMAS = {
    "cars": "car_id string, model_id bigint, color_id bigint, driver_profile string, year bigint",
    "models": "model_id bigint, brand string, model string, upshift_kmh struct<"
    + ", ".join(f"{p}: array<double>" for p in PROFILES)
    + ">",
    "colors": "color_id bigint, color_name string",
}


def read_dims(spark: SparkSession, location: str) -> Dims:
    """The three dimension tables (JSON lines) from a folder or an s3a:// prefix."""
    base = location.rstrip("/")
    return Dims(
        **{table: spark.read.schema(DIM_SCHEMAS[table]).json(f"{base}/{name}") for table, name in DIM_FILES.items()}
    )


def dims_fingerprint(spark: SparkSession, location: str) -> str:
    """The dimension files' paths, sizes and modification times, read from the file system (a
    directory listing, or S3 HEAD and LIST requests): no Spark job, no file read. A file that is
    missing raises, as reading it would (the zones file is optional)."""
    base, parts = location.rstrip("/"), []
    for name in (*DIM_FILES.values(), ZONES_FILE):
        path, fs = hadoop_path(spark, f"{base}/{name}")
        if name == ZONES_FILE and not fs.exists(path):
            parts.append(f"{base}/{name} absent")
            continue
        for status in fs.listStatus(path):  # a file, or a folder Spark wrote
            parts.append(f"{status.getPath().toString()} {status.getLen()} {status.getModificationTime()}")
    return "\n".join(sorted(parts))


def read_zones_at(spark: SparkSession, location: str) -> tuple[Zone, ...]:
    """The speed zones published under the dims location (``speed_zones.geojson``); none when the
    file is absent (reference data published before zones existed). A file that is not valid
    GeoJSON zones raises :class:`~fleetstream.errors.FleetstreamError` naming the zone."""
    where = f"{location.rstrip('/')}/{ZONES_FILE}"
    path, fs = hadoop_path(spark, where)
    if not fs.exists(path):
        log.info("no speed zones at %s: zone_id and zone_limit stay empty", where)
        return ()
    text = "".join(row[0] for row in spark.read.text(where, wholetext=True).collect())
    return tuple(read_zones(text, where))


def car_dimension(dims: Dims) -> DataFrame:
    """One row per car with everything the stream needs from the dims (small: broadcast it)."""
    schedule = F.create_map(*[x for p in PROFILES for x in (F.lit(p), F.col(f"m.upshift_kmh.{p}"))])
    return (
        dims.cars.alias("c")
        .join(dims.models.alias("m"), F.col("c.model_id") == F.col("m.model_id"), "left")
        .join(dims.colors.alias("k"), F.col("c.color_id") == F.col("k.color_id"), "left")
        .select(
            F.col("c.car_id").alias("dim_car_id"),
            F.col("c.model_id").alias("model_id"),
            F.concat_ws(" ", F.col("m.brand"), F.col("m.model")).alias("model"),
            F.col("c.color_id").alias("color_id"),
            F.col("k.color_name").alias("color"),
            F.col("c.driver_profile").alias("driver_profile"),
            F.col("c.year").alias("year"),
            F.element_at(schedule, F.col("c.driver_profile")).alias("upshift_kmh"),
        )
    )


def enrich(checked: DataFrame, reference: Reference) -> DataFrame:
    """Join parsed telemetry with the car dimension; mark valid rows of cars the dims do not know; add
    expected_gear and the speed zone (zone_id, zone_limit) the report lies in.

    Rows of unknown cars keep flowing with ``reason = 'unknown_car'`` so the caller can quarantine them;
    rows already rejected keep their first reason.
    """
    cars = reference.cars
    joined = checked.join(F.broadcast(cars), checked["car_id"] == cars["dim_car_id"], "left")
    unknown = F.col("_unknown")
    zone_id, zone_limit = reference.zone_columns
    return (
        joined.withColumn("_unknown", F.col("reason").isNull() & F.col("dim_car_id").isNull())
        .withColumn("reason", F.when(unknown, F.lit("unknown_car")).otherwise(F.col("reason")))
        .withColumn(
            "reason_detail",
            F.when(unknown, F.concat(F.lit("car_id "), F.col("car_id"), F.lit(" not in the reference data"))).otherwise(
                F.col("reason_detail")
            ),
        )
        .withColumn(
            "expected_gear",
            F.when(F.col("dim_car_id").isNotNull(), expected_gear_col(F.col("speed"), F.col("upshift_kmh"))),
        )
        .withColumns({"zone_id": zone_id, "zone_limit": zone_limit})
        .drop("dim_car_id", "_unknown")
    )
