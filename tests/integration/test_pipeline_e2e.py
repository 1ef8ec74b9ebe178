"""The whole path on the real broker, Spark and Delta: simulator with faults and bad data, then the
pipeline, checked against the simulator's ground truth."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import polars as pl
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetstream.clients import spark_kafka
from fleetstream.config import KafkaSettings, LakeSettings, MlflowSettings, Settings, TopicNames
from fleetstream.ingest.kafka import describe_topics, ensure_topics
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.local import stack
from fleetstream.ml import features, overheat
from fleetstream.ml.score import backfill
from fleetstream.ml.train import CHAMPION, TrainingError, TrainOptions, train
from fleetstream.pipeline import OFFLINE_AFTER_S, gold
from fleetstream.pipeline.offline import RULE as OFFLINE_RULE
from fleetstream.pipeline.plan import LAYERS, STATEFUL, plan
from fleetstream.pipeline.session import spark_session
from fleetstream.pipeline.stream import Streams
from fleetstream.reference.catalog import generate_cars
from fleetstream.reference.publish import publish
from fleetstream.rules.engine import load_rules
from fleetstream.sim.faults import BAD_DATA_PRESETS, EPISODE_RULE_OF_FAULT, FAULT_PRESETS
from fleetstream.sim.runner import SimOptions, SimStats, Simulation
from fleetstream.testing import airflow_dag_test, free_port_base

pytestmark = pytest.mark.integration
CARS, SECONDS, SEED = 40, 1500, 77


@pytest.fixture(scope="module")
def run(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Simulation, SimStats, SparkSession]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames().tagged(suffix)
    settings = stack_settings.model_copy(
        update={
            "kafka": KafkaSettings(**{**stack_settings.kafka.model_dump(), "topics": topics}),
            "lake": LakeSettings(root=str(tmp_path_factory.mktemp("lake"))),
        }
    )
    ensure_topics(settings.kafka, topics.all())
    publish(settings, settings.lake.dims, generate_cars(CARS, SEED))
    options = SimOptions(
        cars=CARS,
        fast=True,
        duration=SECONDS,
        seed=SEED,
        faults=FAULT_PRESETS["heavy"],
        bad_data=BAD_DATA_PRESETS["default"],
    )
    simulation = Simulation(options, KafkaSink(settings.kafka, topics.sensors))
    stats = simulation.run()
    spark = spark_session(settings, "fleetstream-e2e")
    layers = [*LAYERS, *STATEFUL]  # the medallion, then the alert episodes over its silver
    Streams(spark, settings, plan(layers, "realtime", separate=True, available_now=True)).run_available_now()
    return settings, simulation, stats, spark


def table(spark: SparkSession, settings: Settings, name: str):  # type: ignore[no-untyped-def]
    return spark.read.format("delta").load(f"{settings.lake.root}/{name}")


def test_bronze_holds_every_produced_message(run) -> None:  # type: ignore[no-untyped-def]
    settings, _, stats, spark = run
    assert table(spark, settings, "bronze/telemetry").count() == stats.events


def test_every_bronze_row_is_accounted_for(run) -> None:  # type: ignore[no-untyped-def]
    settings, simulation, stats, spark = run
    silver = table(spark, settings, "silver/telemetry").count()
    quarantine = table(spark, settings, "quarantine/telemetry")
    duplicates = table(spark, settings, "silver/duplicates").count()
    assert silver + quarantine.count() + duplicates == stats.events
    truth = simulation.ground_truth.counts()
    reasons = Counter({r["reason"]: r["count"] for r in quarantine.groupBy("reason").count().collect()})
    assert reasons == Counter(
        {
            "malformed_json": truth["malformed_json"],
            "missing_field": truth["missing_field"],
            "bad_type": truth["bad_type"],
            "out_of_range": truth["out_of_range"],
            "too_late": truth["late"],
        }
    )
    assert duplicates == truth["duplicate"]
    ids = table(spark, settings, "silver/telemetry").select("event_id")
    assert ids.count() == ids.distinct().count()


def test_alerts_equal_the_ground_truth(run) -> None:  # type: ignore[no-untyped-def]
    settings, simulation, _, spark = run
    expected = simulation.ground_truth.expected_alerts()
    got = {
        (r["event_id"], r["rule"]) for r in table(spark, settings, "silver/alerts").select("event_id", "rule").collect()
    }
    assert len(expected) > 100
    assert got == expected  # precision and recall 1.0


def test_kafka_outputs_match_the_tables(run) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, spark = run
    topics = settings.kafka.topics
    counts = {t.name: t.messages for t in describe_topics(settings.kafka, [topics.enriched, topics.dlq, topics.alerts])}
    assert counts[topics.enriched] == table(spark, settings, "silver/telemetry").count()
    assert counts[topics.dlq] == table(spark, settings, "quarantine/telemetry").count()
    messages = (
        spark.read.format("kafka").options(**spark_kafka(settings.kafka))
        .option("subscribe", topics.alerts).option("startingOffsets", "earliest").load()
        .select(F.get_json_object(F.col("value").cast("string"), "$.kind").alias("kind"),
                F.get_json_object(F.col("value").cast("string"), "$.lifecycle").alias("lifecycle"),
                F.get_json_object(F.col("value").cast("string"), "$.episode_id").alias("episode_id"))
    )  # fmt: skip
    per_event = messages.where(F.col("kind").isNull()).count()
    assert per_event == table(spark, settings, "silver/alerts").count()
    # an episode's lifecycle on alert-data: one `opened` per episode, one `resolved` per resolved one
    episodes = table(spark, settings, "silver/alert_episodes")
    lifecycle = Counter(
        {r["lifecycle"]: r["count"] for r in messages.where("kind = 'episode'").groupBy("lifecycle").count().collect()}
    )
    assert lifecycle["opened"] == episodes.count() > 0
    assert lifecycle["resolved"] == episodes.where("status = 'resolved'").count()
    assert messages.where("lifecycle = 'opened'").select("episode_id").distinct().count() == episodes.count()
    assert lifecycle["updated"] == 0  # table refreshes only
    # every later message of an episode carries the id it opened with; this run's overheat and zone
    # episodes last longer than their rules' `repeat_every`, so some are notified again
    rows = {r["episode_id"]: r for r in episodes.collect()}
    later = messages.where("kind = 'episode' AND lifecycle != 'opened'").collect()
    assert {r["episode_id"] for r in later} <= set(rows)
    assert lifecycle["repeated"] > 0
    rules = {r.name: r.lifecycle for r in load_rules()}
    end = table(spark, settings, "silver/telemetry").agg(F.max("event_time")).first()[0]
    for message in later:
        if message["lifecycle"] == "repeated":  # (notified again at an event of the car while open)
            episode = rows[message["episode_id"]]
            every = rules[episode["rule"]].repeat_every_s
            assert every is not None, episode
            assert (episode["resolved_at"] or end) - episode["opened_at"] >= every * 1000, episode


def test_every_injected_fault_is_one_alert_episode(run) -> None:  # type: ignore[no-untyped-def]
    """Each fault episode the simulator injected, as far as its events reached silver, is exactly one
    alert episode of the right car and rule: it starts at the fault's first event in silver, opens
    `for` after (plus an event at most, where one was quarantined) and resolves `clear_for` after the
    rule is clear. No alert episode is left without its fault."""
    settings, simulation, _, spark = run
    rules = {r.name: r for r in load_rules()}
    silver = {
        r["event_id"]: r["event_time"]
        for r in table(spark, settings, "silver/telemetry").select("event_id", "event_time").collect()
    }
    end = max(silver.values())
    expected = simulation.ground_truth.expected_episodes(silver, {name: r.lifecycle.for_s for name, r in rules.items()})
    everything = {
        (r["car_id"], r["rule"], r["started_at"]): r for r in table(spark, settings, "silver/alert_episodes").collect()
    }
    got = {k: r for k, r in everything.items() if k[1] != OFFLINE_RULE}  # offline: the next test
    assert {k[1] for k in expected} == set(EPISODE_RULE_OF_FAULT.values())
    assert set(got) == set(expected)  # precision and recall 1.0
    for key, last in expected.items():
        episode, lifecycle = got[key], rules[key[1]].lifecycle
        assert 0 <= episode["opened_at"] - episode["started_at"] - lifecycle.for_s * 1000 <= 1000
        assert episode["last_seen_at"] == last
        if lifecycle.clear_condition is None and last + (lifecycle.clear_for_s + 2) * 1000 <= end:
            assert episode["status"] == "resolved"
            assert lifecycle.clear_for_s * 1000 <= episode["resolved_at"] - last <= (lifecycle.clear_for_s + 2) * 1000
        if episode["status"] == "resolved":
            assert episode["resolved_at"] - episode["cleared_at"] >= lifecycle.clear_for_s * 1000
    alerts = table(spark, settings, "silver/alerts").count()
    assert alerts >= 10 * len(got), (alerts, len(got))  # episodes are at least 10 times fewer
    # gold counts them: every opening and resolution once, per rule
    counted = {
        r["rule"]: (r["opened"], r["resolved"])
        for r in table(spark, settings, "gold/episodes_per_minute").groupBy("rule").agg(
            F.sum("opened").alias("opened"), F.sum("resolved").alias("resolved")
        ).collect()
    }  # fmt: skip
    assert counted == {
        rule: (
            sum(1 for k in everything if k[1] == rule),
            sum(1 for k, e in everything.items() if k[1] == rule and e["status"] == "resolved"),
        )
        for rule in {k[1] for k in everything}
    }


def test_episode_peaks_are_the_highest_readings_while_the_rule_held(run) -> None:  # type: ignore[no-untyped-def]
    """An episode's peak of the reading its rule watches is the car's highest reading in silver from
    the episode's start to its last event that fired (a higher one would have fired too)."""
    settings, _, _, spark = run
    watched = {"overspeed": ("speed", "peak_speed"), "engine_stress": ("rpm", "peak_rpm"),
               "overheat": ("coolant_temp", "peak_coolant")}  # fmt: skip
    silver = pl.read_delta(
        f"{settings.lake.root}/silver/telemetry", columns=["car_id", "event_time", "speed", "rpm", "coolant_temp"]
    )
    episodes = table(spark, settings, "silver/alert_episodes").where(F.col("rule").isin(list(watched))).collect()
    assert {e["rule"] for e in episodes} == set(watched)
    for episode in episodes:
        column, peak = watched[episode["rule"]]
        readings = silver.filter(
            (pl.col("car_id") == episode["car_id"])
            & pl.col("event_time").is_between(episode["started_at"], episode["last_seen_at"])
        )[column]
        assert episode[peak] == readings.max(), episode


