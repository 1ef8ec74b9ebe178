"""The dashboard's data shaping: pure functions from records and frames to what a panel shows.

No Streamlit, Kafka or files here, so each is unit-tested on small inputs (tests/unit/test_dashboard_shape.py).
Times are UTC; ``now`` is passed in, never read from the clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from fleetstream.pipeline import DEFAULT_MAX_LATENESS_S, FEATURES_EVERY_MIN
from fleetstream.pipeline.monitor import QueryHealth
from fleetstream.reference.catalog import PROFILES

ACTIVE_S = 60  # a car that reported within this many seconds is active
ENGINE_STRESS_RULE = "engine_stress"
CRITICAL = "high"

ALERT_SCHEMA = {
    "alert_id": pl.String, "rule": pl.String, "severity": pl.String, "message": pl.String,
    "event_id": pl.String, "car_id": pl.String, "model": pl.String, "color": pl.String,
    "speed": pl.Float64, "rpm": pl.Float64, "gear": pl.Int64, "expected_gear": pl.Int64,
    "coolant_temp": pl.Float64, "lat": pl.Float64, "lon": pl.Float64, "event_time": pl.Int64,
}  # fmt: skip


def alerts_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Alert records (JSON from alert-data) as a frame with a fixed schema and ``event_ts``; newest first."""
    rows = [{name: record.get(name) for name in ALERT_SCHEMA} for record in records]
    frame = pl.DataFrame(rows, schema=ALERT_SCHEMA, strict=False)
    return frame.with_columns(
        pl.from_epoch("event_time", time_unit="ms").dt.replace_time_zone("UTC").alias("event_ts")
    ).sort("event_time", descending=True)


EPISODE_COLUMNS = (
    "status", "car_id", "rule", "severity", "since", "duration_s", "peak_speed", "peak_rpm", "peak_coolant",
    "events", "model", "color", "resolved",
)  # fmt: skip


def episodes_view(episodes: pl.DataFrame | None, now: dt.datetime) -> pl.DataFrame:
    """Episodes as the Alerts page lists them: open ones first (longest open first), then resolved
    ones (newest first); ``since`` is when the episode opened, ``duration_s`` how long it has been
    open (open) or lasted until it resolved (resolved)."""
    if episodes is None or episodes.height == 0:
        return pl.DataFrame(schema={c: pl.String for c in EPISODE_COLUMNS})
    now_ms = int(now.timestamp() * 1000)
    is_open = pl.col("status") == "open"

    def ts(column: str) -> pl.Expr:
        return pl.from_epoch(column, time_unit="ms").dt.replace_time_zone("UTC")

    end = pl.when(is_open).then(pl.lit(now_ms)).otherwise(pl.col("resolved_at"))
    return (
        episodes.with_columns(
            ts("opened_at").alias("since"),
            ts("resolved_at").alias("resolved"),
            ((end - pl.col("opened_at")) / 1000).clip(lower_bound=0).alias("duration_s"),
            is_open.alias("_open"),
            pl.when(is_open).then(-pl.col("opened_at")).otherwise(pl.col("resolved_at")).alias("_order"),
        )
        .sort(["_open", "_order"], descending=[True, True])
        .select(EPISODE_COLUMNS)
    )


TRIP_COLUMNS = (
    "status", "started", "ended", "duration_min", "distance_km", "max_speed", "mean_speed", "fuel_used_pct",
    "harsh_accelerations", "harsh_brakings", "episodes",
)  # fmt: skip


def trips_view(trips: pl.DataFrame | None) -> pl.DataFrame:
    """A car's trips as the cockpit lists them, newest first, times as UTC datetimes."""
    if trips is None or trips.height == 0:
        return pl.DataFrame(schema={c: pl.String for c in TRIP_COLUMNS})

    def ts(column: str) -> pl.Expr:
        return pl.from_epoch(column, time_unit="ms").dt.replace_time_zone("UTC")

    return (
        trips.sort("started_at", descending=True)
        .with_columns(
            ts("started_at").alias("started"),
            ts("ended_at").alias("ended"),
            (pl.col("duration_s") / 60).alias("duration_min"),
        )
        .select(TRIP_COLUMNS)
    )


