"""Appointments and their state-change history (owner of `appointment`, of its view
`appointment_detail`, which reads the ranges as their ends, and of `appointment_event`).

Invariants:
* Double booking is impossible by construction: the exclusion constraint on `blocked` (the
  appointment widened by its treatment's buffers) refuses an overlapping active row, whichever
  replica inserts it. Callers map `asyncpg.ExclusionViolationError` to a 409.
* Every change bumps `version`; every insert, status change, move and review flag (the sweeps'
  bulk changes too) writes its `appointment_event` in the same statement or transaction
  (attaching a held appointment's patient is recorded by the transition to booked that follows
  it); the history is append-only (the table refuses UPDATE and DELETE).
* Status changes follow the state machine (shared/domain/appointment_states.py); a change made
  against a version the caller no longer holds raises VersionConflict.
* A change that touches several sessions of a series locks the series first
  (shared/store/series.py `lock`), then the appointments, in start order.
Booking holds are shared/store/holds.py; a held appointment names its hold.

The module is over the project's ~600 lines on purpose: it is every statement on one table and
its history, and each write keeps the invariants above; split, they would have two homes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from shared.domain.appointment_states import Status, check_transition, check_undo_no_show
from shared.domain.errors import Stale
from shared.store import Executor, affected


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


def _appointment(row: asyncpg.Record | Mapping[str, Any]) -> Appointment:
    data = dict(row)
    data["review_reasons"] = list(data["review_reasons"])
    return Appointment(**data)


class VersionConflict(Stale):
    """The row changed since the caller read it (If-Match did not match)."""

    def __init__(self, current: Appointment) -> None:
        super().__init__("appointment", current)


@dataclass(frozen=True)
class AppointmentEvent:
    """One `appointment_event` row: a state change (from = to for a move or a review flag)."""

    at: datetime
    from_status: str | None
    to_status: str
    actor: str
    reason: str
    details: dict[str, Any]


@dataclass(frozen=True)
class NewAppointment:
    """What an insert needs: `blocked` is [starts_at - buffer_before, ends_at + buffer_after)."""

    clinic_id: int
    practitioner_id: int
    treatment_id: int
    patient_id: int | None
    status: Status
    starts_at: datetime
    ends_at: datetime
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)
    series_id: int | None = None
    position: int | None = None
    hold_id: int | None = None
    needs_review: bool = False
    review_reasons: Sequence[str] = ()
    source: str = "staff"


async def get(db: Executor, appointment_id: int) -> Appointment | None:
    row = await db.fetchrow("SELECT * FROM appointment_detail WHERE id = $1", appointment_id)
    return None if row is None else _appointment(row)


async def lock(conn: asyncpg.Connection, appointment_id: int) -> Appointment | None:
    """Read and lock an appointment for the rest of the caller's transaction."""
    row = await conn.fetchrow(
        "SELECT * FROM appointment_detail WHERE id = $1 FOR UPDATE", appointment_id
    )
    return None if row is None else _appointment(row)


async def share_version(conn: asyncpg.Connection, appointment_id: int) -> int | None:
    """The appointment's version, read FOR SHARE: waits for a change in flight and keeps the
    appointment from changing until the caller's transaction ends. None if unknown."""
    version = await conn.fetchval(
        "SELECT version FROM appointment WHERE id = $1 FOR SHARE", appointment_id
    )
    return None if version is None else int(version)


async def get_many(db: Executor, appointment_ids: Sequence[int]) -> dict[int, Appointment]:
    """id → appointment for those of `appointment_ids` that exist, in one query (one snapshot:
    the versions agree with the data)."""
    rows = await db.fetch(
        "SELECT * FROM appointment_detail WHERE id = ANY($1::bigint[])", list(set(appointment_ids))
    )
    return {row["id"]: _appointment(row) for row in rows}


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
    return affected(result)


