"""Twilio's message status callbacks, applied to the outbox.

Twilio may deliver a callback more than once and in any order, so:
* a callback whose `I-Twilio-Idempotency-Token` was seen before is ignored (the token is stored
  in the transaction that applies the callback, so a callback that fails half-way is retried);
* status only moves forward: scheduled/sending/unknown < sent < delivered | undelivered |
  failed; a late `sent` never overwrites `delivered`;
* the row is found by our id (`n` in the callback URL, which Twilio signs with the rest of the
  URL) or else by its MessageSid; a callback about another message than the row's is ignored.

A callback on a row whose outcome we did not know (`unknown`, or put back to `scheduled` by
reconciliation) settles it: the message exists, whatever our side saw.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

import asyncpg

from services.notifier.metrics import NotifierMetrics
from shared.store import notifications

log = logging.getLogger("regimen.notifier.status")

Delivery = Literal["sent", "delivered", "undelivered", "failed"]
Outcome = Literal["applied", "duplicate", "ignored", "stale", "not_found"]

# Twilio statuses that say something the outbox records; the others (queued, accepted,
# sending, scheduled, read, ...) add nothing.
DELIVERY_STATUSES: dict[str, Delivery] = {
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
}
# How far along a row is; a callback applies only if it moves the row further.
RANK: dict[str, int] = {
    "scheduled": 0,
    "sending": 0,
    "unknown": 0,
    "sent": 1,
    "delivered": 2,
    "undelivered": 2,
    "failed": 2,
}


def parse_notification_id(raw: str | None) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


def parse_error_code(raw: str | None) -> int | None:
    if raw is None or not raw.strip().isdigit() or len(raw.strip()) > 9:
        return None
    return int(raw.strip())


async def apply_status_callback(
    pool: asyncpg.Pool,
    *,
    message_sid: str,
    message_status: str,
    error_code: int | None,
    notification_id: int | None,
    idempotency_token: str | None,
    now: datetime,
    metrics: NotifierMetrics,
) -> Outcome:
    delivery = DELIVERY_STATUSES.get(message_status.lower())
    async with pool.acquire() as conn, conn.transaction():
        if idempotency_token and not await notifications.callbacks.remember_callback(
            conn, idempotency_token, now=now
        ):
            return "duplicate"
        if delivery is None:
            return "ignored"
        current = await notifications.callbacks.find_for_callback(
            conn, notification_id=notification_id, provider_id=message_sid
        )
        if current is None:
            return "not_found"
        if current.channel != "sms" or (
            current.provider_id is not None and current.provider_id != message_sid
        ):
            return "ignored"
        rank = RANK.get(current.status)
        if rank is None:
            # Cancelled, suppressed or expired here, yet Twilio has a message: worth a look.
            log.warning(
                "status callback for a row that did not send",
                extra={"notification_id": current.id, "status": current.status},
            )
            return "ignored"
        if RANK[delivery] <= rank:
            return "stale"
        reason = f"Twilio reports {delivery}"
        if error_code is not None:
            reason += f" (error {error_code})"
        await notifications.callbacks.record_delivery_status(
            conn,
            current,
            status=delivery,
            provider_id=message_sid,
            error_code=error_code if delivery in ("undelivered", "failed") else None,
            reason=reason,
            now=now,
        )
    if delivery in ("undelivered", "failed"):
        # 30003/30008 may be temporary on the carrier's side, but this message is done.
        metrics.failed("sms", error_code, "delivery")
    return "applied"
