"""The `regimen` command: dev, migrate, serve SERVICE, token create."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

import asyncpg
from aiohttp import web

from shared.clock import Clock, SystemClock
from shared.config import ConfigError, Settings, load_settings
from shared.db import embedded, migrate
from shared.db.pool import APP_ROLE, connect
from shared.logging import configure_logging
from shared.runner import Served, serve_until_signal
from shared.store import staff_tokens

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
    # The schema owner's URL when the services have their own (least-privilege) login role.
    setting = "DATABASE_URL"
    if settings.migration_database_url:
        url, setting = settings.migration_database_url, "REGIMEN_MIGRATION_DATABASE_URL"
    conn = await connect(url, setting=setting)
    try:
        applied = await migrate.migrate(conn)
    except (migrate.MigrationMismatch, migrate.MigrationFailed) as exc:
        raise ConfigError(f"{setting}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        # e.g. the services' login role, which may not create the migrations table
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{setting}: cannot migrate: {reason}") from exc
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
    if settings.database_url is None:
        log.warning("DATABASE_URL is unset: serving from the embedded PostgreSQL")
    url, _server = await embedded.database_url(settings.database_url, settings.state_dir)
    factory, port = _factories()[service]
    app = factory(settings, SystemClock(), url)
    log.info("starting", extra={"service": service, "port": port(settings)})
    await serve_until_signal([Served(app, host, port(settings))])
    log.info("stopped", extra={"service": service})
    return 0


async def cmd_token_create(settings: Settings, role: str, name: str) -> int:
    url, _server = await embedded.database_url(settings.database_url, settings.state_dir)
    conn = await connect(url, act_as=APP_ROLE)
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


async def cmd_dev(settings: Settings) -> int:
    from services.devkit.dev import run_dev

    await run_dev(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regimen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="the whole system with local stand-ins, for development")
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
            coroutine = cmd_dev(settings)
        elif args.command == "migrate":
            coroutine = cmd_migrate(settings)
        elif args.command == "serve":
            coroutine = cmd_serve(settings, args.service, args.host)
        else:
            if not 1 <= len(args.name.strip()) <= 200:
                raise ConfigError("--name: must be 1 to 200 characters")
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
