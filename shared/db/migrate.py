"""Numbered SQL migrations, applied in order under an advisory lock.

This module owns the `schema_migration` table. Several replicas may run `regimen migrate` at the
same moment: the advisory lock serialises them, and each one re-reads what is applied after taking
it, so every migration runs exactly once. A database whose applied migrations differ from the code's
(a file edited after it ran, or a newer release already applied) is refused, never "repaired".
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import asyncpg

# Any constant works as long as nothing else in the database uses it; this is "regimen" in ASCII.
MIGRATION_LOCK_KEY = 0x72_65_67_69_6D_65_6E

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationMismatch(Exception):
    """The database's applied migrations are not a prefix of the code's."""


class MigrationFailed(Exception):
    """A migration's SQL failed (and was rolled back); the message names it and says why."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@functools.cache
def code_migrations() -> tuple[Migration, ...]:
    """The migration files shipped with the code, read once per process (`/readyz` compares
    them with the database on every probe)."""
    found = []
    for entry in resources.files("shared.db.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 1..n without gaps: {versions}")
    return tuple(found)


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


async def applied_migrations(conn: asyncpg.Connection) -> dict[int, str]:
    """Version -> checksum of what the database has; empty when nothing was ever applied."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migration') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migration ORDER BY version")
    return {row["version"]: row["checksum"] for row in rows}


def check_consistency(applied: dict[int, str], code: Sequence[Migration]) -> list[Migration]:
    """Return the pending migrations, or raise MigrationMismatch naming the first difference."""
    known = {m.version: m for m in code}
    for version, checksum in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationMismatch(
                f"the database has migration {version:04d}, which this code does not know "
                "(was a newer release deployed?)"
            )
        if migration.checksum != checksum:
            raise MigrationMismatch(
                f"migration {version:04d}_{migration.name} was changed after it was applied"
            )
    return [m for m in code if m.version not in applied]


async def pending_migrations(conn: asyncpg.Connection) -> list[Migration]:
    return check_consistency(await applied_migrations(conn), code_migrations())


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply what is pending, each migration in its own transaction; return what was applied."""
    code = code_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        pending = check_consistency(await applied_migrations(conn), code)
        for migration in pending:
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as error:
                    hint = f" ({error.hint})" if getattr(error, "hint", None) else ""
                    raise MigrationFailed(
                        f"migration {migration.version:04d}_{migration.name} failed: "
                        f"{str(error).splitlines()[0]}{hint}"
                    ) from error
                await conn.execute(
                    "INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        return pending
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
