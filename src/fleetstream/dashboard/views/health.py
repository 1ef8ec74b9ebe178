"""Pipeline health: each query's rates, batch duration and lag; dead-letter records by reason."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from fleetstream.dashboard import charts, context, shape
from fleetstream.lake import read

DLQ_MINUTES = 30


def render() -> None:
    st.title("Pipeline health")
    live()


@st.fragment(run_every=context.settings().dashboard.refresh_s)
def live() -> None:
    state = context.banner()
    updated = f"{state.updated:%H:%M:%S} UTC" if state.updated else "never"
    st.caption(
        f"Status written by `fleetstream stream` at {updated}; this page read it at {context.now():%H:%M:%S} UTC."
    )
    if state.queries:
        st.dataframe(shape.health_table(state.queries).to_pandas(), hide_index=True, key="queries")
    else:
        st.info("No query has reported yet.")
    data_quality()
    since = context.now() - dt.timedelta(minutes=DLQ_MINUTES)
    rejected = context.safely("quarantine/telemetry", lambda: read.recent_quarantine(context.settings(), since), None)
    counts, axes = shape.dlq_per_minute(rejected), ("ingest time (UTC)", "records / min")
    title = "Dead-letter records per minute by reason"
    st.plotly_chart(charts.per_minute(counts, "reason", "records", title, axes, context.now(), DLQ_MINUTES), key="dlq")
    st.subheader("Latest dead-letter records")
    if rejected is None or rejected.is_empty():
        st.caption(f"none in the last {DLQ_MINUTES} minutes")
    else:
        st.dataframe(
            rejected.sort("ingest_time", descending=True).head(50).to_pandas(), hide_index=True, key="dlq-rows"
        )


def data_quality() -> None:
    """The newest `fleetstream quality check` run, from gold/dq_results: failures first."""
    st.subheader("Data quality")
    result = shape.quality(context.safely("gold/dq_results", lambda: read.latest_quality_run(context.settings()), None))
    show = {"ok": st.success, "warning": st.warning, "critical": st.error, "none": st.info}[result.level]
    show(result.summary)
    if result.rows is not None:
        st.dataframe(result.rows.to_pandas(), hide_index=True, key="dq")
