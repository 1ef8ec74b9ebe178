"""Bronze, dedup, quarantine, Kafka messages and gold, on small batch DataFrames."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetstream import schema
from fleetstream.pipeline import gold
from fleetstream.pipeline import silver as S
from fleetstream.pipeline.bronze import to_bronze

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def test_to_bronze_keeps_the_bytes_and_the_kafka_coordinates(spark: SparkSession) -> None:
    kafka = spark.createDataFrame(
        [(b"car-1", b"\xff not json", "sensors-sample", 3, 42, at(T0), 0)],
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int",
    )
    [row] = to_bronze(kafka).collect()
    assert bytes(row["value"]) == b"\xff not json"
    assert (row["key"], row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
        "car-1",
        "sensors-sample",
        3,
        42,
    )
    assert row["ingest_date"].isoformat() == "2026-01-01"
    assert row["ingest_time"] is not None


def valid_rows(spark: SparkSession, rows: list[tuple[str, int, int]]) -> DataFrame:
    return spark.createDataFrame(rows, "event_id string, kafka_partition int, kafka_offset long")


def split(valid: DataFrame, seen: DataFrame | None = None) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(first copies, later copies) as sorted (event_id, kafka_offset)."""
    first, later = S.split_copies(valid, S.later_copies(valid, seen))

    def ids(frame: DataFrame) -> list[tuple[str, int]]:
        return sorted((r["event_id"], r["kafka_offset"]) for r in frame.collect())

    return ids(first), ids(later)


def test_later_copies_keep_the_first_copy_by_partition_and_offset(spark: SparkSession) -> None:
    frame = valid_rows(spark, [("a", 1, 9), ("a", 0, 50), ("a", 0, 7), ("b", 2, 1), ("c", 0, 3)])
    first, later = split(frame)
    assert first == [("a", 7), ("b", 1), ("c", 3)]
    assert later == [("a", 9), ("a", 50)]


def test_later_copies_against_ids_already_seen(spark: SparkSession) -> None:
    frame = valid_rows(spark, [("a", 0, 1), ("b", 0, 2), ("b", 0, 3)])
    seen = spark.createDataFrame([("b",), ("b",), ("z",)], "event_id string")
    first, later = split(frame, seen)
    assert first == [("a", 1)]
    assert later == [("b", 2), ("b", 3)], "no row is lost or doubled by the joins"


def test_the_copies_found_in_the_driver_reach_spark_as_arrow(spark: SparkSession) -> None:
    """The driver's copies (:func:`later_copies_local`) become a frame of silver's key types with
    no Python worker task (a frame of a Python list would run some in each job over it)."""
    import pyarrow as pa

    rows = [("a", 1, 9), ("a", 0, 50), ("a", 0, 7), ("b", 2, 1), ("c", 0, 3)]
    frame = valid_rows(spark, rows)
    keys = pa.table({"event_id": [r[0] for r in rows], "kafka_partition": [r[1] for r in rows],
                     "kafka_offset": [r[2] for r in rows]})  # fmt: skip
    copies = S.copies_frame(frame, S.later_copies_local(keys, pa.array(["c"])))
    assert copies.schema == frame.select(*S.COPY_KEYS).schema
    assert sorted(map(tuple, copies.collect())) == [(0, 3), (0, 50), (1, 9)]
    assert "PythonRDD" not in str(copies._jdf.queryExecution().toRdd().toDebugString())
    first, later = S.split_copies(frame, copies)
    assert sorted(r["kafka_offset"] for r in first.collect()) == [1, 7]
    assert sorted(r["kafka_offset"] for r in later.collect()) == [3, 9, 50]


