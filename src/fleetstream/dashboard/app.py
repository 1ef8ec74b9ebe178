"""The Streamlit entry point (`fleetstream dashboard` runs it): navigation, theme, pages."""

from __future__ import annotations

import streamlit as st

from fleetstream.dashboard import context
from fleetstream.dashboard.views import alerts, cockpit, health, overview

context.logging_set_up()

st.set_page_config(
    page_title="fleetstream", page_icon=":material/directions_car:", layout="wide", initial_sidebar_state="expanded"
)
st.markdown(
    """<style>
    [data-testid="stMetric"] {background: #111827; border: 1px solid #1f2937; border-radius: 8px; padding: 10px 14px;}
    [data-testid="stMetricValue"] {font-size: 2rem; color: #f8fafc;}
    .block-container {padding-top: 2.2rem;}
    </style>""",
    unsafe_allow_html=True,
)
pages = {
    "overview": st.Page(overview.render, title="Fleet overview", icon=":material/map:", default=True),
    "alerts": st.Page(alerts.render, title="Alerts", icon=":material/notifications_active:", url_path="alerts"),
    "cockpit": st.Page(cockpit.render, title="Vehicle cockpit", icon=":material/speed:", url_path="cockpit"),
    "health": st.Page(health.render, title="Pipeline health", icon=":material/monitor_heart:", url_path="health"),
}
st.session_state["pages"] = pages
st.navigation(list(pages.values())).run()
