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


# -- course progression (the scheduler's sweeps) --------------------------------------------------


@dataclass(frozen=True)
class FinishedCourse:
    """An active course whose last planned session is completed and which has nothing left on
    the books: the completion sweep completes it."""

    series: Series
    last_appointment_id: int  # the latest completed session (by start)
    last_starts_at: datetime


async def claim_finished(conn: asyncpg.Connection, *, limit: int) -> list[FinishedCourse]:
    """Lock up to `limit` finished active courses for the caller's transaction, skipping those
    another transaction holds (another replica's sweep, a staff change): each is handed to one
    sweep at a time, and once completed it no longer matches (the status is re-checked on the
    locked row)."""
    rows = await conn.fetch(
        f"""
        SELECT {", ".join("s." + c.strip() for c in _COLUMNS.split(","))},
               last.id AS last_appointment_id, last.starts_at AS last_starts_at
        FROM series s
        JOIN LATERAL (
            SELECT a.id, lower(a.during) AS starts_at FROM appointment a
            WHERE a.series_id = s.id AND a.status = 'completed'
            ORDER BY lower(a.during) DESC, a.id DESC LIMIT 1
        ) last ON true
        WHERE s.status = 'active'
          AND EXISTS (SELECT 1 FROM appointment f
                      WHERE f.series_id = s.id AND f.status = 'completed'
                        AND f.position >= s.planned_sessions)
          AND NOT EXISTS (SELECT 1 FROM appointment u
                          WHERE u.series_id = s.id
                            AND u.status IN ('held', 'booked', 'confirmed', 'checked_in'))
        ORDER BY s.id
        LIMIT $1
        FOR UPDATE OF s SKIP LOCKED
        """,  # noqa: S608 - constant
        limit,
    )
    courses = []
    for row in rows:
        data = dict(row)
        last_id, last_start = data.pop("last_appointment_id"), data.pop("last_starts_at")
        courses.append(FinishedCourse(Series(**data), int(last_id), last_start))
    return courses


@dataclass(frozen=True)
class WaitingCourse:
    """An active course whose next session is not on the books, with the gap rule of that
    next session: what the gap sweep measures."""

    series_id: int
    clinic_id: int
    patient_id: int
    treatment_id: int
    last_appointment_id: int  # the completed session with the highest position
    last_position: int
    last_starts_at: datetime
    next_position: int
    target_days: int
    min_days: int
    max_days: int
    time_zone: str


async def waiting_past(
    db: Executor, *, now: datetime, after_id: int, limit: int
) -> list[WaitingCourse]:
    """Active courses (id above `after_id`, by id) with no session held, booked, confirmed or
    checked in, whose last completed session is not the last planned one and whose gap since
    it, in local calendar days of the clinic, is already past the soft maximum of the next
    position's rule. Courses whose next position has no rule are left out."""
    rows = await db.fetch(
        """
        SELECT s.id AS series_id, s.clinic_id, s.patient_id, s.treatment_id,
               last.id AS last_appointment_id, last.position AS last_position,
               last.starts_at AS last_starts_at, last.position + 1 AS next_position,
               g.target_days, g.min_days, g.max_days, c.time_zone
        FROM series s
        JOIN clinic c ON c.id = s.clinic_id
        JOIN LATERAL (
            SELECT a.id, a.position, lower(a.during) AS starts_at FROM appointment a
            WHERE a.series_id = s.id AND a.status = 'completed' AND a.position IS NOT NULL
            ORDER BY a.position DESC, lower(a.during) DESC, a.id DESC LIMIT 1
        ) last ON true
        JOIN treatment_gap g ON g.treatment_id = s.treatment_id
                            AND g.position = last.position + 1
        WHERE s.status = 'active' AND s.id > $2
          AND last.position < s.planned_sessions
          AND NOT EXISTS (SELECT 1 FROM appointment u
                          WHERE u.series_id = s.id
                            AND u.status IN ('held', 'booked', 'confirmed', 'checked_in'))
          AND ($1::timestamptz AT TIME ZONE c.time_zone)::date
              - (last.starts_at AT TIME ZONE c.time_zone)::date > g.max_days
        ORDER BY s.id
        LIMIT $3
        """,
        now,
        after_id,
        limit,
    )
    return [WaitingCourse(**dict(r)) for r in rows]


async def mark_completed(conn: asyncpg.Connection, series_id: int, *, now: datetime) -> bool:
    """Complete an active course (its row locked by the caller); False if it was not active."""
    done = await conn.fetchval(
        """
        UPDATE series SET status = 'completed', version = version + 1, updated_at = $2
        WHERE id = $1 AND status = 'active'
        RETURNING id
        """,
        series_id,
        now,
    )
    return done is not None
