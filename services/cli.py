"""The `regimen` command: dev, migrate, serve SERVICE, token create."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from shared.clock import Clock, SystemClock
from shared.config import ConfigError, Settings, load_settings
from shared.db import embedded, migrate
from shared.db.pool import connect
from shared.domain.names import unsafe_name_character
from shared.logging import configure_logging
from shared.runner import Served, serve_until_signal
from shared.store import staff_tokens
from shared.web import create_metrics_app

log = logging.getLogger("regimen.cli")

AppFactory = Callable[[Settings, Clock, str], web.Application]


def _factories() -> dict[str, tuple[AppFactory, Callable[[Settings], int]]]:
    from services.booking.app import create_app as booking
    from services.notifier.app import create_app as notifier
    from services.scheduler.app import create_app as scheduler

    return {
        "booking": (booking, lambda s: s.booking_port),
        "scheduler": (scheduler, lambda s: s.scheduler_port),
        "notifier": (notifier, lambda s: s.notifier_port),
    }


SERVICES = ("booking", "scheduler", "notifier")


async def cmd_migrate(settings: Settings) -> int:
    url, _server = await embedded.database_url(settings.database_url, settings.state_dir)
    conn = await connect(url)
    try:
        applied = await migrate.migrate(conn)
    finally:
        await conn.close()
    if applied:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
        print(f"applied {len(applied)} migration(s): {names}")
    else:
        print("database is up to date")
    return 0


async def cmd_serve(settings: Settings, service: str, host: str) -> int:
    configure_logging(settings.log_level)
    # load_settings(mode="production") refused an unset DATABASE_URL: no embedded database here.
    assert settings.database_url is not None
    url = settings.database_url
    factory, port = _factories()[service]
    app = factory(settings, SystemClock(), url)
    served = [Served(app, host, port(settings))]
    extra: dict[str, object] = {"service": service, "port": port(settings)}
    if service == "booking":
        # Booking's port faces the internet; its metrics are for Prometheus only.
        served.append(Served(create_metrics_app(app), host, settings.booking_metrics_port))
        extra["metrics_port"] = settings.booking_metrics_port
    log.info("starting", extra=extra)
    await serve_until_signal(served)
    log.info("stopped", extra={"service": service})
    return 0


async def cmd_token_create(settings: Settings, role: str, name: str) -> int:
    url, _server = await embedded.database_url(settings.database_url, settings.state_dir)
    conn = await connect(url)
    try:
        pending = await migrate.pending_migrations(conn)
        if pending:
            raise ConfigError("DATABASE_URL: the database is not migrated; run 'regimen migrate'")
        token, created = await staff_tokens.create_token(
            conn,
            name=name,
            role=role,  # type: ignore[arg-type]
            now=SystemClock().now(),
        )
    finally:
        await conn.close()
    print(token)
    print(
        f"token {created.id} ({created.role}, {created.name!r}): shown once, store it now",
        file=sys.stderr,
    )
    return 0


async def cmd_dev(settings: Settings, use_database_url: bool) -> int:
    from services.devkit.dev import run_dev

    await run_dev(settings, use_database_url=use_database_url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regimen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="the whole system with local stand-ins, for development")
    dev.add_argument(
        "--use-database-url",
        action="store_true",
        help="run against DATABASE_URL instead of the embedded database: its queued messages "
        "then go to the local stand-ins and are marked sent",
    )
    commands.add_parser("migrate", help="apply pending database migrations")
    serve = commands.add_parser("serve", help="run one service (production)")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    token = commands.add_parser("token", help="admin API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="print a new token once")
    create.add_argument("--role", required=True, choices=staff_tokens.ROLES)
    create.add_argument("--name", required=True, help="who or what the token is for")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(mode="production" if args.command == "serve" else "dev")
        if args.command == "dev":
            coroutine = cmd_dev(settings, args.use_database_url)
        elif args.command == "migrate":
            coroutine = cmd_migrate(settings)
        elif args.command == "serve":
            coroutine = cmd_serve(settings, args.service, args.host)
        else:
            if not 1 <= len(args.name.strip()) <= 200:
                raise ConfigError("--name: must be 1 to 200 characters")
            if (why := unsafe_name_character(args.name.strip())) is not None:
                raise ConfigError(f"--name: {why}")
            coroutine = cmd_token_create(settings, args.role, args.name.strip())
        return asyncio.run(coroutine)
    except ConfigError as exc:
        print(f"regimen: {exc}", file=sys.stderr)
        return 2
    except migrate.MigrationMismatch as exc:
        print(f"regimen: DATABASE_URL: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
