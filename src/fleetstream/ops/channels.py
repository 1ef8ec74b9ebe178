"""Where notifications go: Telegram (the Bot API, through python-telegram-bot), a Slack incoming
webhook, and a generic webhook (JSON, HMAC-signed). Each is configured by settings and off until
its token or URL is set.

Every channel retries a rate limit (429: after the time the server asks for), a server error (5xx)
and a network error, with exponential backoff, ``NotifySettings.retries`` times; a request the
server refuses (400, 401, 403, 404) fails at once with the server's words. Telegram's own flood
limits (30 messages a second, 20 a minute per group) are kept by python-telegram-bot's rate limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.ops.summary import Message

if TYPE_CHECKING:
    from telegram.ext import ExtBot

log = logging.getLogger(__name__)
BACKOFF_S = 1.0
MAX_WAIT_S = 300.0
USER_AGENT = "fleetstream-notify"
TOKEN_REFUSED = "telegram refused the bot's token (401 Unauthorized): check FLEETSTREAM_TELEGRAM__TOKEN"  # noqa: S105 (a message)


class SendError(FleetstreamError):
    """A channel could not deliver a message (after its retries)."""


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


def _backoff(attempt: int, asked: float | None = None) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): what the server asked for, else 1, 2, 4 ... s."""
    return asked if asked is not None else BACKOFF_S * 2 ** (attempt - 1)


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a 429 or 503 asks to wait (0 to 300; a date or nonsense: None)."""
    try:
        return max(0.0, min(MAX_WAIT_S, float(response.headers["Retry-After"])))
    except (KeyError, ValueError):
        return None


class HttpChannel:
    """POSTs JSON to a URL, retrying 429, 5xx and network errors."""

    def __init__(self, name: str, url: str, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.url, self._settings, self._sleep = name, url, settings, sleep

    def body(self, message: Message) -> dict[str, object]:
        raise NotImplementedError

    def headers(self, message: Message, body: bytes) -> dict[str, str]:
        return {}

    def send(self, message: Message) -> None:
        body = json.dumps(self.body(message), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **self.headers(message, body)}
        retries = self._settings.notify.retries
        with httpx.Client(timeout=self._settings.notify.timeout_s) as client:
            for attempt in range(retries + 1):
                asked: float | None = None
                try:
                    response = client.post(self.url, content=body, headers=headers)
                except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # (its text may hold the URL)
                    raise SendError(f"{self.name}: its URL cannot be posted to ({type(exc).__name__})") from None
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code < 300:
                        return
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                    if response.status_code != 429 and response.status_code < 500:
                        raise SendError(f"{self.name} refused message {message.id}: {problem}")
                    asked = _retry_after(response)
                if attempt == retries:
                    raise SendError(
                        f"{self.name} did not take message {message.id} after {retries + 1} tries: {problem}"
                    )
                wait = _backoff(attempt + 1, asked)
                log.warning("%s: %s; retrying in %.1f s", self.name, problem, wait)
                self._sleep(wait)


class SlackChannel(HttpChannel):
    """A Slack incoming webhook: ``{"text": ...}``."""

    def body(self, message: Message) -> dict[str, object]:
        return {"text": message.text}


class WebhookChannel(HttpChannel):
    """A generic webhook. The body is ``{"id", "kind", "sent_at", "text", "data"}``; the headers carry
    ``X-Fleetstream-Id`` (the same for a repeat: receivers drop what they have seen) and, when a
    secret is set, ``X-Fleetstream-Signature: sha256=<hex HMAC-SHA256 of the body>``."""

    def body(self, message: Message) -> dict[str, object]:
        return {"id": message.id, "kind": message.kind, "sent_at": round(time.time(), 3),
                "text": message.text, "data": message.data}  # fmt: skip

    def headers(self, message: Message, body: bytes) -> dict[str, str]:
        out = {"X-Fleetstream-Id": message.id}
        secret = self._settings.notify.webhook_secret
        if secret is not None:
            out["X-Fleetstream-Signature"] = "sha256=" + sign(secret.get_secret_value(), body)
        return out


def sign(secret: str, body: bytes) -> str:
    """The webhook's signature: hex HMAC-SHA256 of the raw body.

    >>> sign("s3cret", b'{"id":"x"}')
    '9f0beccf514841d21c56dba276089c2345c12d5d2deb19b4d22c873371e5e8b6'
    """
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def opt_in_timedelta() -> None:
    """python-telegram-bot 22 warns that ``RetryAfter.retry_after`` becomes a timedelta, from its own
    rate limiter on every 429, unless the new type is chosen now: choose it (this process only)."""
    os.environ.setdefault("PTB_TIMEDELTA", "1")


def telegram_bot(settings: Settings, rate_limited: bool = True) -> ExtBot[Any]:
    """python-telegram-bot's ExtBot for the configured token and server (rate limited: 429s retried)."""
    opt_in_timedelta()
    from telegram.ext import AIORateLimiter, ExtBot

    token = settings.telegram.token
    if token is None:
        raise FleetstreamError("no Telegram bot token: set FLEETSTREAM_TELEGRAM__TOKEN")
    base = settings.telegram.base_url.rstrip("/")
    limiter = AIORateLimiter(max_retries=settings.notify.retries) if rate_limited else None
    return ExtBot(token.get_secret_value(), base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                  rate_limiter=limiter)  # fmt: skip


