"""Operations: notifications (`fleetstream notify`) and the ops bot (`fleetstream bot`)."""

from __future__ import annotations

import sys

from fleetstream.config import Settings

#: the long-running operations commands `fleetstream run` starts when they are configured
SUMMARY_EVERY_S = 60


def channel_names(settings: Settings) -> list[str]:
    """The notification channels the settings turn on (without connecting to any)."""
    names = ["telegram"] if settings.telegram.token is not None and settings.telegram.chat_ids else []
    names += ["slack"] if settings.notify.slack_webhook_url is not None else []
    return names + (["webhook"] if settings.notify.webhook_url else [])


def apps(settings: Settings) -> list[tuple[str, list[str]]]:
    """(name, command line) of each operations process to run beside the stack: the per-minute
    summary and the critical alerts when a channel is configured, the bot when it has a token and
    chats to answer.

    >>> from pydantic import SecretStr
    >>> from fleetstream.config import TelegramSettings
    >>> [name for name, _ in apps(Settings())]
    []
    >>> t = TelegramSettings(token=SecretStr("1:x"), chat_ids=[1], allowed_chat_ids=[1])
    >>> [name for name, _ in apps(Settings(telegram=t))]
    ['notify-summary', 'notify-critical', 'bot']
    """
    me = [sys.executable, "-m", "fleetstream"]
    out = []
    if channel_names(settings):
        out.append(("notify-summary", [*me, "notify", "summary", "--every", str(SUMMARY_EVERY_S)]))
        out.append(("notify-critical", [*me, "notify", "critical"]))
    if settings.telegram.token is not None and settings.telegram.allowed_chat_ids:
        out.append(("bot", [*me, "bot"]))
    return out
