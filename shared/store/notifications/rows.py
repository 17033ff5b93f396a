"""Outbox rows (shared/store/notifications/): the row dataclass of each table, the status
names, reading one row, and the event every status change leaves.

Invariant: a status change and its `notification_event` are written together (`insert_event`,
or `event_if_moved` after a guarded UPDATE that may have matched nothing); events are
append-only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

import asyncpg

from shared.store import Executor

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


# The context keys a settled row of an erased patient loses: the address an attempt went to and
# free text. Erasure leaves them on rows whose outcome is not known yet (a call in flight, a lost
# answer), because reconciliation needs the address; whatever settles such a row forgets them.
ERASED_PATIENT_KEYS = """(CASE WHEN EXISTS (SELECT 1 FROM patient p
                                            WHERE p.id = notification.patient_id
                                              AND p.erased_at IS NOT NULL)
                               THEN '{attempt_to,text}'::text[] ELSE '{}'::text[] END)"""
# In a settling UPDATE of `notification`.
FORGET_IF_ERASED = f"context = context - {ERASED_PATIENT_KEYS}"


@dataclass(frozen=True)
class Notification:
    """One outbox row, every column."""

    id: int
    clinic_id: int
    patient_id: int | None
    appointment_id: int | None
    kind: str
    channel: Channel
    recipient: str | None
    template: str
    template_version: int
    language: str
    context: dict[str, Any]
    appointment_version: int | None
    due_at: datetime
    expires_at: datetime | None
    dedupe_key: str
    status: NotificationStatus
    urgent: bool
    attempts: int
    lease_until: datetime | None
    leased_by: str | None
    provider_id: str | None
    segments: int | None
    body_hash: bytes | None
    status_reason: str | None
    error_code: int | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


_NOTIFICATION_FIELDS = tuple(f.name for f in fields(Notification))


def notification_from(row: asyncpg.Record) -> Notification:
    # Picks the known columns, so a column added later does not break readers.
    return Notification(**{name: row[name] for name in _NOTIFICATION_FIELDS})


async def get(db: Executor, notification_id: int) -> Notification | None:
    row = await db.fetchrow("SELECT * FROM notification WHERE id = $1", notification_id)
    return None if row is None else notification_from(row)


@dataclass(frozen=True)
class EventView:
    id: int
    at: datetime
    from_status: NotificationStatus | None
    to_status: NotificationStatus
    reason: str


@dataclass(frozen=True)
class AttemptView:
    id: int
    started_at: datetime
    finished_at: datetime | None
    outcome: Literal["sent", "temporary", "permanent", "ambiguous"] | None
    error_code: int | None
    detail: str
    provider_id: str | None
    worker: str


async def insert_event(
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


async def event_if_moved(
    conn: Executor,
    updated_id: int | None,
    notification_id: int,
    now: datetime,
    from_status: str,
    to_status: str,
    reason: str,
) -> bool:
    # A guarded UPDATE ... RETURNING id yields None when the row was not in `from_status` (or
    # not held by the caller): nothing moved, so no event may be logged for it.
    if updated_id is None:
        return False
    await insert_event(conn, notification_id, now, from_status, to_status, reason)
    return True
