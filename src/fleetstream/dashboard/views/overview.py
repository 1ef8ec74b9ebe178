"""Fleet overview: KPI cards, the latest critical alert's gauges, alerts per minute, colors, models, map."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from fleetstream.dashboard import charts, context, shape
from fleetstream.lake import read


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render() -> None:
    st.title("Fleet overview")
    live()


@st.fragment(run_every=context.settings().dashboard.refresh_s)
def live() -> None:
    settings, now = context.settings(), context.now()
    context.banner()
    state = context.safely("gold/car_state", lambda: read.car_state(settings), None)
    alerts = shape.alerts_frame(context.feeds().alerts.alerts())
    figures = shape.kpis(state, alerts, context.input_rate(), now)
    behind_s = (now.timestamp() * 1000 - shape.fleet_clock(state, now)) / 1000
    if state is not None and state.height:
        st.caption(
            f"Fleet state as of {now - dt.timedelta(seconds=behind_s):%H:%M:%S} UTC ({behind_s:,.0f} s behind now)"
        )
    since = now - dt.timedelta(minutes=30)
    episodes = context.safely("silver/alert_episodes", lambda: read.episodes(settings, since), None)
    open_by_rule = shape.open_episodes_by_rule(episodes)
    cards = st.columns(6)
    cards[0].metric(
        "Active cars", f"{figures.active_cars:,}", help=f"reported within {shape.ACTIVE_S} s of the newest report"
    )
    cards[1].metric("Events/s in", _fmt(figures.events_per_s), help="into sensors-sample, from Kafka offsets")
    cards[2].metric("Alerts, last 15 min", f"{figures.alerts_15m:,}")
    cards[3].metric("Engine stress, 15 min", f"{figures.engine_stress_15m:,}")
    cards[4].metric("Top speed now", f"{_fmt(figures.top_speed)} km/h")
    cards[5].metric(
        "Open episodes",
        f"{sum(open_by_rule.values()):,}",
        help="alert episodes open now, by rule: "
        + (", ".join(f"{rule} {n}" for rule, n in open_by_rule.items()) or "none"),
    )
    if open_by_rule:
        st.caption("Open episodes by rule: " + ", ".join(f"**{rule}** {n:,}" for rule, n in open_by_rule.items()))
    styles = context.safely(
        "gold/driver_style", lambda: read.driver_styles(settings, now - dt.timedelta(minutes=shape.STYLE_MIN)), None
    )
    mix = shape.style_mix(styles)
    if mix:
        versions = sorted(set(styles["model_version"].to_list())) if styles is not None else []
        st.caption(
            "Driving style (each car's latest 5-minute window, model "
            + ", ".join(f"v{v}" for v in versions)
            + "): "
            + ", ".join(f"**{style}** {n:,}" for style, n in mix.items())
        )
    offline = shape.offline_cars(episodes)
    if offline:
        shown = ", ".join(offline[:20]) + (f" and {len(offline) - 20} more" if len(offline) > 20 else "")
        st.caption(f"Cars offline now ({len(offline)}): {shown}")

    critical = shape.latest_critical(alerts) or {}
    left, right, info = st.columns([1, 1, 1])
    left.plotly_chart(
        charts.gauge(critical.get("speed"), "Latest critical alert: speed", "km/h", 240, 120),
        key="critical-speed",
    )
    right.plotly_chart(
        charts.gauge(critical.get("rpm"), "Latest critical alert: RPM", "rpm", 8000, 6000),
        key="critical-rpm",
    )
    with info:
        st.subheader("Latest critical alert")
        if critical:
            st.markdown(
                f"**{critical['rule']}** on **{critical['car_id']}** ({critical['model']}, {critical['color']})  \n"
                f"{critical['message']}  \nat {critical['event_ts']:%H:%M:%S} UTC"
            )
        else:
            st.caption("none in the last 35 minutes")

    counts = shape.alerts_per_minute(alerts, now)
    axes = ("event time (UTC)", "alerts / min")
    st.plotly_chart(
        charts.per_minute(counts, "rule", "alerts", "Alerts per minute by rule", axes, now), key="alerts-per-minute"
    )
    colors_w = context.safely("gold/cars_by_color", lambda: read.recent_windows(settings, "cars_by_color", since), None)
    models_w = context.safely(
        "gold/speed_by_model", lambda: read.recent_windows(settings, "speed_by_model", since), None
    )
    left, right = st.columns(2)
    left.plotly_chart(charts.color_distribution(*shape.color_distribution(colors_w, state, now)), key="colors")
    right.plotly_chart(charts.speed_by_model(*shape.speed_by_model(models_w, state, now)), key="models")
    st.plotly_chart(
        charts.fleet_map(shape.map_points(state, now), settings.dashboard.map_tiles or None), key="fleet-map"
    )
