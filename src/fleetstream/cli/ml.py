"""The driving-style model: ml train and ml score."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from fleetstream.cli.common import _settings, console, failing, out

ml_app = typer.Typer(
    help="Driving-style model: train on gold/driving_features, track and register in MLflow (docs/ml.md).",
    no_args_is_help=True,
)


@ml_app.command("train")
def ml_train(
    test_share: Annotated[
        float, typer.Option(min=0.05, max=0.9, help="Share of each driving style's cars held out for the test.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Random state of the split and the forest.")] = 42,
    trees: Annotated[int, typer.Option(min=1, help="Trees in the forest (the seed's model: 300).")] = 300,
    depth: Annotated[int, typer.Option(min=1, help="Their maximum depth (the seed's model: 12).")] = 12,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Train the driving-style forest on gold/driving_features, log the run to MLflow, register the
    model, and make it the `champion` if it beats the current one on the same held-out cars.

    Needs the tracking server (`fleetstream up --mlflow`, started by `make run`, or
    FLEETSTREAM_MLFLOW__TRACKING_URI) and a few closed 5-minute feature windows per car.
    """
    from fleetstream.ml.train import TrainOptions, train

    with failing():
        settings = _settings()
        with console.status("training the driving-style model..."):
            result = train(settings, TrainOptions(test_share=test_share, seed=seed, trees=trees, depth=depth))
    if as_json:
        out.print_json(json.dumps(asdict(result)))
        return
    table = Table(title=f"driving style, {result.test_windows} windows of {result.test_cars} held-out cars",
                  title_justify="left")  # fmt: skip
    for column in ("model", "accuracy", "macro F1"):
        table.add_column(column)
    table.add_row("random forest", f"{result.forest.accuracy:.3f}", f"{result.forest.macro_f1:.3f}")
    for name, scores in result.baselines.items():
        table.add_row(f"baseline: {name}", f"{scores.accuracy:.3f}", f"{scores.macro_f1:.3f}")
    if result.champion_f1 is not None:
        table.add_row("previous champion", "-", f"{result.champion_f1:.3f}")
    out.print(table)
    verdict = "is now the champion" if result.promoted else "did not beat the champion; the alias stays"
    console.print(
        f"{settings.mlflow.model_name} version {result.version} {verdict} (run {result.run_id}, "
        f"{settings.mlflow.uri}); trained on {result.train_windows} windows of {result.train_cars} cars "
        f"in {result.seconds:.1f} s"
    )


@ml_app.command("score")
def ml_score() -> None:
    """Score the feature windows gold/driver_style does not hold yet (closed before there was a
    champion, or while MLflow was down) with the registry's champion: a backfill of what the stream
    does live. Runs a local Spark job (or on FLEETSTREAM_SPARK__MASTER)."""
    from fleetstream.ml.score import backfill
    from fleetstream.pipeline.session import spark_session

    with failing():
        settings = _settings()
        with console.status("scoring the driving-feature windows..."):
            spark = spark_session(settings, "fleetstream-ml-score", with_s3=settings.lake.root.startswith("s3a://"))
            try:
                count, version = backfill(settings, spark)
            finally:
                spark.stop()
    console.print(
        f"scored {count:,} windows with {settings.mlflow.model_name} version {version} into gold/driver_style"
    )
