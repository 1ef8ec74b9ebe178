"""Plotly figures of the dashboard: dark, high-contrast, every chart with a title and its units."""

from __future__ import annotations

import datetime as dt
from typing import Any

import plotly.graph_objects as go
import polars as pl

from fleetstream.reference.catalog import COLORS

TEMPLATE = "plotly_dark"
BACKGROUND = "#0b0f17"
PANEL = "#111827"
STATE_COLORS = {"ok": "#22c55e", "alerting": "#ef4444", "idle": "#64748b"}
RULE_COLORS = ["#f97316", "#ef4444", "#eab308", "#38bdf8", "#a855f7", "#22c55e"]
WORLD = {
    "type": "Feature",
    "properties": {},
    "geometry": {"type": "Polygon", "coordinates": [[[-180, -85], [180, -85], [180, 85], [-180, 85], [-180, -85]]]},
}
PAINT = {name: paint for _, name, paint, _ in COLORS}  # the reference data's own paint


def _layout(fig: go.Figure, title: str, height: int = 320, **extra: Any) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.01, "font": {"size": 16}},
        height=height,
        margin={"l": 10, "r": 10, "t": 48, "b": 10},
        paper_bgcolor=PANEL,
        plot_bgcolor=PANEL,
        font={"color": "#e5e7eb"},
        legend={"orientation": "h", "y": -0.2},
        **extra,
    )
    return fig


def gauge(value: float | None, title: str, unit: str, top: float, red_from: float | None = None) -> go.Figure:
    """A dial from 0 to ``top``; the band from ``red_from`` up is red."""
    steps = [{"range": [red_from, top], "color": "#7f1d1d"}] if red_from is not None else []
    fig = go.Figure(
        go.Indicator(
            mode="gauge+number",
            value=value if value is not None else 0,
            number={"suffix": f" {unit}", "font": {"size": 28}},
            gauge={"axis": {"range": [0, top]}, "bar": {"color": "#38bdf8"}, "steps": steps},
        )
    )
    return _layout(fig, title if value is not None else f"{title} (no data)", height=230)


def per_minute(
    counts: pl.DataFrame, by: str, value: str, title: str, axes: tuple[str, str], now: dt.datetime, minutes: int = 30
) -> go.Figure:
    """Stacked bars of ``value`` per ``minute``, one color per ``by``, over the last ``minutes``."""
    fig = go.Figure()
    for i, name in enumerate(sorted(counts[by].unique().to_list()) if counts.height else []):
        rows = counts.filter(pl.col(by) == name)
        fig.add_bar(x=rows["minute"].to_list(), y=rows[value].to_list(), name=name, width=50_000,  # ms of a minute
                    marker_color=RULE_COLORS[i % len(RULE_COLORS)])  # fmt: skip
    return _layout(
        fig, f"{title}, last {minutes} min", barmode="stack",
        xaxis={"title": axes[0], "range": [now - dt.timedelta(minutes=minutes), now]},
        yaxis={"title": axes[1], "rangemode": "nonnegative"},
    )  # fmt: skip


def color_distribution(colors: pl.DataFrame, source: str) -> go.Figure:
    names = colors["color"].to_list() if colors.height else []
    fig = go.Figure(
        go.Bar(
            x=names, y=colors["cars"].to_list() if colors.height else [],
            marker_color=[PAINT.get(n, "#94a3b8") for n in names], marker_line={"color": "#e5e7eb", "width": 1},
        )
    )  # fmt: skip
    return _layout(fig, f"Cars by color ({source})", xaxis_title="color", yaxis_title="cars")


def speed_by_model(models: pl.DataFrame, source: str) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            y=models["model"].to_list() if models.height else [],
            x=models["max_speed"].to_list() if models.height else [],
            orientation="h",
            marker_color="#38bdf8",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"Max speed per model ({source})", xaxis_title="km/h", yaxis_title="model")


def fleet_map(points: pl.DataFrame, tiles: str | None) -> go.Figure:
    """Every car's latest position, colored by state (ok / alerting / idle)."""
    fig = go.Figure()
    for state, color in STATE_COLORS.items():
        rows = points.filter(pl.col("state") == state) if points.height else points
        if not rows.height:
            continue
        fig.add_trace(
            go.Scattermap(
                lat=rows["lat"].to_list(), lon=rows["lon"].to_list(), mode="markers", name=f"{state} ({rows.height})",
                marker={"size": 10 if state == "alerting" else 8, "color": color},
                text=[f"{c} · {m} · {s:.0f} km/h"
                      for c, m, s in zip(rows["car_id"], rows["model"], rows["speed"], strict=True)],
                hoverinfo="text",
            )
        )  # fmt: skip
    center = {"lat": 0.0, "lon": 0.0}
    if points.height:
        middle = points.select(pl.col("lat").mean(), pl.col("lon").mean()).row(0)
        center = {"lat": middle[0] or 0.0, "lon": middle[1] or 0.0}
    # "white-bg" needs no network; a dark polygon over the world paints it for the ops room, and the
    # tiles, when configured, go on top: offline the points still show on the dark background.
    layers: list[dict[str, Any]] = [
        {"sourcetype": "geojson", "source": WORLD, "type": "fill", "color": BACKGROUND, "below": "traces"}
    ]
    if tiles:
        layers.append({"sourcetype": "raster", "source": [tiles], "below": "traces"})
    fig.update_layout(map={"style": "white-bg", "center": center, "zoom": 10, "layers": layers})
    return _layout(fig, "Fleet map: latest position of every car", height=460)


def strip_chart(history: pl.DataFrame) -> go.Figure:
    """Speed (km/h) and engine speed (rpm) over the last minutes, on two axes."""
    fig = go.Figure()
    if history.height:
        fig.add_scatter(x=history["event_ts"].to_list(), y=history["speed"].to_list(), name="speed (km/h)",
                        line={"color": "#38bdf8"})  # fmt: skip
        fig.add_scatter(x=history["event_ts"].to_list(), y=history["rpm"].to_list(), name="engine (rpm)",
                        line={"color": "#f97316"}, yaxis="y2")  # fmt: skip
    return _layout(
        fig, "Speed and RPM, last 5 minutes", height=300,
        xaxis_title="event time (UTC)", yaxis={"title": "km/h"},
        yaxis2={"title": "rpm", "overlaying": "y", "side": "right", "showgrid": False},
    )  # fmt: skip
