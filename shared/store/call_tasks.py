"""The staff call list (owner of `call_task`): patients the front desk should phone, and why.

Invariants: at most one open task per appointment and reason (a partial unique index), so a
reply and a sweep on any number of replicas that find the same reason file it once; a task is
open until staff mark it done, with who did it and what came of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.store import Executor

CallReason = Literal[
    "not_confirmed",
    "reschedule_requested",
    "cancel_inside_notice",
    "gap_overdue",
    "proposal_unanswered",
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


_COLUMNS = """id, clinic_id, patient_id, appointment_id, reason, detail, inbound_message_id,
    created_at, done_at, done_by, outcome"""


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
) -> list[CallTask]:
    """Tasks oldest first, after the task whose (created_at, id) is `after`."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM call_task
        WHERE ($1::bigint IS NULL OR clinic_id = $1)
          AND (NOT $2 OR done_at IS NULL)
          AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::bigint))
        ORDER BY created_at, id
        LIMIT $5
        """,  # noqa: S608 - constant
        clinic_id,
        open_only,
        after[0] if after else None,
        after[1] if after else None,
        limit,
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
