"""The staff call list (owner of `call_task`): patients the front desk should phone, and why.

Invariants: at most one open task per appointment and reason (a partial unique index), so a
reply and a sweep on any number of replicas that find the same reason file it once; a task is
open until staff mark it done, with who did it and what came of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.store import Executor, affected

CallReason = Literal[
    "not_confirmed",
    "reschedule_requested",
    "cancel_inside_notice",
    "gap_overdue",
    "proposal_unanswered",
    "adverse_event_routine",
    "adverse_event_hold",
    "check_in_unanswered",
    "check_in_no_channel",
]
CALL_REASONS: tuple[CallReason, ...] = (
    "not_confirmed",
    "reschedule_requested",
    "cancel_inside_notice",
    # a course's next session is not booked and the gap since the last completed one is past
    # its soft maximum (appointment_id: that last completed session)
    "gap_overdue",
    # a proposed next session nobody answered was released (appointment_id: the released one)
    "proposal_unanswered",
    # a routine-tier adverse event: call the patient the next business day (due_at)
    "adverse_event_routine",
    # an adverse event holds the patient's next session and no message could reach them: phone
    # them before that session
    "adverse_event_hold",
    # an aftercare check-in was asked and nudged and nobody answered (appointment_id: the
    # completed session; one open task covers every unanswered check-in of that session)
    "check_in_unanswered",
    # an aftercare check-in is due and the patient may be neither texted nor emailed
    "check_in_no_channel",
)


@dataclass(frozen=True)
class CallTask:
    id: int
    clinic_id: int
    patient_id: int
    appointment_id: int | None
    reason: CallReason
    detail: str
    inbound_message_id: int | None
    created_at: datetime
    done_at: datetime | None
    done_by: str | None
    outcome: str | None
    # when the call is due (None: as soon as filed); the adverse event it is about
    due_at: datetime | None = None
    adverse_event_id: int | None = None


_COLUMNS = """id, clinic_id, patient_id, appointment_id, reason, detail, inbound_message_id,
    created_at, done_at, done_by, outcome, due_at, adverse_event_id"""


async def file(
    db: Executor,
    *,
    clinic_id: int,
    patient_id: int,
    appointment_id: int | None,
    reason: CallReason,
    detail: str = "",
    inbound_message_id: int | None = None,
    now: datetime,
) -> int | None:
    """Put a call on the list; None when the same appointment is already open there for the
    same reason."""
    value = await db.fetchval(
        """
        INSERT INTO call_task (clinic_id, patient_id, appointment_id, reason, detail,
                               inbound_message_id, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (appointment_id, reason) WHERE done_at IS NULL DO NOTHING
        RETURNING id
        """,
        clinic_id,
        patient_id,
        appointment_id,
        reason,
        detail,
        inbound_message_id,
        now,
    )
    return None if value is None else int(value)


async def get(db: Executor, task_id: int) -> CallTask | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM call_task WHERE id = $1",  # noqa: S608 - constant
        task_id,
    )
    return None if row is None else CallTask(**dict(row))


async def list_page(
    db: Executor,
    *,
    clinic_id: int | None,
    open_only: bool,
    after: tuple[datetime, int] | None,
    limit: int,
    done_only: bool = False,
) -> list[CallTask]:
    """Tasks oldest first, after the task whose (created_at, id) is `after`."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM call_task
        WHERE ($1::bigint IS NULL OR clinic_id = $1)
          AND (NOT $2 OR done_at IS NULL)
          AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::bigint))
          AND (NOT $6 OR done_at IS NOT NULL)
        ORDER BY created_at, id
        LIMIT $5
        """,  # noqa: S608 - constant
        clinic_id,
        open_only,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        done_only,
    )
    return [CallTask(**dict(r)) for r in rows]


async def mark_done(
    db: Executor, task_id: int, *, by: str, outcome: str, now: datetime
) -> CallTask | None:
    """Close an open task; None if it is not open."""
    row = await db.fetchrow(
        f"""
        UPDATE call_task SET done_at = $2, done_by = $3, outcome = $4
        WHERE id = $1 AND done_at IS NULL
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        task_id,
        now,
        by,
        outcome,
    )
    return None if row is None else CallTask(**dict(row))


