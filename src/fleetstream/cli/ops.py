"""Operations: notifications (notify summary, critical, test), the stream watchdog, the ops bot."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleetstream.cli.common import _settings, console, failing
from fleetstream.errors import FleetstreamError

notify_app = typer.Typer(
    help="Alert summaries and critical alerts to Telegram, Slack and a webhook (docs/operations.md).",
    no_args_is_help=True,
)


def _print_sent(results: list[Any]) -> int:
    failed = 0
    for r in results:
        span = f"{r.start:%Y-%m-%d %H:%M} to {r.end:%H:%M} UTC"
        if r.error:
            failed += 1
            console.print(f"[red]{r.channel}[/]: {span}: {r.error}", highlight=False)
        elif r.message is None:
            console.print(f"{r.channel}: {span}: nothing to send", highlight=False)
        else:
            console.print(f"{r.channel}: sent {r.message.id} ({span}, {r.message.data['alerts']:,} alerts)",
                          highlight=False)  # fmt: skip
    return failed


@notify_app.command("summary")
def notify_summary(
    minutes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Summarise the newest N closed minutes again, whatever was sent (progress unchanged)."
        ),
    ] = None,
    send_empty: Annotated[
        bool, typer.Option("--send-empty", help="Send a summary of a range without alerts too.")
    ] = False,
    every: Annotated[
        int | None,
        typer.Option(min=5, help="Keep running: a summary run every this many seconds, until Ctrl-C (as cron would)."),
    ] = None,
) -> None:
    """One message per channel for the closed minutes of gold/alerts_per_minute it has not taken yet:
    alerts by rule and color, the top cars, episodes opened and resolved. Run it every minute (the
    alert_summary DAG, or cron); a pause or a burst gives one message for the whole range. Exits 1 when
    a channel failed (it gets the same range next run)."""
    import signal
    import threading

    from fleetstream.ops.notify import send_summaries

    if every is None:
        with failing():
            results = send_summaries(_settings(), minutes=minutes, send_empty=send_empty)
        raise typer.Exit(1 if _print_sent(results) else 0)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"a summary run every {every} s; Ctrl-C stops")
    while not stop.is_set():
        try:
            _print_sent(send_summaries(_settings(), minutes=minutes, send_empty=send_empty))
        except FleetstreamError as exc:  # (a channel's failure is printed above; this is the lake or settings)
            console.print(f"[red]error:[/] {exc}", highlight=False)
        stop.wait(every)


@notify_app.command("critical")
def notify_critical(
    once: Annotated[
        bool, typer.Option("--once", help="Send what alert-data holds (from its start on a first run), then stop.")
    ] = False,
) -> None:
    """Critical alerts from alert-data as they come (an escalated episode, a rule declared critical):
    those within FLEETSTREAM_NOTIFY__CRITICAL_WINDOW_S (10 s) go out as one message. Runs until
    Ctrl-C; a first run starts at the topic's end. Exits 1 when a channel failed (nothing committed)."""
    import signal
    import threading

    from fleetstream.ops.notify import follow_critical

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with failing():
        settings = _settings()
        if not once:
            console.print(f"sending critical alerts from {settings.kafka.topics.alerts}; Ctrl-C stops")
        sent = follow_critical(settings, stop, once=once, on_sent=lambda m: console.print(f"sent {m.id}"))
    console.print(f"{sent} messages sent")


@notify_app.command("test")
def notify_test() -> None:
    """Send a test message to every configured channel."""
    from fleetstream.ops.channels import SendError, channels
    from fleetstream.ops.notify import probe_message

    with failing():
        settings = _settings()
        chosen = channels(settings)
        if not chosen:
            raise FleetstreamError("no notification channel is configured (see `fleetstream notify --help`)")
        message = probe_message(settings)
        failed = 0
        for channel in chosen:
            try:
                channel.send(message)
                console.print(f"{channel.name}: sent")
            except SendError as exc:
                failed += 1
                console.print(f"[red]{channel.name}[/]: {exc}", highlight=False)
    raise typer.Exit(1 if failed else 0)


def watchdog_command(
    max_lag: Annotated[
        int, typer.Option(min=1, help="A query this many Kafka records behind its input is falling behind.")
    ] = 50_000,
    notify: Annotated[
        bool, typer.Option("--notify", help="Tell the notification channels (once per change, and when it is over).")
    ] = False,
    repeat_minutes: Annotated[
        float, typer.Option(min=1, help="With --notify: say it again after this long while it stays wrong.")
    ] = 60.0,
) -> None:
    """Is the streaming pipeline of this state directory running and keeping up? Reads its status
    file (as the dashboard's health page does), the broker, and each query's lag. Exits 0 when all is
    well or it is starting, 1 when something is wrong (each problem printed). Run it every few
    minutes: the Airflow DAG `stream_watchdog`, or cron. It does not restart the stream."""
    import time

    from fleetstream.ops import watchdog
    from fleetstream.ops.channels import SendError, channels

    with failing():
        settings = _settings()
        found = watchdog.check(settings, max_lag)
        for problem in found:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        if not found:
            console.print("the streaming pipeline is running and keeping up")
        failed = 0
        if notify:
            chosen = channels(settings)
            if not chosen:
                console.print("--notify: no notification channel is configured (`fleetstream notify --help`)")
            now = time.time()
            verdict = watchdog.decide(found, watchdog.load_state(settings), now, repeat_minutes * 60)
            if chosen and verdict.message is not None:
                for channel in chosen:
                    try:
                        channel.send(verdict.message)
                        console.print(f"{channel.name}: sent {verdict.message.id}")
                    except SendError as exc:
                        failed += 1
                        console.print(f"[red]{channel.name}[/]: {exc}", highlight=False)
                if not failed:  # a failed channel is told again next run
                    watchdog.save_state(settings, verdict.problems, now)
    raise typer.Exit(1 if found or failed else 0)


def bot_command() -> None:
    """The ops bot on Telegram (long polling): /status, /alerts [car|rule], /car <id>, /tables,
    /count <table>, /sql <SELECT ...>, /dashboards, /ai <question> (with FLEETSTREAM_BOT__AI_BASE_URL and
    __AI_MODEL: an OpenAI-compatible model using the other commands as tools), /help. It answers only the chats in
    FLEETSTREAM_TELEGRAM__ALLOWED_CHAT_IDS (a JSON list); others are refused and logged. Token:
    FLEETSTREAM_TELEGRAM__TOKEN. Runs until Ctrl-C."""
    from fleetstream.ops import bot

    with failing():
        bot.run(_settings())
