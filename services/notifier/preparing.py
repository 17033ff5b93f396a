"""Preparing a claimed batch: read its data, apply the send-time checks, merge, compose, pace.

For each claimed row, in due order (one patient's rows on one channel decided in turn, so the
first reminder may absorb the others and the daily limit counts those decided before): read the
current data (one query per table for the whole batch), end the row if the checks say so
(cancelled, suppressed, expired), put it back if it must wait (quiet hours, the daily limit, the
sender's rate), merge the patient's nearby reminders into it, compose it. What comes out is
ready to be decided (services/notifier/dispatch.py): composed, with the appointment versions it
was composed from. Every write here is its own short statement or transaction; none waits on a
provider.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import asyncpg

from services.notifier import send_checks
from services.notifier.metrics import NotifierMetrics
from services.notifier.send_checks import Stop, Wait
from shared.clock import Clock
from shared.config import Settings
from shared.db.outage import CLIENT_ERRORS
from shared.messaging import (
    Composed,
    ContextError,
    MessageContext,
    RenderError,
    load_contexts,
    render,
)
from shared.store import appointments, notifications
from shared.store.notifications.dispatch import SendOutcome
from shared.store.notifications.rows import Notification

log = logging.getLogger("regimen.notifier.preparing")

# A reserved send slot this close is waited for in place; a later one puts the row back.
PACE_INLINE_WAIT = timedelta(milliseconds=250)
# A reservation kept on a row that comes back later than this is stale: reserve again.
PACE_SLOT_FRESH = timedelta(minutes=5)
# asyncpg's errors, InternalClientError included (a connection the server closed while idle).
DATABASE_ERRORS = CLIENT_ERRORS


class LostLease(Exception):
    """The row was taken from this worker (rescued, merged into another): stop touching it."""


@dataclass(frozen=True)
class Prepared:
    notification: Notification
    ctx: MessageContext
    composed: Composed
    # appointment id → version read before composing: a change since means composing again
    seen_versions: dict[int, int]


@dataclass
class BatchFacts:
    """What a batch reads once for all its rows."""

    own: list[int]
    # (patient, channel) → capped messages sent today or being sent, apart from this batch's
    sent_today: dict[tuple[int, str], int]
    # (patient, channel) → rows a reminder of that patient might absorb
    mergeable: dict[tuple[int, str], set[int]]
    # (patient, channel) → capped rows of this round decided to go out so far
    going: Counter[tuple[int, str]] = field(default_factory=Counter)
    rounds: int = 0

    def after_round(self, ready: list[Prepared], outcomes: list[SendOutcome]) -> None:
        """Count what this round's sends did toward the daily limit: sent or possibly sent."""
        capped = {
            p.notification.id: _patient_key(p.notification)
            for p in ready
            if send_checks.is_capped(p.notification)
        }
        for outcome in outcomes:
            key = capped.get(outcome.notification_id)
            if key is not None and outcome.status in ("sent", "unknown"):
                self.sent_today[key] = self.sent_today.get(key, 0) + 1
        self.going.clear()
        self.rounds += 1

    def may_merge(self, notification: Notification) -> bool:
        key = _reminder_key(notification)
        return key is not None and bool(self.mergeable.get(key, set()) - {notification.id})


class HoldBack:
    """A row to decide again after this round's sends."""


HOLD_BACK = HoldBack()


