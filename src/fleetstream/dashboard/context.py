"""What every page shares: settings, the Kafka feeds (one set per dashboard process), reading the
lake and the pipeline's status without ever raising into the page."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psutil
import streamlit as st
from confluent_kafka import TopicPartition

from fleetstream.config import Settings
from fleetstream.dashboard import shape
from fleetstream.dashboard.feeds import Feeds
from fleetstream.ingest.kafka import make_consumer
from fleetstream.lake import read
from fleetstream.pipeline import monitor
from fleetstream.pipeline.monitor import STATUS_FILE, read_status

log = logging.getLogger(__name__)
T = TypeVar("T")


@st.cache_resource
def settings() -> Settings:
    return Settings()


@st.cache_resource
def logging_set_up() -> bool:
    """fleetstream's own log lines (driver commands and who sent them, logins) on the server's
    output, one plain line each, once per server process."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("fleetstream")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    return True


@st.cache_resource
def feeds() -> Feeds:
    return Feeds(settings().kafka)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def safely(what: str, read: Callable[[], T], default: T) -> T:
    """Read something for a panel; on any failure log it, note it on the page, return ``default``.

    The dashboard never crashes on a missing table, a store that is down or a half-written file."""
    try:
        return read()
    except Exception as exc:  # delta-rs, object store, Kafka and Arrow each raise their own kinds
        log.warning("%s: %s", what, exc)
        st.caption(f":orange[{what} unavailable: {exc.__class__.__name__}]")
        return default


def _alive(pid: int | None) -> bool | None:
    """Whether the process that wrote the status file runs (None: the file names none)."""
    return None if pid is None else psutil.pid_exists(pid)


def health() -> monitor.Health:
    status = safely("pipeline status", lambda: read_status(settings().state_dir / STATUS_FILE), None)
    alive = _alive(status.pid) if status is not None else None
    return monitor.pipeline_health(status, feeds().broker_up(), now(), alive)


def banner() -> monitor.Health:
    """Show what is down or starting, if anything, at the top of a page."""
    state = health()
    if state.banner and state.level == "info":
        st.info(state.banner, icon=":material/hourglass_top:")
    elif state.banner:
        st.error(state.banner, icon=":material/warning:")
    quality = shape.quality_banner(safely("data-quality marker", lambda: read.quality_hold(settings()), None))
    if quality:
        st.error(quality, icon=":material/rule:")
    return state


@st.cache_resource
def _offsets_consumer() -> object:
    return make_consumer(settings().kafka, group_id="fleetstream-dashboard-offsets", log_level="0")


def input_rate() -> float | None:
    """Events/s into sensors-sample, from its end offsets at this refresh and the previous one."""

    def messages() -> int:
        consumer = _offsets_consumer()
        topic = settings().kafka.topics.sensors
        metadata = consumer.list_topics(topic, timeout=1.0)  # type: ignore[attr-defined]
        partitions = metadata.topics[topic].partitions
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=1.0)[1] for p in partitions]  # type: ignore[attr-defined]
        return int(sum(ends))

    if not feeds().broker_up():
        return None
    current = (time.monotonic(), safely("Kafka offsets", messages, -1))
    if current[1] < 0:
        return None
    previous = st.session_state.get("_input_offsets")
    st.session_state["_input_offsets"] = current
    got = shape.rate(previous, current)
    if got is None and (remembered := st.session_state.get("_input_rate")) is not None:
        return float(remembered)
    st.session_state["_input_rate"] = got
    return got
