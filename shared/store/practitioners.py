"""Practitioners (owner of `practitioner`).

Invariants: a practitioner's `version` guards their record and their weekly hours alike (a new
week bumps it, `bump_version`), so an If-Match read of either catches a change to both. A
practitioner whom history refers to is never deleted, only deactivated (`delete`); only active
ones are offered for booking (`active_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.store import Executor


@dataclass(frozen=True)
class Practitioner:
    """One `practitioner` row."""

    id: int
    clinic_id: int
    name: str
    email: str | None
    phone: str | None
    active: bool
    version: int


_COLUMNS = "id, clinic_id, name, email, phone, active, version"


@dataclass(frozen=True)
class PractitionerFields:
    """What staff may set: the insert object (with the clinic) and the whole set an update
    writes."""

    name: str
    email: str | None = None
    phone: str | None = None
    active: bool = True


def _values(f: PractitionerFields) -> tuple[Any, ...]:
    """The fields in the column order of the INSERT and UPDATE below."""
    return (f.name, f.email, f.phone, f.active)


async def get(db: Executor, practitioner_id: int) -> Practitioner | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM practitioner WHERE id = $1",  # noqa: S608 - constant
        practitioner_id,
    )
    return None if row is None else Practitioner(**dict(row))


async def lock(conn: asyncpg.Connection, practitioner_id: int) -> Practitioner | None:
    """Read and lock a practitioner for the rest of the caller's transaction (schedule writes
    take it too, so a concurrent removal waits for them)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM practitioner WHERE id = $1 FOR UPDATE",  # noqa: S608
        practitioner_id,
    )
    return None if row is None else Practitioner(**dict(row))


async def list_page(
    db: Executor,
    *,
    clinic_id: int | None,
    active: bool | None,
    after_id: int | None,
    limit: int,
) -> list[Practitioner]:
    """Oldest first, keyset-paginated on id; filters are optional."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM practitioner
        WHERE ($1::bigint IS NULL OR clinic_id = $1)
          AND ($2::boolean IS NULL OR active = $2)
          AND ($3::bigint IS NULL OR id > $3)
        ORDER BY id
        LIMIT $4
        """,  # noqa: S608 - constant
        clinic_id,
        active,
        after_id,
        limit,
    )
    return [Practitioner(**dict(r)) for r in rows]


async def active_ids(db: Executor, clinic_id: int, only: Sequence[int] | None) -> list[int]:
    """The clinic's bookable practitioners, optionally narrowed to `only` (for availability)."""
    rows = await db.fetch(
        """
        SELECT id FROM practitioner
        WHERE clinic_id = $1 AND active AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
        ORDER BY id
        """,
        clinic_id,
        list(only) if only is not None else None,
    )
    return [r["id"] for r in rows]


async def zone(db: Executor, practitioner_id: int) -> tuple[int, str] | None:
    """(clinic id, clinic time zone) of a practitioner, None if unknown."""
    row = await db.fetchrow(
        """
        SELECT p.clinic_id, c.time_zone FROM practitioner p JOIN clinic c ON c.id = p.clinic_id
        WHERE p.id = $1
        """,
        practitioner_id,
    )
    return None if row is None else (row["clinic_id"], row["time_zone"])


async def insert(db: Executor, *, clinic_id: int, fields: PractitionerFields) -> Practitioner:
    row = await db.fetchrow(
        f"""
        INSERT INTO practitioner (clinic_id, name, email, phone, active)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        clinic_id,
        *_values(fields),
    )
    assert row is not None
    return Practitioner(**dict(row))


async def update(
    db: Executor, practitioner_id: int, *, expected_version: int, fields: PractitionerFields
) -> Practitioner | None:
    """None if the row is gone or changed since `expected_version`."""
    row = await db.fetchrow(
        f"""
        UPDATE practitioner SET name = $3, email = $4, phone = $5, active = $6,
               version = version + 1
        WHERE id = $1 AND version = $2
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        practitioner_id,
        expected_version,
        *_values(fields),
    )
    return None if row is None else Practitioner(**dict(row))


async def bump_version(db: Executor, practitioner_id: int, *, expected_version: int) -> int | None:
    """The practitioner's version also guards their weekly hours; None if it moved on."""
    version = await db.fetchval(
        """
        UPDATE practitioner SET version = version + 1
        WHERE id = $1 AND version = $2 RETURNING version
        """,
        practitioner_id,
        expected_version,
    )
    return None if version is None else int(version)


async def delete(conn: asyncpg.Connection, practitioner_id: int) -> bool:
    """Delete the row (and with it their schedule) if nothing refers to it, else deactivate it
    (history keeps pointing at it). Returns whether it was deleted. Must run inside the caller's
    transaction."""
    try:
        # A savepoint, so that a refused DELETE leaves the outer transaction usable.
        async with conn.transaction():
            await conn.execute("DELETE FROM practitioner WHERE id = $1", practitioner_id)
    except asyncpg.ForeignKeyViolationError:
        await conn.execute(
            "UPDATE practitioner SET active = false, version = version + 1 WHERE id = $1",
            practitioner_id,
        )
        return False
    return True
