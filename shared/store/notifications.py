"""The notification outbox (owner of `notification`, `notification_attempt`,
`notification_event`, `provider_callback` and `sender_pace`).

Rows are written by whatever causes a message, inside the caller's transaction (a booking and
its confirmation commit together or not at all). The notifier claims due rows with SKIP LOCKED
and a lease; every status change leaves an event with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from shared.store import Executor, affected

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
    if notification_id is None:
        return None
    await _event(conn, notification_id, now, None, "scheduled", "planned")
    return int(notification_id)


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


async def _moved(
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
    await _event(conn, notification_id, now, from_status, to_status, reason)
    return True


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


# -- staff views and actions (admin API) -----------------------------------------------------------

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


async def list_by_patient(
    db: Executor, patient_id: int, *, before_id: int | None, limit: int
) -> list[MessageView]:
    """A patient's messages, newest first, keyset-paginated on id (stable while rows are
    added or rescheduled, unlike due_at)."""
    rows = await db.fetch(
        """
        SELECT n.id, n.clinic_id, n.patient_id, n.appointment_id, n.kind, n.channel, n.template,
               n.template_version, n.language, n.status, n.status_reason, n.urgent, n.due_at,
               n.expires_at, n.sent_at, n.delivered_at, n.attempts, n.error_code, n.segments,
               n.provider_id, n.dedupe_key,
               COALESCE(n.context ->> 'attempt_to', n.recipient,
                        CASE n.channel WHEN 'sms' THEN p.mobile ELSE p.email END) AS address,
               n.created_at, n.updated_at
        FROM notification n LEFT JOIN patient p ON p.id = n.patient_id
        WHERE n.patient_id = $1 AND ($2::bigint IS NULL OR n.id < $2)
        ORDER BY n.id DESC
        LIMIT $3
        """,
        patient_id,
        before_id,
        limit,
    )
    return [MessageView(**dict(row)) for row in rows]


async def list_by_appointment(
    db: Executor, appointment_id: int, *, before_id: int | None, limit: int
) -> list[MessageView]:
    """An appointment's messages, newest first, keyset-paginated on id."""
    rows = await db.fetch(
        """
        SELECT n.id, n.clinic_id, n.patient_id, n.appointment_id, n.kind, n.channel, n.template,
               n.template_version, n.language, n.status, n.status_reason, n.urgent, n.due_at,
               n.expires_at, n.sent_at, n.delivered_at, n.attempts, n.error_code, n.segments,
               n.provider_id, n.dedupe_key,
               COALESCE(n.context ->> 'attempt_to', n.recipient,
                        CASE n.channel WHEN 'sms' THEN p.mobile ELSE p.email END) AS address,
               n.created_at, n.updated_at
        FROM notification n LEFT JOIN patient p ON p.id = n.patient_id
        WHERE n.appointment_id = $1 AND ($2::bigint IS NULL OR n.id < $2)
        ORDER BY n.id DESC
        LIMIT $3
        """,
        appointment_id,
        before_id,
        limit,
    )
    return [MessageView(**dict(row)) for row in rows]


async def message_view(db: Executor, notification_id: int) -> MessageView | None:
    row = await db.fetchrow(
        """
        SELECT n.id, n.clinic_id, n.patient_id, n.appointment_id, n.kind, n.channel, n.template,
               n.template_version, n.language, n.status, n.status_reason, n.urgent, n.due_at,
               n.expires_at, n.sent_at, n.delivered_at, n.attempts, n.error_code, n.segments,
               n.provider_id, n.dedupe_key,
               COALESCE(n.context ->> 'attempt_to', n.recipient,
                        CASE n.channel WHEN 'sms' THEN p.mobile ELSE p.email END) AS address,
               n.created_at, n.updated_at
        FROM notification n LEFT JOIN patient p ON p.id = n.patient_id
        WHERE n.id = $1
        """,
        notification_id,
    )
    return None if row is None else MessageView(**dict(row))


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
    await _event(conn, notification_id, now, "scheduled", "cancelled", reason)


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


async def _appointment_version(conn: Executor, appointment_id: int | None) -> int | None:
    if appointment_id is None:
        return None
    # FOR SHARE waits for a change in flight: the copy then carries the version that change
    # committed, and a later change sees the copy and cancels it with the other pending rows.
    version = await conn.fetchval(
        "SELECT version FROM appointment WHERE id = $1 FOR SHARE", appointment_id
    )
    return None if version is None else int(version)


