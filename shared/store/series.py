"""Courses of treatment (owner of `series`): a patient's planned sessions of one treatment.

Invariants: every change bumps `version`, and `update` refuses one made against an older read
(StaleSeries). A change touching several of a series' sessions (a reschedule that shifts later
sessions, cancelling the rest of a course, an erasure) takes the series' lock first (`lock`,
`lock_for_patient`), then its appointments' (shared/store/appointments.py), so such changes run
one at a time per series and never deadlock on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.domain.errors import Stale
from shared.store import Executor

SeriesStatus = Literal["active", "paused", "completed", "cancelled"]


@dataclass(frozen=True)
class Series:
    id: int
    clinic_id: int
    patient_id: int
    treatment_id: int
    planned_sessions: int
    status: SeriesStatus
    plan_notes: str
    version: int
    created_at: datetime
    updated_at: datetime


_COLUMNS = """id, clinic_id, patient_id, treatment_id, planned_sessions, status, plan_notes,
    version, created_at, updated_at"""


async def insert(
    conn: Executor,
    *,
    clinic_id: int,
    patient_id: int,
    treatment_id: int,
    planned_sessions: int,
    now: datetime,
) -> int:
    return int(
        await conn.fetchval(
            """
            INSERT INTO series (clinic_id, patient_id, treatment_id, planned_sessions,
                                created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $5) RETURNING id
            """,
            clinic_id,
            patient_id,
            treatment_id,
            planned_sessions,
            now,
        )
    )


async def get(db: Executor, series_id: int) -> Series | None:
    row = await db.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM series WHERE id = $1
        """,  # noqa: S608 - constant
        series_id,
    )
    return None if row is None else Series(**dict(row))


async def for_patient(db: Executor, patient_id: int) -> list[Series]:
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM series WHERE patient_id = $1 ORDER BY id
        """,  # noqa: S608 - constant
        patient_id,
    )
    return [Series(**dict(r)) for r in rows]


# -- admin API: listing, locking, versioned updates ----------------------------------------------


class StaleSeries(Stale):
    """The series changed since the caller read it (If-Match did not match)."""

    def __init__(self, current: Series) -> None:
        super().__init__("series", current)


async def list_page(
    db: Executor,
    *,
    patient_id: int | None,
    statuses: list[str] | None,
    after_id: int | None,
    limit: int,
) -> list[Series]:
    """Series matching every given filter, by id (keyset pagination)."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM series
        WHERE ($1::bigint IS NULL OR patient_id = $1)
          AND ($2::text[] IS NULL OR status = ANY($2::text[]))
          AND ($3::bigint IS NULL OR id > $3)
        ORDER BY id
        LIMIT $4
        """,  # noqa: S608 - constant
        patient_id,
        statuses,
        after_id,
        limit,
    )
    return [Series(**dict(r)) for r in rows]


async def lock(conn: asyncpg.Connection, series_id: int) -> Series | None:
    """Read and lock a series for the rest of the caller's transaction: changes that touch
    several of its sessions (a reschedule with shifts, cancelling the rest of the course) take
    this lock first, so they run one at a time per series."""
    row = await conn.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM series WHERE id = $1 FOR UPDATE
        """,  # noqa: S608 - constant
        series_id,
    )
    return None if row is None else Series(**dict(row))


async def update(
    conn: asyncpg.Connection,
    series_id: int,
    *,
    plan_notes: str | None,
    status: SeriesStatus | None,
    expected_version: int | None,
    now: datetime,
) -> Series | None:
    """Change the plan notes and/or status (None leaves a field alone) if the version matches.

    None if unknown; raises StaleSeries when someone changed it first.
    """
    current = await lock(conn, series_id)
    if current is None:
        return None
    if expected_version is not None and current.version != expected_version:
        raise StaleSeries(current)
    await conn.execute(
        """
        UPDATE series SET plan_notes = coalesce($2, plan_notes), status = coalesce($3, status),
               version = version + 1, updated_at = $4
        WHERE id = $1
        """,
        series_id,
        plan_notes,
        status,
        now,
    )
    return await get(conn, series_id)


async def lock_for_patient(conn: asyncpg.Connection, patient_id: int) -> list[Series]:
    """Every series of a patient, locked for the caller's transaction in id order (erasure takes
    these before the patient's appointments, like any change touching several sessions)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM series WHERE patient_id = $1 ORDER BY id FOR UPDATE
        """,  # noqa: S608 - constant
        patient_id,
    )
    return [Series(**dict(r)) for r in rows]