async def open_for_appointment(db: Executor, appointment_id: int) -> list[CallTask]:
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM call_task
        WHERE appointment_id = $1 AND done_at IS NULL ORDER BY created_at, id""",  # noqa: S608
        appointment_id,
    )
    return [CallTask(**dict(r)) for r in rows]


@dataclass(frozen=True)
class FiledUnconfirmed:
    task_id: int
    clinic_id: int
    patient_id: int
    appointment_id: int


async def file_unconfirmed(conn: Executor, *, now: datetime, limit: int) -> list[FiledUnconfirmed]:
    """File a 'not_confirmed' task for each appointment, at most `limit`, that is still `booked`
    (not confirmed), starts within its clinic's `unconfirmed_call_hours` from `now` (and has not
    started), and whose patient was asked to confirm it for its current time: a sent or
    delivered message that asks for confirmation (a 72 h reminder, or a merged reminder that
    took one in: shared/messaging/render.py `_asks_confirmation`) covering the appointment
    (as its own, or among `merged_appointment_ids`), sent since the appointment got its current
    start (its latest move, else its creation). One booked too late for the 72 h reminder was
    never asked, so it is never filed as "not confirmed".

    Once per appointment time: nothing is filed while the appointment has an open task of any
    reason (staff will call anyway), nor when any task of it was filed since its current start
    (staff closing the task does not bring it back; a move to a new time, asked again, does).
    Run it inside a transaction that holds the sweep's advisory lock (a statement after the
    lock sees what an earlier holder committed); the partial unique index catches the rest."""
    rows = await conn.fetch(
        """
        WITH due AS (
            SELECT a.id, a.clinic_id, a.patient_id, lower(a.during) AS starts_at,
                   c.unconfirmed_call_hours AS hours,
                   coalesce((SELECT max(e.at) FROM appointment_event e
                             WHERE e.appointment_id = a.id AND e.details ? 'moved'),
                            a.created_at) AS timed_at
            FROM appointment a JOIN clinic c ON c.id = a.clinic_id
            WHERE a.status = 'booked' AND a.patient_id IS NOT NULL
              AND lower(a.during) > $1
              AND lower(a.during) <= $1 + make_interval(hours => c.unconfirmed_call_hours)
        ), asked AS (
            SELECT d.* FROM due d
            WHERE EXISTS (
                SELECT 1 FROM notification n
                WHERE n.patient_id = d.patient_id
                  AND n.status IN ('sent', 'delivered')
                  AND n.sent_at >= d.timed_at AND n.sent_at <= $1
                  AND (n.kind = 'reminder_72h' OR n.context -> 'merged_kinds' ? 'reminder_72h')
                  AND (n.appointment_id = d.id
                       OR n.context -> 'merged_appointment_ids' @> to_jsonb(d.id)))
              AND NOT EXISTS (
                SELECT 1 FROM call_task t
                WHERE t.appointment_id = d.id
                  AND (t.done_at IS NULL OR t.created_at >= d.timed_at))
            ORDER BY d.starts_at, d.id
            LIMIT $2
        )
        INSERT INTO call_task (clinic_id, patient_id, appointment_id, reason, detail, created_at)
        SELECT clinic_id, patient_id, id, 'not_confirmed',
               'asked to confirm; not confirmed ' || hours || ' h before the start', $1
        FROM asked
        ON CONFLICT (appointment_id, reason) WHERE done_at IS NULL DO NOTHING
        RETURNING id, clinic_id, patient_id, appointment_id
        """,
        now,
        limit,
    )
    return [
        FiledUnconfirmed(r["id"], r["clinic_id"], r["patient_id"], r["appointment_id"])
        for r in rows
    ]


async def close_settled_unconfirmed(conn: Executor, *, now: datetime) -> list[CallTask]:
    """Close the open 'not_confirmed' tasks whose reason has gone: the session was confirmed,
    checked in or completed (the patient came), cancelled, has passed (no-show), or was moved
    after the task was filed (its new time is asked about afresh). Done by 'regimen', the
    outcome saying why, truly (a patient who came without answering did not confirm); a task
    staff still need stays open."""
    rows = await conn.fetch(
        f"""
        WITH settled AS (
            SELECT t.id,
                   CASE
                     WHEN a.status = 'confirmed'
                       THEN 'closed by Regimen: the patient confirmed'
                     -- not "confirmed": the patient may have come without ever answering
                     WHEN a.status IN ('checked_in', 'completed')
                       THEN 'closed by Regimen: the patient came (checked in)'
                     WHEN a.status = 'cancelled'
                       THEN 'closed by Regimen: the appointment was cancelled'
                     WHEN a.status = 'no_show'
                       THEN 'closed by Regimen: the appointment has passed'
                     ELSE 'closed by Regimen: the appointment was moved'
                   END AS outcome
            FROM call_task t JOIN appointment a ON a.id = t.appointment_id
            WHERE t.reason = 'not_confirmed' AND t.done_at IS NULL
              AND (a.status <> 'booked'
                   OR EXISTS (SELECT 1 FROM appointment_event e
                              WHERE e.appointment_id = a.id AND e.details ? 'moved'
                                AND e.at > t.created_at))
            FOR UPDATE OF t SKIP LOCKED
        )
        UPDATE call_task t SET done_at = $1, done_by = 'regimen', outcome = settled.outcome
        FROM settled WHERE t.id = settled.id AND t.done_at IS NULL
        RETURNING {", ".join("t." + c.strip() for c in _COLUMNS.split(","))}
        """,  # noqa: S608 - constant
        now,
    )
    return [CallTask(**dict(r)) for r in rows]


async def close_for_next_booked(
    conn: Executor, series_id: int, *, position: int, now: datetime
) -> list[CallTask]:
    """Close the open calls about a course's missing next session (overdue, a proposal not
    answered or declined) once the patient booked it themselves: tasks of those reasons on the
    course's sessions that are over (completed, cancelled, missed). Done by 'regimen', the
    outcome saying why; a call about a session still ahead stays open."""
    rows = await conn.fetch(
        f"""
        UPDATE call_task t SET done_at = $3, done_by = 'regimen',
               outcome = 'closed by Regimen: the patient booked session ' || $2 || ' online'
        FROM appointment a
        WHERE a.id = t.appointment_id AND a.series_id = $1 AND t.done_at IS NULL
          AND t.reason IN ('gap_overdue', 'proposal_unanswered', 'reschedule_requested')
          AND a.status IN ('completed', 'cancelled', 'no_show')
        RETURNING {", ".join("t." + c.strip() for c in _COLUMNS.split(","))}
        """,  # noqa: S608 - constant
        series_id,
        str(position),
        now,
    )
    return [CallTask(**dict(r)) for r in rows]


async def file_for_event(
    db: Executor,
    *,
    clinic_id: int,
    patient_id: int,
    appointment_id: int | None,
    adverse_event_id: int,
    reason: CallReason,
    detail: str,
    due_at: datetime | None,
    now: datetime,
) -> int | None:
    """A call about an adverse event, due at `due_at`; None when one is already open for the
    event and reason, or for the session and reason (staff are calling about it anyway)."""
    value = await db.fetchval(
        """
        INSERT INTO call_task (clinic_id, patient_id, appointment_id, reason, detail,
                               created_at, due_at, adverse_event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        clinic_id,
        patient_id,
        appointment_id,
        reason,
        detail,
        now,
        due_at,
        adverse_event_id,
    )
    return None if value is None else int(value)


