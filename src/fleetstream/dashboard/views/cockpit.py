"""Vehicle cockpit: one car's live gauges and strip chart, and controls that drive it through
driver-commands (the simulator obeys within a tick)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import polars as pl
import streamlit as st

from fleetstream.dashboard import charts, context, shape
from fleetstream.dashboard.access import controls_access
from fleetstream.lake import read

HISTORY_MIN = 5
WARNING_SHOWN_S = 120  # an overheating warning stays on the page this long after its report
WHO_KEY = "cockpit-who"  # the session's login: who the commands are sent by
log = logging.getLogger(__name__)
LIVE_COLUMNS = ["event_ts", "speed", "rpm", "gear", "coolant_temp", "fuel_level", "engine_on"]


def render() -> None:
    st.title("Vehicle cockpit")
    settings = context.settings()
    state = context.safely("gold/car_state", lambda: read.car_state(settings), None)
    cars = sorted(state["car_id"].to_list()) if state is not None and state.height else []
    wanted = st.query_params.get("car") or st.session_state.get("car")
    if wanted and wanted not in cars:
        cars.insert(0, wanted)
    if not cars:
        context.banner()
        st.info("No car has reported yet. Start the simulator and the pipeline (`make run`).")
        return
    car = st.selectbox("Car", cars, index=cars.index(wanted) if wanted in cars else 0, key="cockpit-car")
    st.session_state["car"] = car
    st.query_params["car"] = car
    context.feeds().cars.watch(car)
    controls(car)
    gauges(car)
    trips(car)


def _send(car: str, command: str, value: float | None = None) -> None:
    who = st.session_state.get(WHO_KEY, "?")
    amount = "" if value is None else f" {value:.0%}"
    try:
        context.feeds().send(car, command, value)
        log.info("driver command %s%s to %s sent by %s", command, amount, car, who)
        st.toast(f"{command}{amount} sent to {car}")
    except Exception as exc:  # the broker is down or refused: say so, keep the page
        log.warning("driver command %s%s to %s by %s not sent: %s", command, amount, car, who, exc)
        st.error(f"{command} not sent: {exc}")


def login_gate() -> bool:
    """Whether this session may use the controls; shows why not, or a login form (access.py)."""
    settings = context.settings().dashboard
    if st.session_state.get(WHO_KEY):
        return True
    access = controls_access(settings)
    if access.allowed:
        st.session_state[WHO_KEY] = access.who
        return True
    if access.login:
        with st.form("cockpit-login"):
            name = st.text_input("Your name", key="login-name")
            token = st.text_input("Token", type="password", key="login-token")
            if st.form_submit_button("Log in"):
                access = controls_access(settings, name, token)
                if access.allowed:
                    st.session_state[WHO_KEY] = access.who
                    log.info("%s logged in to the cockpit's controls", access.who)
                    st.rerun()
                log.warning("a failed login to the cockpit's controls (name %r)", name[:64])
    st.info(access.reason)
    return False


def controls(car: str) -> None:
    st.subheader("Take the wheel")
    if not login_gate():
        return
    cols = st.columns([1, 1, 1.3, 1, 1, 1])
    if cols[0].button("Start engine", key="start", use_container_width=True):
        _send(car, "start_engine")
    if cols[1].button("Stop engine", key="stop", use_container_width=True):
        _send(car, "stop_engine")
    if cols[2].button("Hand back to driver", key="release", use_container_width=True):
        _send(car, "release")
    # the connection: the car drives on but its reports stop (a vehicle_offline episode opens)
    if cols[3].button("Go offline", key="offline", use_container_width=True):
        _send(car, "go_offline")
    if cols[4].button("Come online", key="online", use_container_width=True):
        _send(car, "come_online")
    pedals = st.columns(2)
    pedals[0].slider(
        "Throttle (%)", 0, 100, 0, 5, key=f"throttle-{car}",
        on_change=lambda: _send(car, "set_throttle", st.session_state[f"throttle-{car}"] / 100),
    )  # fmt: skip
    pedals[1].slider(
        "Brake (%)", 0, 100, 0, 5, key=f"brake-{car}",
        on_change=lambda: _send(car, "set_brake", st.session_state[f"brake-{car}"] / 100),
    )  # fmt: skip


def _history(car: str) -> pl.DataFrame:
    """The last minutes from silver, then the live readings from Kafka after them."""
    settings, now = context.settings(), context.now()
    since = now - dt.timedelta(minutes=HISTORY_MIN)
    stored = context.safely("silver/telemetry", lambda: read.car_history(settings, car, since, LIVE_COLUMNS), None)
    live = context.feeds().cars.readings(car)
    frames = [stored] if stored is not None and stored.height else []
    if live:
        rows: list[dict[str, Any]] = [
            {c: r.get(c) for c in LIVE_COLUMNS[1:]} | {"event_time": r["event_time"]} for r in live
        ]
        fresh = pl.DataFrame(rows, strict=False).with_columns(
            pl.from_epoch("event_time", time_unit="ms").dt.replace_time_zone("UTC").alias("event_ts")
        )
        if frames:
            fresh = fresh.filter(pl.col("event_ts") > frames[0]["event_ts"].max())
        frames.append(
            fresh.select([pl.col(c).cast(frames[0].schema[c]) if frames else pl.col(c) for c in LIVE_COLUMNS])
        )
    if not frames:
        return pl.DataFrame(schema={c: pl.Float64 for c in LIVE_COLUMNS})
    return pl.concat(frames, how="vertical_relaxed").filter(pl.col("event_ts") >= since).sort("event_ts")


@st.fragment(run_every=min(1.0, context.settings().dashboard.refresh_s))
def gauges(car: str) -> None:
    context.banner()
    history = _history(car)
    latest = history.row(-1, named=True) if history.height else {}
    cols = st.columns(4)
    cols[0].plotly_chart(charts.gauge(latest.get("speed"), "Speed", "km/h", 240, 120), key="g-speed")
    cols[1].plotly_chart(charts.gauge(latest.get("rpm"), "Engine", "rpm", 8000, 6000), key="g-rpm")
    cols[2].plotly_chart(charts.gauge(latest.get("coolant_temp"), "Coolant", "°C", 140, 110), key="g-coolant")
    cols[3].plotly_chart(charts.gauge(latest.get("fuel_level"), "Fuel", "%", 100), key="g-fuel")
    if latest:
        engine = "on" if latest.get("engine_on") else "off"
        st.caption(f"{car}: gear {latest.get('gear')}, engine {engine}, last report {latest['event_ts']:%H:%M:%S} UTC")
    st.plotly_chart(charts.strip_chart(history), key="strip")


@st.fragment(run_every=context.settings().dashboard.refresh_s)
def trips(car: str) -> None:
    settings = context.settings()
    rows = context.safely("gold/trips", lambda: read.car_trips(settings, car), None)
    since = context.now() - dt.timedelta(minutes=shape.STYLE_MIN)
    styles = context.safely("gold/driver_style", lambda: read.driver_styles(settings, since), None)
    style = shape.car_style(styles, car)
    if style is not None:
        st.caption(
            f"Driving style: **{style['style']}** ({style['confidence']:.0%} confidence; "
            f"model v{style['model_version']}, 5-minute window ending {style['window_end']:%H:%M} UTC)"
        )
    warned = context.safely(
        "gold/overheat_warnings",
        lambda: read.overheat_warnings(settings, car, context.now() - dt.timedelta(seconds=WARNING_SHOWN_S)),
        None,
    )
    warning = shape.overheat_warning(warned)
    if warning is not None:
        st.warning(warning, icon="🌡️")
    upkeep = context.safely("gold/maintenance", lambda: read.car_maintenance(settings, car), None)
    lines = shape.upkeep_lines(upkeep.row(0, named=True) if upkeep is not None and upkeep.height else None)
    if lines:
        st.subheader("Maintenance")
        st.markdown("\n".join(f"- {line}" for line in lines))
    view = shape.trips_view(rows)
    st.subheader("Trips")
    current = view.filter(view["status"] == "open") if view.height else view
    if current.height:
        trip = current.row(0, named=True)
        st.caption(
            f"Current trip: since {trip['started']:%H:%M:%S} UTC, {trip['distance_km']:.1f} km, "
            f"{trip['duration_min']:.0f} min, top {trip['max_speed']:.0f} km/h, {trip['episodes']} episodes"
        )
    else:
        st.caption("Not on a trip now (engine off, or no report yet).")
    st.dataframe(
        view.to_pandas(),
        key="trips-table",
        hide_index=True,
        column_config={
            "started": st.column_config.DatetimeColumn("started (UTC)", format="HH:mm:ss"),
            "ended": st.column_config.DatetimeColumn("last report (UTC)", format="HH:mm:ss"),
            "duration_min": st.column_config.NumberColumn("minutes", format="%.1f"),
            "distance_km": st.column_config.NumberColumn("km", format="%.2f"),
            "max_speed": st.column_config.NumberColumn("top km/h", format="%.0f"),
            "mean_speed": st.column_config.NumberColumn("mean km/h", format="%.0f"),
            "fuel_used_pct": st.column_config.NumberColumn("fuel used (% of tank)", format="%.1f"),
        },
    )
