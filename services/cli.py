"""The `regimen` command: dev, migrate, serve SERVICE, token create / list / revoke, db stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from aiohttp import web

from shared.clock import Clock, FileOffsetClock, SystemClock
from shared.config import ConfigError, Settings, load_settings
from shared.db import embedded, migrate
from shared.db.pool import APP_ROLE, connect
from shared.domain.names import unsafe_name_character
from shared.logging import configure_logging
from shared.runner import Served, serve_until_signal
from shared.store import audit, staff_tokens
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
    # load_settings(mode="production") refused an unset DATABASE_URL: no embedded database here.
    assert settings.database_url is not None
    url = settings.database_url
    factory, port = _factories()[service]
    clock: Clock = SystemClock()
    if settings.dev_clock_file is not None:
        clock = FileOffsetClock(settings.dev_clock_file)
        log.warning(
            "the clock follows REGIMEN_DEV_CLOCK_FILE (tests and demos only, never production)",
            extra={"offset_seconds": clock.offset.total_seconds()},
        )
    app = factory(settings, clock, url)
    if isinstance(clock, FileOffsetClock):
        app.cleanup_ctx.append(_following(clock))
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


def _following(clock: FileOffsetClock) -> Callable[[web.Application], AsyncIterator[None]]:
    async def follow(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(clock.follow())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return follow


# Token commands are audited like the admin API's, under this name.
CLI_ACTOR = audit.Actor("system", None, "regimen token (command line)")


@asynccontextmanager
async def _token_database(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the services act (DATABASE_URL, or the embedded database that a running
    `regimen dev` also uses), to a migrated database."""
    url, _server = await embedded.database_url(settings.database_url, settings.state_dir)
    conn = await connect(url, act_as=APP_ROLE)
    try:
        if await migrate.pending_migrations(conn):
            raise ConfigError("DATABASE_URL: the database is not migrated; run 'regimen migrate'")
        yield conn
    finally:
        await conn.close()


async def cmd_token_create(settings: Settings, role: str, name: str) -> int:
    now = SystemClock().now()
    async with _token_database(settings) as conn, conn.transaction():
        token, created = await staff_tokens.insert(
            conn,
            name=name,
            role=role,  # type: ignore[arg-type]
            now=now,
        )
        await audit.insert(
            conn,
            at=now,
            actor=CLI_ACTOR,
            action="create",
            entity="staff_token",
            entity_id=created.id,
            details={"staff_token": {"id": created.id, "name": name, "role": role}},
        )
    print(token)
    print(
        f"token {created.id} ({created.role}, {created.name!r}): shown once, store it now",
        file=sys.stderr,
    )
    return 0


def _printable(text: str) -> str:
    # A name with a newline or a bidi override must not forge or reorder rows of the table.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _minute(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else "never"


def _state_text(row: staff_tokens.StaffTokenRow, settings: Settings, now: datetime) -> str:
    limit = staff_tokens.max_age(settings.staff_token_max_age_days)
    state = staff_tokens.state(row, now=now, age_limit=limit)
    ends = staff_tokens.expires_at(row.created_at, limit)
    if state == "revoked":
        return f"revoked {_minute(row.revoked_at)}"
    if state == "expired":
        return f"expired {_minute(ends)}"
    return f"active until {_minute(ends)}" if ends is not None else "active"


async def cmd_token_list(settings: Settings) -> int:
    now = SystemClock().now()
    async with _token_database(settings) as conn:
        rows = await staff_tokens.list_page(conn)
    if not rows:
        print("no tokens; create one with 'regimen token create --role ROLE --name NAME'")
        return 0
    table = [("ID", "NAME", "ROLE", "CREATED (UTC)", "LAST USED (UTC)", "STATE")]
    for row in rows:
        table.append(
            (
                str(row.id),
                _printable(row.name),
                row.role,
                _minute(row.created_at),
                _minute(row.last_used_at),
                _state_text(row, settings, now),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


async def cmd_token_revoke(settings: Settings, name: str) -> int:
    now = SystemClock().now()
    async with _token_database(settings) as conn, conn.transaction():
        revoked = await staff_tokens.revoke_by_name(conn, name, now=now)
        for row in revoked:
            await audit.insert(
                conn,
                at=now,
                actor=CLI_ACTOR,
                action="revoke",
                entity="staff_token",
                entity_id=row.id,
                details={"name": row.name, "role": row.role},
            )
        known = len(revoked) or await staff_tokens.count_named(conn, name)
    shown = _printable(name)
    if not known:
        raise ConfigError(f"no token is named '{shown}' (see 'regimen token list')")
    if not revoked:
        print(f"revoked 0 tokens: every token named '{shown}' was already revoked")
        return 0
    ids = ", ".join(str(row.id) for row in revoked)
    what = "1 token" if len(revoked) == 1 else f"{len(revoked)} tokens"
    print(f"revoked {what} named '{shown}' (id {ids}); from now on every request with it gets 401")
    return 0


async def cmd_db_stop(settings: Settings) -> int:
    pgdata = settings.state_dir / "pgdata"
    # pg_ctl waits for the server to finish; the event loop has nothing else to do meanwhile.
    result = await asyncio.to_thread(embedded.stop_server, pgdata)
    if result.holders:
        pids = ", ".join(str(pid) for pid in result.holders)
        raise ConfigError(
            f"the embedded PostgreSQL of {pgdata} is in use by running regimen process(es) "
            f"{pids}; stop them first (Ctrl-C stops 'regimen dev')"
        )
    if result.stopped:
        print(f"stopped the embedded PostgreSQL of {pgdata}")
    else:
        print(f"no embedded PostgreSQL is running for {pgdata}")
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
    token_commands.add_parser(
        "list", help="every token: id, name, role, created, last used, state (never the token)"
    )
    revoke = token_commands.add_parser("revoke", help="revoke every active token of a name")
    revoke.add_argument("name", help="the name the token was created with (exact)")
    db = commands.add_parser("db", help="the embedded PostgreSQL of REGIMEN_STATE_DIR")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser(
        "stop", help="stop it (after a crash left it running); refused while regimen uses it"
    )
    return parser


def _name(raw: str, what: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= 200:
        raise ConfigError(f"{what}: must be 1 to 200 characters")
    return name


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
        elif args.command == "db":
            coroutine = cmd_db_stop(settings)
        elif args.token_command == "create":
            name = _name(args.name, "--name")
            # A new name must not hide characters; revoke still matches any name already made.
            if (why := unsafe_name_character(name)) is not None:
                raise ConfigError(f"--name: {why}")
            coroutine = cmd_token_create(settings, args.role, name)
        elif args.token_command == "list":
            coroutine = cmd_token_list(settings)
        else:
            coroutine = cmd_token_revoke(settings, _name(args.name, "NAME"))
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