def offline_cars(episodes: pl.DataFrame | None) -> list[str]:
    """The cars with an open vehicle_offline episode, sorted."""
    if episodes is None or episodes.height == 0:
        return []
    offline = episodes.filter((pl.col("status") == "open") & (pl.col("rule") == "vehicle_offline"))
    return sorted(offline["car_id"].unique().to_list())


def style_mix(styles: pl.DataFrame | None) -> dict[str, int]:
    """Cars per driving style (each car's latest scored window), calm to aggressive, styles with cars only.

    >>> style_mix(pl.DataFrame({"car_id": ["a", "b", "c"], "style": ["aggressive", "calm", "calm"]}))
    {'calm': 2, 'aggressive': 1}
    """
    if styles is None or not styles.height:
        return {}
    counts = dict(styles.group_by("style").len().iter_rows())
    return {p: int(counts[p]) for p in PROFILES if p in counts}


#: a car's driving style is shown from the windows that ended within this many minutes: a live stream
#: writes them the lateness after they end, ``FEATURES_EVERY_MIN`` at a time, and a few minutes are
#: left for the roll-up to land
STYLE_MIN = DEFAULT_MAX_LATENESS_S // 60 + FEATURES_EVERY_MIN + 5


def car_style(styles: pl.DataFrame | None, car: str) -> dict[str, Any] | None:
    """One car's latest scored window (style, confidence, model_version, window_end), or None."""
    if styles is None or not styles.height:
        return None
    rows = styles.filter(pl.col("car_id") == car)
    return rows.row(0, named=True) if rows.height else None


def _km(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f} km"


def _days(value: float | None) -> str:
    return "?" if value is None else f"{value:,.1f} days" if value < 10 else f"{value:,.0f} days"


def upkeep_lines(row: dict[str, Any] | None) -> list[str]:
    """What the cockpit says of a car's gold/maintenance row: wear, service, fuel (empty: no row).

    >>> upkeep_lines({"tyre_wear": 41.2, "tyre_wear_per_1000km": 2.5, "km_to_tyres": 15520.0,
    ...     "days_to_tyres": 31.0, "brake_wear": 12.0, "brake_wear_per_1000km": None, "km_to_brakes": None,
    ...     "days_to_brakes": None, "km_to_service": 2300.0, "days_to_service": 4.6, "fuel_l_per_100km": 7.84,
    ...     "fuel_l_per_100km_by_style": {"aggressive": 9.1}, "km_seen": 60.0, "days_seen": 0.02})[:2]
    ['Tyres 41.2 % worn, 2.50 % per 1,000 km: 15,520 km (31 days) to the limit', 'Brakes 12.0 % worn, no wear seen yet']
    """
    if not row:
        return []
    lines = []
    for part, name in (("tyre", "Tyres"), ("brake", "Brakes")):
        worn, rate = row.get(f"{part}_wear"), row.get(f"{part}_wear_per_1000km")
        head = f"{name} {worn:.1f} % worn" if worn is not None else f"{name}: wear not reported"
        if rate is None or rate <= 0:
            lines.append(f"{head}, no wear seen yet")
        else:
            key = f"{part}s"
            lines.append(f"{head}, {rate:.2f} % per 1,000 km: {_km(row.get(f'km_to_{key}'))} "
                         f"({_days(row.get(f'days_to_{key}'))}) to the limit")  # fmt: skip
    lines.append(f"Service in {_km(row.get('km_to_service'))} ({_days(row.get('days_to_service'))})")
    fuel = row.get("fuel_l_per_100km")
    if fuel is not None:
        styles = row.get("fuel_l_per_100km_by_style") or {}
        per = ", ".join(f"{k} {v:.1f}" for k, v in sorted(styles.items()) if k != "unscored")
        lines.append(f"Fuel {fuel:.1f} l/100 km" + (f" (by style: {per})" if per else ""))
    return lines


