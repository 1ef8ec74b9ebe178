"""The streaming pipeline: stream (Kafka into the lake, live) and replay (bronze into fresh tables)."""

from __future__ import annotations

import functools
import os
import time
from typing import Annotated

import typer
from rich.table import Table

from fleetstream.cli.common import RulesFile, _settings, console, failing, log, out
from fleetstream.errors import FleetstreamError
from fleetstream.ingest.kafka import require_kafka
from fleetstream.local.process import stop as stop_service
from fleetstream.pipeline import (
    ALERTS_MODE,
    ALERTS_TRIGGER_S,
    EPISODES_PROGRESS_S,
    EPISODES_TRIGGER_S,
    FEATURES_EVERY_MIN,
    LAKE_GOLD_S,
    LAKE_MAX_DELAY_S,
    LAKE_MAX_RECORDS,
    LAKE_MIN_RECORDS,
    LAKE_NICE,
    LAKE_ROLLUP_MIN,
    LAKE_TRIGGER_S,
    OFFLINE_AFTER_S,
    REALTIME_BATCH_S,
)


def stream(
    only: Annotated[
        str,
        typer.Option(
            envvar="FLEETSTREAM_STREAM_ONLY",
            help="Comma-separated layers: bronze,silver,alerts,gold (one query reads Kafka and computes every "
            "layer chosen; a layer without its input layer reads that layer's table); episodes (alert "
            "episodes, cars that stopped reporting, and trips), a stateful query over silver's table "
            "(offline, its part a query of its own before, is a name for it); alert-data is the alert-data "
            "publisher alone (part of alerts otherwise).",
        ),
    ] = "bronze,silver,alerts,gold,episodes",
    available_now: Annotated[
        bool,
        typer.Option(
            "--available-now",
            envvar="FLEETSTREAM_STREAM_AVAILABLE_NOW",
            help="Process what is there, then exit (backfills, tests); alert-data is then published by the "
            "lake's batches.",
        ),
    ] = False,
    trigger_seconds: Annotated[
        float,
        typer.Option(min=0, envvar="FLEETSTREAM_STREAM_TRIGGER_SECONDS", help="How often the lake looks for input."),
    ] = LAKE_TRIGGER_S,
    min_offsets_per_trigger: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="FLEETSTREAM_STREAM_MIN_OFFSETS_PER_TRIGGER",
            help="A lake batch starts once this many Kafka records wait, or after --max-trigger-delay-seconds "
            "(1: at every trigger).",
        ),
    ] = LAKE_MIN_RECORDS,
    max_trigger_delay_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="FLEETSTREAM_STREAM_MAX_TRIGGER_DELAY_SECONDS",
            help="The longest a lake batch waits for --min-offsets-per-trigger records: a quiet fleet's freshness.",
        ),
    ] = LAKE_MAX_DELAY_S,
    max_offsets_per_trigger: Annotated[
        int,
        typer.Option(
            min=1, envvar="FLEETSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER", help="Kafka records per lake batch at most."
        ),
    ] = LAKE_MAX_RECORDS,
    gold_interval_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="FLEETSTREAM_STREAM_GOLD_INTERVAL_SECONDS",
            help="While the lake's batches are small, update gold at most this often (0: every batch).",
        ),
    ] = LAKE_GOLD_S,
    rollup_every_minutes: Annotated[
        int,
        typer.Option(
            min=1,
            max=60,
            envvar="FLEETSTREAM_STREAM_ROLLUP_EVERY_MINUTES",
            help="Close gold's windows (the fleet's 15-minute windows, alerts per minute, driving features) once "
            "this many minutes of them are due, in one roll-up (each reads gold/car_minutes and commits every "
            "roll-up table). They close 10 minutes of event time after they end either way.",
        ),
    ] = LAKE_ROLLUP_MIN,
    features_every_minutes: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="FLEETSTREAM_STREAM_FEATURES_EVERY_MINUTES",
            help="Close and score the driving-feature windows (gold/driving_features, gold/driver_style) once this "
            "many minutes of them are due: the ML's per-minute work that many times less often, each window "
            "scored up to one minute fewer than that later (after the 10 minutes of lateness every gold window "
            "waits).",
        ),
    ] = FEATURES_EVERY_MIN,
    episodes_trigger_seconds: Annotated[
        float,
        typer.Option(
            min=0.1,
            envvar="FLEETSTREAM_STREAM_EPISODES_TRIGGER_SECONDS",
            help="How often the alert episodes query looks for new silver rows.",
        ),
    ] = EPISODES_TRIGGER_S,
    episodes_progress_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="FLEETSTREAM_STREAM_EPISODES_PROGRESS_SECONDS",
            help="Upsert silver/alert_episodes and gold/trips at most this often (0: every episodes batch); in "
            "between, their rows wait in silver/pending_upserts, which the dashboard reads with them. "
            "Notifications on alert-data go out in their own batch.",
        ),
    ] = EPISODES_PROGRESS_S,
    offline_after_seconds: Annotated[
        float,
        typer.Option(
            min=1,
            envvar="FLEETSTREAM_STREAM_OFFLINE_AFTER_SECONDS",
            help="A car that stops reporting this long while the fleet goes on opens a vehicle_offline episode.",
        ),
    ] = OFFLINE_AFTER_S,
    master: Annotated[
        str | None, typer.Option(envvar="FLEETSTREAM_SPARK__MASTER", help="Spark master; default local[*].")
    ] = None,
    alerts_mode: Annotated[
        str,
        typer.Option(
            envvar="FLEETSTREAM_STREAM_ALERTS_MODE",
            help="Who publishes alert-data: realtime, a Spark real-time query reading Kafka (milliseconds, "
            "little CPU when quiet); microbatch, a micro-batch query (trade-offs in docs/rules.md).",
        ),
    ] = ALERTS_MODE,
    realtime_checkpoint_seconds: Annotated[
        float,
        typer.Option(
            min=1,
            envvar="FLEETSTREAM_STREAM_REALTIME_CHECKPOINT_SECONDS",
            help="Real-time mode: the batch length, after which offsets are checkpointed and progress is "
            "reported; each new batch holds alerts up for a moment (docs/rules.md).",
        ),
    ] = REALTIME_BATCH_S,
    alerts_trigger_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="FLEETSTREAM_STREAM_ALERTS_TRIGGER_SECONDS",
            help="Micro-batch mode: the alert-data publisher's interval (a batch that takes longer is "
            "followed at once by the next).",
        ),
    ] = ALERTS_TRIGGER_S,
    separate_alert_app: Annotated[
        bool,
        typer.Option(
            "--separate-alert-app/--one-app",
            envvar="FLEETSTREAM_STREAM_SEPARATE_ALERT_APP",
            help="Run the alert-data publisher as a Spark application of its own (a child process, log in "
            "<state_dir>/logs/stream-alert-data.log), and this application's queries at a lower CPU priority "
            "(--lake-nice): alerts are then not held up by the lake's batches (the default; --one-app saves "
            "the second driver JVM at the cost of alert latency, docs/benchmarks.md).",
        ),
    ] = True,
    lake_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            envvar="FLEETSTREAM_STREAM_LAKE_NICE",
            help="With --separate-alert-app: how much to lower the lake queries' CPU priority (nice).",
        ),
    ] = LAKE_NICE,
    ml: Annotated[
        bool,
        typer.Option(
            "--ml/--no-ml",
            envvar="FLEETSTREAM_STREAM_ML",
            help="Gold also holds the ML tables: gold/driving_features, gold/driver_style (the windows scored "
            "with the registered champion), gold/maintenance and gold/overheat_warnings (docs/ml.md). "
            "--no-ml: the lake without them, and without their cost.",
        ),
    ] = True,
    rules: RulesFile = None,
    show_gold: Annotated[
        bool,
        typer.Option(
            "--console", envvar="FLEETSTREAM_STREAM_CONSOLE", help="Also print the newest gold windows every 10 s."
        ),
    ] = False,
) -> None:
    """Run the streaming pipeline: bronze, silver, alerts and gold on Delta Lake, and alert-data.

    One checkpointed query reads Kafka and writes every layer from the same micro-batch; it restarts
    where it stopped. Each query's rates, batch duration and lag are shown live (and written to
    <state_dir>/stream-status.json for the dashboard). Ctrl-C stops the queries cleanly.
    """
    from fleetstream.config import SparkSettings
    from fleetstream.pipeline import separate
    from fleetstream.pipeline.monitor import STATUS_FILE, write_status
    from fleetstream.pipeline.plan import plan

    began = time.time()
    try:
        run_plan = plan(
            [q.strip() for q in only.split(",") if q.strip()], alerts_mode, separate_alert_app, available_now, ml=ml
        )
    except FleetstreamError as exc:
        raise typer.BadParameter(str(exc)) from None
    with failing():
        settings = _settings()
    status_path = None
    if not available_now:
        # "starting" at once, so that the dashboard tells a pipeline starting up from one gone; the
        # publisher alone writes a status of its own (merged by the application that started it)
        alone = not run_plan.lake and run_plan.publisher == "here"
        status_path = settings.state_dir / (separate.PUBLISHER_STATUS_FILE if alone else STATUS_FILE)
        write_status(status_path, [], began, "starting", began, os.getpid())
    with failing():
        try:
            asked_master = master
            realtime_here = run_plan.alerts_mode == "realtime" and run_plan.publisher == "here"
            if not master and realtime_here and settings.spark.master == "local[*]":
                # real-time mode runs one long task per Kafka partition at once, besides the other queries
                master = f"local[{max(os.cpu_count() or 2, settings.kafka.partitions + 2)}]"
                log.info("real-time alerts: Spark master %s (a task slot for every Kafka partition)", master)
            if master:
                spark_settings = SparkSettings(**{**settings.spark.model_dump(), "master": master})
                settings = settings.model_copy(update={"spark": spark_settings})
            from fleetstream.rules.engine import load_rules

            chosen_rules = load_rules(rules) if rules else None
            require_kafka(settings.kafka)
            publisher = None
            if run_plan.publisher == "child":
                argv = separate.publisher_argv(
                    run_plan.alerts_mode, alerts_trigger_seconds, realtime_checkpoint_seconds, asked_master, rules
                )
                publisher = separate.start_publisher(settings, argv)
                log.info("alert-data publisher started (pid %d), log: %s", publisher.pid, publisher.log)
                # this process and the JVM it starts (inherited) yield the cores to the publisher
                os.nice(lake_nice)
            try:
                from fleetstream.pipeline.session import spark_session
                from fleetstream.pipeline.stream import Streams, Triggers

                spark = spark_session(
                    settings, "fleetstream-stream", with_s3=settings.lake.root.startswith("s3a://"),
                    batch_jvm=bool(run_plan.lake),  # the publisher alone keeps the JVM's defaults
                )  # fmt: skip
                spark.sparkContext.setLogLevel("WARN")
                triggers = Triggers(
                    lake_s=trigger_seconds, min_records=min_offsets_per_trigger,
                    max_delay_s=max_trigger_delay_seconds, max_records=max_offsets_per_trigger,
                    alerts_s=alerts_trigger_seconds, realtime_batch_s=realtime_checkpoint_seconds,
                    gold_s=gold_interval_seconds, rollup_min=rollup_every_minutes, features_min=features_every_minutes,
                    episodes_s=episodes_trigger_seconds,
                    progress_s=episodes_progress_seconds, offline_s=offline_after_seconds,
                )  # fmt: skip
                streams = Streams(spark, settings, run_plan, rules=chosen_rules, triggers=triggers)
                if available_now:
                    streams.run_available_now(lambda name: log.info("processing what is available: %s", name))
                    log.info("done in %.1f s", time.time() - began)
                    spark.stop()
                    return
                queries = streams.start()
            except BaseException:
                if publisher is not None:
                    stop_service(publisher, group=False)  # it stops its own JVM
                raise
        except FleetstreamError:
            if status_path is not None:
                write_status(status_path, [], time.time(), "stopped", began, os.getpid())
            raise
    from fleetstream.pipeline.supervise import rows_table, supervise

    snapshot = None
    if show_gold:

        def snapshot() -> list[Table]:
            return [rows_table(name, rows) for name, rows in streams.gold_snapshot().items()]

    others = None
    if publisher is not None:
        others = functools.partial(
            separate.publisher_rows, publisher, settings.state_dir / separate.PUBLISHER_STATUS_FILE
        )
    assert status_path is not None
    try:
        code = supervise(
            queries, status_path, console, snapshot=snapshot, others=others, stop_when=separate.parent_gone,
            started_at=began, restart=streams.restart, later=streams.start_deferred,
        )  # fmt: skip
    finally:
        if publisher is not None:
            stop_service(publisher, group=False)  # it stops its own JVM
            log.info("alert-data publisher stopped")
        spark.stop()
        log.info("pipeline stopped")
    if code:
        raise typer.Exit(code)


