"""`fleetstream bench ml`: the driving-style model's figures in docs/ml.md, produced end to end.

A simulated fleet (default 300 cars, 30 minutes, the default faults and bad data) goes to private
topics, `fleetstream stream --available-now --only bronze,silver,alerts,gold` turns it into a lake
with ``gold/driving_features``, and `fleetstream ml train`'s code trains, scores and registers on
an MLflow server (the configured one when it answers, else a private one in the work folder).
``--million`` also times the forest alone on one million feature rows (the run's windows resampled
with a little noise: the time depends on rows and features, not on their values).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fleetstream.bench.common import bench_settings, in_subprocess
from fleetstream.bench.pipeline import HERE as PIPELINE
from fleetstream.bench.pipeline import available_now
from fleetstream.config import MlflowSettings, Settings, TopicNames
from fleetstream.ml.train import TrainOptions, TrainResult, train

BEGIN = "<!-- bench ml: begin -->"
END = "<!-- bench ml: end -->"


def _mlflow(settings: Settings, workdir: Path) -> tuple[Settings, Settings | None]:
    """Settings whose MLflow answers, and the private stack to stop (None: the configured server)."""
    from fleetstream.local import mlflow_server, stack
    from fleetstream.testing import free_port_base

    if mlflow_server.healthy(settings.mlflow.uri):
        return settings, None
    private = settings.model_copy(
        update={"state_dir": workdir / "state", "mlflow": MlflowSettings(port=free_port_base(1))}
    )
    stack.start_mlflow(private)
    return private, private


def million_rows(settings: Settings, seed: int = 42) -> float:
    """Seconds to fit the seed's forest on one million feature rows resampled from the lake's."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    from fleetstream.ml.features import FEATURES
    from fleetstream.ml.train import load_features

    frame = load_features(settings)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(frame), 1_000_000)
    x = frame[list(FEATURES)].to_numpy(dtype="float64")[pick]
    x = x * rng.normal(1.0, 0.02, x.shape)
    y = frame["driver_profile"].to_numpy()[pick]
    began = time.monotonic()
    RandomForestClassifier(**TrainOptions().forest, random_state=seed, n_jobs=-1).fit(x, y)
    return time.monotonic() - began


def upkeep_figures(settings: Settings) -> dict[str, Any]:
    """The overheating warnings scored against the run's ground truth, and gold/maintenance's
    figures per driver profile (medians over the cars; the labels from cars.json)."""
    import io

    import polars as pl

    from fleetstream.lake.read import scan
    from fleetstream.ml import overheat
    from fleetstream.reference.publish import read
    from fleetstream.sim.faults import load_ground_truth

    episodes, _ = load_ground_truth(Path(settings.lake.root, "ground_truth.jsonl"))
    warnings = scan(settings, "gold/overheat_warnings")
    warned = [] if warnings is None else warnings.select("car_id", "event_time").collect().rows()
    table = scan(settings, "gold/maintenance")
    profiles: list[dict[str, Any]] = []
    if table is not None:
        cars = pl.read_ndjson(io.BytesIO(read(settings, settings.lake.dims, "cars.json")))
        columns = ("km_seen", "fuel_l_per_100km", "tyre_wear_per_1000km", "brake_wear_per_1000km")
        profiles = (
            table.collect()
            .join(cars.select("car_id", "driver_profile"), on="car_id")
            .group_by("driver_profile")
            .agg(pl.len().alias("cars"), *(pl.col(c).median() for c in columns))
            .sort("driver_profile")
            .to_dicts()
        )
    return {"warnings": overheat.score(warned, episodes).as_dict(), "by_profile": profiles}