async def lock_practitioner_calendars(
    conn: asyncpg.Connection, practitioner_ids: Sequence[int]
) -> None:
    """Serialise inserts into these practitioners' calendars until the transaction ends.

    Two transactions inserting overlapping rows both wait on each other's exclusion check and
    one dies of a deadlock; under a burst of bookings for one slot a request could lose every
    retry. Waiting here instead lets the later one find the time taken (a plain 409 with
    alternatives). One statement, ids in order, so these locks alone never deadlock; a
    transaction that locked appointment rows first (re-taking an expired hold) can still meet a
    locker here, and that rare deadlock is retried like any other."""
    await conn.execute(
        """
        SELECT pg_advisory_xact_lock(hashtextextended('regimen.calendar:' || id, 0))
        FROM (SELECT DISTINCT unnest($1::bigint[]) AS id ORDER BY 1) AS ids
        """,
        list(practitioner_ids),
    )


async def insert(
    conn: asyncpg.Connection, new: NewAppointment, *, actor: str, now: datetime
) -> int:
    """Insert one appointment and its first history event (run inside the caller's
    transaction). Raises asyncpg.ExclusionViolationError when the time is taken."""
    appointment_id = await conn.fetchval(
        """
        INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, series_id,
            position, hold_id, status, during, blocked, needs_review, review_reasons, source,
            status_changed_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, tstzrange($9, $10),
                tstzrange($9 - $11::interval, $10 + $12::interval), $13, $14, $15, $16, $16)
        RETURNING id
        """,
        new.clinic_id,
        new.practitioner_id,
        new.treatment_id,
        new.patient_id,
        new.series_id,
        new.position,
        new.hold_id,
        new.status,
        new.starts_at,
        new.ends_at,
        new.buffer_before,
        new.buffer_after,
        new.needs_review,
        list(new.review_reasons),
        new.source,
        now,
    )
    await _event(conn, appointment_id, now, None, new.status, actor, "", {})
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
    current = await lock(conn, appointment_id)
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


async def history(db: Executor, appointment_id: int) -> list[AppointmentEvent]:
    """Every state change of one appointment, oldest first."""
    return (await history_many(db, [appointment_id]))[appointment_id]


# -- reads for the admin API, moves, review flags, the no-show sweep ---------------------------