def test_every_lost_connection_is_one_offline_episode(run) -> None:  # type: ignore[no-untyped-def]
    """Each connection loss the simulator injected (the car sends nothing for 45 to 120 s) is one
    vehicle_offline episode of that car: from its last report in silver before the silence, opened
    the offline time after it, resolved at its first report after. Nothing else is offline."""
    settings, simulation, _, spark = run
    reports: dict[str, list[int]] = {}
    for r in table(spark, settings, "silver/telemetry").select("car_id", "event_time").collect():
        reports.setdefault(r["car_id"], []).append(r["event_time"])
    got = {
        (r["car_id"], r["started_at"]): r
        for r in table(spark, settings, "silver/alert_episodes").where(F.col("rule") == OFFLINE_RULE).collect()
    }
    expected, unfinished = simulation.ground_truth.expected_offline(reports)
    assert len(expected) >= 10
    assert set(expected) <= set(got) <= set(expected) | unfinished
    for key, back in expected.items():
        episode = got[key]
        assert (episode["status"], episode["resolved_at"]) == ("resolved", back), (key, episode)
        assert episode["opened_at"] == key[1] + OFFLINE_AFTER_S * 1000
    assert all(got[key]["status"] == "open" for key in unfinished & set(got))


def test_gold_equals_batch_recomputation(run) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, spark = run
    silver = table(spark, settings, "silver/telemetry")
    models = table(spark, settings, "gold/speed_by_model")
    assert models.count() > 0
    batch = gold.speed_by_model(gold.car_windows(silver))
    key = ["window_start", "model"]
    joined = models.alias("g").join(batch.alias("b"), key)
    assert joined.count() == models.count()
    assert joined.where(F.col("g.max_speed") != F.col("b.max_speed")).count() == 0
    assert joined.where(F.col("g.events") != F.col("b.events")).count() == 0
    colors = table(spark, settings, "gold/cars_by_color")
    recomputed = gold.cars_by_color(gold.car_windows(silver))
    joined = colors.alias("g").join(recomputed.alias("b"), ["window_start", "color"])
    assert colors.count() > 0
    assert joined.where(F.col("g.cars") != F.col("b.cars")).count() == 0
    state = table(spark, settings, "gold/car_state")
    assert state.count() == CARS
    latest = silver.groupBy("car_id").agg(F.max("event_time").alias("t"))
    assert state.join(latest, "car_id").where(F.col("event_time") != F.col("t")).count() == 0