async def resend(conn: asyncpg.Connection, notification_id: int, *, now: datetime) -> int:
    """A new row copying the original's kind, channel, template, context (less SEND_STATE_KEYS),
    patient and appointment, due now and carrying the appointment's current version, so the
    send-time checks and the content apply to today's data. Returns the new id. Raises
    MessageNotFound, or MessageStateConflict for a staff alert, an unsettled or expired original,
    or too many resends. Concurrent resends of one message each get their own row."""
    original = await _check_resendable(conn, notification_id, now)
    version = await _appointment_version(conn, original["appointment_id"])
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
            await _event(conn, new_id, now, None, "scheduled", reason)
            return int(new_id)
    raise MessageStateConflict(
        "resend-limit",
        f"the message was already re-sent {MAX_RESENDS} times; call the patient instead",
        original["status"],
    )


# -- Reads for planning (added for shared/outbox_plan.py) ----------------------------------------


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


# -- Dispatch: claiming, attempts, outcomes, leases, pacing, callbacks (the notifier) -------------
#
# A worker claims due rows (scheduled → sending, with a lease), commits an attempt before each
# provider call, and records the outcome inside the transaction that holds the row while the
# call is in flight. Every function that moves a claimed row checks that the caller still holds
# it (status 'sending', leased_by = worker): a worker whose lease was rescued must not write.


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


def _notification(row: asyncpg.Record) -> Notification:
    # Picks the known columns, so a column added later does not break readers.
    return Notification(**{name: row[name] for name in _NOTIFICATION_FIELDS})


async def get(
    db: Executor, notification_id: int, *, for_update: bool = False
) -> Notification | None:
    if for_update:
        row = await db.fetchrow(
            "SELECT * FROM notification WHERE id = $1 FOR NO KEY UPDATE", notification_id
        )
    else:
        row = await db.fetchrow("SELECT * FROM notification WHERE id = $1", notification_id)
    return None if row is None else _notification(row)


async def claim_due(
    conn: Executor, *, now: datetime, lease: timedelta, worker: str, limit: int
) -> list[Notification]:
    """Take up to `limit` due rows for `worker`: scheduled → sending with a lease, committed by
    the caller's statement. SKIP LOCKED lets any number of workers claim at once without
    overlap (NO KEY: a row whose event is being inserted, which key-share locks it, is not
    skipped). In due order straight off the partial index: no sort, even for a burst of rows
    due at the same instant."""
    rows = await conn.fetch(
        """
        WITH picked AS (
            SELECT id FROM notification
            WHERE status = 'scheduled' AND due_at <= $1
            ORDER BY due_at
            LIMIT $4
            FOR NO KEY UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE notification n SET status = 'sending',
                   lease_until = $1::timestamptz + $2::interval, leased_by = $3, updated_at = $1
            FROM picked WHERE n.id = picked.id AND n.status = 'scheduled'
            RETURNING n.*
        ), events AS (
            INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
            SELECT id, $1, 'scheduled', 'sending', 'claimed by ' || $3 FROM claimed
        )
        SELECT * FROM claimed ORDER BY due_at, id
        """,
        now,
        lease,
        worker,
        limit,
    )
    return [_notification(r) for r in rows]


async def next_due_at(db: Executor) -> datetime | None:
    """When the earliest scheduled row comes due (a worker sleeps until then at most)."""
    return await db.fetchval(  # type: ignore[no-any-return]
        "SELECT min(due_at) FROM notification WHERE status = 'scheduled'"
    )


async def release(
    conn: Executor, notification_id: int, *, worker: str, now: datetime, reason: str
) -> bool:
    """sending → scheduled, unchanged due time: a claimed row this worker will not send after
    all (it is stopping). False when the worker no longer holds it."""
    released = await conn.fetchval(
        """
        UPDATE notification SET status = 'scheduled', lease_until = NULL, leased_by = NULL,
               updated_at = $3
        WHERE id = $1 AND status = 'sending' AND leased_by = $2
        RETURNING id
        """,
        notification_id,
        worker,
        now,
    )
    return await _moved(conn, released, notification_id, now, "sending", "scheduled", reason)


async def defer(
    conn: Executor,
    notification_id: int,
    *,
    worker: str,
    due_at: datetime,
    now: datetime,
    reason: str,
    sender_slot: datetime | None = None,
) -> bool:
    """sending → scheduled with a later due time (quiet hours, the daily limit, the sender's
    rate), before any provider call. `sender_slot` keeps a reserved send time so the row does
    not reserve another when it comes back; any other deferral drops an old reservation."""
    deferred = await conn.fetchval(
        """
        UPDATE notification SET status = 'scheduled', due_at = $3, lease_until = NULL,
               leased_by = NULL, updated_at = $4, status_reason = $5,
               context = CASE WHEN $6::timestamptz IS NULL THEN context - 'sender_slot'
                              ELSE context || jsonb_build_object('sender_slot', $6::timestamptz)
                         END
        WHERE id = $1 AND status = 'sending' AND leased_by = $2
        RETURNING id
        """,
        notification_id,
        worker,
        due_at,
        now,
        reason,
        sender_slot,
    )
    return await _moved(conn, deferred, notification_id, now, "sending", "scheduled", reason)