def overheat_warning(warnings: pl.DataFrame | None) -> str | None:
    """The latest overheating warning of a car, in words, or None (no warning in the slice read).

    >>> import polars as pl
    >>> overheat_warning(pl.DataFrame({"event_time": [1], "coolant_temp": [101.5], "coolant_slope": [12.0],
    ...                                "seconds_to_limit": [42.0]}))
    'Overheating expected in about 42 s: coolant 101.5 °C, rising 12.0 °C per minute'
    """
    if warnings is None or not warnings.height:
        return None
    w = warnings.sort("event_time").row(-1, named=True)
    return (f"Overheating expected in about {w['seconds_to_limit']:.0f} s: coolant {w['coolant_temp']:.1f} °C, "
            f"rising {w['coolant_slope']:.1f} °C per minute")  # fmt: skip


def open_episodes_by_rule(episodes: pl.DataFrame | None) -> dict[str, int]:
    """Open episodes per rule, most first."""
    if episodes is None or episodes.height == 0:
        return {}
    counts = (
        episodes.filter(pl.col("status") == "open")
        .group_by("rule")
        .len()
        .sort(["len", "rule"], descending=[True, False])
    )
    return dict(zip(counts["rule"].to_list(), counts["len"].to_list(), strict=True))


def filter_alerts(alerts: pl.DataFrame, **chosen: list[str] | None) -> pl.DataFrame:
    """Keep the alerts whose column value is among the chosen ones (rule=[...], car_id=[...]; empty: all)."""
    for column, values in chosen.items():
        if values:
            alerts = alerts.filter(pl.col(column).is_in(values))
    return alerts


def since(alerts: pl.DataFrame, now: dt.datetime, minutes: float) -> pl.DataFrame:
    return alerts.filter(pl.col("event_ts") >= now - dt.timedelta(minutes=minutes))


def alerts_per_minute(alerts: pl.DataFrame, now: dt.datetime, minutes: int = 30) -> pl.DataFrame:
    """Alerts per event-time minute and rule over the last ``minutes``: minute, rule, alerts."""
    recent = since(alerts, now, minutes)
    return (
        recent.group_by(pl.col("event_ts").dt.truncate("1m").alias("minute"), "rule")
        .agg(pl.len().alias("alerts"))
        .sort("minute", "rule")
    )


def latest_critical(alerts: pl.DataFrame) -> dict[str, Any] | None:
    """The newest alert of critical severity, or None."""
    critical = alerts.filter(pl.col("severity") == CRITICAL).sort("event_time", descending=True)
    return critical.row(0, named=True) if critical.height else None


def fleet_clock(state: pl.DataFrame | None, now: dt.datetime) -> int:
    """The time (epoch ms) the fleet's state is as of: its newest report, never later than ``now``.

    "Active" is measured from it, not from the wall clock, so a pipeline running minutes behind
    shows the fleet as it was then (the page says how far behind) rather than every car as idle."""
    now_ms = int(now.timestamp() * 1000)
    if state is None or state.is_empty():
        return now_ms
    newest = state["event_time"].max()
    return min(now_ms, int(newest)) if isinstance(newest, int) else now_ms


def active_cars(state: pl.DataFrame | None, now: dt.datetime) -> pl.DataFrame:
    """The cars whose latest report is at most ACTIVE_S older than the fleet's newest report."""
    if state is None or state.is_empty():
        return pl.DataFrame()
    return state.filter(pl.col("event_time") >= fleet_clock(state, now) - ACTIVE_S * 1000)


@dataclass(frozen=True)
class Kpis:
    active_cars: int
    events_per_s: float | None
    alerts_15m: int
    engine_stress_15m: int
    top_speed: float | None