def test_trips_equal_the_simulators_trips(run) -> None:  # type: ignore[no-untyped-def]
    """gold/trips holds the simulator's trips: the same count per car, start and end within one report
    (a quarantined first or last report moves them by one), distance within 1 % or one report's."""
    settings, simulation, _, spark = run
    truth = sorted(simulation.ground_truth.trips, key=lambda t: (t.car_id, t.started_ms))
    got = sorted(
        (r.asDict() for r in table(spark, settings, "gold/trips").collect()),
        key=lambda t: (t["car_id"], t["started_at"]),
    )
    assert len(truth) > CARS  # cars end trips and start others in the run
    assert [t.car_id for t in truth] == [t["car_id"] for t in got]
    for want, trip in zip(truth, got, strict=True):
        assert abs(trip["started_at"] - want.started_ms) <= 1000, (want, trip)
        assert want.ended_ms is not None
        assert want.end_km is not None
        assert abs(trip["ended_at"] - want.ended_ms) <= 1000, (want, trip)
        distance = want.end_km - want.start_km
        assert abs(trip["distance_km"] - distance) <= max(0.01 * distance, trip["max_speed"] / 3600), (want, trip)
    # a trip is open where the car's engine was still on at the end of the run
    driving = {car for car, on in zip(simulation.fleet.car_ids, simulation.fleet.engine_on, strict=True) if on}
    assert {t["car_id"] for t in got if t["status"] == "open"} == driving
    assert sum(t["episodes"] for t in got) > 0