SettledStatus = Literal["cancelled", "suppressed", "expired", "failed"]


async def settle(
    conn: Executor,
    notification_id: int,
    *,
    worker: str,
    status: SettledStatus,
    reason: str,
    now: datetime,
    error_code: int | None = None,
) -> bool:
    """sending → a final state without (another) provider call: the send-time checks failed
    (cancelled, suppressed, expired) or the message cannot be composed (failed)."""
    settled = await conn.fetchval(
        """
        UPDATE notification SET status = $3, status_reason = $4, error_code = $5,
               lease_until = NULL, updated_at = $6
        WHERE id = $1 AND status = 'sending' AND leased_by = $2
        RETURNING id
        """,
        notification_id,
        worker,
        status,
        reason,
        error_code,
        now,
    )
    return await _moved(conn, settled, notification_id, now, "sending", status, reason)


@dataclass(frozen=True)
class AttemptStart:
    """A provider call about to start: the body's hash and `context` additions (where it goes,
    the email's Message-ID) that reconciliation needs if the call's outcome is lost."""

    notification_id: int
    body_hash: bytes
    context: dict[str, Any]


async def begin_attempts(
    conn: Executor,
    starts: Sequence[AttemptStart],
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> dict[int, int]:
    """Record, and commit with the caller's statement, that provider calls are about to start:
    attempts + 1, a fresh lease, the body's hash and the context additions. Returns
    notification id → attempt id for the rows the worker still holds (a missing one was taken
    from it)."""
    rows = await conn.fetch(
        """
        WITH v AS (
            SELECT * FROM unnest($4::bigint[], $5::bytea[], $6::text[]) AS v(id, hash, extra)
        ), held AS (
            UPDATE notification n SET attempts = n.attempts + 1,
                   lease_until = $2::timestamptz + $3::interval, body_hash = v.hash,
                   context = n.context || v.extra::jsonb, updated_at = $2
            FROM v
            WHERE n.id = v.id AND n.status = 'sending' AND n.leased_by = $1
            RETURNING n.id
        )
        INSERT INTO notification_attempt (notification_id, started_at, worker)
        SELECT id, $2, $1 FROM held
        RETURNING notification_id, id
        """,
        worker,
        now,
        lease,
        [s.notification_id for s in starts],
        [s.body_hash for s in starts],
        [json.dumps(s.context) for s in starts],
    )
    return {row["notification_id"]: row["id"] for row in rows}


async def hold_for_send(conn: asyncpg.Connection, notification_id: int, *, worker: str) -> bool:
    """Lock the row for the rest of the caller's transaction if the worker still holds it
    (lock_for_send without appointments)."""
    _, held = await lock_for_send(conn, [], [notification_id], worker=worker)
    return notification_id in held


async def lock_for_send(
    conn: asyncpg.Connection,
    appointment_ids: Sequence[int],
    notification_ids: Sequence[int],
    *,
    worker: str,
) -> tuple[dict[int, int], set[int]]:
    """Until the caller's transaction ends (after the provider calls): FOR SHARE on the
    appointments the messages talk about, so a cancel or move (FOR UPDATE) waits for the
    messages to leave, or they wait for the change and see it; then the rows this worker still
    holds (status 'sending', leased to it). The lease-rescue sweep skips locked rows, so a slow
    call is never mistaken for a dead worker; a crashed worker's locks die with its connection.
    Appointments before rows, each in id order, in one statement, so two senders never
    deadlock. Returns (appointment id → version, ids of rows held). (The appointment read
    belongs to the appointments store; it shares this round trip.)"""
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT 'appointment' AS kind, id, version FROM appointment
            WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE
        ) AS appointments
        UNION ALL
        SELECT * FROM (
            SELECT 'notification', id, NULL::int FROM notification
            WHERE id = ANY($2::bigint[]) AND status = 'sending' AND leased_by = $3
            ORDER BY id FOR NO KEY UPDATE
        ) AS held
        """,
        list(appointment_ids),
        list(notification_ids),
        worker,
    )
    versions = {r["id"]: r["version"] for r in rows if r["kind"] == "appointment"}
    return versions, {r["id"] for r in rows if r["kind"] == "notification"}


AttemptOutcome = Literal["sent", "temporary", "permanent", "ambiguous"]


async def _finish_attempt(
    conn: Executor,
    attempt_id: int,
    *,
    now: datetime,
    outcome: AttemptOutcome | None,
    error_code: int | None = None,
    detail: str = "",
    provider_id: str | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE notification_attempt SET finished_at = $2, outcome = $3, error_code = $4,
               detail = $5, provider_id = $6
        WHERE id = $1
        """,
        attempt_id,
        now,
        outcome,
        error_code,
        detail,
        provider_id,
    )


