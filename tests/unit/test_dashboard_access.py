"""The cockpit's controls behind a login when the dashboard is reachable from elsewhere, run with
Streamlit's own app tester (the page's script, no browser)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from fleetstream.dashboard import context


def _page() -> None:
    import streamlit as st

    from fleetstream.dashboard.views import cockpit

    if cockpit.login_gate():
        st.markdown(f"CONTROLS for {st.session_state[cockpit.WHO_KEY]}")


def _run(monkeypatch: pytest.MonkeyPatch, **env: str) -> AppTest:
    for key in ("HOST", "TOKEN"):
        monkeypatch.delenv(f"FLEETSTREAM_DASHBOARD__{key}", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(f"FLEETSTREAM_DASHBOARD__{key}", value)
    context.settings.clear()  # the page's settings are cached per process
    return AppTest.from_function(_page).run(timeout=30)


def _texts(app: AppTest) -> str:
    return " ".join([m.value for m in app.markdown] + [i.value for i in app.info])


def test_loopback_without_a_token_is_open_as_local(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(monkeypatch)
    assert "CONTROLS for local" in _texts(app)
    assert not app.text_input


def test_exposed_without_a_token_stays_shut(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(monkeypatch, HOST="0.0.0.0")
    assert "CONTROLS" not in _texts(app)
    assert "set FLEETSTREAM_DASHBOARD__TOKEN" in _texts(app)
    assert not app.text_input  # no login can open it


def test_exposed_with_a_token_asks_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(monkeypatch, HOST="0.0.0.0", TOKEN="s3cret-token")
    assert "CONTROLS" not in _texts(app)
    assert "Log in to take the wheel." in _texts(app)
    app.text_input(key="login-name").input("ana")
    app.text_input(key="login-token").input("wrong")
    app.button[0].click().run(timeout=30)
    assert "CONTROLS" not in _texts(app)
    assert "That token is not the dashboard's." in _texts(app)
    app.text_input(key="login-token").input("s3cret-token")
    app.button[0].click().run(timeout=30)
    assert "CONTROLS for ana" in _texts(app)
    context.settings.clear()
