"""Appointments, their state-change history and booking holds (owner of `appointment`,
`appointment_event` and `booking_hold`).

Double booking is impossible by construction: the exclusion constraint on `blocked` (the
appointment widened by its treatment's buffers) refuses an overlapping active row, whichever
replica inserts it. Callers map `asyncpg.ExclusionViolationError` to a 409.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.domain.appointment_states import Status, check_transition

Executor = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class Appointment:
    id: int
    clinic_id: int
    practitioner_id: int
    treatment_id: int
    patient_id: int | None
    series_id: int | None
    position: int | None
    hold_id: int | None
    status: Status
    starts_at: datetime
    ends_at: datetime
    blocked_from: datetime
    blocked_until: datetime
    needs_review: bool
    review_reasons: list[str]
    source: str
    cancelled_reason: str | None
    cancelled_by: str | None
    status_changed_at: datetime
    version: int
    created_at: datetime


def _appointment(row: asyncpg.Record) -> Appointment:
    data = dict(row)
    data["review_reasons"] = list(data["review_reasons"])
    return Appointment(**data)


class VersionConflict(Exception):
    """The row changed since the caller read it (If-Match did not match)."""

    def __init__(self, current: Appointment) -> None:
        super().__init__(f"appointment {current.id} is at version {current.version}")
        self.current = current


async def get(db: Executor, appointment_id: int, *, for_update: bool = False) -> Appointment | None:
    if for_update:
        row = await db.fetchrow(
            "SELECT * FROM appointment_detail WHERE id = $1 FOR UPDATE", appointment_id
        )
    else:
        row = await db.fetchrow("SELECT * FROM appointment_detail WHERE id = $1", appointment_id)
    return None if row is None else _appointment(row)


async def busy_by_practitioner(
    db: Executor,
    practitioner_ids: list[int],
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    exclude_ids: list[int] | None = None,
) -> dict[int, list[tuple[datetime, datetime]]]:
    """The blocked time of every active appointment overlapping [start, end); expired holds and
    `exclude_ids` (an appointment being moved) do not count."""
    rows = await db.fetch(
        """
        SELECT a.practitioner_id, lower(a.blocked) AS b_from, upper(a.blocked) AS b_until
        FROM appointment a
        LEFT JOIN booking_hold h ON h.id = a.hold_id
        WHERE a.practitioner_id = ANY($1::bigint[])
          AND a.blocked && tstzrange($2, $3)
          AND a.status IN ('held', 'booked', 'confirmed', 'checked_in')
          AND NOT (a.status = 'held' AND h.expires_at <= $4)
          AND NOT (a.id = ANY($5::bigint[]))
        """,
        practitioner_ids,
        start,
        end,
        now,
        exclude_ids or [],
    )
    busy: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for row in rows:
        busy[row["practitioner_id"]].append((row["b_from"], row["b_until"]))
    return dict(busy)


async def release_expired_holds(
    db: Executor,
    *,
    now: datetime,
    practitioner_id: int | None = None,
    overlapping: tuple[datetime, datetime] | None = None,
) -> int:
    """Cancel held appointments whose hold has expired; optionally only those in one
    practitioner's range (a booking clears stale holds in its way before inserting)."""
    result = await db.execute(
        """
        WITH expired AS (
            UPDATE appointment a SET status = 'cancelled', cancelled_reason = 'hold expired',
                   cancelled_by = 'system', status_changed_at = $1, version = a.version + 1
            FROM booking_hold h
            WHERE h.id = a.hold_id AND a.status = 'held' AND h.expires_at <= $1
              AND ($2::bigint IS NULL OR a.practitioner_id = $2)
              AND ($3::timestamptz IS NULL OR a.blocked && tstzrange($3, $4))
            RETURNING a.id
        )
        INSERT INTO appointment_event (appointment_id, at, from_status, to_status, actor, reason)
        SELECT id, $1, 'held', 'cancelled', 'system', 'hold expired' FROM expired
        """,
        now,
        practitioner_id,
        overlapping[0] if overlapping else None,
        overlapping[1] if overlapping else None,
    )
    return int(result.split()[-1])


async def insert(
    conn: asyncpg.Connection,
    *,
    clinic_id: int,
    practitioner_id: int,
    treatment_id: int,
    patient_id: int | None,
    series_id: int | None,
    position: int | None,
    hold_id: int | None,
    status: Status,
    starts_at: datetime,
    ends_at: datetime,
    buffer_before: timedelta,
    buffer_after: timedelta,
    needs_review: bool,
    review_reasons: list[str],
    source: str,
    actor: str,
    now: datetime,
) -> int:
    """Insert one appointment and its first history event. Raises
    asyncpg.ExclusionViolationError when the time is taken."""
    appointment_id = await conn.fetchval(
        """
        INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, series_id,
            position, hold_id, status, during, blocked, needs_review, review_reasons, source,
            status_changed_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, tstzrange($9, $10),
                tstzrange($9 - $11::interval, $10 + $12::interval), $13, $14, $15, $16, $16)
        RETURNING id
        """,
        clinic_id,
        practitioner_id,
        treatment_id,
        patient_id,
        series_id,
        position,
        hold_id,
        status,
        starts_at,
        ends_at,
        buffer_before,
        buffer_after,
        needs_review,
        review_reasons,
        source,
        now,
    )
    await _event(conn, appointment_id, now, None, status, actor, "", {})
    return int(appointment_id)


async def _event(
    conn: Executor,
    appointment_id: int,
    at: datetime,
    from_status: str | None,
    to_status: str,
    actor: str,
    reason: str,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        """
        INSERT INTO appointment_event (appointment_id, at, from_status, to_status, actor, reason,
                                       details)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        appointment_id,
        at,
        from_status,
        to_status,
        actor,
        reason,
        details,
    )


async def transition(
    conn: asyncpg.Connection,
    appointment_id: int,
    to_status: Status,
    *,
    actor: str,
    now: datetime,
    reason: str = "",
    expected_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> Appointment | None:
    """Move one appointment to `to_status` inside the caller's transaction; None if unknown.

    Raises IllegalTransition (with the current state) or VersionConflict.
    """
    current = await get(conn, appointment_id, for_update=True)
    if current is None:
        return None
    if expected_version is not None and current.version != expected_version:
        raise VersionConflict(current)
    check_transition(current.status, to_status)
    cancelled = to_status == "cancelled"
    await conn.execute(
        """
        UPDATE appointment SET status = $2, status_changed_at = $3, version = version + 1,
               cancelled_reason = CASE WHEN $4 THEN $5 ELSE cancelled_reason END,
               cancelled_by = CASE WHEN $4 THEN $6 ELSE cancelled_by END
        WHERE id = $1
        """,
        appointment_id,
        to_status,
        now,
        cancelled,
        reason,
        actor,
    )
    await _event(conn, appointment_id, now, current.status, to_status, actor, reason, details or {})
    return await get(conn, appointment_id)


async def history(db: Executor, appointment_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """
        SELECT at, from_status, to_status, actor, reason, details
        FROM appointment_event WHERE appointment_id = $1 ORDER BY id
        """,
        appointment_id,
    )
    return [dict(r) for r in rows]
