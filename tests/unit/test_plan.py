"""The run plan: which queries an application runs, decided once from the command's options."""

from __future__ import annotations

import pytest

from fleetstream.errors import FleetstreamError
from fleetstream.pipeline.plan import LAYERS, PUBLISHER, plan


def _queries(only: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(q.name, q.source, q.layers) for q in plan(only, "realtime", separate=True).lake]


def test_the_whole_medallion_is_one_query_reading_kafka() -> None:
    assert _queries(list(LAYERS)) == [("lake", "kafka", LAYERS)]


@pytest.mark.parametrize(
    ("only", "expected"),
    [
        (["bronze"], [("bronze", "kafka", ("bronze",))]),
        (["silver", "alerts", "gold"], [("silver+alerts+gold", "bronze/telemetry", ("silver", "alerts", "gold"))]),
        (["alerts", "gold"], [("alerts+gold", "silver/telemetry", ("alerts", "gold"))]),
        (["bronze", "alerts"], [("bronze", "kafka", ("bronze",)), ("alerts", "silver/telemetry", ("alerts",))]),
        (["bronze", "silver", "gold"], [("bronze+silver+gold", "kafka", ("bronze", "silver", "gold"))]),
        ([PUBLISHER], []),
    ],
)
def test_a_layer_without_its_input_layer_reads_that_layers_table(
    only: list[str], expected: list[tuple[str, str, tuple[str, ...]]]
) -> None:
    assert _queries(only) == expected


@pytest.mark.parametrize(
    ("only", "separate", "available_now", "publisher", "in_batch"),
    [
        (LAYERS, True, False, "child", False),
        (LAYERS, False, False, "here", False),
        (LAYERS, True, True, "none", True),  # a catch-up run: the lake's batches publish alert-data
        (["bronze", "silver"], True, False, "none", False),
        ([PUBLISHER], True, False, "here", False),
        (["alerts", PUBLISHER], True, False, "here", False),
    ],
)
def test_where_alert_data_is_published_from(
    only: list[str], separate: bool, available_now: bool, publisher: str, in_batch: bool
) -> None:
    chosen = plan(only, "microbatch", separate=separate, available_now=available_now)
    assert (chosen.publisher, chosen.alerts_in_batch) == (publisher, in_batch)


@pytest.mark.parametrize(
    ("only", "mode", "available_now", "message"),
    [
        (["bronze", "platinum"], "realtime", False, "unknown queries ['platinum']"),
        ([], "realtime", False, "no query chosen"),
        (["alerts"], "continuous", False, "alerts mode 'continuous'"),
        ([PUBLISHER], "realtime", True, "is a live publisher"),
    ],
)
def test_options_that_make_no_plan_are_refused(only: list[str], mode: str, available_now: bool, message: str) -> None:
    with pytest.raises(FleetstreamError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan(only, mode, separate=True, available_now=available_now)