def kpis(state: pl.DataFrame | None, alerts: pl.DataFrame, events_per_s: float | None, now: dt.datetime) -> Kpis:
    active = active_cars(state, now)
    recent = since(alerts, now, 15)
    top = active["speed"].max() if active.height else None
    return Kpis(
        active_cars=active.height,
        events_per_s=events_per_s,
        alerts_15m=recent.height,
        engine_stress_15m=recent.filter(pl.col("rule") == ENGINE_STRESS_RULE).height,
        top_speed=float(top) if isinstance(top, int | float) else None,
    )


def rate(previous: tuple[float, int] | None, current: tuple[float, int]) -> float | None:
    """Events per second between two (time, messages so far) readings of a topic; None without two."""
    if previous is None or current[0] <= previous[0] or current[1] < previous[1]:
        return None
    return (current[1] - previous[1]) / (current[0] - previous[0])


def newest_window(windows: pl.DataFrame | None) -> pl.DataFrame:
    """The rows of the newest window_start of a gold window table (empty when there is none)."""
    if windows is None or windows.is_empty():
        return pl.DataFrame()
    return windows.filter(pl.col("window_start") == windows["window_start"].max())


def color_distribution(
    windows: pl.DataFrame | None, state: pl.DataFrame | None, now: dt.datetime
) -> tuple[pl.DataFrame, str]:
    """Cars per color: from the newest closed 15-minute window, else from the active cars' latest state.

    Returns (color, cars) rows and where they came from (for the chart's subtitle)."""
    newest = newest_window(windows)
    if newest.height:
        start = newest["window_start"][0]
        return newest.select("color", "cars").sort("cars", descending=True), f"15-min window from {start:%H:%M} UTC"
    active = active_cars(state, now)
    if not active.height:
        return pl.DataFrame(schema={"color": pl.String, "cars": pl.UInt32}), "no data yet"
    counted = active.group_by("color").agg(pl.len().alias("cars")).sort("cars", descending=True)
    return counted, "active cars now"


def speed_by_model(
    windows: pl.DataFrame | None, state: pl.DataFrame | None, now: dt.datetime
) -> tuple[pl.DataFrame, str]:
    """Max speed per model: from the newest closed 15-minute window, else from the active cars now."""
    newest = newest_window(windows)
    if newest.height:
        start = newest["window_start"][0]
        return newest.select("model", "max_speed").sort(
            "max_speed", descending=True
        ), f"15-min window from {start:%H:%M} UTC"
    active = active_cars(state, now)
    if not active.height:
        return pl.DataFrame(schema={"model": pl.String, "max_speed": pl.Float64}), "no data yet"
    top = active.group_by("model").agg(pl.col("speed").max().alias("max_speed")).sort("max_speed", descending=True)
    return top, "active cars now"


def map_points(state: pl.DataFrame | None, now: dt.datetime) -> pl.DataFrame:
    """Every car's latest position with its state: alerting, ok, or idle (no report for ACTIVE_S)."""
    if state is None or state.is_empty():
        return pl.DataFrame(schema={"car_id": pl.String, "lat": pl.Float64, "lon": pl.Float64, "state": pl.String})
    horizon = fleet_clock(state, now) - ACTIVE_S * 1000
    status = (
        pl.when(pl.col("event_time") < horizon)
        .then(pl.lit("idle"))
        .when(pl.col("alerting"))
        .then(pl.lit("alerting"))
        .otherwise(pl.lit("ok"))
    )
    return state.with_columns(status.alias("state")).select(
        "car_id", "lat", "lon", "state", "speed", "rpm", "gear", "model", "color"
    )


