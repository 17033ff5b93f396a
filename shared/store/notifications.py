"""The notification outbox (owner of `notification`, `notification_attempt`,
`notification_event`, `provider_callback` and `sender_pace`).

Rows are written by whatever causes a message, inside the caller's transaction (a booking and
its confirmation commit together or not at all). The notifier claims due rows with SKIP LOCKED
and a lease; every status change leaves an event with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool
Channel = Literal["sms", "email"]
NotificationStatus = Literal[
    "scheduled",
    "sending",
    "sent",
    "delivered",
    "failed",
    "undelivered",
    "cancelled",
    "suppressed",
    "expired",
    "unknown",
]
TERMINAL = frozenset({"delivered", "failed", "undelivered", "cancelled", "suppressed", "expired"})
# A sent message may still be delivered or not; it is final for the outbox but not for Twilio.
FINAL_FOR_OUTBOX = TERMINAL | {"sent"}


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


async def enqueue(conn: Executor, item: NewNotification, *, now: datetime) -> int | None:
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
    if notification_id is not None:
        await _event(conn, notification_id, now, None, "scheduled", "planned")
    return notification_id


async def _event(
    conn: Executor,
    notification_id: int,
    at: datetime,
    from_status: str | None,
    to_status: str,
    reason: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
        VALUES ($1, $2, $3, $4, $5)
        """,
        notification_id,
        at,
        from_status,
        to_status,
        reason,
    )


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
        await _event(conn, row["id"], now, "scheduled", "cancelled", reason)
    return len(rows)