def test_quarantine_and_dlq_message_carry_reason_and_raw(spark: SparkSession) -> None:
    rejected = spark.createDataFrame(
        [("bad_type", "speed", '{"speed":"fast"}', "e1", "car-1", "t", 0, 5, at(T0), at(T0 + 1000))],
        "reason string, reason_detail string, raw string, event_id string, car_id string, kafka_topic string, "
        "kafka_partition int, kafka_offset long, kafka_ts timestamp, ingest_time timestamp",
    )
    quarantined = S.quarantine_rows(rejected)
    assert quarantined.columns == list(S.QUARANTINE_COLUMNS)
    [message] = S.dlq_messages(quarantined, "sensors-dlq").collect()
    assert (message["topic"], message["key"]) == ("sensors-dlq", "car-1")
    value = json.loads(message["value"])
    assert value["reason"] == "bad_type"
    assert value["reason_detail"] == "speed"
    assert value["raw"] == '{"speed":"fast"}'
    assert value["kafka_offset"] == 5


def silver(spark: SparkSession, rows: list[tuple[str, str, str, int, float]]) -> DataFrame:
    """(event_id, car_id, model + color as 'model/color', event_time ms, speed)"""
    frame = spark.createDataFrame(rows, "event_id string, car_id string, mc string, event_time long, speed double")
    return S.with_event_time(
        frame.withColumn("model", F.split("mc", "/")[0]).withColumn("color", F.split("mc", "/")[1]).drop("mc")
    )


MIN = 60_000
#: the silver columns gold's minutes need besides speed, rpm and coolant (one value each)
OTHER = {"fuel_level": 50.0, "oil_temp": 95.0, "throttle": 20.0, "brake": 0.0, "gear": 3, "engine_on": True,
         "fuel_rate": 5.0, "odometer": 1000.0, "tyre_wear": 10.0, "brake_wear": 10.0}  # fmt: skip


def test_speed_by_model_slides_fifteen_minute_windows_every_minute(spark: SparkSession) -> None:
    rows = [
        ("1", "c1", "A/red", T0 + 30_000, 50.0),
        ("2", "c2", "A/red", T0 + 5 * MIN, 90.0),
        ("3", "c3", "B/blue", T0 + 5 * MIN, 30.0),
    ]
    out = gold.speed_by_model(gold.car_windows(silver(spark, rows)))
    by = {(r["window_start"], r["model"]): r for r in out.collect()}
    start = at(T0)
    assert by[(start, "A")]["max_speed"] == 90.0
    assert by[(start, "A")]["avg_speed"] == 70.0
    assert by[(start, "A")]["events"] == 2
    assert by[(start, "B")]["max_speed"] == 30.0
    # the event at minute 0 falls in the 15 windows that start from minute -14 to minute 0
    assert sum(1 for (_, model), r in by.items() if model == "A" and r["events"] >= 1) == 15 + 5
    assert all((r["window_end"] - r["window_start"]).total_seconds() == 900 for r in by.values())


def test_cars_by_color_counts_distinct_cars(spark: SparkSession) -> None:
    rows = [
        ("1", "c1", "A/red", T0 + 1_000, 1.0),
        ("2", "c1", "A/red", T0 + 2_000, 1.0),
        ("3", "c2", "B/red", T0 + 3_000, 1.0),
        ("4", "c3", "A/blue", T0 + 4_000, 1.0),
    ]
    out = gold.cars_by_color(gold.car_windows(silver(spark, rows))).where(F.col("window_start") == at(T0))
    got = {r["color"]: (r["cars"], r["events"]) for r in out.collect()}
    assert got == {"red": (2, 3), "blue": (1, 1)}


def test_car_windows_keep_one_row_per_car_and_window(spark: SparkSession) -> None:
    rows = [
        ("1", "c1", "A/red", T0 + 1_000, 40.0),
        ("2", "c1", "A/red", T0 + 2_000, 60.0),
        ("3", "c2", "A/red", T0 + 3_000, 10.0),
    ]
    out = gold.car_windows(silver(spark, rows)).where(F.col("window_start") == at(T0))
    got = {r["car_id"]: (r["model"], r["color"], r["max_speed"], r["sum_speed"], r["events"]) for r in out.collect()}
    assert got == {"c1": ("A", "red", 60.0, 100.0, 2), "c2": ("A", "red", 10.0, 10.0, 1)}


