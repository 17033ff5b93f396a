"""Treatments and their series templates (owner of `treatment` and `treatment_gap`).

A treatment's gaps are part of it: `Treatment.gaps` holds its `treatment_gap` rows (the gap
before session `position`, 2..sessions_max, in local calendar days), every read returns them
with the treatment in the same query, and every write replaces them with it, in the caller's
transaction. Invariants: each update bumps `version` (an update against an older read is
refused, None); a treatment that history refers to is never deleted, only deactivated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.store import Executor


@dataclass(frozen=True)
class GapSpec:
    """One `treatment_gap` row (of the treatment it belongs to)."""

    position: int
    target_days: int
    min_days: int
    max_days: int


@dataclass(frozen=True)
class Treatment:
    """One `treatment` row with its gaps, by position."""

    id: int
    clinic_id: int
    code: str
    name: str
    description: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    needs_consultation: bool
    sessions_min: int
    sessions_max: int
    maintenance_interval_days: int | None
    public: bool
    active: bool
    version: int
    gaps: list[GapSpec]


_COLUMNS = """id, clinic_id, code, name, description, duration_minutes, buffer_before_minutes,
    buffer_after_minutes, needs_consultation, sessions_min, sessions_max,
    maintenance_interval_days, public, active, version"""
# The treatment's columns and its gaps as one JSON array of [position, target, min, max].
_SELECT = """
    SELECT t.id, t.clinic_id, t.code, t.name, t.description, t.duration_minutes,
           t.buffer_before_minutes, t.buffer_after_minutes, t.needs_consultation, t.sessions_min,
           t.sessions_max, t.maintenance_interval_days, t.public, t.active, t.version,
           coalesce(
               (SELECT jsonb_agg(jsonb_build_array(g.position, g.target_days, g.min_days,
                                                   g.max_days) ORDER BY g.position)
                FROM treatment_gap g WHERE g.treatment_id = t.id),
               '[]'::jsonb) AS gaps
    FROM treatment t"""


def _treatment(row: asyncpg.Record) -> Treatment:
    data = dict(row)
    data["gaps"] = [GapSpec(*gap) for gap in data["gaps"]]
    return Treatment(**data)


@dataclass(frozen=True)
class TreatmentFields:
    """What staff may set: the insert object (with the clinic and the gaps) and the whole set
    an update writes. The defaults are the schema's (migrations 0002 and 0003)."""

    code: str
    name: str
    duration_minutes: int
    description: str = ""
    buffer_before_minutes: int = 0
    buffer_after_minutes: int = 0
    needs_consultation: bool = False
    sessions_min: int = 1
    sessions_max: int = 1
    maintenance_interval_days: int | None = None
    public: bool = True
    active: bool = True


def _values(f: TreatmentFields) -> tuple[Any, ...]:
    """The fields in the column order of the INSERT and UPDATE below."""
    return (
        f.code,
        f.name,
        f.description,
        f.duration_minutes,
        f.buffer_before_minutes,
        f.buffer_after_minutes,
        f.needs_consultation,
        f.sessions_min,
        f.sessions_max,
        f.maintenance_interval_days,
        f.public,
        f.active,
    )


async def get(db: Executor, treatment_id: int) -> Treatment | None:
    row = await db.fetchrow(f"{_SELECT} WHERE t.id = $1", treatment_id)
    return None if row is None else _treatment(row)


async def by_code(db: Executor, clinic_id: int, code: str) -> Treatment | None:
    """The clinic's treatment with this code (codes are unique within a clinic)."""
    row = await db.fetchrow(f"{_SELECT} WHERE t.clinic_id = $1 AND t.code = $2", clinic_id, code)
    return None if row is None else _treatment(row)


async def lock(conn: asyncpg.Connection, treatment_id: int) -> Treatment | None:
    """Read and lock a treatment (its row; the gaps change only with it) for the rest of the
    caller's transaction."""
    row = await conn.fetchrow(f"{_SELECT} WHERE t.id = $1 FOR UPDATE OF t", treatment_id)
    return None if row is None else _treatment(row)


