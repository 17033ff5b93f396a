"""The notifier's sweeps (APScheduler through shared/sweeps.py): rescue rows whose worker died,
find out what happened to sends whose outcome is unknown, expire rows past their use, and keep
the queue-depth gauges current.

Unknown outcomes are reconciled, never blindly resent (the rules are services/notifier/outcomes.py):
* SMS: Twilio is asked for the recent messages to the number the attempt went to; one whose body
  hashes to the stored hash (and is not another row's message) is ours, so the row is `sent`.
  Nothing found a grace period after the attempt started means Twilio never created it: the row
  goes back to `scheduled`. A status callback carrying our id settles it even sooner.
* Email: there is no way to ask an SMTP server what it received. We send again with the same
  Message-ID (derived from the row's id), which receivers treat as the same message; that is
  the documented policy.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import aiohttp
import asyncpg
from aiohttp import web
from twilio.base.exceptions import TwilioException

from services.notifier import outcomes
from services.notifier.metrics import NotifierMetrics
from shared.clock import Clock
from shared.config import Settings
from shared.db.transactions import in_transaction
from shared.providers.sms import SentSms, SmsClient
from shared.store import notifications
from shared.store.notifications.rows import Notification
from shared.sweeps import Sweep

log = logging.getLogger("regimen.notifier.sweeps")

BATCH = 500
RECONCILE_BATCH = 100
# How many recent messages to one number are searched for ours.
RECENT_MESSAGES = 50
# Twilio re-sends a status callback within minutes; tokens are kept well beyond that.
CALLBACK_MEMORY = timedelta(days=7)


ListRecent = Callable[[str], Awaitable[list[SentSms]]]


def twilio_lister(sms: SmsClient) -> ListRecent:
    return functools.partial(sms.list_to, limit=RECENT_MESSAGES)


async def rescue_leases(pool: asyncpg.Pool, clock: Clock, *, liveness: timedelta) -> int:
    """Rows whose worker died mid-send: lease run out, and no renewal for `liveness` (the lease
    length) of real time."""
    total = 0
    while True:
        rescued = await notifications.sweeps.rescue_expired_leases(
            pool, now=clock.now(), limit=BATCH, liveness=liveness
        )
        if rescued:
            log.warning("leases expired mid-send", extra={"notification_ids": rescued[:50]})
        total += len(rescued)
        if len(rescued) < BATCH:
            return total


async def expire_overdue(pool: asyncpg.Pool, clock: Clock) -> int:
    """Scheduled rows past their expiry → expired; callback tokens past CALLBACK_MEMORY go.

    Replicas: a row claim. Rows are taken `FOR NO KEY UPDATE SKIP LOCKED` and re-checked as
    scheduled, so each expires once; deleting old tokens is idempotent."""
    total = 0
    while True:
        count = await notifications.sweeps.expire_overdue(pool, now=clock.now(), limit=BATCH)
        total += count
        if count < BATCH:
            break
    await notifications.callbacks.forget_callbacks_before(pool, clock.now() - CALLBACK_MEMORY)
    return total


async def refresh_queue_depth(pool: asyncpg.Pool, clock: Clock, metrics: NotifierMetrics) -> int:
    by_status, overdue = await notifications.sweeps.queue_depth(pool, now=clock.now())
    metrics.set_queue(by_status, overdue)
    return sum(by_status.values())


async def reconcile_unknown(
    pool: asyncpg.Pool, clock: Clock, *, list_recent: ListRecent, settings: Settings
) -> int:
    """Settle what can be settled of the `unknown` rows; the rest wait for the next run."""
    grace = timedelta(seconds=settings.notify_reconcile_grace_seconds)
    settled = 0
    for item in await notifications.sweeps.unknown_outcomes(pool, limit=RECONCILE_BATCH):
        notification = item.notification
        if notification.channel == "email":
            settled += await _resend_email(pool, notification, clock.now())
        else:
            settled += await _reconcile_sms(
                pool,
                notification,
                item.last_attempt_at,
                clock.now(),
                grace,
                list_recent,
                settings.notify_max_attempts,
            )
    return settled


async def _resend_email(pool: asyncpg.Pool, notification: Notification, now: datetime) -> int:
    decided = outcomes.reconcile_email(notification, now)

    async def move(conn: asyncpg.Connection) -> bool:
        return await notifications.sweeps.reconcile_as_not_sent(
            conn, notification.id, now=now, reason=decided.reason, status=decided.status
        )

    return int(await in_transaction(pool, move))


async def _reconcile_sms(
    pool: asyncpg.Pool,
    notification: Notification,
    last_attempt_at: datetime | None,
    now: datetime,
    grace: timedelta,
    list_recent: ListRecent,
    max_attempts: int,
) -> int:
    found: tuple[str, int | None] | None = None
    to = notification.context.get("attempt_to")
    if isinstance(to, str) and notification.body_hash is not None and last_attempt_at is not None:
        try:
            recent = await list_recent(to)
        except (TwilioException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "cannot list messages at Twilio",
                extra={"notification_id": notification.id, "error": type(exc).__name__},
            )
            return 0
        ours = [m for m in recent if outcomes.body_hash(m.body) == notification.body_hash]
        taken = await notifications.sweeps.provider_ids_in_use(pool, [m.sid for m in ours])
        ours = [m for m in ours if m.sid not in taken]
        if ours:
            oldest = ours[-1]  # the list is newest first: the oldest match is the first attempt's
            found = (oldest.sid, oldest.segments)
    decided = outcomes.reconcile_sms(
        notification,
        found=found,
        last_attempt_at=last_attempt_at,
        now=now,
        grace=grace,
        max_attempts=max_attempts,
    )
    if isinstance(decided, outcomes.AskLater):
        return 0
    found_sent = decided if isinstance(decided, outcomes.FoundSent) else None
    not_sent = decided if not isinstance(decided, outcomes.FoundSent) else None

    # The move and its history event commit together (two statements: one transaction), so
    # nobody ever reads a status without the event that explains it.
    async def move(conn: asyncpg.Connection) -> bool:
        if found_sent is not None:
            return await notifications.sweeps.reconcile_as_sent(
                conn,
                notification.id,
                provider_id=found_sent.provider_id,
                segments=found_sent.segments,
                now=now,
                reason=found_sent.reason,
            )
        assert not_sent is not None
        return await notifications.sweeps.reconcile_as_not_sent(
            conn, notification.id, now=now, reason=not_sent.reason, status=not_sent.status
        )

    return int(await in_transaction(pool, move))


def notifier_sweeps(
    app: web.Application,
    *,
    list_recent: Callable[[web.Application], ListRecent],
    metrics: Callable[[web.Application], NotifierMetrics],
    settings: Settings,
) -> list[Sweep]:
    """The sweeps, reading the app's clients when they run (they exist only once it started)."""

    async def recover(pool: asyncpg.Pool, clock: Clock) -> int:
        """Rescue rows whose worker died, then reconcile the `unknown` ones.

        Replicas: exclusive (one replica at a time, so Twilio is not asked twice about one
        row), and correct without the lock as well: a rescue claims rows with SKIP LOCKED and
        re-checks `status = 'sending'`; each reconciliation is an UPDATE re-checking
        `status = 'unknown'`, so a row is settled once whichever replica decides first."""
        # Rescued rows are reconciled in the same run: a dead worker's message settles at once.
        rescued = await rescue_leases(
            pool, clock, liveness=timedelta(seconds=settings.notifier_lease_seconds)
        )
        settled = await reconcile_unknown(
            pool, clock, list_recent=list_recent(app), settings=settings
        )
        return rescued + settled

    async def depth(pool: asyncpg.Pool, clock: Clock) -> int:
        """Replicas: reads only; each replica sets its own gauges."""
        return await refresh_queue_depth(pool, clock, metrics(app))

    return [
        # One replica at a time: two asking Twilio about the same row gain nothing.
        Sweep("notifier-recover", timedelta(seconds=10), recover, exclusive=True),
        Sweep("notifier-expire", timedelta(seconds=60), expire_overdue),
        Sweep("notifier-queue-depth", timedelta(seconds=15), depth),
    ]
