"""Alerts: the alert episodes (open ones first, then those resolved in the last 30 minutes), then
the live per-event feed from alert-data, newest first, with filters; a row opens its car in the cockpit."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from fleetstream.dashboard import context, shape
from fleetstream.lake import read

RESOLVED_SHOWN_MIN = 30

FILTERS = (("rule", "Rule"), ("severity", "Severity"), ("model", "Model"), ("color", "Color"), ("car_id", "Car"))
SHOWN = 500


def render() -> None:
    st.title("Alerts")
    context.banner()
    alerts = shape.alerts_frame(context.feeds().alerts.alerts())
    columns = st.columns(len(FILTERS))
    chosen = {
        column: columns[i].multiselect(label, sorted(alerts[column].drop_nulls().unique().to_list()), key=f"f-{column}")
        for i, (column, label) in enumerate(FILTERS)
    }
    episodes(chosen)
    feed(chosen)


@st.fragment(run_every=context.settings().dashboard.refresh_s)
def episodes(chosen: dict[str, list[str]]) -> None:
    settings, now = context.settings(), context.now()
    since = now - dt.timedelta(minutes=RESOLVED_SHOWN_MIN)
    rows = context.safely("silver/alert_episodes", lambda: read.episodes(settings, since), None)
    view = shape.filter_alerts(shape.episodes_view(rows, now), **chosen)
    st.subheader("Episodes")
    is_open = view.filter(view["status"] == "open").height if view.height else 0
    st.caption(
        f"{is_open:,} open, {view.height - is_open:,} resolved in the last {RESOLVED_SHOWN_MIN} minutes "
        "(an episode opens once its rule has held for a while and resolves once it has cleared; docs/rules.md)."
    )
    st.dataframe(
        view.to_pandas(),
        key="episodes-table",
        hide_index=True,
        height=300,
        column_config={
            "car_id": st.column_config.TextColumn("car"),
            "since": st.column_config.DatetimeColumn("opened (UTC)", format="HH:mm:ss"),
            "resolved": st.column_config.DatetimeColumn("resolved (UTC)", format="HH:mm:ss"),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
            "peak_speed": st.column_config.NumberColumn("peak speed (km/h)", format="%.0f"),
            "peak_rpm": st.column_config.NumberColumn("peak RPM", format="%.0f"),
            "peak_coolant": st.column_config.NumberColumn("peak coolant (°C)", format="%.1f"),
        },
    )


@st.fragment(run_every=context.settings().dashboard.refresh_s)
def feed(chosen: dict[str, list[str]]) -> None:
    alerts = shape.filter_alerts(shape.alerts_frame(context.feeds().alerts.alerts()), **chosen)
    shown = min(alerts.height, SHOWN)
    st.subheader("Events")
    st.caption(
        f"{alerts.height:,} alerts in the last 35 minutes match; the newest {shown} are shown. "
        "Select a row for a link to its car in the cockpit."
    )
    table = alerts.head(SHOWN).select(
        "event_ts", "rule", "severity", "car_id", "model", "color", "speed", "rpm", "gear", "expected_gear", "message"
    )
    picked = st.dataframe(
        table.to_pandas(),
        key="alerts-table",
        hide_index=True,
        height=560,
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "event_ts": st.column_config.DatetimeColumn("event time (UTC)", format="HH:mm:ss"),
            "speed": st.column_config.ProgressColumn("speed (km/h)", min_value=0, max_value=240, format="%.0f"),
            "rpm": st.column_config.ProgressColumn("RPM", min_value=0, max_value=8000, format="%.0f"),
            "expected_gear": st.column_config.NumberColumn("expected gear"),
            "car_id": st.column_config.TextColumn("car"),
        },
    )
    rows = picked.selection.rows if picked is not None else []
    if rows and rows[0] < table.height:
        # A link, not st.switch_page: switching pages from inside a running fragment breaks the page.
        car = str(table["car_id"][rows[0]])
        st.page_link(
            st.session_state["pages"]["cockpit"], label=f"Open {car} in the cockpit", icon=":material/speed:",
            query_params={"car": car},
        )  # fmt: skip