async def abandon_attempt(conn: Executor, attempt_id: int, *, now: datetime, detail: str) -> None:
    """An attempt that stopped before the provider call (the last check under lock failed)."""
    await _finish_attempt(conn, attempt_id, now=now, outcome=None, detail=detail)


OutcomeStatus = Literal["sent", "scheduled", "failed", "unknown"]


@dataclass(frozen=True)
class SendOutcome:
    """How one provider call ended, for record_outcomes.

    sent: accepted (provider_id, segments); scheduled: a temporary failure, due again at
    `due_at`; failed: permanent, or temporary with no retry left; unknown: the request left and
    no answer came (reconciliation decides). `reason` is the row's status reason (except when
    sent), the attempt's detail and the event's reason."""

    notification_id: int
    attempt_id: int
    status: OutcomeStatus
    at: datetime
    reason: str
    attempt_outcome: AttemptOutcome
    provider_id: str | None = None
    segments: int | None = None
    error_code: int | None = None
    due_at: datetime | None = None


async def record_outcomes(conn: Executor, outcomes: Sequence[SendOutcome]) -> None:
    """sending → the outcome's status for each row, its attempt finished and an event logged,
    in one statement (a dispatcher records a whole batch of calls at once)."""
    await conn.execute(
        """
        WITH v AS (
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[],
                                 $5::text[], $6::text[], $7::text[], $8::int[], $9::int[],
                                 $10::timestamptz[])
                AS v(id, attempt_id, status, at, reason, attempt_outcome, provider_id,
                     segments, error_code, due_at)
        ), moved AS (
            UPDATE notification n SET
                status = v.status,
                provider_id = CASE WHEN v.status = 'sent' THEN v.provider_id
                                   ELSE n.provider_id END,
                segments = CASE WHEN v.status = 'sent' THEN v.segments ELSE n.segments END,
                sent_at = CASE WHEN v.status = 'sent' THEN v.at ELSE n.sent_at END,
                due_at = CASE WHEN v.status = 'scheduled' THEN v.due_at ELSE n.due_at END,
                error_code = CASE WHEN v.status = 'unknown' THEN n.error_code
                                  ELSE v.error_code END,
                status_reason = CASE WHEN v.status = 'sent' THEN NULL ELSE v.reason END,
                lease_until = NULL,
                leased_by = CASE WHEN v.status = 'scheduled' THEN NULL ELSE n.leased_by END,
                context = CASE WHEN v.status IN ('sent', 'scheduled')
                               THEN n.context - 'sender_slot' ELSE n.context END,
                updated_at = v.at
            FROM v WHERE n.id = v.id AND n.status = 'sending'
            RETURNING n.id
        ), finished AS (
            UPDATE notification_attempt a SET finished_at = v.at, outcome = v.attempt_outcome,
                   error_code = v.error_code, detail = v.reason, provider_id = v.provider_id
            FROM v WHERE a.id = v.attempt_id
        )
        INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
        SELECT v.id, v.at, 'sending', v.status, v.reason FROM v JOIN moved USING (id)
        """,
        [o.notification_id for o in outcomes],
        [o.attempt_id for o in outcomes],
        [o.status for o in outcomes],
        [o.at for o in outcomes],
        [o.reason for o in outcomes],
        [o.attempt_outcome for o in outcomes],
        [o.provider_id for o in outcomes],
        [o.segments for o in outcomes],
        [o.error_code for o in outcomes],
        [o.due_at for o in outcomes],
    )


# -- send-time rules that look at other rows -------------------------------------------------------


@dataclass(frozen=True)
class DayWindow:
    """A patient's local day on one channel, as instants: [start, end)."""

    patient_id: int
    channel: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class PatientFacts:
    """What the daily limit and merging need about a batch's patients."""

    # (patient, channel) → non-urgent messages of the capped kinds sent in the window, or being
    # sent right now by any worker
    sent_today: dict[tuple[int, str], int]
    # (patient, channel) → rows lock_merge_candidates could find for a reminder of theirs
    mergeable: dict[tuple[int, str], set[int]]