def test_driving_features_equal_batch_recomputation(run) -> None:  # type: ignore[no-untyped-def]
    """gold/driving_features (from partial minutes written batch by batch, the motion carried across
    batches) equals the features computed from the whole of silver at once."""
    settings, _, _, spark = run
    written = table(spark, settings, "gold/driving_features")
    assert written.count() > CARS * 10
    assert written.groupBy("car_id", "window_end").count().where("count > 1").count() == 0  # each window once
    silver = table(spark, settings, "silver/telemetry")
    span = written.agg(F.min("window_end"), F.max("window_end")).first()
    # a catch-up run closes every window it can, whatever --features-every-minutes says: as far as the fleet's
    fleet_end = table(spark, settings, "gold/speed_by_model").agg(F.max("window_end")).first()[0]
    assert span[1] == fleet_end
    recomputed = features.driving_features(gold.car_minutes(silver), F.lit(span[0]), F.lit(span[1]))
    joined = written.alias("g").join(recomputed.alias("b"), ["car_id", "window_end"])
    assert joined.count() == written.count()
    for exact in ("events", "moving_events", "upshifts"):
        assert joined.where(F.col(f"g.{exact}") != F.col(f"b.{exact}")).count() == 0, exact
    for name in features.FEATURES:
        g, b = F.col(f"g.{name}"), F.col(f"b.{name}")
        off = joined.where(~F.coalesce(F.abs(g - b) <= 1e-6 * (1 + F.abs(b)), g.isNull() & b.isNull()))
        assert off.count() == 0, (name, off.select("car_id", "window_end", f"g.{name}", f"b.{name}").take(3))


