"""Property-based payloads (hypothesis) through the real bronze -> silver path on Spark: whatever
arrives, every record ends in exactly one of silver, quarantine (with a reason code and its detail)
or duplicates, and no query fails."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession

from fleetstream import schema
from fleetstream.pipeline import gold, silver
from fleetstream.pipeline.bronze import to_bronze
from fleetstream.pipeline.enrich import Reference, car_dimension, read_dims
from fleetstream.pipeline.silver import parse_bronze, silver_batch
from fleetstream.pipeline.validate import REASONS
from fleetstream.reference.catalog import generate_cars, tables, to_json_lines
from fleetstream.reference.zones import generate_zones
from fleetstream.rules.engine import alerts, fires, load_rules

SENT = schema.EXAMPLE["event_time"]
CARS = generate_cars(5, seed=3)
RULES = load_rules()

#: any JSON value a field may be replaced with (numbers at and beyond every bound; NaN and infinities
#: are written as Python's json writes them, which is not JSON)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=6)  # fmt: skip


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible event with some fields replaced, removed or added: mostly valid, often not."""
    event = dict(schema.EXAMPLE)
    event["car_id"] = draw(st.sampled_from([c.car_id for c in CARS] + ["car-unknown"]))
    event["event_id"] = draw(st.sampled_from(["e1", "e2", "e3"]) | st.uuids().map(str))  # repeats: duplicates
    event["event_time"] = SENT - draw(st.integers(min_value=-7_200_000, max_value=7_200_000))
    for name in draw(st.lists(st.sampled_from(schema.FIELD_NAMES), max_size=3, unique=True)):
        if draw(st.booleans()):
            event[name] = draw(json_values)
        else:
            del event[name]
    event |= draw(st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, max_size=2))
    return event


def _not_called(*args: object) -> DataFrame:
    raise AssertionError("a small batch went through Spark's joins")


def _offsets(frame: DataFrame | None) -> list[int] | None:
    return sorted(row[0] for row in frame.select("kafka_offset").collect()) if frame is not None else None


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


payloads = st.one_of(
    events().map(_encode),
    events().map(_encode).map(lambda b: b[: len(b) // 2]),  # truncated
    json_values.map(lambda v: json.dumps(v).encode()),  # any JSON, rarely an object of the right shape
    st.binary(max_size=64),  # not text at all
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def reference(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    directory: Path = tmp_path_factory.mktemp("dims")
    for name, records in tables(CARS).items():
        (directory / f"{name}.json").write_bytes(to_json_lines(records))
    return Reference(car_dimension(read_dims(spark, str(directory))).cache(), tuple(generate_zones()))


SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


#: a batch in which a rule fires (overspeed) on one event and on its copy
FAST = _encode({**schema.EXAMPLE, "car_id": CARS[0].car_id, "event_id": "fast", "event_time": SENT, "speed": 150.0})


@settings(max_examples=6, deadline=None, suppress_health_check=SLOW_OK)
@given(batch=st.lists(payloads, min_size=40, max_size=120))
@example(batch=[_encode({**schema.EXAMPLE, "car_id": CARS[1].car_id, "event_time": SENT}), FAST, FAST])
def test_every_record_lands_once_with_a_reason_when_rejected(
    spark: SparkSession, reference: Reference, batch: list[bytes]
) -> None:
    sent = dt.datetime.fromtimestamp(SENT / 1000, tz=dt.UTC).replace(tzinfo=None)
    kafka = spark.createDataFrame(
        [(value, b"k", "sensors-sample", offset % 2, offset, sent) for offset, value in enumerate(batch)],
        "value binary, key binary, topic string, partition int, offset long, timestamp timestamp",
    )
    seen = spark.createDataFrame([("e2",)], "event_id string")  # silver already holds e2: its copies are later ones
    parsed = parse_bronze(to_bronze(kafka))
    result = silver_batch(parsed, reference, lambda lo, hi: seen, batch_id=1)
    # a small batch deduplicated on the driver lands every record where Spark's joins put it
    with pytest.MonkeyPatch.context() as patch:  # (Spark's joins must not be what answers here)
        patch.setattr(silver, "later_copies", _not_called)
        local = silver_batch(parsed, reference, lambda lo, hi: seen, batch_id=1, small=len(batch), fires=fires(RULES))
        # ...and so does one that asks the driver which ids silver holds (RecentIds.known)
        on_driver = silver_batch(parsed, reference, _not_called, batch_id=1, small=len(batch),
                                 known=lambda lo, hi, ids: pc.filter(ids, pc.equal(ids, "e2")))  # fmt: skip
    # (each of the Spark-deduplicated batch's frames collected once; the checks below read these rows)
    rows = {name: getattr(result, name).collect() if getattr(result, name) is not None else None
            for name in ("silver", "quarantine", "duplicates")}  # fmt: skip
    want_offsets = {name: sorted(r["kafka_offset"] for r in got) if got is not None else None
                    for name, got in rows.items()}  # fmt: skip
    for made in (local, on_driver):
        for name in ("silver", "quarantine", "duplicates"):
            assert _offsets(getattr(made, name)) == want_offsets[name], name
        assert (made.event_range, made.rows) == (result.event_range, result.rows)
    # the first copies' ids, on the driver for RecentIds.add: silver's own
    assert result.first_ids is None
    silver_rows = rows["silver"] or []
    silver_ids = sorted((r["event_id"], r["event_time"]) for r in silver_rows)
    for made in (local, on_driver):
        got = made.first_ids
        pairs = (
            sorted(zip(got["event_id"].to_pylist(), got["event_time"].to_pylist(), strict=True))
            if got is not None
            else []
        )
        assert pairs == silver_ids
        # ...with the columns of gold's car state and the oil temperature (the overheat trends'), as
        # silver holds them
        state = made.first_state
        assert state is not None or not silver_ids
        if state is not None:
            columns = ["car_id", *gold.STATE_COLUMNS, "oil_temp"]
            assert state.column_names == columns
            want = sorted((tuple(r[c] for c in columns) for r in silver_rows), key=repr)
            assert sorted((tuple(r.values()) for r in state.to_pylist()), key=repr) == want
    # ...and the ids a rule fires on, as the alerts of silver's rows have them
    fired = sorted({r["event_id"] for r in alerts(result.silver, RULES).collect()}) if result.silver else []
    if result.silver is None:  # no valid row: the batch ends before its alerts are asked about
        assert local.fired_ids is None
    else:
        assert local.fired_ids is not None
        assert sorted(local.fired_ids.to_pylist()) == fired
    assert on_driver.fired_ids is None  # (not asked for)
    landed = [offset for offsets in want_offsets.values() for offset in offsets or []]
    assert sorted(landed) == list(range(len(batch)))  # each record once, none lost, none invented
    for row in rows["quarantine"] or []:
        assert row["reason"] in REASONS, row
        assert row["reason_detail"], row
    for row in silver_rows:  # what passed is what the contract promises
        assert isinstance(row["car_id"], str)
        assert isinstance(row["speed"], float)
        assert not math.isnan(row["speed"])
        assert 0 <= row["speed"] <= 400