async def patient_facts(
    db: Executor,
    windows: Sequence[DayWindow],
    *,
    exempt_kinds: list[str],
    merge_keys: Sequence[tuple[int, str]],
    merge_kinds: list[str],
    due_until: datetime,
    worker: str,
    own_claimed: list[int],
) -> PatientFacts:
    """Both facts for a whole batch in one statement (a round trip costs more than the
    lookups): per window, a count on the patient index; per merge key, the rows a reminder
    could absorb, read without locks (merge_nearby locks and checks again). The batch's own
    rows (`own_claimed`) do not count toward the limit."""
    rows = await db.fetch(
        """
        SELECT 'sent' AS fact, w.patient_id, w.channel,
               (SELECT count(*) FROM notification n
                WHERE n.patient_id = w.patient_id AND n.channel = w.channel AND NOT n.urgent
                  AND NOT (n.kind = ANY($5::text[])) AND n.id <> ALL($11::bigint[])
                  AND ((n.sent_at >= w.day_start AND n.sent_at < w.day_end)
                       OR n.status = 'sending')) AS sent,
               NULL::bigint AS id
        FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[])
             AS w(patient_id, channel, day_start, day_end)
        UNION ALL
        SELECT 'merge', k.patient_id, k.channel, NULL, m.id
        FROM unnest($6::bigint[], $7::text[]) AS k(patient_id, channel)
        CROSS JOIN LATERAL (
            SELECT id FROM notification
            WHERE patient_id = k.patient_id AND channel = k.channel
              AND kind = ANY($8::text[]) AND due_at <= $9
              AND (status = 'scheduled'
                   OR (status = 'sending' AND leased_by = $10 AND id = ANY($11::bigint[])))
        ) AS m
        """,
        [w.patient_id for w in windows],
        [w.channel for w in windows],
        [w.start for w in windows],
        [w.end for w in windows],
        exempt_kinds,
        [k[0] for k in merge_keys],
        [k[1] for k in merge_keys],
        merge_kinds,
        due_until,
        worker,
        own_claimed,
    )
    facts = PatientFacts({}, {})
    for row in rows:
        key = (row["patient_id"], row["channel"])
        if row["fact"] == "sent":
            facts.sent_today[key] = int(row["sent"])
        else:
            facts.mergeable.setdefault(key, set()).add(row["id"])
    return facts


@dataclass(frozen=True)
class MergeCandidate:
    id: int
    kind: str
    appointment_id: int | None
    appointment_version: int | None
    context: dict[str, Any]
    expires_at: datetime | None


async def lock_merge_candidates(
    conn: asyncpg.Connection,
    target: Notification,
    *,
    kinds: list[str],
    due_until: datetime,
    own_claimed: list[int],
    worker: str,
) -> list[MergeCandidate]:
    """The patient's other reminders on the same channel due by `due_until`, locked for the
    caller's transaction: scheduled ones, and ones this worker claimed in the same batch.
    Rows another worker holds are skipped (they go on their own)."""
    rows = await conn.fetch(
        """
        SELECT id, kind, appointment_id, appointment_version, context, expires_at
        FROM notification
        WHERE patient_id = $1 AND channel = $2 AND id <> $3 AND kind = ANY($4::text[])
          AND due_at <= $5
          AND (status = 'scheduled'
               OR (status = 'sending' AND leased_by = $6 AND id = ANY($7::bigint[])))
        ORDER BY due_at, id
        FOR NO KEY UPDATE SKIP LOCKED
        """,
        target.patient_id,
        target.channel,
        target.id,
        kinds,
        due_until,
        worker,
        own_claimed,
    )
    return [MergeCandidate(**dict(r)) for r in rows]


async def merge_into(
    conn: asyncpg.Connection,
    target_id: int,
    merged: list[MergeCandidate],
    *,
    context: dict[str, Any],
    now: datetime,
) -> None:
    """Suppress `merged` (locked by lock_merge_candidates) as merged into `target_id`, whose
    context gains `context` (the merged appointments and kinds the message now covers)."""
    reason = f"merged into notification {target_id}"
    rows = await conn.fetch(
        """
        WITH picked AS (
            SELECT id, status AS old_status FROM notification
            WHERE id = ANY($1::bigint[]) AND status IN ('scheduled', 'sending')
        ), merged AS (
            UPDATE notification n SET status = 'suppressed', status_reason = $2,
                   lease_until = NULL, updated_at = $3
            FROM picked WHERE n.id = picked.id
            RETURNING n.id, picked.old_status
        )
        INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
        SELECT id, $3, old_status, 'suppressed', $2 FROM merged
        RETURNING notification_id
        """,
        [m.id for m in merged],
        reason,
        now,
    )
    if rows:
        await conn.execute(
            "UPDATE notification SET context = context || $2::jsonb, updated_at = $3 WHERE id = $1",
            target_id,
            context,
            now,
        )