def test_maintenance_and_overheat_warnings_match_the_simulation(run) -> None:  # type: ignore[no-untyped-def]
    """gold/maintenance: one row per car; the distance integrated from the reports agrees with the
    odometer, the wear rates with the simulator's wear model, the service distance with the
    odometer. gold/overheat_warnings: scored against the injected overheat faults."""
    settings, simulation, _, spark = run
    upkeep = table(spark, settings, "gold/maintenance")
    silver = table(spark, settings, "silver/telemetry")
    assert {r[0] for r in upkeep.select("car_id").collect()} == {
        r[0] for r in silver.select("car_id").distinct().collect()
    }
    spans = upkeep.select(
        "car_id", "first_minute", "last_minute", "km_seen", F.col("odometer").alias("odometer_now"), "km_to_service"
    )
    seen = silver.join(spans, "car_id").where(
        (F.col("event_ts") >= F.col("first_minute"))
        & (F.col("event_ts") < F.col("last_minute") + F.expr("INTERVAL 1 MINUTE"))
    )
    per_car = seen.groupBy("car_id").agg(
        (F.max("odometer") - F.min("odometer")).alias("advance"),
        (F.max("tyre_wear") - F.min("tyre_wear")).alias("tyre"),
        (F.max("brake_wear") - F.min("brake_wear")).alias("brake"),
        F.max("odometer").alias("odometer_max"),
        F.first("km_seen").alias("km_seen"), F.first("odometer_now").alias("odometer"),
        F.first("km_to_service").alias("km_to_service"),
    ).toPandas()  # fmt: skip
    assert (per_car["km_seen"] <= per_car["advance"] * 1.02 + 0.05).all()  # a gap over 5 s is not integrated
    ratio = per_car["km_seen"].sum() / per_car["advance"].sum()
    assert 0.9 <= ratio <= 1.01, ratio
    assert (per_car["odometer"] == per_car["odometer_max"]).all()
    interval = settings.maintenance.service_interval_km
    assert per_car["km_to_service"].to_numpy() == pytest.approx(interval - per_car["odometer"] % interval)
    tyre_rate = per_car["tyre"].sum() / per_car["km_seen"].sum() * 1000  # the simulator: 2 % per 1,000 km and more
    assert 2.0 <= tyre_rate <= 4.0, tyre_rate
    # the simulator: 1 to 2.5 % per 1,000 km, more with the braking after the heavy faults' overspeeds
    brake_rate = per_car["brake"].sum() / per_car["km_seen"].sum() * 1000
    assert 1.0 <= brake_rate <= 4.0, brake_rate
    rates = upkeep.select("brake_wear_per_1000km", "km_to_brakes").toPandas()
    assert rates["brake_wear_per_1000km"].notna().all()
    assert (rates["km_to_brakes"] > 0).all()
    warned = [
        (r[0], r[1]) for r in table(spark, settings, "gold/overheat_warnings").select("car_id", "event_time").collect()
    ]
    scored = overheat.score(warned, [asdict(e) for e in simulation.ground_truth.episodes])
    print("overheat warnings:", scored.as_dict())
    assert scored.overheats >= 10
    assert scored.recall >= 0.8, scored.as_dict()
    assert scored.precision >= 0.8, scored.as_dict()
    assert (scored.median_lead_s or 0) >= 20, scored.as_dict()


