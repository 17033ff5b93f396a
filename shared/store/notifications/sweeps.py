"""The notifier's sweeps (shared/store/notifications/), for services/notifier/sweeps.py: rows
whose worker died (leases run out), rows whose provider call lost its answer (reconciled with
what the provider has), rows past their expiry, and the queue's depth.

Invariants: a rescued row becomes `unknown`, never `scheduled` (the dead worker may have sent
it), and only reconciliation moves it on; every sweep takes rows with SKIP LOCKED, so a row a
live worker holds is never touched and two replicas never take the same row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.store import Executor
from shared.store.notifications.rows import (
    FORGET_IF_ERASED,
    Notification,
    event_if_moved,
    notification_from,
)


async def rescue_expired_leases(
    conn: Executor, *, now: datetime, limit: int, liveness: timedelta
) -> list[int]:
    """sending rows whose lease ran out (by the app's clock) and whose worker has given no sign
    of life for `liveness` of real time (a live worker renews the leases of its calls in flight)
    → unknown: the worker died, maybe mid-call, so the row is reconciled, not resent."""
    rows = await conn.fetch(
        """
        WITH picked AS (
            SELECT id FROM notification
            WHERE status = 'sending' AND lease_until < $1
              AND (lease_renewed_at IS NULL
                   OR lease_renewed_at < clock_timestamp() - $3::interval)
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
        liveness,
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
    return [UnknownOutcome(notification_from(r), r["last_attempt_at"]) for r in rows]


async def provider_ids_in_use(db: Executor, provider_ids: list[str]) -> set[str]:
    rows = await db.fetch(
        "SELECT provider_id FROM notification WHERE provider_id = ANY($1::text[])", provider_ids
    )
    return {r["provider_id"] for r in rows}


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
               error_code = NULL, {FORGET_IF_ERASED}
        WHERE id = $1 AND status = 'unknown'
        RETURNING id
        """,  # noqa: S608 - a constant fragment
        notification_id,
        provider_id,
        segments,
        now,
    )
    return await event_if_moved(conn, done, notification_id, now, "unknown", "sent", reason)


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
               {FORGET_IF_ERASED}
        WHERE id = $1 AND status = 'unknown'
        RETURNING id
        """,  # noqa: S608 - a constant fragment
        notification_id,
        status,
        reason,
        now,
    )
    return await event_if_moved(conn, done, notification_id, now, "unknown", status, reason)


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
