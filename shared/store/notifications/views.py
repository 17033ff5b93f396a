"""What staff see and do through the admin API (shared/store/notifications/): one message as
staff see it (`MessageView`: never the context or anything rendered from it), a patient's or an
appointment's messages, a message's status history and provider attempts, cancelling a
scheduled message, sending one again, and every message of a patient for an access request.

Invariants: a resend is a new row (the original's id in its `dedupe_key`), due now, planned
with the appointment's current version, and only of a message whose outcome is settled; a
cancel is atomic against a worker claiming the row (whichever commits first wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.store import Executor, appointments
from shared.store.notifications.rows import (
    FINAL_FOR_OUTBOX,
    AttemptView,
    Channel,
    EventView,
    NotificationStatus,
    insert_event,
)

# Resends carry the original's id in their dedupe key, so the chain needs no extra column.
RESEND_KEY_PREFIX = "resend:"
# Only rows whose outcome is settled may be sent again: a scheduled row will still go out, and a
# `sending` or `unknown` one may already have reached the patient (resending could send it twice).
RESENDABLE = FINAL_FOR_OUTBOX
# Staff alerts are urgent and re-sent by the escalation rules; a copy would wait for quiet hours.
NOT_RESENDABLE_KINDS = frozenset({"staff_alert"})
# A bound on resends of one message: beyond it a person should call the patient instead.
MAX_RESENDS = 20
# Context keys the notifier writes while sending one row (where it went, the email's Message-ID,
# a reserved send slot): they describe that row's attempts, so a copy must start without them,
# or it would reuse the original's slot and be reconciled against the original's message.
SEND_STATE_KEYS = frozenset({"attempt_to", "message_id", "sender_slot"})


@dataclass(frozen=True)
class MessageView:
    """One outbox row as staff see it: never the context or anything rendered from it.
    `address` is where the last attempt went; before any attempt, the row's fixed recipient or,
    for a patient's message, the patient's current address for the channel (patients' addresses
    are read at send time)."""

    id: int
    clinic_id: int
    patient_id: int | None
    appointment_id: int | None
    kind: str
    channel: Channel
    template: str
    template_version: int
    language: str
    status: NotificationStatus
    status_reason: str | None
    urgent: bool
    due_at: datetime
    expires_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    attempts: int
    error_code: int | None
    segments: int | None
    provider_id: str | None
    dedupe_key: str
    address: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def resend_of(self) -> int | None:
        """The notification this row re-sends, if it is a resend."""
        if not self.dedupe_key.startswith(RESEND_KEY_PREFIX):
            return None
        original, _, _ = self.dedupe_key.removeprefix(RESEND_KEY_PREFIX).partition(":")
        return int(original) if original.isdigit() else None


class MessageNotFound(Exception):
    def __init__(self, notification_id: int) -> None:
        super().__init__(f"no notification {notification_id}")
        self.notification_id = notification_id


class MessageStateConflict(Exception):
    """The row's state does not allow the action; `code` names the rule for the API."""

    def __init__(self, code: str, message: str, current_status: NotificationStatus) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.current_status = current_status


# One SELECT for every view of messages: the address shown is where the last attempt went, else
# the row's fixed recipient, else the patient's current address for the channel.
_VIEW = """
    SELECT n.id, n.clinic_id, n.patient_id, n.appointment_id, n.kind, n.channel, n.template,
           n.template_version, n.language, n.status, n.status_reason, n.urgent, n.due_at,
           n.expires_at, n.sent_at, n.delivered_at, n.attempts, n.error_code, n.segments,
           n.provider_id, n.dedupe_key,
           COALESCE(n.context ->> 'attempt_to', n.recipient,
                    CASE n.channel WHEN 'sms' THEN p.mobile ELSE p.email END) AS address,
           n.created_at, n.updated_at
    FROM notification n LEFT JOIN patient p ON p.id = n.patient_id"""


async def get(db: Executor, notification_id: int) -> MessageView | None:
    row = await db.fetchrow(f"{_VIEW} WHERE n.id = $1", notification_id)
    return None if row is None else MessageView(**dict(row))


