"""The ops bot's ``/ai <question>``: a question in plain words, answered by a model behind any
OpenAI-compatible chat completions API (``FLEETSTREAM_BOT__AI_BASE_URL``, ``__AI_API_KEY``,
``__AI_MODEL``), with the bot's read-only commands as its tools. The model sees only what those
commands answer; it cannot write anything, start or stop anything. Off while unset.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError

log = logging.getLogger(__name__)
SYSTEM = (
    "You answer questions about a vehicle fleet monitored by fleetstream (Kafka, Spark, a Delta lake). "
    "Use the tools to look things up; answer briefly, in plain text, with the figures the tools gave. "
    "SQL goes to Spark SQL over tables named fleet.<layer>_<name> (the tables tool lists them); only "
    "SELECT, SHOW and DESCRIBE are allowed."
)
#: tool name -> (the bot's command, its description, its parameters as JSON schema properties)
TOOLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "status": ("status", "The stack's parts and the streaming queries' batches and lag.", {}),
    "alerts": ("alerts", "Alerts of the last 15 minutes: per rule, or for one rule or one car.",
               {"filter": {"type": "string", "description": "a rule name or a car id (optional)"}}),
    "car": ("car", "A car's latest state and its open alerts.",
            {"car_id": {"type": "string", "description": "e.g. car-00042"}}),
    "tables": ("tables", "The lake's named tables and their rows.", {}),
    "count": ("count", "One table's rows.", {"table": {"type": "string", "description": "e.g. fleet.silver_alerts"}}),
    "sql": ("sql", "A read-only Spark SQL question to the lake.",
            {"statement": {"type": "string", "description": "SELECT ..."}}),
    "dags": ("dags", "Airflow's DAGs: schedule, paused or not, the newest run's state.", {}),
    "runs": ("runs", "One Airflow DAG's newest runs and their states.",
             {"dag_id": {"type": "string", "description": "e.g. lake_maintenance"}}),
}  # fmt: skip
_TAGS = re.compile(r"</?(pre|b)>")


def enabled(settings: Settings) -> bool:
    return bool(settings.bot.ai_base_url and settings.bot.ai_model)


def tool_specs() -> list[dict[str, Any]]:
    """The tools in the chat completions API's format."""
    specs = []
    for name, (_, description, properties) in TOOLS.items():
        required = [p for p in properties if p != "filter"]
        parameters = {"type": "object", "properties": properties, "required": required}
        specs.append({"type": "function", "function": {"name": name, "description": description,
                                                       "parameters": parameters}})  # fmt: skip
    return specs


def _plain(html_text: str) -> str:
    """A command's Telegram HTML as plain text for the model."""
    import html

    return html.unescape(_TAGS.sub("", html_text))


def call_tool(settings: Settings, name: str, arguments: str, run: Callable[[Settings, str], str]) -> str:
    """Run one tool call through the bot's own command (``run``: the bot's answer function)."""
    if name not in TOOLS:
        return f"there is no tool {name}"
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return "the arguments were not JSON"
    command = TOOLS[name][0]
    values = [str(v) for v in args.values() if v not in (None, "")] if isinstance(args, dict) else []
    return _plain(run(settings, " ".join([f"/{command}", *values])))


def ask(settings: Settings, question: str, run: Callable[[Settings, str], str]) -> str:
    """The model's answer to ``question`` (plain text), after at most ``bot.ai_max_steps`` rounds of
    tool calls."""
    from openai import APIError, OpenAI

    if not enabled(settings):
        raise FleetstreamError("/ai is off: set FLEETSTREAM_BOT__AI_BASE_URL and FLEETSTREAM_BOT__AI_MODEL")
    if not question.strip():
        raise FleetstreamError("usage: /ai <question>, for example /ai which cars overheated in the last 15 minutes?")
    key = settings.bot.ai_api_key.get_secret_value() if settings.bot.ai_api_key else "unset"
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    model = str(settings.bot.ai_model)
    steps = settings.bot.ai_max_steps
    try:
        with OpenAI(base_url=settings.bot.ai_base_url, api_key=key, timeout=settings.bot.ai_timeout_s,
                    max_retries=2) as client:  # fmt: skip
            return _converse(settings, client, model, messages, steps, run)
    except APIError as exc:  # the API's words, without the key should it echo it
        raise FleetstreamError(f"the model's API answered: {str(exc).replace(key, '***')}") from None


def _converse(
    settings: Settings,
    client: Any,
    model: str,
    messages: list[dict[str, Any]],
    steps: int,
    run: Callable[[Settings, str], str],
) -> str:
    """Rounds of tool calls, ``steps`` at most; the last request allows none, so it answers."""
    for step in range(steps + 1):
        last = step == steps
        response = client.chat.completions.create(model=model, messages=messages, tools=tool_specs(),
                                                  tool_choice="none" if last else "auto")  # fmt: skip
        reply = response.choices[0].message
        calls = reply.tool_calls or []
        if not calls or last:
            return (reply.content or "").strip() or "the model gave no answer"
        messages.append({"role": "assistant", "content": reply.content,
                         "tool_calls": [c.model_dump() for c in calls]})  # fmt: skip
        for c in calls:
            name, arguments = c.function.name, c.function.arguments
            log.info("/ai: the model calls %s(%s)", name, arguments[:200])
            messages.append(
                {"role": "tool", "tool_call_id": c.id, "content": call_tool(settings, name, arguments, run)}
            )
    return "the model gave no answer"