async def list_page(
    db: Executor,
    *,
    practitioner_id: int | None,
    patient_id: int | None,
    series_id: int | None,
    statuses: list[str] | None,
    first_day: date | None,
    last_day: date | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[Appointment]:
    """Appointments matching every given filter, ordered by (start, id) for keyset pagination:
    `after` is the (start, id) of the last row of the previous page. `first_day`..`last_day`
    are local dates in each appointment's clinic zone (inclusive)."""
    rows = await db.fetch(
        """
        SELECT a.* FROM appointment_detail a JOIN clinic c ON c.id = a.clinic_id
        WHERE ($1::bigint IS NULL OR a.practitioner_id = $1)
          AND ($2::bigint IS NULL OR a.patient_id = $2)
          AND ($3::bigint IS NULL OR a.series_id = $3)
          AND ($4::text[] IS NULL OR a.status = ANY($4::text[]))
          AND ($5::date IS NULL OR (a.starts_at AT TIME ZONE c.time_zone)::date >= $5)
          AND ($6::date IS NULL OR (a.starts_at AT TIME ZONE c.time_zone)::date <= $6)
          -- the same bounds, widened by a day for any zone, in a form the index can use
          AND ($5::date IS NULL OR a.starts_at >= ($5::date - 1)::timestamp AT TIME ZONE 'UTC')
          AND ($6::date IS NULL OR a.starts_at < ($6::date + 2)::timestamp AT TIME ZONE 'UTC')
          AND ($7::timestamptz IS NULL OR (a.starts_at, a.id) > ($7, $8::bigint))
        ORDER BY a.starts_at, a.id
        LIMIT $9
        """,
        practitioner_id,
        patient_id,
        series_id,
        statuses,
        first_day,
        last_day,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_appointment(r) for r in rows]


@dataclass(frozen=True)
class ScheduleEntry:
    """One line of a practitioner's day: the appointment and the names front desk needs."""

    appointment: Appointment
    patient_name: str | None
    treatment_name: str


async def schedule_for(
    db: Executor,
    practitioner_id: int,
    start: datetime,
    end: datetime,
    *,
    include_cancelled: bool,
) -> list[ScheduleEntry]:
    """A practitioner's appointments starting in [start, end), by start; cancelled ones and
    no-shows only on request, and never holds (a hold is a form being filled in)."""
    rows = await db.fetch(
        """
        SELECT a.*, t.name AS treatment_name,
               CASE WHEN p.id IS NULL THEN NULL
                    ELSE p.first_name || ' ' || p.last_name END AS patient_name
        FROM appointment_detail a
        JOIN treatment t ON t.id = a.treatment_id
        LEFT JOIN patient p ON p.id = a.patient_id
        WHERE a.practitioner_id = $1 AND a.starts_at >= $2 AND a.starts_at < $3
          AND a.status <> 'held'
          AND ($4 OR a.status NOT IN ('cancelled', 'no_show'))
        ORDER BY a.starts_at, a.id
        """,
        practitioner_id,
        start,
        end,
        include_cancelled,
    )
    entries = []
    for row in rows:
        data = dict(row)
        patient_name = data.pop("patient_name")
        treatment_name = data.pop("treatment_name")
        entries.append(ScheduleEntry(_appointment(data), patient_name, treatment_name))
    return entries


async def for_series(db: Executor, series_id: int) -> list[Appointment]:
    """Every appointment of a series (any status), by position then start."""
    rows = await db.fetch(
        """
        SELECT * FROM appointment_detail WHERE series_id = $1
        ORDER BY position NULLS LAST, starts_at, id
        """,
        series_id,
    )
    return [_appointment(r) for r in rows]


async def lock_series(conn: asyncpg.Connection, series_id: int) -> list[Appointment]:
    """`for_series`, locked for the caller's transaction, so that a reschedule can shift later
    sessions without a concurrent change (lock the series row first)."""
    rows = await conn.fetch(
        """
        SELECT * FROM appointment_detail WHERE series_id = $1
        ORDER BY position NULLS LAST, starts_at, id FOR UPDATE
        """,
        series_id,
    )
    return [_appointment(r) for r in rows]


async def move(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    practitioner_id: int,
    starts_at: datetime,
    ends_at: datetime,
    buffer_before: timedelta,
    buffer_after: timedelta,
    actor: str,
    now: datetime,
    reason: str = "",
    expected_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> Appointment | None:
    """Give an appointment a new time (and possibly practitioner) inside the caller's
    transaction, keeping its id and status; writes a history event (from = to = its status).

    None if unknown; raises VersionConflict, and asyncpg.ExclusionViolationError when the new
    time is taken (the transaction is then aborted).
    """
    current = await lock(conn, appointment_id)
    if current is None:
        return None
    if expected_version is not None and current.version != expected_version:
        raise VersionConflict(current)
    await conn.execute(
        """
        UPDATE appointment SET practitioner_id = $2, during = tstzrange($3, $4),
               blocked = tstzrange($3 - $5::interval, $4 + $6::interval), version = version + 1
        WHERE id = $1
        """,
        appointment_id,
        practitioner_id,
        starts_at,
        ends_at,
        buffer_before,
        buffer_after,
    )
    moved = {
        "from": {
            "starts_at": current.starts_at.isoformat(),
            "ends_at": current.ends_at.isoformat(),
            "practitioner_id": current.practitioner_id,
        },
        "to": {
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
            "practitioner_id": practitioner_id,
        },
    }
    await _event(
        conn,
        appointment_id,
        now,
        current.status,
        current.status,
        actor,
        reason,
        {"moved": moved, **(details or {})},
    )
    return await get(conn, appointment_id)


async def set_review(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    needs_review: bool,
    reasons: list[str],
    actor: str,
    now: datetime,
    note: str = "",
    expected_version: int | None = None,
) -> Appointment | None:
    """Raise or clear the clinician-review flag (with its reasons) inside the caller's
    transaction; the history event keeps the status and records what changed.

    None if unknown; raises VersionConflict.
    """
    current = await lock(conn, appointment_id)
    if current is None:
        return None
    if expected_version is not None and current.version != expected_version:
        raise VersionConflict(current)
    await conn.execute(
        """
        UPDATE appointment SET needs_review = $2, review_reasons = $3, version = version + 1
        WHERE id = $1
        """,
        appointment_id,
        needs_review,
        reasons,
    )
    details = {
        "review": "flagged" if needs_review else "cleared",
        "previous_reasons": current.review_reasons,
        "reasons": reasons,
    }
    await _event(conn, appointment_id, now, current.status, current.status, actor, note, details)
    return await get(conn, appointment_id)


@dataclass(frozen=True)
class NoShow:
    id: int
    patient_id: int | None
    from_status: str


async def mark_overdue_no_shows(
    conn: asyncpg.Connection, *, now: datetime, limit: int
) -> list[NoShow]:
    """Booked or confirmed appointments whose end plus their clinic's no-show grace has passed
    become `no_show` (actor 'system'), at most `limit` per call, inside the caller's transaction.

    SKIP LOCKED: a row that staff are changing right now is left for the next sweep rather than
    waited for, and two sweeping replicas never take the same row.
    """
    rows = await conn.fetch(
        """
        WITH due AS (
            SELECT a.id, a.status FROM appointment a JOIN clinic c ON c.id = a.clinic_id
            WHERE a.status IN ('booked', 'confirmed')
              AND lower(a.during) < $1
              AND upper(a.during) + make_interval(mins => c.no_show_grace_minutes) <= $1
              -- staff undid a no-show here (the patient came): marking it again would undo them
              AND NOT EXISTS (SELECT 1 FROM appointment_event e
                              WHERE e.appointment_id = a.id AND e.from_status = 'no_show')
            ORDER BY lower(a.during)
            LIMIT $2
            FOR UPDATE OF a SKIP LOCKED
        ), marked AS (
            UPDATE appointment a SET status = 'no_show', status_changed_at = $1,
                   version = a.version + 1
            FROM due WHERE a.id = due.id
            RETURNING a.id, a.patient_id, due.status AS from_status
        ), events AS (
            INSERT INTO appointment_event (appointment_id, at, from_status, to_status, actor,
                                           reason)
            SELECT id, $1, from_status, 'no_show', 'system',
                   'not checked in by the end of the appointment plus the no-show grace'
            FROM marked
        )
        SELECT id, patient_id, from_status FROM marked ORDER BY id
        """,
        now,
        limit,
    )
    return [NoShow(r["id"], r["patient_id"], r["from_status"]) for r in rows]


# -- Holds and booking (services/booking/domain/holds.py, bookings.py) ---------------------------


async def for_hold(db: Executor, hold_id: int) -> list[Appointment]:
    """Every appointment a hold created (or re-took), whatever its status, in session order."""
    rows = await db.fetch(
        "SELECT * FROM appointment_detail WHERE hold_id = $1 ORDER BY starts_at, id", hold_id
    )
    return [_appointment(r) for r in rows]


async def assign_patient(
    conn: Executor,
    appointment_id: int,
    *,
    patient_id: int,
    series_id: int | None,
    needs_review: bool,
    review_reasons: list[str],
) -> None:
    """Attach the patient (and series) to a held appointment before it becomes booked; review
    reasons are added to any already there."""
    await conn.execute(
        """
        UPDATE appointment SET patient_id = $2, series_id = $3,
               needs_review = needs_review OR $4,
               review_reasons = review_reasons || $5::text[],
               version = version + 1
        WHERE id = $1
        """,
        appointment_id,
        patient_id,
        series_id,
        needs_review,
        review_reasons,
    )


# -- Reads for planning the patient's messages (added for shared/outbox_plan.py) -----------------


async def has_earlier_no_show(db: Executor, patient_id: int, before: datetime) -> bool:
    """Whether the patient missed an appointment that started before `before` (which earns the
    2 h reminder on later ones)."""
    return bool(
        await db.fetchval(
            """
            SELECT EXISTS (
                SELECT 1 FROM appointment
                WHERE patient_id = $1 AND status = 'no_show' AND lower(during) < $2
            )
            """,
            patient_id,
            before,
        )
    )


async def previous_start(db: Executor, appointment_id: int) -> datetime | None:
    """Where the appointment was before its latest move (from its history), None if never moved."""
    text = await db.fetchval(
        """
        SELECT details -> 'moved' -> 'from' ->> 'starts_at' FROM appointment_event
        WHERE appointment_id = $1 AND details ? 'moved'
        ORDER BY id DESC LIMIT 1
        """,
        appointment_id,
    )
    return None if text is None else datetime.fromisoformat(text)


async def upcoming_for_patient(db: Executor, patient_id: int, after: datetime) -> list[Appointment]:
    """The patient's booked or confirmed appointments starting after `after`, by start."""
    rows = await db.fetch(
        """
        SELECT * FROM appointment_detail
        WHERE patient_id = $1 AND status IN ('booked', 'confirmed') AND starts_at > $2
        ORDER BY starts_at, id
        """,
        patient_id,
        after,
    )
    return [_appointment(r) for r in rows]


# -- Erasure and access requests (added for the admin API) -----------------------------------------


async def lock_future_active_for_patient(
    conn: asyncpg.Connection, patient_id: int, after: datetime
) -> list[Appointment]:
    """The patient's active appointments (held, booked, confirmed, checked in) starting after
    `after`, locked for the caller's transaction, in start order. Lock their series first (the
    booking domain's lock order, shared/domain/appointment_changes.py)."""
    rows = await conn.fetch(
        """
        SELECT * FROM appointment_detail
        WHERE patient_id = $1 AND starts_at > $2
          AND status IN ('held', 'booked', 'confirmed', 'checked_in')
        ORDER BY starts_at, id
        FOR UPDATE
        """,
        patient_id,
        after,
    )
    return [_appointment(r) for r in rows]


async def for_patient(db: Executor, patient_id: int) -> list[Appointment]:
    """Every appointment of a patient, any status, in start order."""
    rows = await db.fetch(
        "SELECT * FROM appointment_detail WHERE patient_id = $1 ORDER BY starts_at, id",
        patient_id,
    )
    return [_appointment(r) for r in rows]


async def history_many(
    db: Executor, appointment_ids: Sequence[int]
) -> dict[int, list[AppointmentEvent]]:
    """appointment id → its history (as `history` gives it), in one query."""
    rows = await db.fetch(
        """
        SELECT appointment_id, at, from_status, to_status, actor, reason, details
        FROM appointment_event WHERE appointment_id = ANY($1::bigint[]) ORDER BY id
        """,
        list(appointment_ids),
    )
    found: dict[int, list[AppointmentEvent]] = {i: [] for i in appointment_ids}
    for row in rows:
        data = dict(row)
        found[data.pop("appointment_id")].append(AppointmentEvent(**data))
    return found


# -- Staff work queues (queues branch): undoing a no-show, the review queue, the clinic's day ----


async def undo_no_show(
    conn: asyncpg.Connection,
    appointment_id: int,
    to_status: Status,
    *,
    actor: str,
    now: datetime,
    reason: str,
    details: dict[str, Any] | None = None,
) -> Appointment | None:
    """Take a locked no_show back to `to_status` (booked or confirmed: the status it had
    before) with its history event; the only way out of no_show (check_undo_no_show). The
    no-show sweep never marks such an appointment again (see mark_overdue_no_shows)."""
    current = await lock(conn, appointment_id)
    if current is None:
        return None
    check_undo_no_show(current.status, to_status)
    await conn.execute(
        """
        UPDATE appointment SET status = $2, status_changed_at = $3, version = version + 1
        WHERE id = $1
        """,
        appointment_id,
        to_status,
        now,
    )
    await _event(conn, appointment_id, now, "no_show", to_status, actor, reason, details or {})
    return await get(conn, appointment_id)


async def has_no_show_other_than(db: Executor, patient_id: int, appointment_id: int) -> bool:
    """Whether the patient missed any appointment but this one."""
    return bool(
        await db.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM appointment
                           WHERE patient_id = $1 AND status = 'no_show' AND id <> $2)
            """,
            patient_id,
            appointment_id,
        )
    )


# Flagged appointments still worth a clinician's look: a hold is a form being filled in.
_REVIEWABLE = "a.needs_review AND a.status IN ('booked', 'confirmed', 'checked_in')"


@dataclass(frozen=True)
class ReviewGroup:
    """A patient's flagged active sessions of one course (`series_id` None: outside a course),
    keyed for the queue by its earliest flagged start."""

    patient_id: int
    series_id: int | None
    first_start: datetime


async def review_groups(
    db: Executor,
    *,
    clinic_id: int | None,
    after: tuple[datetime, int, int] | None,
    limit: int,
) -> list[ReviewGroup]:
    """Groups of flagged active appointments by (patient, course), soonest first, after the
    group whose (first start, patient id, series id or 0) is `after`."""
    rows = await db.fetch(
        f"""
        SELECT a.patient_id, COALESCE(a.series_id, 0) AS series_key,
               min(a.starts_at) AS first_start
        FROM appointment_detail a
        WHERE {_REVIEWABLE} AND a.patient_id IS NOT NULL
          AND ($1::bigint IS NULL OR a.clinic_id = $1)
        GROUP BY a.patient_id, COALESCE(a.series_id, 0)
        HAVING $2::timestamptz IS NULL
            OR (min(a.starts_at), a.patient_id, COALESCE(a.series_id, 0))
               > ($2, $3::bigint, $4::bigint)
        ORDER BY first_start, a.patient_id, series_key
        LIMIT $5
        """,  # noqa: S608 - constant
        clinic_id,
        after[0] if after else None,
        after[1] if after else None,
        after[2] if after else None,
        limit,
    )
    return [ReviewGroup(r["patient_id"], r["series_key"] or None, r["first_start"]) for r in rows]


async def flagged_for_patients(db: Executor, patient_ids: Sequence[int]) -> list[Appointment]:
    """The flagged active appointments of these patients, by start."""
    rows = await db.fetch(
        f"""
        SELECT a.* FROM appointment_detail a
        WHERE {_REVIEWABLE} AND a.patient_id = ANY($1::bigint[])
        ORDER BY a.starts_at, a.id
        """,  # noqa: S608 - constant
        list(patient_ids),
    )
    return [_appointment(r) for r in rows]


@dataclass(frozen=True)
class DayEntry:
    """One appointment of a clinic's day with the names the front desk reads."""

    appointment: Appointment
    practitioner_name: str
    patient_name: str | None
    treatment_name: str


async def clinic_day(
    db: Executor, clinic_id: int, start: datetime, end: datetime
) -> list[DayEntry]:
    """Every appointment of the clinic starting in [start, end), any status but held, by
    practitioner then start."""
    rows = await db.fetch(
        """
        SELECT a.*, t.name AS treatment_name, pr.name AS practitioner_name,
               CASE WHEN p.id IS NULL THEN NULL
                    ELSE p.first_name || ' ' || p.last_name END AS patient_name
        FROM appointment_detail a
        JOIN treatment t ON t.id = a.treatment_id
        JOIN practitioner pr ON pr.id = a.practitioner_id
        LEFT JOIN patient p ON p.id = a.patient_id
        WHERE a.clinic_id = $1 AND a.starts_at >= $2 AND a.starts_at < $3
          AND a.status <> 'held'
        ORDER BY a.practitioner_id, a.starts_at, a.id
        """,
        clinic_id,
        start,
        end,
    )
    entries = []
    for row in rows:
        data = dict(row)
        practitioner, patient = data.pop("practitioner_name"), data.pop("patient_name")
        treatment = data.pop("treatment_name")
        entries.append(DayEntry(_appointment(data), practitioner, patient, treatment))
    return entries


async def consultation_before(
    db: Executor, *, patient_id: int, clinic_id: int, before: datetime
) -> Appointment | None:
    """The patient's consultation at this clinic that counts before a course starting at
    `before`: completed (at any earlier time), else booked, confirmed or checked in and ending
    by `before`. A consultation is a single-visit treatment that needs none itself and whose code
    names it (`consult...`): the same definition the booking form offers one by."""
    row = await db.fetchrow(
        """
        SELECT a.* FROM appointment_detail a JOIN treatment t ON t.id = a.treatment_id
        WHERE a.patient_id = $1 AND a.clinic_id = $2
          AND t.sessions_max = 1 AND NOT t.needs_consultation
          AND t.code ILIKE '%consult%'
          AND ((a.status = 'completed' AND a.starts_at < $3)
               OR (a.status IN ('booked', 'confirmed', 'checked_in') AND a.ends_at <= $3))
        ORDER BY (a.status = 'completed') DESC, a.starts_at DESC
        LIMIT 1
        """,
        patient_id,
        clinic_id,
        before,
    )
    return None if row is None else _appointment(row)


async def add_note_event(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    actor: str,
    now: datetime,
    reason: str,
    details: dict[str, Any],
) -> None:
    """A history event that changes nothing but records why (e.g. a clinician's override), so
    that it shows in the appointment's history; the status stays as it is."""
    current = await lock(conn, appointment_id)
    if current is None:
        return
    await _event(conn, appointment_id, now, current.status, current.status, actor, reason, details)