class TelegramChannel:
    """sendMessage to every chat in ``telegram.chat_ids``, HTML formatted."""

    name = "telegram"

    def __init__(self, settings: Settings) -> None:
        if not settings.telegram.chat_ids:
            raise FleetstreamError("a Telegram token but no chat to send to: set FLEETSTREAM_TELEGRAM__CHAT_IDS")
        self._settings = settings

    def send(self, message: Message) -> None:
        asyncio.run(self._send(message))

    async def _send(self, message: Message) -> None:
        bot = telegram_bot(self._settings)
        retries = self._settings.notify.retries
        try:
            await initialize(bot, retries)
            for chat in self._settings.telegram.chat_ids:
                await deliver(bot, chat, message.html, retries, f"message {message.id}")
        finally:
            with contextlib.suppress(Exception):  # closes its HTTP clients; nothing to report
                await bot.shutdown()


async def initialize(bot: ExtBot[Any], retries: int) -> None:
    """getMe (the token checked), retrying server and network errors with backoff."""
    from telegram.error import InvalidToken, NetworkError, TelegramError

    for attempt in range(retries + 1):
        try:
            await bot.initialize()
            return
        except InvalidToken:  # its message holds the token: not repeated
            raise SendError(TOKEN_REFUSED) from None
        except NetworkError as exc:
            if attempt == retries:
                raise SendError(f"telegram did not answer getMe after {retries + 1} tries: {exc}") from None
            wait = _backoff(attempt + 1)
            log.warning("telegram: %s; retrying in %.1f s", exc, wait)
            await asyncio.sleep(wait)
        except TelegramError as exc:
            raise SendError(f"telegram refused getMe: {exc}") from None


async def deliver(bot: ExtBot[Any], chat: int, html: str, retries: int, what: str) -> None:
    """sendMessage (HTML), retrying server and network errors with backoff (429s: the rate limiter)."""
    from telegram.error import BadRequest, NetworkError, TelegramError

    for attempt in range(retries + 1):
        try:
            await bot.send_message(chat, html, parse_mode="HTML")
            return
        except BadRequest as exc:  # a NetworkError subclass, but the request is at fault
            raise SendError(f"telegram refused {what} for chat {chat}: {exc}") from None
        except NetworkError as exc:  # 5xx, timeouts, connection errors
            if attempt == retries:
                raise SendError(
                    f"telegram did not take {what} for chat {chat} after {retries + 1} tries: {exc}"
                ) from None
            wait = _backoff(attempt + 1)
            log.warning("telegram: %s; retrying in %.1f s", exc, wait)
            await asyncio.sleep(wait)
        except TelegramError as exc:  # 401, 403, 429 after the limiter's retries
            raise SendError(f"telegram refused {what} for chat {chat}: {exc}") from None


def channels(settings: Settings) -> list[Channel]:
    """The channels the settings turn on (none: nothing to send to)."""
    out: list[Channel] = []
    if settings.telegram.token is not None:
        out.append(TelegramChannel(settings))
    if settings.notify.slack_webhook_url is not None:
        out.append(SlackChannel("slack", settings.notify.slack_webhook_url.get_secret_value(), settings))
    if settings.notify.webhook_url:
        out.append(WebhookChannel("webhook", settings.notify.webhook_url, settings))
    return out