async def for_event(db: Executor, adverse_event_id: int) -> list[CallTask]:
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM call_task WHERE adverse_event_id = $1
        ORDER BY created_at, id""",  # noqa: S608 - constant
        adverse_event_id,
    )
    return [CallTask(**dict(r)) for r in rows]


# -- Staff work queues (queues branch) -------------------------------------------------------------


async def open_counts(db: Executor, patient_ids: Sequence[int]) -> dict[int, int]:
    """patient id → open tasks, for those of `patient_ids` with any."""
    rows = await db.fetch(
        """
        SELECT patient_id, count(*) AS open FROM call_task
        WHERE patient_id = ANY($1::bigint[]) AND done_at IS NULL
        GROUP BY patient_id
        """,
        list(patient_ids),
    )
    return {row["patient_id"]: int(row["open"]) for row in rows}


async def scrub_for_patient(db: Executor, patient_id: int, *, now: datetime) -> int:
    """Erasure: the patient's tasks lose their detail and outcome (staff text that may quote
    the patient); open ones are closed as erased (there is nobody to call); how many tasks."""
    result = await db.execute(
        """
        UPDATE call_task
        SET detail = '', outcome = 'patient erased', done_at = coalesce(done_at, $2),
            done_by = coalesce(done_by, 'regimen (erasure)')
        WHERE patient_id = $1
        """,
        patient_id,
        now,
    )
    return affected(result)


async def for_patient(db: Executor, patient_id: int) -> list[CallTask]:
    """Every task about the patient, open or done, oldest first (access requests)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM call_task WHERE patient_id = $1 ORDER BY created_at, id",  # noqa: S608
        patient_id,
    )
    return [CallTask(**dict(r)) for r in rows]


async def file_once(
    db: Executor,
    *,
    clinic_id: int,
    patient_id: int,
    appointment_id: int,
    reason: CallReason,
    detail: str = "",
    now: datetime,
) -> int | None:
    """Put a call on the list unless one for this appointment and reason was ever filed (open
    or done): for causes a sweep finds again on every run (a course's overdue gap) and that
    staff should hear about once. None when it was filed before.

    Safe with concurrent sweeps: the second of two simultaneous inserts waits on the first's
    entry in the open-task unique index and then does nothing."""
    value = await db.fetchval(
        """
        INSERT INTO call_task (clinic_id, patient_id, appointment_id, reason, detail, created_at)
        SELECT $1, $2, $3, $4, $5, $6
        WHERE NOT EXISTS (SELECT 1 FROM call_task WHERE appointment_id = $3 AND reason = $4)
        ON CONFLICT (appointment_id, reason) WHERE done_at IS NULL DO NOTHING
        RETURNING id
        """,
        clinic_id,
        patient_id,
        appointment_id,
        reason,
        detail,
        now,
    )
    return None if value is None else int(value)
