"""The live operations dashboard (Streamlit + Plotly): fleet overview, alerts, vehicle cockpit, pipeline health.

>>> argv = streamlit_argv(DashboardSettings(port=8600))
>>> argv[argv.index("--server.port") + 1], argv[argv.index("--server.address") + 1]
('8600', '127.0.0.1')
"""

from __future__ import annotations

import sys
from pathlib import Path

from fleetstream.config import DashboardSettings

APP = Path(__file__).with_name("app.py")
THEME = {
    "base": "dark",
    "primaryColor": "#38bdf8",
    "backgroundColor": "#0b0f17",
    "secondaryBackgroundColor": "#111827",
    "textColor": "#e5e7eb",
}


def streamlit_argv(settings: DashboardSettings) -> list[str]:
    """The command that serves the dashboard: headless, no file watching, no usage statistics, dark theme."""
    argv = [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", settings.host, "--server.port", str(settings.port),
            "--server.headless", "true", "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal"]  # fmt: skip
    for key, value in THEME.items():
        argv += [f"--theme.{key}", value]
    return argv