async def list_page(
    db: Executor,
    *,
    patient_id: int | None = None,
    appointment_id: int | None = None,
    before_id: int | None,
    limit: int,
) -> list[MessageView]:
    """A patient's messages, or an appointment's (exactly one of the two), newest first,
    keyset-paginated on id (stable while rows are added or rescheduled, unlike due_at)."""
    if (patient_id is None) == (appointment_id is None):
        raise ValueError("list_page needs a patient_id or an appointment_id")
    # Two fixed conditions rather than one with optional parameters: each uses its own index.
    owner = "n.patient_id = $1" if patient_id is not None else "n.appointment_id = $1"
    rows = await db.fetch(
        f"""{_VIEW}
        WHERE {owner} AND ($2::bigint IS NULL OR n.id < $2)
        ORDER BY n.id DESC
        LIMIT $3
        """,
        patient_id if patient_id is not None else appointment_id,
        before_id,
        limit,
    )
    return [MessageView(**dict(row)) for row in rows]


async def status_history(db: Executor, notification_id: int) -> list[EventView]:
    """Every status change of one row, oldest first."""
    rows = await db.fetch(
        """
        SELECT id, at, from_status, to_status, reason FROM notification_event
        WHERE notification_id = $1 ORDER BY id
        """,
        notification_id,
    )
    return [EventView(**dict(row)) for row in rows]


async def attempt_history(db: Executor, notification_id: int) -> list[AttemptView]:
    """Every provider call for one row, oldest first."""
    rows = await db.fetch(
        """
        SELECT id, started_at, finished_at, outcome, error_code, detail, provider_id, worker
        FROM notification_attempt WHERE notification_id = $1 ORDER BY id
        """,
        notification_id,
    )
    return [AttemptView(**dict(row)) for row in rows]


async def _current_status(db: Executor, notification_id: int) -> NotificationStatus:
    status = await db.fetchval("SELECT status FROM notification WHERE id = $1", notification_id)
    if status is None:
        raise MessageNotFound(notification_id)
    return status  # type: ignore[no-any-return]