async def unmerge(
    conn: Executor, target_id: int, merged_ids: list[int], *, now: datetime, reason: str
) -> list[int]:
    """Rows merged into `target_id`, which ends without sending (its own appointment was
    cancelled, it expired), go back to scheduled, due now, to be checked and sent on their
    own."""
    rows = await conn.fetch(
        """
        WITH restored AS (
            UPDATE notification SET status = 'scheduled', due_at = $3, status_reason = $4,
                   updated_at = $3
            WHERE id = ANY($1::bigint[]) AND status = 'suppressed'
              AND status_reason = 'merged into notification ' || $2::bigint
            RETURNING id
        ), events AS (
            INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
            SELECT id, $3, 'suppressed', 'scheduled', $4 FROM restored
        )
        SELECT id FROM restored ORDER BY id
        """,
        merged_ids,
        target_id,
        now,
        reason,
    )
    return [r["id"] for r in rows]


# -- the sender's pace (rate limit shared by every replica) --------------------------------------


async def reserve_sender_slot(
    conn: Executor, *, sender: str, now: datetime, cost: timedelta, urgent: bool = False
) -> datetime:
    """Reserve the next send time of `sender` for a message costing `cost` (its segments at the
    sender's rate) and return it. One row per sender, moved forward by one statement, so
    replicas never hand out the same slot. An urgent message goes now and pushes the queue back
    (the carrier sees at most one message over the rate)."""
    next_free = await conn.fetchval(
        """
        INSERT INTO sender_pace AS p (sender, next_free_at)
        VALUES ($1, $2::timestamptz + $3::interval)
        ON CONFLICT (sender) DO UPDATE
            SET next_free_at = greatest(p.next_free_at, $2::timestamptz) + $3::interval
        RETURNING next_free_at
        """,
        sender,
        now,
        cost,
    )
    return now if urgent else next_free - cost


# -- sweeps: leases, unknown outcomes, expiry, queue depth --------------------------------------


async def rescue_expired_leases(conn: Executor, *, now: datetime, limit: int) -> list[int]:
    """sending rows whose lease ran out and that no live worker holds (a held row is locked and
    skipped) → unknown: the worker died, maybe mid-call, so the row is reconciled, not resent."""
    rows = await conn.fetch(
        """
        WITH picked AS (
            SELECT id FROM notification
            WHERE status = 'sending' AND lease_until < $1
            ORDER BY lease_until
            LIMIT $2
            FOR NO KEY UPDATE SKIP LOCKED
        ), rescued AS (
            UPDATE notification n SET status = 'unknown', lease_until = NULL, updated_at = $1,
                   status_reason = 'lease of ' || coalesce(n.leased_by, '?')
                                   || ' expired while sending'
            FROM picked WHERE n.id = picked.id AND n.status = 'sending'
            RETURNING n.id, n.status_reason
        ), events AS (
            INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
            SELECT id, $1, 'sending', 'unknown', status_reason FROM rescued
        )
        SELECT id FROM rescued ORDER BY id
        """,
        now,
        limit,
    )
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class UnknownOutcome:
    notification: Notification
    last_attempt_at: datetime | None


async def unknown_outcomes(db: Executor, *, limit: int) -> list[UnknownOutcome]:
    """Rows whose last provider call has no known outcome, oldest first."""
    rows = await db.fetch(
        """
        SELECT n.*, (SELECT max(a.started_at) FROM notification_attempt a
                     WHERE a.notification_id = n.id) AS last_attempt_at
        FROM notification n WHERE n.status = 'unknown'
        ORDER BY n.updated_at, n.id
        LIMIT $1
        """,
        limit,
    )
    return [UnknownOutcome(_notification(r), r["last_attempt_at"]) for r in rows]


async def provider_ids_in_use(db: Executor, provider_ids: list[str]) -> set[str]:
    rows = await db.fetch(
        "SELECT provider_id FROM notification WHERE provider_id = ANY($1::text[])", provider_ids
    )
    return {r["provider_id"] for r in rows}


# In a settling UPDATE of `notification`: the address and texts of an erased patient's row go
# once its outcome is known (erasure left them for reconciliation; see scrub_for_patient).
_FORGET_IF_ERASED = """
    context = CASE WHEN EXISTS (SELECT 1 FROM patient p
                                WHERE p.id = notification.patient_id AND p.erased_at IS NOT NULL)
                   THEN context - '{attempt_to,text}'::text[] ELSE context END"""


async def reconcile_as_sent(
    conn: Executor,
    notification_id: int,
    *,
    provider_id: str,
    segments: int | None,
    now: datetime,
    reason: str,
) -> bool:
    """unknown → sent: the provider has the message after all."""
    done = await conn.fetchval(
        f"""
        UPDATE notification SET status = 'sent', provider_id = $2, segments = $3,
               sent_at = coalesce(sent_at, $4), updated_at = $4, status_reason = NULL,
               error_code = NULL, {_FORGET_IF_ERASED}
        WHERE id = $1 AND status = 'unknown'
        RETURNING id
        """,  # noqa: S608 - a constant fragment
        notification_id,
        provider_id,
        segments,
        now,
    )
    return await _moved(conn, done, notification_id, now, "unknown", "sent", reason)


