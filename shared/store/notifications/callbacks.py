"""Provider status callbacks (shared/store/notifications/), for
services/notifier/status_callbacks.py: remembering which callbacks were applied, finding the row
one is about, and moving it forward.

Invariants: a callback is applied once (its idempotency token is remembered in the same
transaction, and forgotten by the notifier's sweep once Twilio would no longer retry it); a
row only ever moves forward (the caller decides what forward is).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg

from shared.store import Executor, affected
from shared.store.notifications.rows import Notification, insert_event, notification_from


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
    return None if row is None else notification_from(row)


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
    await insert_event(conn, current.id, now, current.status, status, reason)
