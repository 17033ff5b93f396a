"""Outbox writes (shared/store/notifications/), by whatever causes a message: the planners of
shared/outbox_plan.py, inside the transaction of the booking, change or cancellation that
causes them, and the erasure of a patient.

Invariants: a row is planned once per cause (its `dedupe_key`; `insert` is then a no-op); a
change that makes pending messages pointless cancels them in its own transaction, so no
reminder for an old time can leave after the change commits.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.store import Executor
from shared.store.notifications.rows import Channel, insert_event


@dataclass(frozen=True)
class NewNotification:
    clinic_id: int
    kind: str
    channel: Channel
    template: str
    due_at: datetime
    dedupe_key: str
    patient_id: int | None = None
    appointment_id: int | None = None
    appointment_version: int | None = None
    recipient: str | None = None
    context: dict[str, Any] | None = None
    expires_at: datetime | None = None
    urgent: bool = False
    language: str = "en"
    template_version: int = 1


async def insert(conn: Executor, item: NewNotification, *, now: datetime) -> int | None:
    """Write one outbox row; None when its dedupe key exists (the same cause, already planned)."""
    notification_id = await conn.fetchval(
        """
        INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel, recipient,
            template, template_version, language, context, appointment_version, due_at,
            expires_at, dedupe_key, urgent, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id
        """,
        item.clinic_id,
        item.patient_id,
        item.appointment_id,
        item.kind,
        item.channel,
        item.recipient,
        item.template,
        item.template_version,
        item.language,
        item.context or {},
        item.appointment_version,
        item.due_at,
        item.expires_at,
        item.dedupe_key,
        item.urgent,
        now,
    )
    if notification_id is None:
        return None
    await insert_event(conn, notification_id, now, None, "scheduled", "planned")
    return int(notification_id)


async def cancel_pending_for_appointment(
    conn: Executor, appointment_id: int, *, reason: str, now: datetime
) -> int:
    """Cancel every not-yet-sent message about an appointment (it was cancelled or moved);
    call inside the transaction that changes the appointment."""
    rows = await conn.fetch(
        """
        UPDATE notification SET status = 'cancelled', status_reason = $2, updated_at = $3,
               lease_until = NULL
        WHERE appointment_id = $1 AND status = 'scheduled'
        RETURNING id
        """,
        appointment_id,
        reason,
        now,
    )
    for row in rows:
        await insert_event(conn, row["id"], now, "scheduled", "cancelled", reason)
    return len(rows)


async def cancel_pending_for_patient(
    conn: Executor,
    patient_id: int,
    *,
    reason: str,
    now: datetime,
    channel: Channel | None = None,
) -> list[int]:
    """Cancel every not-yet-sent message to a patient (about an appointment or not), or only
    those of one `channel` (an SMS opt-out); the ids. Call inside the transaction that makes the
    messages pointless.

    Rows a worker has claimed ('sending') but not yet decided to send are cancelled too: the
    worker decides in dispatch.decide_sends, which holds the row and sends only one still
    'sending' and leased to it, so if this commits first the worker sends nothing, and if the
    worker's decision came first this waits for that short statement and then leaves the row
    alone (a call is in flight: its attempt is open, and its outcome is recorded when the call
    returns)."""
    rows = await conn.fetch(
        """
        UPDATE notification n SET status = 'cancelled', status_reason = $2, updated_at = $3,
               lease_until = NULL, leased_by = NULL
        FROM (
            SELECT id, status FROM notification
            WHERE patient_id = $1 AND status IN ('scheduled', 'sending')
              AND ($4::text IS NULL OR channel = $4)
            FOR NO KEY UPDATE
        ) AS before
        WHERE n.id = before.id AND n.status IN ('scheduled', 'sending')
          AND NOT EXISTS (SELECT 1 FROM notification_attempt a
                          WHERE a.notification_id = n.id AND a.finished_at IS NULL)
        RETURNING n.id, before.status AS was
        """,
        patient_id,
        reason,
        now,
        channel,
    )
    for row in rows:
        await insert_event(conn, row["id"], now, row["was"], "cancelled", reason)
    return sorted(row["id"] for row in rows)


async def planned_kinds(db: Executor, appointment_id: int, *, starts_at: datetime) -> set[str]:
    """Kinds of message already planned (in any state but cancelled) for an appointment at this
    start: appointment messages expire at the start they were planned for, so a row for an older
    time (cancelled when the appointment moved) does not count."""
    rows = await db.fetch(
        """
        SELECT DISTINCT kind FROM notification
        WHERE appointment_id = $1 AND expires_at = $2 AND status <> 'cancelled'
        """,
        appointment_id,
        starts_at,
    )
    return {row["kind"] for row in rows}


@dataclass(frozen=True)
class CancelledRow:
    id: int
    appointment_id: int | None
    kind: str


async def cancel_scheduled_for_patient(
    conn: Executor,
    patient_id: int,
    *,
    kinds: Collection[str],
    channel: Channel | None,
    reason: str,
    now: datetime,
) -> list[CancelledRow]:
    """Cancel the patient's messages of these kinds on this channel (or on any, for None) that
    are still waiting (`scheduled`), in id order. A row a worker has already claimed is left
    to the worker's own send-time check. Call inside the transaction that changes how the
    patient may be reached (or undoes what planned them)."""
    rows = await conn.fetch(
        """
        UPDATE notification SET status = 'cancelled', status_reason = $4, updated_at = $5,
               lease_until = NULL
        WHERE patient_id = $1 AND kind = ANY($2::text[]) AND ($3::text IS NULL OR channel = $3)
          AND status = 'scheduled'
        RETURNING id, appointment_id, kind
        """,
        patient_id,
        sorted(kinds),
        channel,
        reason,
        now,
    )
    for row in rows:
        await insert_event(conn, row["id"], now, "scheduled", "cancelled", reason)
    return sorted((CancelledRow(**dict(row)) for row in rows), key=lambda row: row.id)


async def dedupe_keys_for_appointment(db: Executor, appointment_id: int) -> set[str]:
    """Every dedupe key used so far for messages about an appointment, in any state: a planner
    that re-plans a message cancelled earlier picks a key not among them."""
    rows = await db.fetch(
        "SELECT dedupe_key FROM notification WHERE appointment_id = $1", appointment_id
    )
    return {row["dedupe_key"] for row in rows}


@dataclass(frozen=True)
class CheckInRow:
    id: int
    channel: Channel
    status: str
    nudge: bool


async def rows_for_check_in(db: Executor, check_in_id: int) -> list[CheckInRow]:
    """The messages that asked (or nudged) one check-in (shared/domain/check_ins.py), by id."""
    rows = await db.fetch(
        """
        SELECT id, channel, status, coalesce((context ->> 'nudge')::boolean, false) AS nudge
        FROM notification
        WHERE kind = 'check_in' AND (context ->> 'check_in_id')::bigint = $1
        ORDER BY id
        """,
        check_in_id,
    )
    return [CheckInRow(**dict(r)) for r in rows]


async def cancel_scheduled(
    conn: Executor, notification_id: int, *, reason: str, now: datetime
) -> bool:
    """Cancel one row still waiting (`scheduled`); False if it is no longer waiting."""
    done = await conn.fetchval(
        """
        UPDATE notification SET status = 'cancelled', status_reason = $2, updated_at = $3,
               lease_until = NULL
        WHERE id = $1 AND status = 'scheduled'
        RETURNING id
        """,
        notification_id,
        reason,
        now,
    )
    if done is None:
        return False
    await insert_event(conn, notification_id, now, "scheduled", "cancelled", reason)
    return True