async def reconcile_as_not_sent(
    conn: Executor,
    notification_id: int,
    *,
    now: datetime,
    reason: str,
    status: Literal["scheduled", "expired", "failed"] = "scheduled",
) -> bool:
    """unknown → scheduled (due now) when the provider never got it; → expired when it is past
    its use anyway, or → failed when its attempts are used up."""
    done = await conn.fetchval(
        f"""
        UPDATE notification SET status = $2, status_reason = $3, updated_at = $4,
               leased_by = NULL, due_at = CASE WHEN $2 = 'scheduled' THEN $4 ELSE due_at END,
               {_FORGET_IF_ERASED}
        WHERE id = $1 AND status = 'unknown'
        RETURNING id
        """,  # noqa: S608 - a constant fragment
        notification_id,
        status,
        reason,
        now,
    )
    return await _moved(conn, done, notification_id, now, "unknown", status, reason)


async def expire_overdue(conn: Executor, *, now: datetime, limit: int) -> int:
    """scheduled rows past their expiry → expired (a reminder after its appointment)."""
    count = await conn.fetchval(
        """
        WITH picked AS (
            SELECT id FROM notification
            WHERE status = 'scheduled' AND expires_at <= $1
            LIMIT $2
            FOR NO KEY UPDATE SKIP LOCKED
        ), expired AS (
            UPDATE notification n SET status = 'expired', updated_at = $1, lease_until = NULL,
                   status_reason = 'expired before it could be sent'
            FROM picked WHERE n.id = picked.id AND n.status = 'scheduled'
            RETURNING n.id
        ), events AS (
            INSERT INTO notification_event (notification_id, at, from_status, to_status, reason)
            SELECT id, $1, 'scheduled', 'expired', 'expired before it could be sent' FROM expired
        )
        SELECT count(*) FROM expired
        """,
        now,
        limit,
    )
    return int(count)


async def queue_depth(db: Executor, *, now: datetime) -> tuple[dict[str, int], int]:
    """Rows waiting or in flight by status, and how many scheduled ones are already due."""
    rows = await db.fetch(
        """
        SELECT status, count(*) AS n FROM notification
        WHERE status IN ('scheduled', 'sending', 'unknown')
        GROUP BY status
        """
    )
    overdue = await db.fetchval(
        "SELECT count(*) FROM notification WHERE status = 'scheduled' AND due_at <= $1", now
    )
    return {r["status"]: int(r["n"]) for r in rows}, int(overdue)


# -- status callbacks ------------------------------------------------------------------------------


async def remember_callback(conn: Executor, token: str, *, now: datetime) -> bool:
    """True the first time a callback's idempotency token is seen (inside the caller's
    transaction, so a callback that fails half-way is not remembered)."""
    stored = await conn.fetchval(
        """
        INSERT INTO provider_callback (idempotency_token, received_at) VALUES ($1, $2)
        ON CONFLICT (idempotency_token) DO NOTHING
        RETURNING 1
        """,
        token,
        now,
    )
    return stored is not None


async def forget_callbacks_before(conn: Executor, before: datetime) -> int:
    """Twilio retries a callback within minutes; tokens older than that only take space."""
    result = await conn.execute("DELETE FROM provider_callback WHERE received_at < $1", before)
    return affected(result)


async def find_for_callback(
    conn: asyncpg.Connection, *, notification_id: int | None, provider_id: str
) -> Notification | None:
    """The row a status callback is about, locked: by our id from the callback URL, else by the
    provider's message id."""
    if notification_id is not None:
        row = await conn.fetchrow(
            "SELECT * FROM notification WHERE id = $1 FOR NO KEY UPDATE", notification_id
        )
    else:
        row = await conn.fetchrow(
            "SELECT * FROM notification WHERE provider_id = $1 FOR NO KEY UPDATE", provider_id
        )
    return None if row is None else _notification(row)


async def record_delivery_status(
    conn: Executor,
    current: Notification,
    *,
    status: Literal["sent", "delivered", "undelivered", "failed"],
    provider_id: str,
    error_code: int | None,
    reason: str,
    now: datetime,
) -> None:
    """Move a row forward to what the provider reports (the caller decided it is forward)."""
    await conn.execute(
        """
        UPDATE notification SET status = $2, provider_id = coalesce(provider_id, $3),
               error_code = coalesce($4, error_code), status_reason = $5, updated_at = $6,
               sent_at = coalesce(sent_at, $6), lease_until = NULL,
               delivered_at = CASE WHEN $2 = 'delivered' THEN $6 ELSE delivered_at END
        WHERE id = $1
        """,
        current.id,
        status,
        provider_id,
        error_code,
        reason,
        now,
    )
    await _event(conn, current.id, now, current.status, status, reason)


