"""`fleetstream bot`: the ops bot on Telegram (long polling), answering allowed chats only.

The answers are computed by :func:`answer` (a command line in, Telegram HTML out), from the same
sources as the rest of the product: the stack's status and the stream's status file, the lake's
tables through delta-rs, and SQL through the running SQL endpoint (read-only there too). The
Telegram side is python-telegram-bot's ``Application``: long polling, Ctrl-C and SIGTERM stop it
cleanly, replies are rate limited (a 429 waits as asked) and retried on a server error.

``/ai <question>`` (:mod:`fleetstream.ops.assistant`) asks a model behind an OpenAI-compatible API,
with the read-only commands as its tools; off until configured. ``/dags``, ``/run``, ``/runs`` and
``/kill`` go to Airflow's REST API (:mod:`fleetstream.ops.airflow_api`).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import logging
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError

log = logging.getLogger(__name__)
UTC = dt.UTC
RECENT = dt.timedelta(minutes=15)
#: what /sql passes on to the endpoint (the endpoint refuses every write on its own, too)
READ_STATEMENT = re.compile(r"^\s*(select|with|show|describe|desc|explain)\b", re.IGNORECASE)
PROMPT = re.compile(r"^(?:\d+: jdbc:\S*> ?)+")
MAX_CHARS = 3500  # a Telegram message holds 4,096 characters


@dataclass(frozen=True)
class Command:
    usage: str
    help: str
    run: Callable[[Settings, list[str]], str]


def _pre(text: str) -> str:
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + "\n..."
    return f"<pre>{html.escape(text)}</pre>"


def _table(frame: pl.DataFrame) -> str:
    """A small frame as aligned monospace text."""
    columns = frame.columns
    rows = [["" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v) for v in r] for r in frame.rows()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _ago(ms: float | None, now: dt.datetime) -> str:
    if ms is None:
        return "never"
    seconds = max(0.0, now.timestamp() - ms / 1000)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


# --- commands ------------------------------------------------------------------------------------


def _help(settings: Settings, args: list[str]) -> str:
    lines = [f"{c.usage}  {c.help}" for c in COMMANDS.values()]
    return "<b>fleetstream bot</b>\n" + _pre("\n".join(lines))


def _status(settings: Settings, args: list[str]) -> str:
    from fleetstream.local import stack
    from fleetstream.pipeline.monitor import STATUS_FILE, read_status

    result = stack.status(settings)
    parts = [f"{p.name}: {'healthy' if p.healthy else p.detail} ({p.address})" for p in result.parts]
    status = read_status(settings.state_dir / STATUS_FILE)
    if status is None:
        queries = ["stream: no status file (not running here)"]
    else:
        age = time.time() - status.written_at
        queries = [f"stream: {status.phase}, reported {age:.0f} s ago"]
        for q in status.queries:
            lag = "?" if q.lag is None else f"{q.lag:,} {q.lag_unit}"
            queries.append(f"  {q.name}: {q.state}, batch {q.batch}, lag {lag}, {q.batch_ms:,} ms/batch")
    return "<b>status</b>\n" + _pre("\n".join(parts + queries))


def _alerts(settings: Settings, args: list[str]) -> str:
    from fleetstream.lake import read

    now = dt.datetime.now(UTC)
    alerts = read.recent_alerts(settings, now - RECENT)
    if alerts is None or alerts.height == 0:
        return "no alerts in the last 15 minutes"
    if not args:
        counts = alerts.group_by("rule").agg(pl.len().alias("alerts"), pl.col("car_id").n_unique().alias("cars"))
        return "<b>alerts, last 15 minutes</b>\n" + _pre(_table(counts.sort("alerts", descending=True)))
    wanted = args[0]
    by_rule = alerts.filter(pl.col("rule") == wanted)
    if by_rule.height:
        top = (
            by_rule.group_by("car_id")
            .agg(pl.len().alias("alerts"))
            .sort(["alerts", "car_id"], descending=[True, False])
        )
        return f"<b>{html.escape(wanted)}, last 15 minutes</b>: {by_rule.height:,} alerts\n" + _pre(
            _table(top.head(10))
        )
    by_car = alerts.filter(pl.col("car_id") == wanted)
    if by_car.height:
        newest = (
            by_car.sort("event_time", descending=True)
            .head(10)
            .with_columns(pl.from_epoch("event_time", time_unit="ms").dt.strftime("%H:%M:%S").alias("at"))
        )
        return f"<b>{html.escape(wanted)}, last 15 minutes</b>: {by_car.height:,} alerts\n" + _pre(
            _table(newest.select("at", "rule", "severity"))
        )
    return f"no alerts for {html.escape(wanted)} (a rule or a car) in the last 15 minutes"


def _car(settings: Settings, args: list[str]) -> str:
    from fleetstream.lake import read

    if not args:
        raise FleetstreamError("usage: /car <car_id>, for example /car car-00042")
    car_id = args[0]
    state = read.car_state(settings)
    row = None if state is None else state.filter(pl.col("car_id") == car_id)
    if row is None or row.height == 0:
        return f"no car {html.escape(car_id)} in gold/car_state"
    r = row.row(0, named=True)
    now = dt.datetime.now(UTC)
    lines = [f"last report: {_ago(r.get('event_time'), now)}"]
    for key, unit in (("speed", " km/h"), ("rpm", " rpm"), ("gear", ""), ("fuel_level", " %"), ("coolant_temp", " °C")):
        value = r.get(key)
        if value is not None:
            lines.append(f"{key}: {f'{value:.1f}' if isinstance(value, float) else value}{unit}")
    if r.get("lat") is not None:
        lines.append(f"position: {r['lat']:.5f}, {r['lon']:.5f}")
    for key in ("model", "color"):
        if r.get(key):
            lines.append(f"{key}: {r[key]}")
    episodes = read.episodes(settings, now - RECENT)
    opened = (
        []
        if episodes is None
        else episodes.filter((pl.col("car_id") == car_id) & (pl.col("status") == "open")).rows(named=True)
    )
    lines.append("open alerts: " + (", ".join(f"{e['rule']} ({e['severity']})" for e in opened) or "none"))
    return f"<b>{html.escape(car_id)}</b>\n" + _pre("\n".join(lines))


def _resolve(name: str) -> str:
    """A lake table from ``fleet.silver_telemetry``, ``silver_telemetry`` or ``silver/telemetry``."""
    from fleetstream.lake.catalog import NAMED, SCHEMA, table_of

    if name in NAMED:
        return name
    try:
        return table_of(name if "." in name else f"{SCHEMA}.{name}")
    except KeyError:
        raise FleetstreamError(f"no table {name}; /tables lists them") from None


def _tables(settings: Settings, args: list[str]) -> str:
    from fleetstream.lake.catalog import NAMED, sql_name
    from fleetstream.lake.read import table_rows

    lines = []
    for table in NAMED:
        rows = table_rows(settings, table)
        lines.append(f"{sql_name(table)}  {'not there yet' if rows is None else f'{rows:,} rows'}")
    return "<b>tables</b>\n" + _pre("\n".join(lines))


def _count(settings: Settings, args: list[str]) -> str:
    from fleetstream.lake.catalog import sql_name
    from fleetstream.lake.read import table_rows

    if not args:
        raise FleetstreamError("usage: /count <table>, for example /count fleet.silver_telemetry")
    table = _resolve(args[0])
    rows = table_rows(settings, table)
    if rows is None:
        return f"{sql_name(table)} is not there yet"
    return f"{sql_name(table)}: {rows:,} rows"


def _sql(settings: Settings, args: list[str]) -> str:
    from fleetstream.local.stack import sql_answers

    statement = " ".join(args).strip().rstrip(";")
    if not statement:
        raise FleetstreamError("usage: /sql SELECT ... (read-only; /tables lists the names)")
    if not READ_STATEMENT.match(statement) or ";" in statement:
        raise FleetstreamError("one SELECT, WITH, SHOW, DESCRIBE or EXPLAIN statement: the lake is read-only here")
    if not settings.sql.read_only:
        raise FleetstreamError("the SQL endpoint accepts writes (FLEETSTREAM_SQL__READ_ONLY=false): /sql is off")
    if not sql_answers(settings):
        raise FleetstreamError(f"no SQL endpoint answers on {settings.sql.url}: start it with `fleetstream up --sql`")
    columns, rows, more = query_endpoint(settings, statement)
    frame = pl.DataFrame([list(r) for r in rows], schema=columns, orient="row") if rows else pl.DataFrame()
    shown = _table(frame) if rows else "(no rows)"
    note = f"the first {len(rows)} rows" if more else f"{len(rows)} rows"
    return _pre(shown) + f"\n{note}"


def query_endpoint(settings: Settings, statement: str) -> tuple[list[str], list[tuple[str, ...]], bool]:
    """One read statement through beeline on the running endpoint: (columns, at most
    ``bot.sql_row_limit`` rows, whether there were more). A SELECT is limited on the server."""
    from fleetstream.sql.client import beeline_argv

    limit = settings.bot.sql_row_limit
    query = statement
    if re.match(r"^\s*(select|with)\b", statement, re.IGNORECASE):
        # the user's own question, to a read-only endpoint: limited there rather than fetched whole
        query = f"SELECT * FROM ({statement}) AS q LIMIT {limit + 1}"  # noqa: S608
    with beeline_argv(settings, "--silent=true", "--outputformat=csv2", "--showHeader=true", "-e", query) as argv:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=settings.bot.sql_timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise FleetstreamError(
                f"the question took longer than {settings.bot.sql_timeout_s:g} s; given up"
            ) from None
    if done.returncode != 0:
        errors = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("Error:")]
        raise FleetstreamError(errors[0][:400] if errors else f"beeline exited {done.returncode}")
    # beeline -e --silent may print its prompt(s) at the start of the first line: "0: jdbc:hive2://...> "
    lines = [PROMPT.sub("", line) for line in done.stdout.splitlines()]
    parsed = list(csv.reader(io.StringIO("\n".join(line for line in lines if line.strip()))))
    if not parsed:
        return [], [], False
    header, rows = parsed[0], [tuple(r) for r in parsed[1:]]
    return header, rows[:limit], len(rows) > limit


def _dashboards(settings: Settings, args: list[str]) -> str:
    base = settings.dashboard.url
    pages = (
        ("fleet overview", ""),
        ("alerts", "alerts"),
        ("vehicle cockpit", "cockpit"),
        ("pipeline health", "health"),
    )
    return "<b>dashboards</b>\n" + "\n".join(f"{name}: {html.escape(f'{base}/{path}')}" for name, path in pages)


def _when(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ")[:19]


def _dags(settings: Settings, args: list[str]) -> str:
    from fleetstream.ops.airflow_api import AirflowClient

    with AirflowClient(settings) as airflow:
        dags = airflow.dags()
        rows = []
        for dag in dags:
            newest = airflow.runs(dag["dag_id"], limit=1)
            last = f"{newest[0]['state']} {_when(newest[0].get('run_after'))}" if newest else "no run"
            schedule = dag.get("timetable_summary") or "manual"
            rows.append((dag["dag_id"], schedule, "paused" if dag.get("is_paused") else "on", last))
    frame = pl.DataFrame(rows, schema=["dag", "schedule", "state", "newest run"], orient="row")
    return f"<b>Airflow DAGs</b> ({html.escape(settings.airflow.base_url)})\n" + _pre(_table(frame))


def _run(settings: Settings, args: list[str]) -> str:
    from fleetstream.ops.airflow_api import AirflowClient

    if len(args) != 1:
        return "usage: /run &lt;dag_id&gt; (/dags lists them)"
    with AirflowClient(settings) as airflow:
        dags = {d["dag_id"]: d for d in airflow.dags()}
        dag = dags.get(args[0])
        if dag is None:
            return f"no DAG {html.escape(args[0])}; the DAGs: {html.escape(', '.join(sorted(dags)))}"
        waits = ""
        if dag.get("is_paused"):
            if dag.get("timetable_summary"):  # unpausing a scheduled DAG starts its schedule too: the user's call
                waits = "; the DAG is paused: the run waits until it is unpaused (in Airflow's UI)"
            else:  # a manual-only DAG: unpausing it starts nothing else
                airflow.unpause(args[0])
        started = airflow.trigger(args[0])
    run_id = html.escape(started["dag_run_id"])
    return f"started {html.escape(args[0])}: run <code>{run_id}</code> ({started['state']}){waits}"


def _runs(settings: Settings, args: list[str]) -> str:
    from fleetstream.ops.airflow_api import AirflowClient

    if len(args) != 1:
        return "usage: /runs &lt;dag_id&gt;"
    with AirflowClient(settings) as airflow:
        runs = airflow.runs(args[0], limit=10)
    if not runs:
        return f"{html.escape(args[0])} has no runs yet"
    rows = [(r["dag_run_id"], r["state"], _when(r.get("start_date")), _when(r.get("end_date"))) for r in runs]
    frame = pl.DataFrame(rows, schema=["run", "state", "started", "ended"], orient="row")
    return f"<b>runs of {html.escape(args[0])}</b>\n" + _pre(_table(frame))


def _kill(settings: Settings, args: list[str]) -> str:
    from fleetstream.ops.airflow_api import AirflowClient

    if len(args) != 1:
        return "usage: /kill &lt;run_id&gt; (/runs &lt;dag_id&gt; lists them)"
    with AirflowClient(settings) as airflow:
        killed = airflow.kill(args[0])
    log.info("bot: run %s of %s marked failed", args[0], killed["dag_id"])
    return f"run <code>{html.escape(args[0])}</code> of {html.escape(killed['dag_id'])} is now {killed['state']}"


def _ai(settings: Settings, args: list[str]) -> str:
    from fleetstream.ops.assistant import ask

    text = ask(settings, " ".join(args), answer)
    return html.escape(text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " ...")


COMMANDS: dict[str, Command] = {
    "status": Command("/status", "the stack, the stream's queries and their lag", _status),
    "alerts": Command("/alerts [car|rule]", "alerts of the last 15 minutes", _alerts),
    "car": Command("/car <id>", "a car's latest state and open alerts", _car),
    "tables": Command("/tables", "the lake's tables and their rows", _tables),
    "count": Command("/count <table>", "a table's rows", _count),
    "sql": Command("/sql <SELECT ...>", "a read-only question to the SQL endpoint", _sql),
    "dashboards": Command("/dashboards", "links to the dashboard's pages", _dashboards),
    "dags": Command("/dags", "Airflow's DAGs and their newest runs", _dags),
    "run": Command("/run <dag_id>", "start a run of a DAG now", _run),
    "runs": Command("/runs <dag_id>", "a DAG's newest runs", _runs),
    "kill": Command("/kill <run_id>", "mark a running DAG run failed (its tasks stop)", _kill),
    "ai": Command("/ai <question>", "a question in plain words (when a model is configured)", _ai),
    "help": Command("/help", "this list", _help),
}


def answer(settings: Settings, text: str) -> str:
    """The reply (Telegram HTML) to one message's text from an allowed chat."""
    words = text.strip().split()
    if not words or not words[0].startswith("/"):
        return "send a command; /help lists them"
    name = words[0][1:].split("@", 1)[0].lower()
    command = COMMANDS.get(name)
    if command is None:
        return f"unknown command /{html.escape(name)}; /help lists them"
    try:
        return command.run(settings, words[1:])
    except FleetstreamError as exc:
        return html.escape(str(exc))