@pytest.fixture(scope="module")
def mlflow_settings(run, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The e2e run's settings with a local MLflow server of their own (started as `up --mlflow` does)."""
    settings = run[0].model_copy(
        update={"state_dir": tmp_path_factory.mktemp("mlflow-state"), "mlflow": MlflowSettings(port=free_port_base(1))}
    )
    stack.start_mlflow(settings)
    try:
        yield settings
    finally:
        stack.down(settings)


def test_driving_style_model_is_trained_tracked_and_served_by_alias(run, mlflow_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import mlflow
    from mlflow.tracking import MlflowClient

    settings = mlflow_settings
    first = train(settings)
    assert first.forest.macro_f1 >= 0.85, first
    assert first.forest.macro_f1 > first.baselines["majority"].macro_f1
    assert first.test_cars >= 3
    assert first.train_cars >= 6
    assert (first.version, first.promoted, first.champion_f1) == ("1", True, None)
    client = MlflowClient(settings.mlflow.uri)
    run_data = client.get_run(first.run_id).data
    assert run_data.metrics["macro_f1"] == pytest.approx(first.forest.macro_f1)
    assert {"majority_macro_f1", "threshold_macro_f1", "recall_aggressive"} <= set(run_data.metrics)
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"confusion_matrix.png", "feature_importance.png", "test_cars.json"} <= artifacts
    # a worse model (one shallow tree) is registered but does not take the alias
    worse = train(settings, TrainOptions(trees=1, depth=1))
    assert (worse.version, worse.promoted) == ("2", False)
    assert worse.champion_f1 == pytest.approx(first.forest.macro_f1)
    assert client.get_model_version_by_alias(settings.mlflow.model_name, CHAMPION).version == "1"
    # the champion loads by alias in a fresh process and predicts what version 1 predicts here
    from fleetstream.ml.train import load_features

    windows = load_features(settings)[list(features.FEATURES)].head(200)
    windows.to_parquet(tmp_path / "x.parquet")
    mlflow.set_tracking_uri(settings.mlflow.uri)
    here = mlflow.sklearn.load_model(f"models:/{settings.mlflow.model_name}/1").predict(windows)
    code = (
        "import sys, json, mlflow, pandas as pd; mlflow.set_tracking_uri(sys.argv[1]); "
        "m = mlflow.sklearn.load_model(f'models:/{sys.argv[2]}@champion'); "
        "print(json.dumps(m.predict(pd.read_parquet(sys.argv[3])).tolist()))"
    )
    import json
    import subprocess
    import sys

    argv = [sys.executable, "-c", code, settings.mlflow.uri, settings.mlflow.model_name, str(tmp_path / "x.parquet")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here.tolist()
    assert len(set(here)) >= 2
    # `fleetstream ml score`: the windows the run closed before there was a champion, scored once
    spark = run[3]
    scorable = features.scorable(table(spark, settings, "gold/driving_features")).count()
    assert backfill(settings, spark) == (scorable, "1")
    assert backfill(settings, spark) == (0, "1")
    assert table(spark, settings, "gold/driver_style").count() == scorable


def test_training_refuses_bad_input_and_registers_nothing(mlflow_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    settings = mlflow_settings
    client = MlflowClient(settings.mlflow.uri)

    def versions() -> int:
        return len(client.search_model_versions(f"name='{settings.mlflow.model_name}'"))

    before = versions()
    # one driving style only: every car labelled calm
    dims = tmp_path / "dims"
    calm = [c.__class__(**{**c.__dict__, "driver_profile": "calm"}) for c in generate_cars(CARS, SEED)]
    publish(settings, str(dims), calm)
    one_class = settings.model_copy(update={"lake": LakeSettings(root=settings.lake.root, dims_location=str(dims))})
    with pytest.raises(TrainingError, match="at least two driving styles"):
        train(one_class)
    # no features: an empty lake
    empty = settings.model_copy(update={"lake": LakeSettings(root=str(tmp_path / "empty"))})
    with pytest.raises(TrainingError, match="no gold/driving_features table"):
        train(empty)
    # the tracking server down
    down = settings.model_copy(update={"mlflow": MlflowSettings(port=free_port_base(1))})
    with pytest.raises(TrainingError, match="does not answer"):
        train(down)
    assert versions() == before


def test_ml_retrain_dag_trains_registers_and_crowns_a_first_model(mlflow_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Airflow's ml_retrain DAG (dag.test(): `fleetstream ml train` as its task) on the e2e lake: the
    run succeeds and registers a model that, being the first of its name, becomes the champion. (A
    registered model of its own: the main one's versions are the other tests' to count.)"""
    from mlflow.tracking import MlflowClient

    settings = mlflow_settings
    name = f"{settings.mlflow.model_name}-airflow"
    airflow = settings.model_copy(update={"state_dir": tmp_path / "state"})
    done = airflow_dag_test(airflow, "ml_retrain", env={"FLEETSTREAM_MLFLOW__MODEL_NAME": name})
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    client = MlflowClient(settings.mlflow.uri)
    [version] = client.search_model_versions(f"name='{name}'")
    assert client.get_model_version_by_alias(name, CHAMPION).version == version.version == "1"
    assert float(version.tags["macro_f1"]) >= 0.85


def test_replay_rebuilds_the_same_tables_from_bronze_and_scores_driving_styles_live(  # type: ignore[no-untyped-def]
    run, mlflow_settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Airflow's replay DAG (dag.test(): `fleetstream replay --to <target>` as its task) rebuilds the
    same tables from bronze; with the champion registered (by the training test before this one),
    its gold layer also scores each closed feature window (gold/driver_style)."""
    _, _, _, spark = run
    settings = mlflow_settings
    target = str(tmp_path_factory.mktemp("replay"))
    replayed = settings.model_copy(update={"lake": LakeSettings(root=target, dims_location=settings.lake.dims)})
    before = describe_topics(settings.kafka, [settings.kafka.topics.alerts])[0].messages
    airflow = settings.model_copy(update={"state_dir": tmp_path_factory.mktemp("airflow")})
    done = airflow_dag_test(airflow, "replay", {"to": target})
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    def ids(root: str, name: str, column: str) -> list[str]:
        frame = spark.read.format("delta").load(f"{root}/{name}")
        return sorted(r[0] for r in frame.select(column).collect())

    root = settings.lake.root
    assert ids(target, "silver/telemetry", "event_id") == ids(root, "silver/telemetry", "event_id")
    assert ids(target, "silver/alerts", "alert_id") == ids(root, "silver/alerts", "alert_id")
    assert ids(target, "quarantine/telemetry", "raw") == ids(root, "quarantine/telemetry", "raw")
    assert ids(target, "silver/duplicates", "event_id") == ids(root, "silver/duplicates", "event_id")
    assert table(spark, replayed, "gold/car_state").count() == table(spark, settings, "gold/car_state").count()
    assert "bronze" not in os.listdir(target), "bronze is read in place, not copied"
    assert describe_topics(settings.kafka, [settings.kafka.topics.alerts])[0].messages == before, "nothing published"
    # live scoring: every scorable window scored once, by version 1 (the champion), as it predicts
    import mlflow

    styles = table(spark, replayed, "gold/driver_style").toPandas()
    windows = features.scorable(table(spark, replayed, "gold/driving_features")).toPandas()
    assert len(styles) == len(windows) > CARS * 5
    assert set(styles["model_version"]) == {"1"}
    mlflow.set_tracking_uri(settings.mlflow.uri)
    champion = mlflow.sklearn.load_model(f"models:/{settings.mlflow.model_name}@{CHAMPION}")
    merged = windows.merge(styles, on=["car_id", "window_end"], validate="one_to_one")
    assert (merged["style"] == champion.predict(merged[list(features.FEATURES)])).all()
    assert ((merged[["p_calm", "p_normal", "p_aggressive"]].sum(axis=1) - 1).abs() < 1e-9).all()
    truth = {c.car_id: c.driver_profile for c in generate_cars(CARS, SEED)}
    accuracy = (merged["style"] == merged["car_id"].map(truth)).mean()
    assert accuracy >= 0.85, accuracy
    # fuel per 100 km by the style the champion gave each minute
    by_style = table(spark, replayed, "gold/maintenance").select("car_id", "fuel_l_per_100km_by_style").toPandas()
    styled = [set(m) - {"unscored"} for m in by_style["fuel_l_per_100km_by_style"] if m]
    assert sum(1 for s in styled if s) >= CARS // 2, by_style.head()


def _sql_blocks(text: str) -> list[str]:
    """The ```sql blocks of a Markdown page."""
    import re

    return [block.strip() for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S)]


def test_sql_endpoint_answers_what_delta_rs_reads(run, tmp_path, repo_root) -> None:  # type: ignore[no-untyped-def]
    """`fleetstream up --sql` beside the e2e lake (status shows the endpoint and `down` stops it and
    its JVM), asked by beeline (pyspark's HiveServer2 client) as an outside program: the counts equal
    delta-rs's, every query of docs/sql.md runs, writes are refused, a wrong password is refused;
    `fleetstream sql` and the ops bot ask it too."""
    import json
    import subprocess
    import sys

    import psutil
    from deltalake import DeltaTable
    from pydantic import SecretStr

    from fleetstream.config import SqlSettings, process_env
    from fleetstream.lake.catalog import NAMED, sql_name
    from fleetstream.sql.client import beeline_argv

    settings = run[0].model_copy(
        update={
            "state_dir": tmp_path / "state",
            "sql": SqlSettings(port=free_port_base(1), password=SecretStr("e2e-secret"), refresh_s=5),
        }
    )
    env = {
        **process_env(settings, os.environ),
        "FLEETSTREAM_STATE_DIR": str(settings.state_dir),
        "FLEETSTREAM_SQL__PORT": str(settings.sql.port),
        "FLEETSTREAM_SQL__PASSWORD": "e2e-secret",
        "FLEETSTREAM_SQL__REFRESH_S": "5",
    }

    def fleetstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fleetstream", *args], capture_output=True, text=True,
                              timeout=300, env=env, check=False)  # fmt: skip

    # as a user starts it: `up --sql` beside the (external, here) broker; `status` shows it
    started = fleetstream("up", "--detach", "--sql")
    assert started.returncode == 0, started.stderr[-3000:]
    family: list[psutil.Process] = []
    try:
        report = json.loads(fleetstream("status", "--json").stdout)
        endpoint = next(part for part in report["parts"] if part["name"] == "sql")
        assert endpoint["healthy"] is True
        assert endpoint["address"] == f"jdbc:hive2://127.0.0.1:{settings.sql.port}/fleet"
        family = [psutil.Process(endpoint["pid"]), *psutil.Process(endpoint["pid"]).children(recursive=True)]
        assert any("java" in " ".join(p.cmdline()) for p in family)  # the Spark driver under it

        def ask(*args: str, as_settings: Settings = settings) -> subprocess.CompletedProcess[str]:
            with beeline_argv(as_settings, "--silent=true", "--outputformat=csv2", *args) as argv:
                return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)

        tables = [t for t in NAMED if DeltaTable.is_deltatable(f"{settings.lake.root}/{t}")]
        assert {"silver/telemetry", "gold/car_state", "gold/alerts_per_minute", "dims/cars"} <= set(tables)
        union = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {sql_name(t)}" for t in tables)
        answer = ask("-e", union)
        assert answer.returncode == 0, answer.stderr[-3000:]
        served = {line.split(",")[0]: int(line.split(",")[1]) for line in answer.stdout.splitlines()[1:] if line}
        read = {t: DeltaTable(f"{settings.lake.root}/{t}").to_pyarrow_dataset().count_rows() for t in tables}
        assert served == read
        assert read["silver/telemetry"] > 10_000

        queries = _sql_blocks((repo_root / "docs" / "sql.md").read_text(encoding="utf-8"))
        assert len(queries) >= 10
        script = tmp_path / "docs-sql.sql"
        script.write_text("\n".join(queries) + "\n", encoding="utf-8")
        colors = f"{settings.lake.root}/dims/car_colors"
        version = DeltaTable(colors).version()
        wrong = settings.model_copy(update={"sql": settings.sql.model_copy(update={"password": SecretStr("nope")})})
        # the ops bot's /count and /sql (through this endpoint) say what delta-rs reads
        from fleetstream.ops import bot

        cars = read["gold/car_state"]
        # the clients below start a JVM each (beeline) and only read: three at a time, checked after
        with ThreadPoolExecutor(3) as pool:
            docs = pool.submit(ask, "-f", str(script))
            refused = pool.submit(ask, "-e", "INSERT INTO fleet.dims_car_colors SELECT * FROM fleet.dims_car_colors")
            missing = pool.submit(ask, "-e", "SELECT count(*) FROM fleet.no_such_table")
            denied = pool.submit(ask, "-e", "SELECT 1", as_settings=wrong)
            cli = pool.submit(
                subprocess.run,
                [sys.executable, "-m", "fleetstream", "sql", "SELECT count(*) AS cars FROM fleet.gold_car_state"],
                capture_output=True, text=True, timeout=180, env=env, check=False,
            )  # fmt: skip
            bot_answers = {
                question: pool.submit(bot.answer, settings, question)
                for question in ("/count fleet.gold_car_state", "/count silver/telemetry",
                                 "/sql SELECT count(*) AS cars FROM fleet.gold_car_state",
                                 "/sql SELECT car_id FROM fleet.gold_car_state ORDER BY car_id",
                                 "/sql SELECT * FROM fleet.nope")
            }  # fmt: skip
        answer = docs.result()
        assert answer.returncode == 0, answer.stdout[-2000:] + answer.stderr[-3000:]
        assert "color_name,cars" in answer.stdout
        assert "model,max_speed_kmh" in answer.stdout

        assert refused.result().returncode != 0
        assert "read-only: AppendData is refused" in refused.result().stdout + refused.result().stderr
        assert DeltaTable(colors).version() == version

        assert missing.result().returncode != 0
        assert "TABLE_OR_VIEW_NOT_FOUND" in missing.result().stdout + missing.result().stderr

        assert denied.result().returncode != 0
        assert "Error validating the login" in denied.result().stdout + denied.result().stderr

        assert cli.result().returncode == 0, cli.result().stderr[-3000:]
        assert str(read["gold/car_state"]) in cli.result().stdout

        said = {question: future.result() for question, future in bot_answers.items()}
        assert said["/count fleet.gold_car_state"] == f"fleet.gold_car_state: {cars:,} rows"
        assert said["/count silver/telemetry"] == f"fleet.silver_telemetry: {read['silver/telemetry']:,} rows"
        counted = said["/sql SELECT count(*) AS cars FROM fleet.gold_car_state"]
        assert counted == f"<pre>cars\n{cars}</pre>\n1 rows", counted
        limited = said["/sql SELECT car_id FROM fleet.gold_car_state ORDER BY car_id"]
        assert limited.endswith(f"\nthe first {settings.bot.sql_row_limit} rows") == (cars > settings.bot.sql_row_limit)
        assert "TABLE_OR_VIEW_NOT_FOUND" in said["/sql SELECT * FROM fleet.nope"]
    finally:
        stopped = fleetstream("down")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped sql" in stopped.stderr
    for process in family:  # the endpoint and its JVM
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert not stack.sql_answers(settings)
