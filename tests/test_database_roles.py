"""The audit and event tables are append-only for the application by privilege: the services act
as regimen_app, which cannot UPDATE, DELETE or TRUNCATE them nor change the schema; migrations
run as the owner (REGIMEN_MIGRATION_DATABASE_URL when the services have their own login role)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from services.booking.app import create_app as create_booking
from services.notifier.app import create_app as create_notifier
from services.scheduler.app import create_app as create_scheduler
from shared.clock import FrozenClock
from shared.config import ConfigError, Settings, load_settings
from shared.db import embedded
from shared.db.pool import APP_ROLE, create_pool
from shared.web import POOL
from tests.conftest import PgServer, serve_app
from tests.processes import REPO_ROOT, clean_env, free_port, start_regimen
from tests.test_processes import PRODUCTION

# Every relation of the schema and what the services may do with it. A new table must be added
# here: append-only history gets HISTORY (and its migration revokes UPDATE, DELETE and adds the
# refuse_change triggers); anything else ORDINARY.
ORDINARY = {"SELECT", "INSERT", "UPDATE", "DELETE"}
HISTORY = {"SELECT", "INSERT"}
READ_ONLY = {"SELECT"}
EXPECTED = {
    "adverse_event": ORDINARY,
    "adverse_event_history": HISTORY,
    "aftercare_template": ORDINARY,
    "alert_settings": ORDINARY,
    "care_team_member": ORDINARY,
    "escalation_step": ORDINARY,
    "on_call_shift": ORDINARY,
    "staff_alert": ORDINARY,
    "staff_alert_notification": HISTORY,
    "appointment": ORDINARY,
    "appointment_detail": ORDINARY,  # a view of appointment; FOR UPDATE on it needs UPDATE
    "appointment_event": HISTORY,
    "audit_log": HISTORY,
    "booking_hold": ORDINARY,
    "clinic": ORDINARY,
    "form_difference": ORDINARY,
    "idempotent_request": ORDINARY,
    "inbound_message": ORDINARY,
    "inbox_item": ORDINARY,
    "link_handover": ORDINARY,
    "call_task": ORDINARY,
    "check_in_plan_step": ORDINARY,
    # answers are written once (record_answer) but the follow-up status moves on
    "check_in": ORDINARY,
    "notification": ORDINARY,
    "notification_attempt": ORDINARY,
    "notification_event": HISTORY,
    "patient": ORDINARY,
    "patient_consent": HISTORY,
    "practitioner": ORDINARY,
    "provider_callback": ORDINARY,
    "rate_limit_counter": ORDINARY,
    "schedule_override": ORDINARY,
    "schema_migration": READ_ONLY,
    "screening_answer": HISTORY,
    "screening_question": ORDINARY,
    "sender_pace": ORDINARY,
    "series": ORDINARY,
    "session_proposal": ORDINARY,
    "session_record": ORDINARY,
    "session_record_history": HISTORY,
    "staff_token": ORDINARY,
    "time_off": ORDINARY,
    "treatment": ORDINARY,
    "treatment_gap": ORDINARY,
    "working_hours": ORDINARY,
}
APPEND_ONLY = sorted(name for name, allowed in EXPECTED.items() if allowed == HISTORY)

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


async def test_every_table_grants_the_services_exactly_what_its_kind_allows(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            """
            SELECT c.relname,
                   array(SELECT p FROM unnest($1::text[]) p
                         WHERE has_table_privilege($2, c.oid, p)) AS granted
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            """,
            list(PRIVILEGES),
            APP_ROLE,
        )
        actual = {row["relname"]: set(row["granted"]) for row in rows}
        unlisted = sorted(set(actual) - set(EXPECTED))
        assert not unlisted, f"classify these tables in EXPECTED (ordinary or history): {unlisted}"
        assert actual == {name: EXPECTED[name] for name in actual}
        assert set(EXPECTED) == set(actual), "EXPECTED names tables the schema no longer has"

        # The history tables are exactly those whose rows refuse change, and all refuse TRUNCATE.
        triggers = await conn.fetch(
            """
            SELECT c.relname,
                   bool_or(t.tgtype & 8 <> 0 AND t.tgtype & 16 <> 0) AS update_delete,
                   bool_or(t.tgtype & 32 <> 0) AS truncate
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            JOIN pg_proc p ON p.oid = t.tgfoid
            WHERE p.proname = 'refuse_change' AND t.tgtype & 2 <> 0  -- BEFORE
            GROUP BY c.relname
            """
        )
        assert sorted(row["relname"] for row in triggers) == APPEND_ONLY
        assert all(row["update_delete"] and row["truncate"] for row in triggers), triggers

        sequences = await conn.fetch(
            """
            SELECT c.relname, has_sequence_privilege($1, c.oid, 'USAGE') AS usage,
                   has_sequence_privilege($1, c.oid, 'UPDATE') AS update
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind = 'S'
            """,
            APP_ROLE,
        )
        assert sequences and all(row["usage"] and not row["update"] for row in sequences)
        assert not await conn.fetchval(
            "SELECT has_schema_privilege($1, 'public', 'CREATE')", APP_ROLE
        )
        assert not await conn.fetchval(
            "SELECT rolcanlogin OR rolsuper FROM pg_roles WHERE rolname = $1", APP_ROLE
        )
    finally:
        await conn.close()


async def test_a_table_created_by_a_later_migration_gets_the_ordinary_grants(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("CREATE TABLE later_feature (id bigserial PRIMARY KEY, note text)")
        granted = await conn.fetchval(
            "SELECT array(SELECT p FROM unnest($1::text[]) p "
            "WHERE has_table_privilege($2, 'later_feature', p))",
            list(PRIVILEGES),
            APP_ROLE,
        )
        assert set(granted) == ORDINARY
    finally:
        await conn.close()


FACTORIES: dict[str, Callable[[Settings, FrozenClock, str], web.Application]] = {
    "booking": create_booking,
    "scheduler": create_scheduler,
    "notifier": create_notifier,
}


@pytest.mark.parametrize("service", sorted(FACTORIES))
async def test_each_service_acts_as_the_application_role_on_one_owner_url(
    service: str, settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    # The tests' URL is a superuser's, like the embedded database of `regimen dev`.
    app = FACTORIES[service](settings, clock, db_url)
    runner, _base = await serve_app(app)
    try:
        async with app[POOL].acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == APP_ROLE
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE audit_log SET reason = 'tidied'")
    finally:
        await runner.cleanup()


async def _one_audit_row(pool: asyncpg.Pool) -> None:
    """An audit row, written as the application writes them (so there is something to lose)."""
    await pool.execute(
        "INSERT INTO audit_log (at, actor_kind, actor_name, action, entity) "
        "VALUES (now(), 'staff', 'Dr Hart (admin)', 'read', 'patient')"
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor_name = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE appointment_event SET reason = ''",
        "DELETE FROM appointment_event",
        "TRUNCATE appointment_event",
        "DELETE FROM notification_event",
        "TRUNCATE notification_event",
        "UPDATE patient_consent SET granted = true",
        "DELETE FROM patient_consent",
        "TRUNCATE patient_consent",
        "UPDATE session_record_history SET reason = 'rewritten'",
        "DELETE FROM session_record_history",
        "TRUNCATE session_record_history",
        "TRUNCATE staff_token",
    ],
)
async def test_the_services_cannot_rewrite_history(pool: asyncpg.Pool, statement: str) -> None:
    await _one_audit_row(pool)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await pool.execute(statement)
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 1


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE shadow (x int)",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "DROP TABLE audit_log",
        "ALTER TABLE patient ADD COLUMN note text",
        "CREATE OR REPLACE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NULL; END; $$",
    ],
)
async def test_the_services_cannot_change_the_schema(pool: asyncpg.Pool, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute(statement)


async def test_the_owner_cannot_truncate_history_either(db_url: str) -> None:
    owner = await asyncpg.connect(db_url)
    try:
        for table in APPEND_ONLY:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="is append-only"):
                await owner.execute(f"TRUNCATE {table} CASCADE")
    finally:
        await owner.close()


async def test_a_role_switch_does_not_outlive_its_acquire(db_url: str) -> None:
    # Code that stepped out of the role (on the superuser's URL of dev) must not hand the owner's
    # rights to the next request that gets the connection.
    pool = await create_pool(db_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET ROLE NONE")
            assert await conn.fetchval("SELECT current_user") != APP_ROLE
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == APP_ROLE
            await conn.execute("RESET ALL")
            await conn.execute("RESET ROLE")
            assert await conn.fetchval("SELECT current_user") == APP_ROLE
    finally:
        await pool.close()


def test_migration_url_without_database_url_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"REGIMEN_MIGRATION_DATABASE_URL": "postgresql://owner@db/regimen"})
    assert str(caught.value).startswith("REGIMEN_MIGRATION_DATABASE_URL: set DATABASE_URL too")
    with pytest.raises(ConfigError, match="^REGIMEN_MIGRATION_DATABASE_URL: scheme must be"):
        load_settings(
            {"DATABASE_URL": "postgresql://db/x", "REGIMEN_MIGRATION_DATABASE_URL": "mysql://db/x"}
        )
    both = load_settings(
        {
            "DATABASE_URL": "postgresql://services@db/regimen",
            "REGIMEN_MIGRATION_DATABASE_URL": "postgresql://owner@db/regimen",
        }
    )
    assert both.database_url == "postgresql://services@db/regimen"
    assert both.migration_database_url == "postgresql://owner@db/regimen"


# -- Production shape: a login role for the services, the owner for migrations -------------------


@dataclass
class LoginRole:
    name: str
    url: str  # the test database, logged in as this role


class MakeRole(Protocol):
    async def __call__(self, database_url: str, *, member: bool) -> LoginRole: ...


def _as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password)}@{host}"))


@pytest.fixture
async def login_role(pg_template: PgServer) -> AsyncIterator[MakeRole]:
    """Login roles (cluster-wide, so dropped afterwards), members of regimen_app or not."""
    made: list[str] = []

    async def create(database_url: str, *, member: bool) -> LoginRole:
        name = "regimen_services_" + secrets.token_hex(4)
        password = secrets.token_urlsafe(16)
        admin = await asyncpg.connect(pg_template.admin_url)
        try:
            # Identifiers and CREATE ROLE's password cannot be parameters; both are ours.
            await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
            made.append(name)
            if member:
                await admin.execute(f"GRANT {APP_ROLE} TO {name}")
        finally:
            await admin.close()
        return LoginRole(name, _as_user(database_url, name, password))

    yield create
    admin = await asyncpg.connect(pg_template.admin_url)
    try:
        for name in made:
            await admin.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await admin.close()


def _regimen(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
async def test_production_roles_migrate_as_owner_and_serve_as_the_services_role(
    empty_db_url: str, login_role: MakeRole, tmp_path: Path
) -> None:
    services = await login_role(empty_db_url, member=True)
    outsider = await login_role(empty_db_url, member=False)

    # The services' URL alone cannot create the schema: the owner's URL is needed.
    refused = await asyncio.to_thread(_regimen, ["migrate"], DATABASE_URL=services.url)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("regimen: DATABASE_URL: ")
    assert "permission denied" in refused.stderr

    migrated = await asyncio.to_thread(
        _regimen,
        ["migrate"],
        DATABASE_URL=services.url,
        REGIMEN_MIGRATION_DATABASE_URL=empty_db_url,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("applied ")

    # Logged in as the services' own role: ordinary work yes, history rewrites and DDL no.
    conn = await asyncpg.connect(services.url)
    try:
        await conn.execute(
            "INSERT INTO audit_log (at, actor_kind, actor_name, action, entity) "
            "VALUES (now(), 'system', 'test', 'test', 'test')"
        )
        for statement in (
            "UPDATE audit_log SET reason = 'x'",
            "DELETE FROM appointment_event",
            "TRUNCATE audit_log",
            "CREATE TABLE shadow (x int)",
            "DROP TABLE staff_token",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()

    # `regimen token create` and `regimen serve` work with the services' URL alone.
    created = await asyncio.to_thread(
        _regimen,
        ["token", "create", "--role", "admin", "--name", "ops"],
        DATABASE_URL=services.url,
    )
    assert created.returncode == 0, created.stderr
    port = free_port()
    log = tmp_path / "serve.log"
    env = clean_env(DATABASE_URL=services.url, REGIMEN_BOOKING_PORT=str(port), **PRODUCTION)
    server = start_regimen(["serve", "booking", "--host", "127.0.0.1"], env, log)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(log.read_text())
            headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
            async with http.get(f"http://127.0.0.1:{port}/api/v1/me", headers=headers) as reply:
                assert reply.status == 200
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 15)

    # A login role that is not a member of regimen_app is told what to grant.
    outside = await asyncio.to_thread(
        _regimen,
        ["token", "create", "--role", "admin", "--name", "intruder"],
        DATABASE_URL=outsider.url,
    )
    assert outside.returncode == 2
    assert outside.stderr.strip() == (
        f"regimen: DATABASE_URL: this login role may not act as {APP_ROLE}; as the database "
        f"owner run 'GRANT {APP_ROLE} TO <the services' login role>'"
    )


async def test_the_compose_init_script_makes_a_services_role_that_cannot_rewrite_history(
    empty_db_url: str, pg_template: PgServer
) -> None:
    """deploy/postgres-init, run by psql as the postgres image runs it, on this test server."""
    script = REPO_ROOT / "deploy" / "postgres-init" / "10-regimen-services-role.sh"
    password = secrets.token_urlsafe(16)
    env = {
        **clean_env(),
        "PATH": f"{embedded.binary('psql').parent}:{os.environ['PATH']}",
        "POSTGRES_USER": urlsplit(empty_db_url).username or "postgres",
        "POSTGRES_DB": empty_db_url,  # psql takes a URL where a database name goes
        "SERVICES_DB_PASSWORD": password,
    }
    try:
        result = await asyncio.to_thread(
            subprocess.run, ["sh", str(script)], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        migrated = await asyncio.to_thread(
            _regimen,
            ["migrate"],
            DATABASE_URL=_as_user(empty_db_url, "regimen_services", password),
            REGIMEN_MIGRATION_DATABASE_URL=empty_db_url,
        )
        assert migrated.returncode == 0, migrated.stderr
        pool = await create_pool(_as_user(empty_db_url, "regimen_services", password))
        try:
            assert await pool.fetchval("SELECT current_user") == APP_ROLE
            assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await pool.execute("DELETE FROM audit_log")
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(pg_template.admin_url)
        try:
            await admin.execute("DROP ROLE IF EXISTS regimen_services")
        finally:
            await admin.close()