def test_alerts_per_minute_are_tumbling_by_rule_color_and_model(spark: SparkSession) -> None:
    alerts = spark.createDataFrame(
        [
            ("overspeed", "high", "red", "A", T0 + 1_000),
            ("overspeed", "high", "red", "A", T0 + 59_000),
            ("overspeed", "high", "red", "A", T0 + 61_000),
            ("engine_stress", "medium", "blue", "B", T0 + 2_000),
        ],
        "rule string, severity string, color string, model string, event_time long",
    )
    got = sorted((r["window_start"], r["rule"], r["alerts"]) for r in gold.alerts_per_minute(alerts).collect())
    assert got == [
        (at(T0), "engine_stress", 1),
        (at(T0), "overspeed", 2),
        (at(T0 + MIN), "overspeed", 1),
    ]


def test_episodes_per_minute_count_openings_and_resolutions_in_their_minutes(spark: SparkSession) -> None:
    steps = spark.createDataFrame(
        [
            ("overspeed", "red", "A", "opened", T0 + 1_000, None),
            ("overspeed", "red", "A", "repeated", T0 + 1_000, None),  # not counted
            ("overspeed", "red", "A", "resolved", T0 + 1_000, T0 + 65_000),
            ("overheat", "blue", "B", "opened", T0 + 59_000, None),
            ("overheat", "blue", "B", "updated", T0 + 59_000, None),  # not counted
        ],
        "rule string, color string, model string, lifecycle string, opened_at long, resolved_at long",
    )
    got = sorted(
        (r["window_start"], r["rule"], r["opened"], r["resolved"]) for r in gold.episodes_per_minute(steps).collect()
    )
    assert got == [(at(T0), "overheat", 1, 0), (at(T0), "overspeed", 1, 0), (at(T0 + MIN), "overspeed", 0, 1)]


def test_latest_per_car_takes_the_newest_report_and_flags_alerting(spark: SparkSession) -> None:
    event = {k: v for k, v in schema.EXAMPLE.items()}
    rows = [
        {**event, "event_id": "old", "car_id": "c1", "event_time": T0, "speed": 10.0},
        {**event, "event_id": "new", "car_id": "c1", "event_time": T0 + 1_000, "speed": 20.0},
        {**event, "event_id": "only", "car_id": "c2", "event_time": T0, "speed": 30.0},
    ]
    frame = spark.createDataFrame([json.dumps(r) for r in rows], "string").select(
        F.from_json("value", schema.spark_schema()).alias("j")
    )
    frame = frame.select("j.*").withColumns(
        {"expected_gear": F.col("gear"), "model": F.lit("A"), "color": F.lit("red")}
    )
    alerting = spark.createDataFrame([("new",)], "event_id string")
    got = {r["car_id"]: r for r in gold.latest_per_car(frame, alerting).collect()}
    assert (got["c1"]["event_id"], got["c1"]["speed"], got["c1"]["alerting"]) == ("new", 20.0, True)
    assert (got["c2"]["event_id"], got["c2"]["alerting"]) == ("only", False)
    # the same on the driver (a small batch's rows, fetched with its keys): the same rows and columns
    local = gold.latest_local(frame.select("car_id", *gold.STATE_COLUMNS).toArrow(), pa.array(["new"]))
    assert local.column_names == list(gold.CAR_STATE_COLUMNS)
    assert {r["car_id"]: r.asDict() for r in got.values()} == {r["car_id"]: r for r in local.to_pylist()}


