"""`regimen dev`: the whole system in one process on the embedded PostgreSQL, with a local SMTP
server, a local Twilio stand-in and the dev inbox."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from services.booking.app import create_app as create_booking
from services.devkit.demo_data import seed_demo_data
from services.devkit.inbox import DevInbox
from services.devkit.recorder import Recorder
from services.devkit.smtp_sink import RecordingHandler, start_smtp_server
from services.devkit.twilio_standin import TwilioStandIn
from services.notifier.app import create_app as create_notifier
from services.scheduler.app import create_app as create_scheduler
from shared.clock import OffsetClock
from shared.config import DEV_TWILIO_FROM, ConfigError, Settings, with_dev_stand_ins
from shared.db import embedded, migrate
from shared.db.pool import connect
from shared.logging import JsonFormatter, quiet_noisy_loggers
from shared.providers.sms import inbound_sms_url
from shared.runner import Served, serve_until_signal
from shared.store import staff_tokens
from shared.web import create_metrics_app

DEV_TOKEN_NAME = "regimen dev"
HOST = "127.0.0.1"


def _configure_dev_logging(state_dir: Path, level: str) -> Path:
    """Everything as JSON lines to a file; warnings and errors also on the terminal."""
    log_dir = state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "dev.log"
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(JsonFormatter())
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setFormatter(JsonFormatter())
    to_terminal.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [to_file, to_terminal]
    root.setLevel(level)
    quiet_noisy_loggers()
    return path


def _load_offset(path: Path) -> timedelta:
    try:
        return timedelta(seconds=float(path.read_text()))
    except (OSError, ValueError):
        return timedelta(0)


def is_embedded_database(url: str, state_dir: Path) -> bool:
    """A URL of the embedded server under `state_dir` (its socket lives in the data folder), as
    every `regimen` command uses when DATABASE_URL is unset."""
    parts = urlsplit(url)
    if parts.hostname:  # a TCP host, not a socket folder
        return False
    sockets = parse_qs(parts.query).get("host", [])
    pgdata = (state_dir / "pgdata").resolve()
    return len(sockets) == 1 and Path(sockets[0]).resolve() == pgdata


def refuse_foreign_database(settings: Settings, *, use_database_url: bool) -> None:
    """Dev sends every queued message to the local stand-ins and marks it sent: against a real
    database that would swallow patients' reminders. Only on the operator's explicit word."""
    url = settings.database_url
    if url is None or use_database_url or is_embedded_database(url, settings.state_dir):
        return
    raise ConfigError(
        "DATABASE_URL: 'regimen dev' would send that database's queued messages to the local "
        "stand-ins and mark them sent; unset DATABASE_URL, or pass --use-database-url"
    )


def webhook_router(settings: Settings) -> Callable[[str], str]:
    """Where a URL Twilio calls leads on this machine, as a load balancer would route it in
    production: the public URL reaches booking (which forwards /twilio/* to the notifier), a
    REGIMEN_TWILIO_CALLBACK_URL of its own reaches the notifier directly."""
    booking_url = f"http://{HOST}:{settings.booking_port}"
    notifier_url = f"http://{HOST}:{settings.notifier_port}"
    public = settings.public_url
    callbacks = settings.twilio_callback_base

    def route(url: str) -> str:
        if callbacks != public and url.startswith(callbacks + "/"):
            return notifier_url + url[len(callbacks) :]
        if url.startswith(public + "/"):
            return booking_url + url[len(public) :]
        return url

    return route


async def run_dev(base: Settings, *, use_database_url: bool = False) -> None:
    refuse_foreign_database(base, use_database_url=use_database_url)
    settings = with_dev_stand_ins(base)
    state = settings.state_dir
    log_path = _configure_dev_logging(state, settings.log_level)
    url, _server = await embedded.database_url(settings.database_url, state)
    # Set-up runs as the schema owner; the services below act as the application role.
    conn = await connect(settings.migration_database_url or url)
    try:
        applied = await migrate.migrate(conn)
        seeded = await seed_demo_data(conn)
        clock = OffsetClock(_load_offset(state / "clock-offset"))
        # Tokens are stored hashed, so each start makes a fresh one and retires the last.
        await staff_tokens.revoke_by_name(conn, DEV_TOKEN_NAME, now=clock.now())
        token, _ = await staff_tokens.insert(
            conn, name=DEV_TOKEN_NAME, role="admin", now=clock.now()
        )
    finally:
        await conn.close()

    assert settings.twilio_account_sid and settings.twilio_auth_token
    recorder = Recorder(state / "dev-inbox.jsonl")
    route_webhook = webhook_router(settings)
    standin = TwilioStandIn(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        recorder=recorder,
        route_webhook=route_webhook,
        callback_delay=0.5,
    )
    inbox = DevInbox(
        recorder=recorder,
        clock=clock,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        # With a Messaging Service SID set there is no From number; replies still need a "To".
        sender=settings.twilio_from or DEV_TWILIO_FROM,
        inbound_url=inbound_sms_url(settings),
        route=route_webhook,
        standin=standin,
        on_clock_change=lambda offset: (state / "clock-offset").write_text(
            str(offset.total_seconds())
        ),
    )
    smtp = await start_smtp_server(RecordingHandler(recorder), HOST, settings.dev_smtp_port)
    booking = create_booking(settings, clock, url)
    served = [
        Served(booking, HOST, settings.booking_port),
        Served(create_metrics_app(booking), HOST, settings.booking_metrics_port),
        Served(create_scheduler(settings, clock, url), HOST, settings.scheduler_port),
        Served(create_notifier(settings, clock, url), HOST, settings.notifier_port),
        Served(standin.make_app(), HOST, settings.dev_twilio_port),
        Served(inbox.make_app(), HOST, settings.dev_inbox_port),
    ]

    database = f"embedded, {state / 'pgdata'}" if _server else "DATABASE_URL"

    async def banner() -> None:
        lines = [
            "",
            "Regimen is running (Ctrl-C stops everything).",
            "",
            f"  Booking page      http://{HOST}:{settings.booking_port}/",
            f"  Admin API         http://{HOST}:{settings.booking_port}/api/v1/",
            f"  Booking metrics   http://{HOST}:{settings.booking_metrics_port}/metrics",
            f"  Scheduler         http://{HOST}:{settings.scheduler_port}/readyz",
            f"  Notifier          http://{HOST}:{settings.notifier_port}/readyz",
            f"  Dev inbox         http://{HOST}:{settings.dev_inbox_port}/",
            f"  Twilio stand-in   {settings.twilio_api_url}",
            f"  Twilio webhooks   {inbound_sms_url(settings)} (inbound SMS)",
            f"  SMTP server       {settings.smtp_host}:{settings.smtp_port}",
            f"  Database          {database}",
            f"  Logs              {log_path}",
            "",
            f"  Admin API token   {token}",
            "  Try it            curl -H 'Authorization: Bearer "
            + token
            + f"' http://{HOST}:{settings.booking_port}/api/v1/me",
            "",
            f"  Migrations applied now: {len(applied)}; demo data "
            + ("created." if seeded else "already present."),
            "",
        ]
        print("\n".join(lines), flush=True)

    try:
        await serve_until_signal(served, on_started=banner)
    finally:
        smtp.close()
        await smtp.wait_closed()
        print("Regimen stopped.", flush=True)
