"""Loopback fakes of the outside services fleetstream talks to, answering as the real ones do.

- :class:`TelegramFake`: the Telegram Bot API (``/bot<token>/<method>``): getMe, getUpdates (long
  polling, offsets), sendMessage, and ``{"ok": true, "result": true}`` for the housekeeping calls
  (deleteWebhook, ...). Errors as Telegram sends them: 401 for a wrong token, 429 with
  ``parameters.retry_after``, 500. Parameters come as a form or JSON, as clients send them.
- :class:`HookFake`: an HTTP endpoint that records what is POSTed (Slack and webhooks), and can
  answer a given status first.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


def _params(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    kind = handler.headers.get("Content-Type", "")
    if "json" in kind:
        return dict(json.loads(raw or b"{}"))
    out: dict[str, Any] = {}
    for key, values in parse_qs(raw.decode()).items():
        value: Any = values[-1]
        with contextlib.suppress(ValueError):  # python-telegram-bot sends numbers and objects JSON-encoded
            value = json.loads(value)
        out[key] = value
    return out


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free loopback port in a thread; yields ``http://127.0.0.1:<port>``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@dataclass
class Failure:
    status: int
    retry_after: int | None = None


@dataclass
class TelegramFake:
    token: str
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    base_url: str = ""
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fail(self, method: str, status: int, times: int = 1, retry_after: int | None = None) -> None:
        """The next ``times`` calls of ``method`` answer ``status`` (429: with ``retry_after``)."""
        self.failures.setdefault(method, []).extend(Failure(status, retry_after) for _ in range(times))

    def say(self, chat_id: int, text: str, user_id: int | None = None) -> None:
        """A user's message in a private chat, as getUpdates delivers it."""
        with self._cond:
            update_id = next(self._ids)
            entities = (
                [{"type": "bot_command", "offset": 0, "length": len(text.split(maxsplit=1)[0])}]
                if text.startswith("/")
                else []
            )
            user = {"id": user_id or chat_id, "is_bot": False, "first_name": "Tester"}
            chat = {"id": chat_id, "type": "private", "first_name": "Tester"}
            message = {"message_id": update_id, "date": int(time.time()), "text": text, "from": user,
                       "chat": chat, "entities": entities}  # fmt: skip
            self.updates.append({"update_id": update_id, "message": message})
            self._cond.notify_all()

    def replies(self, chat_id: int) -> list[str]:
        return [m["text"] for m in self.sent if int(m["chat_id"]) == chat_id]

    def wait_replies(self, chat_id: int, count: int, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.replies(chat_id)) >= count:
                return self.replies(chat_id)
            time.sleep(0.1)
        raise AssertionError(f"{len(self.replies(chat_id))} replies to chat {chat_id}, not {count}: {self.sent}")

    # --- the API --------------------------------------------------------------------------------

    def handle(self, method: str, token: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append(method)
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        queue = self.failures.get(method)
        if queue:
            failure = queue.pop(0)
            if failure.status == 429:
                after = failure.retry_after or 1
                return 429, {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {after}",
                             "parameters": {"retry_after": after}}  # fmt: skip
            return failure.status, {"ok": False, "error_code": failure.status, "description": "Internal Server Error"}
        if method == "getMe":
            return 200, {"ok": True, "result": {"id": 4242, "is_bot": True, "first_name": "fleetstream test",
                                                "username": "fleetstream_test_bot", "can_join_groups": True,
                                                "can_read_all_group_messages": False,
                                                "supports_inline_queries": False}}  # fmt: skip
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            timeout = min(float(params.get("timeout") or 0), 2.0)  # a short poll keeps tests quick
            with self._cond:
                self._cond.wait_for(lambda: any(u["update_id"] >= offset for u in self.updates), timeout)
                self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed ones go
                return 200, {"ok": True, "result": list(self.updates)}
        if method == "sendMessage":
            if not str(params.get("text", "")).strip():
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
            self.sent.append(params)
            chat = {"id": int(params["chat_id"]), "type": "private", "first_name": "Tester"}
            return 200, {"ok": True, "result": {"message_id": len(self.sent), "date": int(time.time()),
                                                "chat": chat, "text": params["text"]}}  # fmt: skip
        return 200, {"ok": True, "result": True}


@contextmanager
def telegram_fake(token: str = "123456:TEST-token") -> Iterator[TelegramFake]:
    """A running fake Bot API on 127.0.0.1; its ``base_url`` goes to FLEETSTREAM_TELEGRAM__BASE_URL."""
    fake = TelegramFake(token)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            path = self.path.split("?", 1)[0].strip("/")
            prefix, _, method = path.rpartition("/")
            if not prefix.startswith("bot"):
                _reply(self, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
                return
            _reply(self, *fake.handle(method, prefix[3:], _params(self)))

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        fake.base_url = url
        try:
            yield fake
        finally:
            with fake._cond:
                fake._cond.notify_all()


@dataclass
class HookFake:
    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered first, in order; then 200


@contextmanager
def hook_fake() -> Iterator[HookFake]:
    """An HTTP endpoint on 127.0.0.1 recording each POST (headers, raw body)."""
    fake = HookFake()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = fake.statuses.pop(0) if fake.statuses else 200
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        fake.url = f"{url}/hook"
        yield fake


@dataclass
class ChatFake:
    """An OpenAI-compatible chat completions endpoint that answers from a script: each entry is a
    tool call ``(name, arguments)`` or a final answer (a string), in order."""

    api_key: str
    script: list[tuple[str, dict[str, Any]] | str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    def answer(self, authorization: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if authorization != f"Bearer {self.api_key}":
            # (OpenAI masks the key it echoes; a worse server may not: the client must not repeat it)
            key = authorization.removeprefix("Bearer ")
            return 401, {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error",
                                   "param": None, "code": "invalid_api_key"}}  # fmt: skip
        self.requests.append(body)
        step = self.script.pop(0) if self.script else "no more script"
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if isinstance(step, str):
            message["content"], finish = step, "stop"
        else:
            name, arguments = step
            message["tool_calls"] = [{"id": f"call_{len(self.requests)}", "type": "function",
                                      "function": {"name": name, "arguments": json.dumps(arguments)}}]  # fmt: skip
            finish = "tool_calls"
        return 200, {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model", "?"),
                     "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}  # fmt: skip


@contextmanager
def chat_fake(api_key: str = "sk-test") -> Iterator[ChatFake]:
    """A running fake on 127.0.0.1; its ``base_url`` (ending in /v1) goes to FLEETSTREAM_BOT__AI_BASE_URL."""
    fake = ChatFake(api_key)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                status, answer = 404, {"error": {"message": "not found", "type": "invalid_request_error"}}
            else:
                status, answer = fake.answer(self.headers.get("Authorization", ""), body)
            _reply(self, status, answer)

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        fake.base_url = f"{url}/v1"
        yield fake