class Preparer:
    def __init__(
        self,
        *,
        clock: Clock,
        settings: Settings,
        worker: str,
        metrics: NotifierMetrics,
        sender: str,
        stopping: Callable[[], bool],
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.worker = worker
        self.metrics = metrics
        self.sender = sender
        self.stopping = stopping

    async def read(
        self, conn: asyncpg.Connection, batch: list[Notification]
    ) -> tuple[dict[int, MessageContext | ContextError], BatchFacts]:
        """The batch's data, read once for all its rows."""
        contexts = await load_contexts(conn, batch, settings=self.settings, now=self.clock.now())
        return contexts, await self._batch_facts(conn, batch, contexts)

    async def prepare_round(
        self,
        conn: asyncpg.Connection,
        rows: list[Notification],
        contexts: dict[int, MessageContext | ContextError],
        facts: BatchFacts,
    ) -> tuple[list[Prepared], list[Notification]]:
        """Each row prepared in turn: ready to send, held back for another round, or settled or
        put back (by _prepare itself)."""
        ready: list[Prepared] = []
        held_back: list[Notification] = []
        reminder_keys: set[tuple[int, str]] = set()
        for index, claimed in enumerate(rows):
            try:
                if self.stopping() and (index > 0 or facts.rounds > 0):
                    await self.release(conn, claimed.id)
                    continue
                notification: Notification | None = claimed
                preloaded = contexts.get(claimed.id)
                key = _reminder_key(claimed)
                if key is not None and key in reminder_keys:
                    # An earlier reminder of this patient may have absorbed this one.
                    notification = await self._still_mine(conn, claimed)
                    preloaded = None
                if key is not None:
                    reminder_keys.add(key)
                if notification is None:
                    continue
                prepared = await self._prepare(conn, notification, facts, preloaded)
                if prepared is HOLD_BACK:
                    held_back.append(notification)
                elif isinstance(prepared, Prepared) and await self.pace(conn, prepared):
                    ready.append(prepared)
                    if send_checks.is_capped(notification):
                        facts.going[_patient_key(notification)] += 1
            except LostLease:
                log.info("lease lost", extra={"notification_id": claimed.id})
            except DATABASE_ERRORS as exc:
                interrupted([claimed.id], exc)
            except Exception:
                log.exception("dispatch failed", extra={"notification_id": claimed.id})
        return ready, held_back

    async def _batch_facts(
        self,
        conn: asyncpg.Connection,
        batch: list[Notification],
        contexts: dict[int, MessageContext | ContextError],
    ) -> BatchFacts:
        """What the daily limit and merging need, read once for the whole batch."""
        now = self.clock.now()
        own = [n.id for n in batch]
        windows: list[notifications.send_rules.DayWindow] = []
        if self.settings.max_scheduled_per_day > 0:
            zoned = [
                (n, ctx.patient_zone)
                for n in batch
                if isinstance(ctx := contexts.get(n.id), MessageContext)
            ]
            windows = send_checks.day_windows(zoned, now)
        window = timedelta(minutes=self.settings.notify_merge_minutes)
        keys: list[tuple[int, str]] = []
        if window > timedelta(0):
            keys = sorted({key for n in batch if (key := _reminder_key(n)) is not None})
        if not windows and not keys:
            return BatchFacts(own, {}, {})
        found = await notifications.send_rules.patient_facts(
            conn,
            windows,
            exempt_kinds=sorted(send_checks.UNCAPPED_KINDS),
            merge_keys=keys,
            merge_kinds=sorted(send_checks.MERGEABLE_KINDS),
            due_until=now + window,
            worker=self.worker,
            own_claimed=own,
        )
        return BatchFacts(own, found.sent_today, found.mergeable)

    async def _still_mine(
        self, conn: asyncpg.Connection, claimed: Notification
    ) -> Notification | None:
        current = await notifications.rows.get(conn, claimed.id)
        if current is None or current.status != "sending" or current.leased_by != self.worker:
            return None
        return current

    async def release(self, conn: asyncpg.Connection, notification_id: int) -> None:
        await notifications.dispatch.release(
            conn,
            notification_id,
            worker=self.worker,
            now=self.clock.now(),
            reason=f"handed back: {self.worker} is stopping",
        )

    async def _prepare(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        facts: BatchFacts,
        preloaded: MessageContext | ContextError | None,
    ) -> Prepared | HoldBack | None:
        """Checks, waits, merging and composing; None when the row was settled or put back,
        HOLD_BACK when it is to be decided again after this round's sends.
        `preloaded`: the row's context read with its batch (None: read it now)."""
        now = self.clock.now()
        ctx = await self._load(conn, notification, preloaded)
        if ctx is None:
            return None
        stop = send_checks.stop_now(notification, ctx, now)
        if stop is not None:
            await self.settle(conn, notification, stop)
            return None
        quiet = send_checks.QuietHours(ctx.clinic.quiet_start, ctx.clinic.quiet_end)
        wait = send_checks.quiet_hours_wait(
            notification, now, ctx.patient_zone, quiet
        ) or send_checks.daily_limit_wait(
            notification,
            now,
            ctx.patient_zone,
            quiet,
            self.settings.max_scheduled_per_day,
            sent=facts.sent_today.get(_patient_key(notification), 0),
            going=facts.going[_patient_key(notification)],
        )
        if isinstance(wait, send_checks.Recount):
            return HOLD_BACK
        if wait is not None:
            await self.defer(conn, notification, wait)
            return None
        merged_context = None
        if facts.may_merge(notification):
            merged_context = await send_checks.merge_nearby(
                conn,
                notification,
                now=now,
                window=timedelta(minutes=self.settings.notify_merge_minutes),
                worker=self.worker,
                own_claimed=facts.own,
            )
        if merged_context is not None:
            notification = replace(notification, context=merged_context)
            ctx = await self._load(conn, notification, None)
            if ctx is None:
                return None
        try:
            composed = render(notification, ctx, settings=self.settings)
        except RenderError as exc:
            await self.settle(conn, notification, Stop("failed", f"cannot compose: {exc}"))
            return None
        except Exception as exc:  # a template bug: retrying the same row will not fix it
            log.exception("render failed", extra={"notification_id": notification.id})
            reason = f"cannot compose: {type(exc).__name__}"
            await self.settle(conn, notification, Stop("failed", reason))
            return None
        return Prepared(notification, ctx, composed, ctx.appointment_versions)

    async def _load(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        preloaded: MessageContext | ContextError | None,
    ) -> MessageContext | None:
        if preloaded is None:
            loaded = await load_contexts(
                conn, [notification], settings=self.settings, now=self.clock.now()
            )
            preloaded = loaded[notification.id]
        if isinstance(preloaded, ContextError):
            reason = f"cannot compose: {preloaded}"
            await self.settle(conn, notification, Stop("failed", reason))
            return None
        return preloaded

    async def settle(
        self, conn: asyncpg.Connection, notification: Notification, stop: Stop
    ) -> None:
        done = await notifications.dispatch.settle(
            conn,
            notification.id,
            worker=self.worker,
            status=stop.status,
            reason=stop.reason,
            now=self.clock.now(),
        )
        if not done:
            raise LostLease
        if stop.status == "failed":
            self.metrics.failed(notification.channel, None, "compose")
        merged = notification.context.get("merged_notification_ids")
        if stop.status in ("cancelled", "expired") and isinstance(merged, list) and merged:
            # The reminders folded into this one are still owed to the patient.
            await notifications.send_rules.unmerge(
                conn,
                notification.id,
                [i for i in merged if isinstance(i, int)],
                now=self.clock.now(),
                reason=f"notification {notification.id} was {stop.status}: sent on its own",
            )

    async def defer(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        wait: Wait,
        *,
        sender_slot: datetime | None = None,
    ) -> None:
        decided = send_checks.wait_or_expire(notification, wait)
        if isinstance(decided, Stop):
            await self.settle(conn, notification, decided)
            return
        done = await notifications.dispatch.defer(
            conn,
            notification.id,
            worker=self.worker,
            due_at=decided.due_at,
            now=self.clock.now(),
            reason=decided.reason,
            sender_slot=sender_slot,
        )
        if not done:
            raise LostLease

    async def pace(self, conn: asyncpg.Connection, prepared: Prepared) -> bool:
        """Hold an SMS to the sender's rate (shared by every replica through sender_pace):
        wait briefly in place, or put the row back until its reserved slot. True to send now."""
        rate = self.settings.sms_segments_per_second
        notification = prepared.notification
        if notification.channel != "sms" or rate <= 0:
            return True
        now = self.clock.now()
        slot = _kept_slot(notification, now)
        if slot is None:
            cost = timedelta(seconds=(prepared.composed.segments or 1) / rate)
            slot = await notifications.send_rules.reserve_sender_slot(
                conn, sender=self.sender, now=now, cost=cost, urgent=notification.urgent
            )
        if slot - now > PACE_INLINE_WAIT:
            wait = Wait(slot, "rate limit: waits for the sender's next free slot")
            await self.defer(conn, notification, wait, sender_slot=slot)
            return False
        if slot > now:
            await asyncio.sleep((slot - now).total_seconds())
        return True

    async def changed_under_us(self, conn: asyncpg.Connection, notification: Notification) -> None:
        """An appointment changed between composing and deciding: end the row if the change
        makes it stale, else compose again from the new data. No provider call was made."""
        now = self.clock.now()
        appointment = (
            await appointments.get(conn, notification.appointment_id)
            if notification.appointment_id is not None
            else None
        )
        stop = send_checks.appointment_stop(notification, appointment)
        if stop is not None:
            await self.settle(conn, notification, stop)
            return
        await self.defer(
            conn, notification, Wait(now, "appointment changed while composing; composing again")
        )


def _kept_slot(notification: Notification, now: datetime) -> datetime | None:
    """The send slot this row reserved before it was put back, if it is still usable."""
    raw = notification.context.get("sender_slot")
    if not isinstance(raw, str):
        return None
    try:
        slot = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if slot.tzinfo is None or slot < now - PACE_SLOT_FRESH:
        return None
    return slot


def _patient_key(notification: Notification) -> tuple[int, str]:
    return (notification.patient_id or 0, notification.channel)


def _reminder_key(notification: Notification) -> tuple[int, str] | None:
    """Reminders of one patient on one channel go together: the first may absorb the others."""
    if (
        notification.kind in send_checks.REMINDER_KINDS
        and notification.patient_id is not None
        and not notification.urgent  # the priority lane is never merged
    ):
        return (notification.patient_id, notification.channel)
    return None


def interrupted(notification_ids: list[int], exc: BaseException) -> None:
    # The rows are left as they are: their leases run out and the sweeps take over.
    log.warning(
        "dispatch interrupted",
        extra={
            "notification_ids": notification_ids,
            "error": type(exc).__name__,
            # SQLSTATE and constraint, never the message (it may quote values)
            "sqlstate": getattr(exc, "sqlstate", None),
            "constraint": getattr(exc, "constraint_name", None),
        },
    )