async def cancel_scheduled(
    conn: Executor, notification_id: int, *, reason: str, now: datetime
) -> None:
    """scheduled → cancelled, by staff. Atomic against a worker claiming the row: whichever
    commits first wins, and the loser sees the other's status (MessageStateConflict)."""
    cancelled = await conn.fetchval(
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
    if cancelled is None:
        current = await _current_status(conn, notification_id)
        message = f"only a scheduled message can be cancelled; it is {current}"
        raise MessageStateConflict("not-cancellable", message, current)
    await insert_event(conn, notification_id, now, "scheduled", "cancelled", reason)


async def _check_resendable(conn: Executor, notification_id: int, now: datetime) -> asyncpg.Record:
    original = await conn.fetchrow(
        """
        SELECT id, clinic_id, patient_id, appointment_id, kind, channel, recipient, template,
               template_version, language, context, expires_at, status
        FROM notification WHERE id = $1
        """,
        notification_id,
    )
    if original is None:
        raise MessageNotFound(notification_id)
    status = original["status"]
    if original["kind"] in NOT_RESENDABLE_KINDS:
        raise MessageStateConflict(
            "not-resendable", f"a {original['kind']} is re-sent by its escalation rules", status
        )
    if status not in RESENDABLE:
        raise MessageStateConflict(
            "not-resendable",
            f"the message is {status}: its outcome is not settled, so a copy could arrive twice",
            status,
        )
    if original["expires_at"] is not None and original["expires_at"] <= now:
        raise MessageStateConflict(
            "expired", "the message is past its expiry; sending it now is pointless", status
        )
    return original


async def resend(conn: asyncpg.Connection, notification_id: int, *, now: datetime) -> int:
    """A new row copying the original's kind, channel, template, context (less SEND_STATE_KEYS),
    patient and appointment, due now and carrying the appointment's current version, so the
    send-time checks and the content apply to today's data. Returns the new id. Raises
    MessageNotFound, or MessageStateConflict for a staff alert, an unsettled or expired original,
    or too many resends. Concurrent resends of one message each get their own row."""
    original = await _check_resendable(conn, notification_id, now)
    # Waits for a change of the appointment in flight: the copy then carries the version that
    # change committed, and a later change sees the copy and cancels it with the other pending
    # rows.
    appointment_id = original["appointment_id"]
    version = (
        None if appointment_id is None else await appointments.share_version(conn, appointment_id)
    )
    for number in range(1, MAX_RESENDS + 1):
        new_id = await conn.fetchval(
            """
            INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel,
                recipient, template, template_version, language, context, appointment_version,
                due_at, expires_at, dedupe_key, urgent, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, false, $12, $12)
            ON CONFLICT (dedupe_key) DO NOTHING
            RETURNING id
            """,
            original["clinic_id"],
            original["patient_id"],
            original["appointment_id"],
            original["kind"],
            original["channel"],
            original["recipient"],
            original["template"],
            original["template_version"],
            original["language"],
            {k: v for k, v in original["context"].items() if k not in SEND_STATE_KEYS},
            version,
            now,
            original["expires_at"],
            f"{RESEND_KEY_PREFIX}{notification_id}:{number}",
        )
        if new_id is not None:
            reason = f"resend of notification {notification_id}"
            await insert_event(conn, new_id, now, None, "scheduled", reason)
            return int(new_id)
    raise MessageStateConflict(
        "resend-limit",
        f"the message was already re-sent {MAX_RESENDS} times; call the patient instead",
        original["status"],
    )


@dataclass(frozen=True)
class HeldMessage:
    """One outbox row as an access request shows it: every stored column but the internal ones
    (lease, body hash, dedupe key), with its status history and provider attempts."""

    id: int
    appointment_id: int | None
    kind: str
    channel: Channel
    recipient: str | None
    template: str
    template_version: int
    language: str
    context: dict[str, Any]
    status: NotificationStatus
    status_reason: str | None
    due_at: datetime
    expires_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    attempts: int
    segments: int | None
    provider_id: str | None
    error_code: int | None
    created_at: datetime
    updated_at: datetime
    history: list[EventView]
    attempt_log: list[AttemptView]


async def held_for_patient(db: Executor, patient_id: int) -> list[HeldMessage]:
    """Every message to or about a patient, oldest first, with history and attempts (three
    queries, whatever the number of messages)."""
    rows = await db.fetch(
        """
        SELECT id, appointment_id, kind, channel, recipient, template, template_version,
               language, context, status, status_reason, due_at, expires_at, sent_at,
               delivered_at, attempts, segments, provider_id, error_code, created_at, updated_at
        FROM notification WHERE patient_id = $1 ORDER BY id
        """,
        patient_id,
    )
    ids = [row["id"] for row in rows]
    events: dict[int, list[EventView]] = {i: [] for i in ids}
    for event in await db.fetch(
        """
        SELECT notification_id, id, at, from_status, to_status, reason FROM notification_event
        WHERE notification_id = ANY($1::bigint[]) ORDER BY id
        """,
        ids,
    ):
        data = dict(event)
        events[data.pop("notification_id")].append(EventView(**data))
    attempts: dict[int, list[AttemptView]] = {i: [] for i in ids}
    for attempt in await db.fetch(
        """
        SELECT notification_id, id, started_at, finished_at, outcome, error_code, detail,
               provider_id, worker
        FROM notification_attempt WHERE notification_id = ANY($1::bigint[]) ORDER BY id
        """,
        ids,
    ):
        data = dict(attempt)
        attempts[data.pop("notification_id")].append(AttemptView(**data))
    return [
        HeldMessage(**dict(row), history=events[row["id"]], attempt_log=attempts[row["id"]])
        for row in rows
    ]


# -- Staff work queues (queues branch): a patient's conversation, the clinic's day -----------------


def conversation_time(view: MessageView) -> datetime:
    """Where an outbound message stands in a conversation: when it went, or, until it goes,
    when it is due (which quiet hours may still move)."""
    return view.sent_at or view.due_at


async def conversation_page(
    db: Executor, patient_id: int, *, after: tuple[datetime, int] | None, limit: int
) -> list[MessageView]:
    """A patient's messages in conversation order (`conversation_time`, then id), after the
    message whose (time, id) is `after`."""
    rows = await db.fetch(
        f"""{_VIEW}
        WHERE n.patient_id = $1
          AND ($2::timestamptz IS NULL
               OR (COALESCE(n.sent_at, n.due_at), n.id) > ($2, $3::bigint))
        ORDER BY COALESCE(n.sent_at, n.due_at), n.id
        LIMIT $4
        """,
        patient_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [MessageView(**dict(row)) for row in rows]


async def confirmation_asked(db: Executor, appointment_ids: list[int]) -> set[int]:
    """Those of the appointments whose confirmation request (the 72 h reminder, alone or
    merged into another reminder) has gone out."""
    rows = await db.fetch(
        """
        SELECT DISTINCT appointment_id FROM notification
        WHERE appointment_id = ANY($1::bigint[]) AND status IN ('sent', 'delivered')
          AND (kind = 'reminder_72h' OR context -> 'merged_kinds' ? 'reminder_72h')
        """,
        appointment_ids,
    )
    return {row["appointment_id"] for row in rows}
