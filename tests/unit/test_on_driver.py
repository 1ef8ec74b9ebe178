"""What gold takes from small batches on the driver: each car's latest report and the hottest
running coolant, over several batches (pipeline/medallion.py's ``OnDriver``)."""

from __future__ import annotations

import pyarrow as pa

from fleetstream.pipeline.gold import STATE_COLUMNS
from fleetstream.pipeline.medallion import OnDriver


def _rows(*rows: tuple[str, str, int, float, bool]) -> pa.Table:
    """First copies' state columns: (car_id, event_id, event_time, coolant_temp, engine_on), the rest null."""
    names = ("car_id", "event_id", "event_time", "coolant_temp", "engine_on")
    table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})
    for column in (*STATE_COLUMNS, "oil_temp"):
        if column not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, pa.float64()))
    return table


def test_a_batch_gives_each_cars_latest_report_and_the_hottest_running_coolant() -> None:
    batch = _rows(("c1", "a", 1, 95.0, True), ("c1", "b", 2, 90.0, True), ("c2", "c", 1, 120.0, False))
    got = OnDriver.of(batch, pa.array(["b"]))
    assert got.hottest_c == 95.0  # (the 120 °C report's engine is off: no overheat warning can use it)
    latest = {r["car_id"]: (r["event_id"], r["alerting"]) for r in got.latest.to_pylist()}
    assert latest == {"c1": ("b", True), "c2": ("c", False)}
    assert OnDriver.of(_rows(("c3", "d", 1, 99.0, False)), pa.array([], pa.string())).hottest_c is None
    # the hot readings (engine on, above 90 °C) are kept for later overheat trends
    assert got.hot.to_pydict() == {"car_id": ["c1"], "event_time": [1], "coolant_temp": [95.0], "oil_temp": [None]}


def test_batches_joined_keep_the_newest_report_the_later_batch_on_a_tie() -> None:
    first = OnDriver.of(_rows(("c1", "old", 5, 80.0, True), ("c2", "tie-1", 3, 98.0, True)), pa.array(["old"]))
    second = OnDriver.of(
        _rows(("c1", "older", 4, 81.0, True), ("c2", "tie-2", 3, 85.0, True)), pa.array([], pa.string())
    )
    joined = OnDriver.joined([first, second])
    assert joined is not None
    assert joined.hottest_c == 98.0
    assert joined.hot["event_time"].to_pylist() == [3]  # (c2's 98 °C; the others are not hot)
    latest = {r["car_id"]: (r["event_id"], r["alerting"]) for r in joined.latest.to_pylist()}
    assert latest == {"c1": ("old", True), "c2": ("tie-2", False)}
    # one batch's rows not on the driver (a large one): gold takes them all through Spark
    assert OnDriver.joined([first, None, second]) is None
    assert OnDriver.joined([]) is None