def replay(
    to: Annotated[
        str | None,
        typer.Option(
            envvar="FLEETSTREAM_REPLAY_TO",
            help="Lake root for the rebuilt tables (folder or s3a://); default: <lake>/replays/<UTC time>.",
        ),
    ] = None,
    rules: RulesFile = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish",
            envvar="FLEETSTREAM_REPLAY_PUBLISH",
            help="Also write samples-enriched, sensors-dlq and alert-data again (consumers see repeats).",
        ),
    ] = False,
    ml: Annotated[
        bool,
        typer.Option(
            "--ml/--no-ml",
            envvar="FLEETSTREAM_REPLAY_ML",
            help="Also rebuild the ML tables (driving features, their scores with the champion, maintenance, "
            "overheat warnings); --no-ml: the rest only, faster.",
        ),
    ] = True,
) -> None:
    """Rebuild silver, quarantine, alerts and gold from bronze into fresh tables.

    Bronze keeps every record exactly as received, so a replay with changed rules or reference data
    gives the tables they would have produced. The live lake is not touched: the new tables go to
    --to, with their own checkpoints. Nothing is written to Kafka unless --publish is given.
    """
    from fleetstream.config import LakeSettings
    from fleetstream.pipeline import ALERTS_MODE
    from fleetstream.pipeline.plan import plan
    from fleetstream.pipeline.session import spark_session
    from fleetstream.pipeline.stream import Streams
    from fleetstream.pipeline.writer import delta_exists
    from fleetstream.rules.engine import load_rules

    with failing():
        settings = _settings()
        source = settings.lake.root
        target = to or f"{source.rstrip('/')}/replays/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        if target.rstrip("/") == source.rstrip("/"):
            raise FleetstreamError("--to must differ from the live lake root: a replay writes fresh tables.")
        chosen_rules = load_rules(rules) if rules else None
        replayed = settings.model_copy(update={"lake": LakeSettings(root=target, dims_location=settings.lake.dims)})
        remote = source.startswith("s3a://") or target.startswith("s3a://")
        spark = spark_session(replayed, "fleetstream-replay", with_s3=remote)
        layers = plan(
            ["silver", "alerts", "gold", "episodes"],
            ALERTS_MODE,
            separate=False,
            available_now=True,
            publish=publish,
            ml=ml,
        )
        streams = Streams(spark, replayed, layers, rules=chosen_rules, bronze_from=source)
        if not delta_exists(spark, streams.lake.table("bronze/telemetry")):
            raise FleetstreamError(f"No bronze table under {source}: run `fleetstream stream` first.")
    spark.sparkContext.setLogLevel("WARN")
    began = time.monotonic()
    streams.run_available_now(lambda name: log.info("replaying %s", name))
    counts = streams.table_counts()
    spark.stop()
    log.info("replayed into %s in %.1f s", target, time.monotonic() - began)
    out.print_json(data={"to": target, "rows": counts})