# -- Erasure and access requests (added for the admin API's patient erasure and export) ----------

# Rows whose provider call lost its answer: reconciliation asks Twilio about the address the
# attempt went to (`attempt_to`), so erasure leaves them to it, and it forgets the address of an
# erased patient's row when it settles one (_FORGET_IF_ERASED).
UNSETTLED = "unknown"
# Context keys that can hold contact data or text written to the patient: where an attempt went,
# and the free text of a reply or staff alert.
PERSONAL_CONTEXT_KEYS = ("attempt_to", "text")
ERASED_TEXT = "[erased]"
# Addresses a provider's error text may quote ("The 'To' number +44... is not valid", "550 5.1.1
# <a@b.example>: unknown user"): any email address, E.164 numbers and long bare digit runs
# (national numbers). Short numbers (error codes, the parts of a date) stay readable.
_EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
_PHONE_PATTERN = r"\+[0-9]{7,15}|[0-9]{9,15}"


async def cancel_pending_for_patient(
    conn: Executor, patient_id: int, *, reason: str, now: datetime
) -> list[int]:
    """Cancel every not-yet-sent message to a patient (about an appointment or not); the ids.
    Call inside the transaction that makes the messages pointless.

    Rows a worker has claimed ('sending') are cancelled too. A worker sends only rows it still
    holds under lock_for_send (status 'sending', leased to it), so: if this commits first, the
    worker finds the row gone and sends nothing; if the worker locked it first, this UPDATE waits
    until that send is recorded, and then no longer matches (the row is 'sent')."""
    rows = await conn.fetch(
        """
        UPDATE notification n SET status = 'cancelled', status_reason = $2, updated_at = $3,
               lease_until = NULL, leased_by = NULL
        FROM (
            SELECT id, status FROM notification
            WHERE patient_id = $1 AND status IN ('scheduled', 'sending')
            FOR NO KEY UPDATE
        ) AS before
        WHERE n.id = before.id AND n.status IN ('scheduled', 'sending')
        RETURNING n.id, before.status AS was
        """,
        patient_id,
        reason,
        now,
    )
    for row in rows:
        await _event(conn, row["id"], now, row["was"], "cancelled", reason)
    return sorted(row["id"] for row in rows)


@dataclass(frozen=True)
class ScrubbedMessages:
    scrubbed_ids: list[int]  # rows whose address, texts and provider details were removed
    unsettled_ids: list[int]  # left to reconciliation, which forgets the address when it settles


async def scrub_for_patient(conn: Executor, patient_id: int, *, now: datetime) -> ScrubbedMessages:
    """Erasure: remove the contact data the patient's messages hold (the address an attempt went
    to, reply texts, a fixed recipient other than a staff member's, addresses quoted in status
    reasons and in every attempt's provider detail), keeping kind, channel, times, statuses and
    provider ids. Status history (`notification_event`) is append-only and is not touched.

    A provider call in flight holds its row until its outcome is recorded: this waits for it
    (so the outcome is scrubbed too). Call after the patient's appointments are locked, as a
    sender locks appointments before rows. Rows whose outcome was lost (UNSETTLED) are left."""
    await conn.execute(
        "SELECT id FROM notification WHERE patient_id = $1 AND status = 'sending' "
        "ORDER BY id FOR NO KEY UPDATE",
        patient_id,
    )
    rows = await conn.fetch(
        f"""
        UPDATE notification SET
            context = context - $2::text[],
            recipient = CASE WHEN kind = 'staff_alert' THEN recipient END,
            status_reason = regexp_replace(regexp_replace(status_reason,
                '{_EMAIL_PATTERN}', $3, 'g'), '{_PHONE_PATTERN}', $3, 'g'),
            updated_at = $4
        WHERE patient_id = $1 AND status <> $5
        RETURNING id
        """,  # noqa: S608 - the patterns are constants
        patient_id,
        list(PERSONAL_CONTEXT_KEYS),
        ERASED_TEXT,
        now,
        UNSETTLED,
    )
    await conn.execute(
        f"""
        UPDATE notification_attempt a SET detail = regexp_replace(regexp_replace(a.detail,
                '{_EMAIL_PATTERN}', $2, 'g'), '{_PHONE_PATTERN}', $2, 'g')
        FROM notification n
        WHERE n.id = a.notification_id AND n.patient_id = $1 AND a.detail <> ''
        """,  # noqa: S608 - the patterns are constants
        patient_id,
        ERASED_TEXT,
    )
    unsettled = await conn.fetch(
        "SELECT id FROM notification WHERE patient_id = $1 AND status = $2", patient_id, UNSETTLED
    )
    return ScrubbedMessages(sorted(r["id"] for r in rows), sorted(r["id"] for r in unsettled))


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