def test_newest_local_keeps_the_newer_report_and_the_batch_on_a_tie() -> None:
    columns = ("car_id", "event_id", "event_time", "alerting")

    def state(*rows: tuple[str, str, int, bool]) -> pa.Table:
        return pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})

    current = state(("c1", "kept", T0 + 5_000, True), ("c2", "replaced", T0, False), ("c3", "tie-old", T0, False))
    batch = state(("c1", "older", T0, False), ("c2", "newer", T0 + 1, True), ("c3", "tie-new", T0, True),
                  ("c4", "new", T0, False))  # fmt: skip
    newest = gold.newest_local([current, batch])
    assert newest is not None
    got = {r["car_id"]: (r["event_id"], r["alerting"]) for r in newest.to_pylist()}
    assert got == {"c1": ("kept", True), "c2": ("newer", True), "c3": ("tie-new", True), "c4": ("new", False)}
    # a table an earlier version wrote, without a column: null there; the batches' later state wins
    older = current.drop_columns(["alerting"])
    again = gold.newest_local([older, state(("c2", "newest", T0 + 2, True))])
    assert again is not None
    assert sorted((r["car_id"], r["event_id"], r["alerting"]) for r in again.to_pylist()) == [
        ("c1", "kept", None), ("c2", "newest", True), ("c3", "tie-old", None)]  # fmt: skip
    assert gold.newest_local([None, None]) is None


def test_car_minutes_are_partial_aggregates_per_car_and_minute(spark: SparkSession) -> None:
    rows = [
        ("1", "c1", "A/red", T0 + 1_000, 40.0),
        ("2", "c1", "A/red", T0 + 2_000, 60.0),
        ("3", "c1", "A/red", T0 + MIN + 5, 10.0),
        ("4", "c2", "B/blue", T0 + 3_000, 20.0),
    ]
    frame = silver(spark, rows).withColumns(
        {"rpm": F.lit(2000.0), "coolant_temp": F.lit(90.0), **{k: F.lit(v) for k, v in OTHER.items()}}
    )
    fired = spark.createDataFrame([("c1", T0 + 2_000), ("c1", T0 + 2_000)], "car_id string, event_time long")
    got = {(r["car_id"], r["minute"]): r for r in gold.car_minutes(frame, fired).collect()}
    first = got[("c1", at(T0))]
    assert (first["events"], first["sum_speed"], first["max_speed"], first["alerts"]) == (2, 100.0, 60.0, 2)
    assert (got[("c1", at(T0 + MIN))]["events"], got[("c1", at(T0 + MIN))]["alerts"]) == (1, 0)
    assert (got[("c2", at(T0))]["model"], got[("c2", at(T0))]["color"]) == ("B", "blue")


def test_windows_rolled_up_from_minutes_equal_windows_over_the_events(spark: SparkSession) -> None:
    """The gold windows from car_minutes (written one batch at a time: partial rows) are the sliding
    windows Spark computes over the events themselves."""
    rows = [(f"e{i}", f"c{i % 3}", ("A/red", "B/blue", "A/blue")[i % 3], T0 + i * 37_000, float(i % 50))
            for i in range(90)]  # fmt: skip
    frame = silver(spark, rows).withColumns(
        {"rpm": F.lit(1.0), "coolant_temp": F.lit(1.0), **{k: F.lit(v) for k, v in OTHER.items()}}
    )
    # three batches, each with its own partial rows per car and minute
    minutes = gold.car_minutes(frame.where("event_time % 3 = 0"))
    for rest in (1, 2):
        minutes = minutes.unionByName(gold.car_minutes(frame.where(f"event_time % 3 = {rest}")))
    first, last = at(T0 + MIN), at(T0 + 70 * MIN)
    rolled = gold.car_windows_from_minutes(minutes, F.lit(first), F.lit(last))
    direct = gold.car_windows(frame).where(F.col("window_end").between(first, last))

    def table(per_car: DataFrame, kpis: str) -> set[tuple[object, ...]]:
        fn = gold.speed_by_model if kpis == "speed" else gold.cars_by_color
        return {tuple(r) for r in fn(per_car).select(sorted(fn(per_car).columns)).collect()}

    assert table(rolled, "speed") == table(direct, "speed")
    assert table(rolled, "colors") == table(direct, "colors")
    assert len(table(direct, "speed")) > 40