def run(
    settings: Settings, cars: int, seconds: int, million: bool, say: Callable[[str], None], workdir: Path | None = None
) -> dict[str, Any]:
    """The run's figures: events, stream and training times, the train result, the 1M-row fit."""
    from fleetstream.ingest.kafka import delete_topics
    from fleetstream.local import stack

    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-ml-") as tmp:
        work = workdir or Path(tmp)
        suffix = os.urandom(4).hex()
        backlog = bench_settings(settings.kafka.bootstrap, str(work / "lake"), suffix=suffix)
        Path(backlog.lake.root).mkdir(parents=True, exist_ok=True)
        private: Settings | None = None
        try:
            began = time.monotonic()
            events = in_subprocess(PIPELINE, "backlog_worker", bootstrap=settings.kafka.bootstrap, suffix=suffix,
                                   lake=backlog.lake.root, cars=cars, seconds=seconds)["events"]  # fmt: skip
            say(
                f"ml: {events:,} events from {cars} cars over {seconds} s, produced in {time.monotonic() - began:.0f} s"
            )
            wall, _ = available_now(backlog, 50_000, work / "stream", "bronze,silver,alerts,gold")
            say(f"ml: the lake, with gold/driving_features, in {wall:.0f} s")
            upkeep = upkeep_figures(backlog)
            w = upkeep["warnings"]
            say(f"ml: overheat warnings caught {w['caught']} of {w['overheats']} overheats, {w['right']} of "
                f"{w['warnings']} warnings right, median lead {w['median_lead_s']} s")  # fmt: skip
            trained_on, private = _mlflow(backlog.model_copy(update={"mlflow": settings.mlflow}), work)
            result: TrainResult = train(trained_on)
            say(
                f"ml: macro F1 {result.forest.macro_f1:.3f} on {result.test_cars} held-out cars, {result.seconds:.0f} s"
            )
            fit_s = million_rows(trained_on) if million else None
            if fit_s is not None:
                say(f"ml: the forest on 1,000,000 rows in {fit_s:.0f} s")
        finally:
            if private is not None:
                stack.down(private)
            delete_topics(settings.kafka, TopicNames().tagged(suffix, "bench-").all())
    return {"cars": cars, "seconds": seconds, "events": events, "stream_s": wall, "result": asdict(result),
            "million_s": fit_s, "upkeep": upkeep}  # fmt: skip


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(figures: dict[str, Any], machine: str) -> str:
    """The docs/ml.md section (between its markers)."""
    r = figures["result"]
    rows = [("random forest (300 trees, depth 12, balanced)", r["forest"])]
    rows += [(f"baseline: {name}", s) for name, s in r["baselines"].items()]
    classes = list(r["forest"]["precision"])
    lines = [
        BEGIN,
        f"Measured on {machine} by `fleetstream bench ml --cars {figures['cars']} --seconds {figures['seconds']}"
        f"{' --million' if figures['million_s'] is not None else ''}`: {figures['events']:,} events (default faults "
        f"and bad data) streamed into the lake in {figures['stream_s']:.0f} s; the model trained on "
        f"{r['train_windows']:,} windows of {r['train_cars']} cars and tested on {r['test_windows']:,} windows of "
        f"{r['test_cars']} other cars, in {r['seconds']:.0f} s with logging and registration.",
        "",
        "| model | accuracy | macro F1 | " + " | ".join(f"precision / recall {c}" for c in classes) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in classes) + " |",
    ]
    for name, s in rows:
        per_class = " | ".join(f"{s['precision'][c]:.3f} / {s['recall'][c]:.3f}" for c in classes)
        lines.append(f"| {name} | {s['accuracy']:.3f} | {s['macro_f1']:.3f} | {per_class} |")
    if figures["million_s"] is not None:
        lines += ["", f"The same forest on 1,000,000 feature rows: {figures['million_s']:.0f} s on two cores."]
    w = figures["upkeep"]["warnings"]
    if w["overheats"]:
        lead = (f"median lead {w['median_lead_s']:.0f} s (from {w['min_lead_s']:.0f} to {w['max_lead_s']:.0f} s)"
                if w["median_lead_s"] is not None else "no lead")  # fmt: skip
        lines += ["", f"Overheating early warning on the same run: {w['overheats']} injected overheat faults took a "
                      f"coolant over the limit; {w['caught']} were warned before (recall {w['recall']:.2f}), "
                      f"{lead}; {w['right']} of {w['warnings']} warnings came while a fault heated the car "
                      f"(precision {w['precision']:.2f})."]  # fmt: skip
    if figures["upkeep"]["by_profile"]:
        lines += ["", "gold/maintenance by the cars' true driver profile (medians over cars):", "",
                  "| profile | cars | km seen | fuel l/100 km | tyre wear %/1,000 km | brake wear %/1,000 km |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for p in figures["upkeep"]["by_profile"]:
            values = [
                _num(p[c], d)
                for c, d in (
                    ("km_seen", 1),
                    ("fuel_l_per_100km", 1),
                    ("tyre_wear_per_1000km", 2),
                    ("brake_wear_per_1000km", 2),
                )
            ]
            lines.append(f"| {p['driver_profile']} | {p['cars']} | " + " | ".join(values) + " |")
    lines.append(END)
    return "\n".join(lines)
