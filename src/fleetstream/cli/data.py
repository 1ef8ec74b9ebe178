"""Data the rest stands on: the pinned jars, the reference data, the telemetry schema, the settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fleetstream import jvm
from fleetstream.cli.common import _settings, console, failing, out

jars_app = typer.Typer(help="The pinned JVM jars (Kafka broker, Spark connectors, Delta, S3A).", no_args_is_help=True)
reference_app = typer.Typer(
    help="Reference data: car models, colors, the fleet's cars and speed zones.", no_args_is_help=True
)


@jars_app.command("fetch")
def jars_fetch(
    class_archive: Annotated[
        bool,
        typer.Option(
            help="Also make the class-data archive of Spark's start-up classes (once per Java and pyspark; "
            "about 45 s and 200 MB): every Spark command then starts about 4 s faster."
        ),
    ] = True,
) -> None:
    """Resolve the locked jars of the broker and Spark into the cache (~/.cache/fleetstream/jars) and verify
    their sha256 (the profiler's are fetched when a profile is first asked for)."""
    from fleetstream.pipeline import class_archive as archive

    with failing():
        settings = _settings()
        for jar_set in jvm.SETUP_SETS:
            with console.status(f"fetching the {jar_set} jars..."):
                paths = jvm.ensure_jars(settings.cache_dir, jar_set)
            size = sum(p.stat().st_size for p in paths) / 2**20
            console.print(f"{jar_set}: {len(paths)} jars, {size:.0f} MiB, verified, in {paths[0].parent}")
        if class_archive and settings.spark.class_archive:
            try:
                with console.status("making the class-data archive of Spark's start-up classes (once, about 45 s)..."):
                    path, took = archive.build(settings.cache_dir, settings.spark.conf)
            except Exception as exc:  # a speed-up, never a condition: setup goes on
                console.print("class-data archive: not made; Spark starts without it", style="yellow")
                console.print(str(exc), markup=False, highlight=False)
                return
            if path is None:
                console.print("class-data archive: skipped (no java on PATH or in JAVA_HOME)")
            else:
                made = "present" if took is None else f"made in {took:.0f} s"
                console.print(f"class-data archive: {made}, {path.stat().st_size / 2**20:.0f} MiB, {path}")


@jars_app.command("lock")
def jars_lock() -> None:
    """Re-resolve jvm/*/pom.xml with Maven and rewrite jvm/jars.lock (after changing a pom)."""
    with failing():
        entries = jvm.write_lock(_settings().cache_dir)
    console.print(f"wrote {len(entries)} jars to {jvm.jvm_dir() / 'jars.lock'}")


@jars_app.command("path")
def jars_path(
    jar_set: Annotated[str, typer.Argument(help="broker or spark")] = "spark",
) -> None:
    """Print the locked jars of a set, comma-separated (for spark-submit --jars)."""
    with failing():
        paths = jvm.ensure_jars(_settings().cache_dir, jar_set)
    out.print(",".join(str(p) for p in paths), soft_wrap=True)


def show_config() -> None:
    """Print the effective settings (secrets masked)."""
    with failing():
        settings = _settings()
    out.print_json(settings.model_dump_json())


@reference_app.command("publish")
def reference_publish(
    to: Annotated[
        str | None,
        typer.Option(
            "--to", envvar="FLEETSTREAM_REFERENCE_TO", help="Folder or s3://bucket/prefix; default: the lake's dims."
        ),
    ] = None,
    cars: Annotated[int, typer.Option(min=1, envvar="FLEETSTREAM_SIM_CARS", help="Number of cars.")] = 50,
    seed: Annotated[int, typer.Option(envvar="FLEETSTREAM_SIM_SEED", help="Same seed as the simulator.")] = 42,
    zones: Annotated[
        Path | None,
        typer.Option(
            "--zones",
            exists=True,
            dir_okay=False,
            help="A GeoJSON FeatureCollection of speed zones (Polygons "
            "with zone_id, name and limit_kmh) to publish instead of the simulated city's (docs/rules.md).",
        ),
    ] = None,
) -> None:
    """Write car_models.json, car_colors.json and cars.json (JSON lines), as the simulator's fleet, and
    speed_zones.geojson (the simulated city's speed zones, or --zones)."""
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.reference.publish import publish
    from fleetstream.reference.zones import read_zones

    with failing():
        settings = _settings()
        chosen = read_zones(zones.read_text(encoding="utf-8"), str(zones)) if zones else None
        written = publish(settings, to or settings.lake.dims, generate_cars(cars, seed), chosen)
    for item in written:
        console.print(f"wrote {item}")


def schema_command(
    write: Annotated[
        bool, typer.Option("--write", help="Regenerate docs/schema.md and docs/telemetry-v1.schema.json.")
    ] = False,
    docs: Annotated[Path, typer.Option(help="The docs folder (with --write).")] = Path("docs"),
) -> None:
    """Print the telemetry event's JSON Schema (one definition, also rendered to docs and Spark)."""
    from fleetstream import schema

    if write:
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "schema.md").write_text(schema.markdown(), encoding="utf-8")
        (docs / "telemetry-v1.schema.json").write_text(
            json.dumps(schema.json_schema(), indent=2) + "\n", encoding="utf-8"
        )
        console.print(f"wrote {docs / 'schema.md'} and {docs / 'telemetry-v1.schema.json'}")
    else:
        out.print_json(json.dumps(schema.json_schema()))