def dlq_per_minute(quarantine: pl.DataFrame | None) -> pl.DataFrame:
    """Quarantined records per ingest minute and reason: minute, reason, records."""
    if quarantine is None or quarantine.is_empty():
        return pl.DataFrame(schema={"minute": pl.Datetime("us", "UTC"), "reason": pl.String, "records": pl.UInt32})
    return (
        quarantine.group_by(pl.col("ingest_time").dt.truncate("1m").alias("minute"), "reason")
        .agg(pl.len().alias("records"))
        .sort("minute", "reason")
    )


@dataclass(frozen=True)
class Quality:
    """The newest data-quality run, for the health page: ``level`` is none (no run yet), ok, warning
    (a warning expectation failed) or critical."""

    level: str
    summary: str
    rows: pl.DataFrame | None = None


def quality(results: pl.DataFrame | None) -> Quality:
    """The newest run of `fleetstream quality check` (its gold/dq_results rows), failures first.

    >>> import datetime as dt
    >>> at = dt.datetime(2026, 1, 1, 12, 0)
    >>> rows = pl.DataFrame({"run_id": ["r"] * 2, "run_at": [at] * 2, "table_name": ["gold/car_state"] * 2,
    ...     "expectation": ["unique(car_id)", "fresh(x)"], "severity": ["critical", "warning"],
    ...     "passed": [True, False], "observed": ["ok", "old"], "rows": [5, 5]})
    >>> q = quality(rows)
    >>> q.level, q.summary
    ('warning', 'run r at 12:00:00 UTC: 1 of 2 expectations failed (0 critical)')
    >>> q.rows["expectation"].to_list()
    ['fresh(x)', 'unique(car_id)']
    >>> quality(None).level
    'none'
    """
    if results is None or results.is_empty():
        return Quality("none", "no data-quality run yet: `fleetstream quality check` (docs/quality.md)")
    failed = results.filter(~pl.col("passed"))
    critical = failed.filter(pl.col("severity") == "critical").height
    first = results.row(0, named=True)
    when = f"run {first['run_id']} at {first['run_at']:%H:%M:%S} UTC"
    if failed.is_empty():
        level, text = "ok", f"{when}: all {results.height} expectations hold"
    else:
        level = "critical" if critical else "warning"
        text = f"{when}: {failed.height} of {results.height} expectations failed ({critical} critical)"
    ordered = results.sort(["passed", "severity", "table_name", "expectation"])
    return Quality(level, text, ordered.select("table_name", "expectation", "severity", "passed", "observed", "rows"))


def quality_banner(hold: dict[str, Any] | None) -> str | None:
    """One sentence for every page while a table fails its critical expectations (the marker of
    `fleetstream quality check`), else None.

    >>> quality_banner({"tables": {"silver/telemetry": {"run_id": "r1", "failed": ["unique(event_id)"]}}})
    'Data quality: silver/telemetry fails unique(event_id) (run r1). See Pipeline health.'
    >>> quality_banner(None) is None
    True
    """
    tables = (hold or {}).get("tables") or {}
    if not tables:
        return None
    parts = [f"{t} fails {', '.join(v.get('failed', []))} (run {v.get('run_id')})" for t, v in sorted(tables.items())]
    return f"Data quality: {'; '.join(parts)}. See Pipeline health."


def health_table(queries: list[QueryHealth]) -> pl.DataFrame:
    """One row per query: input and processing rate, batch duration, lag."""
    return pl.DataFrame(
        [
            {
                "query": q.name,
                "state": q.state,
                "batch": q.batch,
                "input rows/s": round(q.input_per_s, 1),
                "processed rows/s": round(q.processed_per_s, 1),
                "batch ms": q.batch_ms,
                "lag": None if q.lag is None else f"{q.lag:,} {q.lag_unit}",
                "watermark": q.watermark,
            }
            for q in queries
        ],
        schema={"query": pl.String, "state": pl.String, "batch": pl.Int64, "input rows/s": pl.Float64,
                "processed rows/s": pl.Float64, "batch ms": pl.Int64, "lag": pl.String, "watermark": pl.String},
    )  # fmt: skip
