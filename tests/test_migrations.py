"""Migrations: applied once each, safe under concurrent runs, refused when they differ."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from shared.db import migrate


async def _applied(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migration ORDER BY version")
        return [(r["version"], r["checksum"]) for r in rows]
    finally:
        await conn.close()


async def test_fresh_database_gets_every_migration_and_btree_gist(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        applied = await migrate.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.code_migrations()]
        assert await migrate.migrate(conn) == []  # a second run has nothing to do
        assert await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'btree_gist'")
    finally:
        await conn.close()


async def test_two_migrate_commands_at_once_both_succeed_and_apply_each_once(
    empty_db_url: str,
) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db_url}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first, second = await asyncio.gather(asyncio.to_thread(run), asyncio.to_thread(run))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    outputs = sorted([first.stdout.strip(), second.stdout.strip()])
    assert outputs[0].startswith("applied ")
    assert outputs[1] == "database is up to date"
    code = migrate.code_migrations()
    assert await _applied(empty_db_url) == [(m.version, m.checksum) for m in code]


async def test_changed_migration_is_refused(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("UPDATE schema_migration SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(migrate.MigrationMismatch, match="0001_foundation was changed"):
            await migrate.migrate(conn)
    finally:
        await conn.close()


async def test_database_from_a_newer_release_is_refused(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migration (version, name, checksum) VALUES (9999, 'future', 'x')"
        )
        with pytest.raises(migrate.MigrationMismatch, match="9999, which this code does not know"):
            await migrate.pending_migrations(conn)
    finally:
        await conn.close()
    env = {**os.environ, "DATABASE_URL": db_url}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "DATABASE_URL: the database has migration 9999" in result.stderr