def run(settings: Settings) -> None:
    """Long-poll Telegram and answer until Ctrl-C or SIGTERM."""
    import asyncio

    from fleetstream.ops.channels import opt_in_timedelta

    opt_in_timedelta()
    from telegram import Update
    from telegram.error import InvalidToken
    from telegram.ext import AIORateLimiter, Application, ContextTypes, MessageHandler, filters

    from fleetstream.ops.channels import TOKEN_REFUSED, SendError, deliver

    token = settings.telegram.token
    if token is None:
        raise FleetstreamError("no Telegram bot token: set FLEETSTREAM_TELEGRAM__TOKEN")
    allowed = settings.telegram.allowed_chat_ids
    if not allowed:
        raise FleetstreamError(
            "no chat is allowed to use the bot: set FLEETSTREAM_TELEGRAM__ALLOWED_CHAT_IDS (a JSON list of chat ids)"
        )
    base = settings.telegram.base_url.rstrip("/")
    application = (
        Application.builder()
        .token(token.get_secret_value())
        .base_url(f"{base}/bot")
        .base_file_url(f"{base}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=settings.notify.retries))
        .build()
    )

    async def reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or update.effective_chat is None:
            return
        chat = update.effective_chat.id
        log.info("chat %s: %s", chat, (message.text or "")[:200])
        try:
            text = await asyncio.to_thread(answer, settings, message.text or "")
        except Exception:
            log.exception("answering %r", message.text)
            text = "something went wrong answering that; the bot's log says what"
        try:
            await deliver(application.bot, chat, text, settings.notify.retries, "a reply")
        except SendError as exc:
            log.error("%s", exc)

    async def refuse(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat.id if update.effective_chat else None
        user = update.effective_user.id if update.effective_user else None
        log.warning("refused chat %s (user %s): not in FLEETSTREAM_TELEGRAM__ALLOWED_CHAT_IDS", chat, user)
        if chat is not None:
            try:
                await deliver(application.bot, chat, "this chat is not allowed to use this bot", 0, "a refusal")
            except SendError as exc:
                log.error("%s", exc)

    chats = filters.Chat(chat_id=allowed)
    application.add_handler(MessageHandler(chats & filters.TEXT, reply))
    application.add_handler(MessageHandler(~chats, refuse))
    log.info("the bot answers chats %s; Ctrl-C stops it", allowed)
    try:
        application.run_polling(timeout=settings.bot.poll_timeout_s, allowed_updates=[Update.MESSAGE], close_loop=False)
    except InvalidToken:  # its message holds the token: not repeated
        raise FleetstreamError(TOKEN_REFUSED) from None
