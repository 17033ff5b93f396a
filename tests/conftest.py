"""Test harness: one PostgreSQL per run (DATABASE_URL if given, else embedded), a migrated template
database cloned for every test, the Twilio stand-in and an SMTP server in-process, and a clock
that tests move by hand."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web

from services.devkit.recorder import Recorder
from services.devkit.smtp_sink import RecordingHandler, start_smtp_server
from services.devkit.twilio_standin import TwilioStandIn
from shared.clock import FrozenClock
from shared.config import DEV_TWILIO_ACCOUNT_SID, DEV_TWILIO_FROM, Settings, load_settings
from shared.db import embedded, migrate
from shared.db.pool import APP_ROLE, create_pool

TEMPLATE_DB = "regimen_template"
REPO_ROOT = Path(__file__).resolve().parent.parent


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass
class PgServer:
    admin_url: str  # a database we may connect to for CREATE/DROP DATABASE

    def url(self, name: str) -> str:
        return with_database(self.admin_url, name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield PgServer(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="regimen-test-pg-"))
    server = embedded.start_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield PgServer(server.get_uri("postgres"))
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


async def _recreate_template(server: PgServer) -> None:
    admin = await asyncpg.connect(server.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(server.url(TEMPLATE_DB))
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> PgServer:
    asyncio.run(_recreate_template(pg_server))
    return pg_server


async def create_database(server: PgServer, *, template: str | None = TEMPLATE_DB) -> str:
    name = "t_" + secrets.token_hex(6)
    admin = await asyncpg.connect(server.admin_url)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return name


async def drop_database(server: PgServer, name: str) -> None:
    admin = await asyncpg.connect(server.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db_url(pg_template: PgServer) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = await create_database(pg_template)
    yield pg_template.url(name)
    await drop_database(pg_template, name)


@pytest.fixture
async def empty_db_url(pg_template: PgServer) -> AsyncIterator[str]:
    """A fresh database with no migrations applied."""
    name = await create_database(pg_template, template=None)
    yield pg_template.url(name)
    await drop_database(pg_template, name)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool acting as the services' role (regimen_app), like every service app's: test set-up
    through it proves the application needs no more. Schema changes need `db_url` directly."""
    pool = await create_pool(db_url, max_size=20, act_as=APP_ROLE)
    yield pool
    await pool.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class StandIn:
    twilio: TwilioStandIn
    url: str


@pytest.fixture
async def twilio() -> AsyncIterator[StandIn]:
    standin = TwilioStandIn(DEV_TWILIO_ACCOUNT_SID, "test-auth-token", callback_delay=0.01)
    runner, url = await serve_app(standin.make_app())
    yield StandIn(standin, url)
    await runner.cleanup()


@dataclass
class SmtpSink:
    handler: RecordingHandler
    recorder: Recorder
    server: asyncio.Server
    port: int


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    recorder = Recorder()
    handler = RecordingHandler(recorder)
    server = await start_smtp_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield SmtpSink(handler, recorder, server, port)
    server.close()
    await server.wait_closed()


def make_settings(**overrides: Any) -> Settings:
    base = load_settings({"REGIMEN_STATE_DIR": str(REPO_ROOT / ".regimen" / "test-state")})
    values: dict[str, Any] = {
        "secret_key": "test-secret-key-" + "x" * 32,
        "twilio_account_sid": DEV_TWILIO_ACCOUNT_SID,
        "twilio_auth_token": "test-auth-token",
        "twilio_from": DEV_TWILIO_FROM,
        "twilio_timeout": 2.0,
        "smtp_host": "127.0.0.1",
        "smtp_port": 1,
        "smtp_timeout": 5.0,
        "email_from": "clinic@regimen.test",
        "public_url": "https://clinic.example.test",
    }
    values.update(overrides)
    return base.with_overrides(**values)


@pytest.fixture
def settings(twilio: StandIn, smtp: SmtpSink) -> Settings:
    return make_settings(twilio_api_url=twilio.url, smtp_port=smtp.port)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


@dataclass
class BookingApi:
    """The booking service on a real socket, with the demo clinic and a token per role."""

    base: str
    http: Any
    pool: asyncpg.Pool
    clock: FrozenClock
    tokens: dict[str, str]
    clinic_id: int

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: Any = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if role is not None:
            all_headers["Authorization"] = f"Bearer {self.tokens[role]}"
        async with self.http.request(
            method, self.base + path, json=json, headers=all_headers, params=params
        ) as response:
            if response.content_type in ("application/json", "application/problem+json"):
                body = await response.json(content_type=None)
            else:
                body = await response.text()
            return Reply(response.status, body, response.headers)


@pytest.fixture
async def booking_api(
    settings: Settings, clock: FrozenClock, db_url: str, pool: asyncpg.Pool
) -> AsyncIterator[BookingApi]:
    import aiohttp

    from services.booking.app import create_app
    from services.devkit.demo_data import seed_demo_data
    from shared.store import staff_tokens

    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    clinic_id = int(await pool.fetchval("SELECT min(id) FROM clinic"))
    tokens = {}
    for role in staff_tokens.ROLES:
        tokens[role], _ = await staff_tokens.insert(
            pool, name=f"test {role}", role=role, now=clock.now()
        )
    runner, base = await serve_app(create_app(settings, clock, db_url))
    async with aiohttp.ClientSession() as http:
        yield BookingApi(base, http, pool, clock, tokens, clinic_id)
    await runner.cleanup()
