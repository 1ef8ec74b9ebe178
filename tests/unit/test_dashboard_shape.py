"""The dashboard's data shaping, on small inputs (no Streamlit, Kafka or files)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from fleetstream.config import DashboardSettings
from fleetstream.dashboard import charts, shape, streamlit_argv
from fleetstream.pipeline import monitor
from fleetstream.pipeline.monitor import QueryHealth, Status

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
MIN = 60_000


def alert(
    n: int, rule: str, ago_ms: int, severity: str = "high", car: str = "car-1", **extra: object
) -> dict[str, object]:
    return {"alert_id": f"a{n}", "rule": rule, "severity": severity, "car_id": car, "model": "M", "color": "Red",
            "speed": 130.0, "rpm": 6500, "event_time": NOW_MS - ago_ms, "message": rule, **extra}  # fmt: skip


def state(*cars: tuple[str, int, float, bool]) -> pl.DataFrame:
    """(car_id, ms ago, speed, alerting) rows of gold/car_state."""
    return pl.DataFrame(
        [{"car_id": c, "event_time": NOW_MS - ago, "speed": speed, "alerting": alerting, "lat": 32.0, "lon": 34.8,
          "rpm": 2000, "gear": 3, "model": "M" if c != "car-3" else "N", "color": "Red" if c != "car-2" else "Blue"}
         for c, ago, speed, alerting in cars]
    )  # fmt: skip


def test_alerts_frame_has_a_fixed_schema_and_is_newest_first() -> None:
    frame = shape.alerts_frame([alert(1, "overspeed", 5 * MIN), alert(2, "engine_stress", 1 * MIN)])
    assert frame["alert_id"].to_list() == ["a2", "a1"]
    assert frame["event_ts"][0] == NOW - dt.timedelta(minutes=1)
    empty = shape.alerts_frame([])
    assert empty.height == 0
    assert "event_ts" in empty.columns
    assert empty.schema["speed"] == pl.Float64


def test_kpis_count_active_cars_recent_alerts_and_engine_stress() -> None:
    cars = state(("car-1", 5_000, 80.0, False), ("car-2", 20_000, 131.5, True), ("car-3", 10 * MIN, 200.0, False))
    alerts = shape.alerts_frame(
        [alert(1, "overspeed", 1 * MIN), alert(2, "engine_stress", 14 * MIN), alert(3, "engine_stress", 16 * MIN)]
    )
    got = shape.kpis(cars, alerts, 42.0, NOW)
    # car-3 last reported 10 minutes ago: not active, and its 200 km/h is not "now"
    assert got == shape.Kpis(active_cars=2, events_per_s=42.0, alerts_15m=2, engine_stress_15m=1, top_speed=131.5)
    assert shape.kpis(None, shape.alerts_frame([]), None, NOW) == shape.Kpis(0, None, 0, 0, None)


def test_alerts_per_minute_groups_by_minute_and_rule_within_the_window() -> None:
    alerts = shape.alerts_frame(
        [alert(1, "overspeed", 30_000), alert(2, "overspeed", 40_000), alert(3, "gear_mismatch", 50_000),
         alert(4, "overspeed", 31 * MIN)]
    )  # fmt: skip
    got = shape.alerts_per_minute(alerts, NOW, minutes=30)
    assert got.select("rule", "alerts").rows() == [("gear_mismatch", 1), ("overspeed", 2)]
    assert got["minute"].to_list() == [NOW - dt.timedelta(minutes=1)] * 2


def test_filter_alerts_keeps_chosen_values_and_ignores_empty_filters() -> None:
    alerts = shape.alerts_frame(
        [alert(1, "overspeed", MIN, car="car-1"), alert(2, "gear_mismatch", MIN, "medium", car="car-2")]
    )
    assert shape.filter_alerts(alerts, rule=["overspeed"], car_id=[])["alert_id"].to_list() == ["a1"]
    assert shape.filter_alerts(alerts, severity=["medium"], car_id=["car-2"])["alert_id"].to_list() == ["a2"]
    assert shape.filter_alerts(alerts, rule=None).height == 2


def test_latest_critical_is_the_newest_high_severity_alert() -> None:
    alerts = shape.alerts_frame(
        [alert(1, "overspeed", 3 * MIN), alert(2, "engine_stress", 2 * MIN), alert(3, "gear_mismatch", MIN, "medium")]
    )
    critical = shape.latest_critical(alerts)
    assert critical is not None
    assert critical["alert_id"] == "a2"
    assert shape.latest_critical(shape.alerts_frame([])) is None


def test_rate_needs_two_readings_in_order() -> None:
    assert shape.rate(None, (10.0, 100)) is None
    assert shape.rate((10.0, 100), (12.0, 300)) == 100.0
    assert shape.rate((10.0, 300), (12.0, 100)) is None  # a topic recreated: offsets went back


def test_fleet_panels_use_the_newest_window_else_the_active_cars() -> None:
    cars = state(("car-1", 5_000, 80.0, False), ("car-2", 5_000, 120.0, True), ("car-3", 5_000, 90.0, False))
    colors, source = shape.color_distribution(None, cars, NOW)
    assert dict(colors.rows()) == {"Red": 2, "Blue": 1}
    assert "active cars" in source
    start = NOW - dt.timedelta(minutes=20)
    windows = pl.DataFrame(
        {"window_start": [start, start, start + dt.timedelta(minutes=1)], "color": ["Red", "Blue", "Red"],
         "cars": [7, 3, 5]}
    )  # fmt: skip
    colors, source = shape.color_distribution(windows, cars, NOW)
    assert colors.rows() == [("Red", 5)]
    assert "11:41" in source
    models, _ = shape.speed_by_model(None, cars, NOW)
    assert dict(models.rows()) == {"M": 120.0, "N": 90.0}
    nothing, source = shape.speed_by_model(None, None, NOW)
    assert nothing.height == 0
    assert source == "no data yet"


def test_map_points_mark_alerting_ok_and_idle_cars() -> None:
    cars = state(("car-1", 5_000, 80.0, False), ("car-2", 5_000, 130.0, True), ("car-3", 5 * MIN, 0.0, True))
    got = dict(shape.map_points(cars, NOW).select("car_id", "state").rows())
    assert got == {"car-1": "ok", "car-2": "alerting", "car-3": "idle"}
    figure = charts.fleet_map(shape.map_points(cars, NOW), None)
    assert sorted(trace.name for trace in figure.data) == ["alerting (1)", "idle (1)", "ok (1)"]


def test_dlq_per_minute_counts_reasons() -> None:
    at = NOW - dt.timedelta(seconds=30)
    rejected = pl.DataFrame({"ingest_time": [at, at, at], "reason": ["malformed_json", "out_of_range", "out_of_range"]})
    assert shape.dlq_per_minute(rejected).select("reason", "records").rows() == [
        ("malformed_json", 1),
        ("out_of_range", 2),
    ]
    assert shape.dlq_per_minute(None).height == 0


def _query(name: str, state: str = "running") -> QueryHealth:
    return QueryHealth(name, 3, "", 10, 5.0, 50.0, 200, 0, "records", None, state)


def _status(age_s: float, queries: list[QueryHealth], phase: str = "running", started_s: float = 5) -> Status:
    return Status(NOW.timestamp() - age_s, queries, phase, NOW.timestamp() - started_s, 4242)


@pytest.mark.parametrize(
    ("status", "broker", "alive", "expected", "level"),
    [
        (_status(2, [_query("lake")]), True, True, None, "error"),
        (None, True, None, "has not reported", "error"),
        (_status(120, [_query("lake")]), True, None, "120 s ago", "error"),
        (_status(2, [_query("lake")]), True, False, "it is not running", "error"),  # its writer is gone
        (_status(2, [_query("lake", "failed")]), True, True, "failed queries: lake", "error"),
        (
            _status(2, [_query("lake", "restarting")]),
            True,
            True,
            "restarting after a service was out of reach",
            "error",
        ),
        (_status(2, [_query("lake")]), False, True, "Kafka does not answer", "error"),
        (_status(40, [], "starting", started_s=40), True, True, "is starting (40 s)", "info"),
        (_status(40, [], "starting", started_s=40), True, False, "it is not running", "error"),  # died starting
        (_status(600, [_query("lake", "stopped")], "stopped"), True, False, "stopped at", "error"),
    ],
)
def test_pipeline_health_banner(
    status: Status | None, broker: bool, alive: bool | None, expected: str | None, level: str
) -> None:
    health = monitor.pipeline_health(status, broker, NOW, alive)
    if expected is None:
        assert health.banner is None
    else:
        assert health.banner is not None
        assert expected in health.banner
    assert health.level == level
    assert shape.health_table(health.queries).height == len(health.queries)


def test_streamlit_argv_binds_the_configured_address() -> None:
    argv = streamlit_argv(DashboardSettings(host="0.0.0.0", port=9000))
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    assert argv[argv.index("--server.port") + 1] == "9000"
    assert argv[argv.index("--theme.base") + 1] == "dark"


def test_episodes_list_open_ones_first_then_the_newest_resolved() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    ms = int(now.timestamp() * 1000)
    rows = pl.DataFrame(
        {
            "episode_id": ["a", "b", "c", "d"],
            "status": ["resolved", "open", "open", "resolved"],
            "car_id": ["c1", "c2", "c3", "c4"],
            "rule": ["overspeed", "overheat", "overspeed", "engine_stress"],
            "severity": ["high"] * 4,
            "opened_at": [ms - 600_000, ms - 60_000, ms - 120_000, ms - 300_000],
            "resolved_at": [ms - 500_000, None, None, ms - 200_000],
            "peak_speed": [130.0, 90.0, 140.0, 0.0],
            "peak_rpm": [3000, 2000, 3500, 6500],
            "peak_coolant": [90.0, 115.0, 90.0, 90.0],
            "events": [20, 50, 100, 5],
            "model": ["M"] * 4,
            "color": ["red"] * 4,
        }
    )
    view = shape.episodes_view(rows, now)
    assert view["car_id"].to_list() == ["c3", "c2", "c4", "c1"]  # open: longest first; resolved: newest first
    assert view["duration_s"].to_list() == [120.0, 60.0, 100.0, 100.0]
    assert shape.open_episodes_by_rule(rows) == {"overheat": 1, "overspeed": 1}
    gone = rows.with_columns(
        pl.when(pl.col("car_id") == "c2").then(pl.lit("vehicle_offline")).otherwise("rule").alias("rule")
    )
    assert shape.offline_cars(gone) == ["c2"]
    assert shape.offline_cars(rows) == []
    assert shape.episodes_view(None, now).height == 0
    assert shape.open_episodes_by_rule(None) == {}


def test_a_cars_trips_newest_first_with_times() -> None:
    rows = pl.DataFrame(
        {
            "trip_id": ["a", "b"], "status": ["closed", "open"], "started_at": [0, 600_000],
            "ended_at": [300_000, 660_000], "duration_s": [300.0, 60.0], "distance_km": [3.0, 1.0],
            "max_speed": [80.0, 60.0], "mean_speed": [36.0, 60.0], "fuel_used_pct": [0.5, 0.1],
            "harsh_accelerations": [1, 0], "harsh_brakings": [0, 0], "episodes": [2, 0],
        }
    )  # fmt: skip
    view = shape.trips_view(rows)
    assert view["status"].to_list() == ["open", "closed"]
    assert view["duration_min"].to_list() == [1.0, 5.0]
    assert view["started"][1] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert shape.trips_view(None).height == 0