async def list_page(
    db: Executor,
    *,
    clinic_id: int | None,
    active: bool | None,
    after_id: int | None,
    limit: int,
) -> list[Treatment]:
    """Every treatment (inactive ones too, unless filtered), oldest first, keyset on id."""
    rows = await db.fetch(
        f"""{_SELECT}
        WHERE ($1::bigint IS NULL OR t.clinic_id = $1)
          AND ($2::boolean IS NULL OR t.active = $2)
          AND ($3::bigint IS NULL OR t.id > $3)
        ORDER BY t.id
        LIMIT $4
        """,
        clinic_id,
        active,
        after_id,
        limit,
    )
    return [_treatment(r) for r in rows]


async def active_ids(db: Executor, clinic_id: int) -> list[int]:
    """The clinic's active treatments, oldest first (what the booking pages and the public API
    may offer; each decides about `public`)."""
    rows = await db.fetch(
        "SELECT id FROM treatment WHERE clinic_id = $1 AND active ORDER BY id", clinic_id
    )
    return [r["id"] for r in rows]


async def _replace_gaps(conn: Executor, treatment_id: int, gaps: Sequence[GapSpec]) -> None:
    await conn.execute("DELETE FROM treatment_gap WHERE treatment_id = $1", treatment_id)
    await conn.executemany(
        """
        INSERT INTO treatment_gap (treatment_id, position, target_days, min_days, max_days)
        VALUES ($1, $2, $3, $4, $5)
        """,
        [(treatment_id, g.position, g.target_days, g.min_days, g.max_days) for g in gaps],
    )


async def insert(
    conn: asyncpg.Connection,
    *,
    clinic_id: int,
    fields: TreatmentFields,
    gaps: Sequence[GapSpec] = (),
) -> Treatment:
    """Insert a treatment and its gaps, both or neither (a savepoint inside the caller's
    transaction, or a transaction of its own)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            INSERT INTO treatment (clinic_id, code, name, description, duration_minutes,
                buffer_before_minutes, buffer_after_minutes, needs_consultation, sessions_min,
                sessions_max, maintenance_interval_days, public, active)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            RETURNING {_COLUMNS}
            """,  # noqa: S608 - constant
            clinic_id,
            *_values(fields),
        )
        assert row is not None
        await _replace_gaps(conn, row["id"], gaps)
    return Treatment(**dict(row), gaps=sorted(gaps, key=lambda g: g.position))


async def update(
    conn: asyncpg.Connection,
    treatment_id: int,
    *,
    expected_version: int,
    fields: TreatmentFields,
    gaps: Sequence[GapSpec],
) -> Treatment | None:
    """Write every field and the whole series template; None if the row is gone or changed
    since `expected_version`. Run inside the caller's transaction."""
    updated = await conn.fetchval(
        """
        UPDATE treatment SET code = $3, name = $4, description = $5, duration_minutes = $6,
               buffer_before_minutes = $7, buffer_after_minutes = $8, needs_consultation = $9,
               sessions_min = $10, sessions_max = $11, maintenance_interval_days = $12,
               public = $13, active = $14, version = version + 1
        WHERE id = $1 AND version = $2
        RETURNING id
        """,
        treatment_id,
        expected_version,
        *_values(fields),
    )
    if updated is None:
        return None
    await _replace_gaps(conn, treatment_id, gaps)
    return await get(conn, treatment_id)


async def delete(conn: asyncpg.Connection, treatment_id: int) -> bool:
    """Delete the treatment if no appointment, series or hold refers to it, else deactivate it.
    Returns whether it was deleted. Must run inside the caller's transaction."""
    try:
        async with conn.transaction():  # a savepoint: a refused DELETE must not abort the caller
            await conn.execute("DELETE FROM treatment WHERE id = $1", treatment_id)
    except asyncpg.ForeignKeyViolationError:
        await conn.execute(
            "UPDATE treatment SET active = false, version = version + 1 WHERE id = $1",
            treatment_id,
        )
        return False
    return True
