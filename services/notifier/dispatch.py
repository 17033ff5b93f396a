"""Dispatch workers: claim due notifications and send them, never twice and never lost.

One claim loop per notifier process keeps up to `REGIMEN_NOTIFIER_CONCURRENCY` messages in
flight. It wakes on a NOTIFY from the outbox trigger (channel `regimen_notification_due`, on its
own LISTEN connection), when a send finishes, when the dev or test clock jumps, when the next
scheduled row comes due, and at the latest every `REGIMEN_NOTIFIER_POLL_SECONDS` (the fallback
if a notification is missed, e.g. while the LISTEN connection reconnects).

Claimed rows are handled in batches (half the concurrency each, so one batch composes or records
while another's calls are out); a batch reads its rows' data in one query per table and records
its outcomes in one statement. Each row, in order (each step commits before the next):

1. claim: scheduled → sending with a lease (SKIP LOCKED: replicas never take the same row);
2. prepare, without locks: read the current data, end the row if the checks say so (cancelled,
   suppressed, expired), put it back if it must wait (quiet hours, daily limit), merge the
   patient's nearby reminders into it, compose it, and reserve the sender's next send slot
   (put back until then if the slot is not now);
3. begin the attempt: attempts + 1 and the body's hash are committed *before* the provider call,
   so a crash mid-call leaves a row whose lease runs out, which the sweeps turn into `unknown`
   and reconcile instead of sending again;
4. send, in one transaction per batch that holds the appointments FOR SHARE and the rows FOR
   UPDATE across the provider calls: a cancel or move either commits first (the check sees it
   and the row is cancelled) or waits until the message has left; the outcomes (sent, retry,
   failed, unknown) are written in the same transaction.

This module is over the project's ~600 lines because the notifier issue (#11) takes this one
class apart (wake-up loop, claiming, preparing, sending, an outcome policy) and takes the send
out of the transaction; splitting it before that change would only move code twice.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import random
import secrets
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import asyncpg
from aiohttp import web

from services.notifier import send_checks
from services.notifier.metrics import NotifierMetrics
from services.notifier.send_checks import Stop, Wait
from shared.clock import Clock
from shared.config import Settings
from shared.db.pool import APP_ROLE
from shared.messaging import (
    Composed,
    ContextError,
    MessageContext,
    RenderError,
    load_contexts,
    render,
)
from shared.providers.email import EmailClient, EmailError, build_message
from shared.providers.sms import OPTED_OUT_CODE, SmsClient, SmsError
from shared.store import appointments, notifications, patients
from shared.store.notifications.rows import Notification

log = logging.getLogger("regimen.notifier.dispatch")

CHANNEL = "regimen_notification_due"
# A reserved send slot this close is waited for in place; a later one puts the row back.
PACE_INLINE_WAIT = timedelta(milliseconds=250)
# A reservation kept on a row that comes back later than this is stale: reserve again.
PACE_SLOT_FRESH = timedelta(minutes=5)
# On shutdown, sends in flight get this long to finish before they are cut off (their rows are
# then rescued and reconciled like a crash).
DRAIN_SECONDS = 8.0
LISTEN_RETRY_SECONDS = 2.0
# First look again at a due row that could not be claimed (it was locked for a moment).
RECHECK_FIRST = 0.01
MAX_BACKOFF = timedelta(hours=1)
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Twilio's "authenticate" error: wrong credentials are an operator's fix, not the message's fault.
TWILIO_AUTH_CODE = 20003


class _LostLease(Exception):
    """The row was taken from this worker (rescued, merged into another): stop touching it."""


@dataclass(frozen=True)
class _Prepared:
    notification: Notification
    ctx: MessageContext
    composed: Composed
    # appointment id → version read before composing: a change since means composing again
    seen_versions: dict[int, int]


@dataclass
class _BatchFacts:
    """What a batch reads once for all its rows."""

    own: list[int]
    # (patient, channel) → capped messages sent today or being sent, apart from this batch's
    sent_today: dict[tuple[int, str], int]
    # (patient, channel) → rows a reminder of that patient might absorb
    mergeable: dict[tuple[int, str], set[int]]
    # (patient, channel) → capped rows of this round decided to go out so far
    going: Counter[tuple[int, str]] = field(default_factory=Counter)
    rounds: int = 0

    def after_round(
        self, ready: list[_Prepared], outcomes: list[notifications.dispatch.SendOutcome]
    ) -> None:
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


class _HoldBack:
    """_prepare's answer for a row to decide again after this round's sends."""


_HOLD_BACK = _HoldBack()


def worker_name() -> str:
    """Unique per dispatcher (two apps in one test process must differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def backoff(attempts: int, base: timedelta) -> timedelta:
    """Exponential, with full jitter in its upper half so retries of a burst spread out."""
    exponent = min(max(attempts - 1, 0), 20)
    delay = min(base * (2**exponent), MAX_BACKOFF)
    return delay * random.uniform(0.5, 1.0)


def body_hash(body: str) -> bytes:
    return hashlib.sha256(body.encode()).digest()


def message_id_for(notification_id: int, sender: str) -> str:
    """Deterministic, so a resend after an unknown outcome carries the same Message-ID and the
    receiving side treats it as the same message."""
    domain = sender.rpartition("@")[2] or "regimen.localhost"
    return f"<notification-{notification_id}.regimen@{domain}>"


class Dispatcher:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        clock: Clock,
        settings: Settings,
        sms: SmsClient,
        email: EmailClient,
        metrics: NotifierMetrics,
        database_url: str,
        worker: str | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.settings = settings
        self.sms = sms
        self.email = email
        self.metrics = metrics
        self.database_url = database_url
        self.worker = worker or worker_name()
        self.concurrency = settings.notifier_concurrency
        # Two batches in flight: one composing or recording while the other's calls are out.
        self.batch_size = max(1, -(-self.concurrency // 2))
        self.poll = settings.notifier_poll_seconds
        self.lease = timedelta(seconds=settings.notifier_lease_seconds)
        self.sender = (
            settings.twilio_messaging_service_sid or settings.twilio_from or "default-sender"
        )
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error = ""
        self._recheck = 0.0
        self.listening = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        on_advance: Callable[[Callable[[], None]], None] | None = getattr(
            self.clock, "on_advance", None
        )
        if on_advance is not None:
            # After the dev or test clock jumps, rows may be due: look at once.
            on_advance(self.wake_threadsafe)
        self._listen_task = asyncio.create_task(self._listen(), name="notifier-listen")
        self._loop_task = asyncio.create_task(self._run(), name="notifier-dispatch")

    async def stop(self) -> None:
        """Stop claiming, let sends in flight finish (bounded), hand back unstarted rows."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._listen_task is not None:
            await self._listen_task

    @property
    def stopping(self) -> bool:
        return self._stopping

    def wake(self) -> None:
        self._wake.set()

    def wake_threadsafe(self) -> None:
        loop = self._loop
        if self._stopping or loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._wake.set)

    # -- waking: LISTEN/NOTIFY ---------------------------------------------------------------

    async def _listen(self) -> None:
        while not self._stopping:
            try:
                conn = await asyncpg.connect(
                    self.database_url, timeout=10, server_settings={"role": APP_ROLE}
                )
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                self._warn("cannot open the LISTEN connection; polling meanwhile", exc)
                await self._pause(LISTEN_RETRY_SECONDS)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(functools.partial(_set_event, lost))
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                # Rows may have come due while nobody listened.
                self.wake()
                await _first_of(self._stop, lost)
            except DATABASE_ERRORS as exc:
                self._warn("LISTEN connection failed; polling meanwhile", exc)
            finally:
                self.listening.clear()
                if not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), timeout=2)
                    except (OSError, asyncpg.InterfaceError, TimeoutError):
                        conn.terminate()
            if not self._stopping:
                await self._pause(LISTEN_RETRY_SECONDS)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # -- the claim loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self.concurrency - self._busy
            claimed: list[Notification] = []
            if free > 0:
                claimed = await self._claim(free)
                self._start(claimed)
                if claimed:
                    self._recheck = 0.0
            if free <= 0 or len(claimed) == free:
                timeout = self.poll  # every slot is busy: a finishing send wakes us
            else:
                timeout = await self._until_next_due()
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    async def _claim(self, limit: int) -> list[Notification]:
        try:
            rows = await notifications.dispatch.claim_due(
                self.pool, now=self.clock.now(), lease=self.lease, worker=self.worker, limit=limit
            )
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            self._warn("cannot claim notifications", exc)
            return []
        self._last_error = ""
        return rows

    async def _until_next_due(self) -> float:
        """Seconds to sleep: until the next scheduled row is due, at most the poll interval."""
        try:
            due = await notifications.dispatch.next_due_at(self.pool)
        except (*DATABASE_ERRORS, TimeoutError):
            return self.poll
        if due is None:
            return self.poll
        wait = (due - self.clock.now()).total_seconds()
        if wait <= 0:
            # Due, yet not claimable a moment ago (another transaction held it): look again
            # soon, backing off so that a long-held lock does not make us spin.
            self._recheck = min(self.poll, max(RECHECK_FIRST, self._recheck * 2))
            return self._recheck
        self._recheck = 0.0
        return min(self.poll, max(wait, 0.001))

    def _start(self, claimed: list[Notification]) -> None:
        for batch in _batches(claimed, self.batch_size):
            self._busy += len(batch)
            task = asyncio.create_task(self._handle_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, size=len(batch)))

    def _finished(self, task: asyncio.Task[None], *, size: int) -> None:
        self._tasks.discard(task)
        self._busy -= size
        self._wake.set()

    def _warn(self, message: str, exc: BaseException) -> None:
        # Once per distinct problem, not once per poll: a database outage must not flood logs.
        text = f"{message}: {type(exc).__name__}"
        if text != self._last_error:
            log.warning(
                message,
                extra={"error": type(exc).__name__, "sqlstate": getattr(exc, "sqlstate", None)},
            )
            self._last_error = text

    # -- one batch of claimed rows -----------------------------------------------------------

    async def _handle_batch(self, batch: list[Notification]) -> None:
        """Compose the rows one by one (one patient's in due order, so the first reminder may
        absorb the others), then send those ready together. Rows held back until the patient's
        earlier rows of the batch have gone (the daily limit) are decided in a further round."""
        own = [n.id for n in batch]
        async with self.pool.acquire() as conn:
            try:
                contexts = await load_contexts(
                    conn, batch, settings=self.settings, now=self.clock.now()
                )
                facts = await self._batch_facts(conn, batch, contexts)
            except DATABASE_ERRORS as exc:
                _interrupted(own, exc)
                return
            except Exception:
                log.exception("dispatch failed", extra={"notification_ids": own})
                return
            pending = batch
            while pending:
                ready, held_back = await self._prepare_round(conn, pending, contexts, facts)
                outcomes: list[notifications.dispatch.SendOutcome] = []
                interrupted = False
                try:
                    if ready:
                        outcomes, interrupted = await self._send_batch(conn, ready)
                except DATABASE_ERRORS as exc:
                    _interrupted([p.notification.id for p in ready], exc)
                except Exception:
                    log.exception(
                        "dispatch failed",
                        extra={"notification_ids": [p.notification.id for p in ready]},
                    )
                if interrupted:
                    for notification in held_back:
                        await self._release(conn, notification.id)
                    raise asyncio.CancelledError
                facts.after_round(ready, outcomes)
                pending = held_back

    async def _prepare_round(
        self,
        conn: asyncpg.Connection,
        rows: list[Notification],
        contexts: dict[int, MessageContext | ContextError],
        facts: _BatchFacts,
    ) -> tuple[list[_Prepared], list[Notification]]:
        """Each row prepared in turn: ready to send, held back for another round, or settled or
        put back (by _prepare itself)."""
        ready: list[_Prepared] = []
        held_back: list[Notification] = []
        reminder_keys: set[tuple[int, str]] = set()
        for index, claimed in enumerate(rows):
            try:
                if self._stopping and (index > 0 or facts.rounds > 0):
                    await self._release(conn, claimed.id)
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
                if prepared is _HOLD_BACK:
                    held_back.append(notification)
                elif isinstance(prepared, _Prepared) and await self._pace(conn, prepared):
                    ready.append(prepared)
                    if send_checks.is_capped(notification):
                        facts.going[_patient_key(notification)] += 1
            except _LostLease:
                log.info("lease lost", extra={"notification_id": claimed.id})
            except DATABASE_ERRORS as exc:
                _interrupted([claimed.id], exc)
            except Exception:
                log.exception("dispatch failed", extra={"notification_id": claimed.id})
        return ready, held_back

    async def _batch_facts(
        self,
        conn: asyncpg.Connection,
        batch: list[Notification],
        contexts: dict[int, MessageContext | ContextError],
    ) -> _BatchFacts:
        """What the daily limit and merging need, read once for the whole batch."""
        now = self.clock.now()
        own = [n.id for n in batch]
        windows: list[notifications.dispatch.DayWindow] = []
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
            return _BatchFacts(own, {}, {})
        found = await notifications.dispatch.patient_facts(
            conn,
            windows,
            exempt_kinds=sorted(send_checks.UNCAPPED_KINDS),
            merge_keys=keys,
            merge_kinds=sorted(send_checks.MERGEABLE_KINDS),
            due_until=now + window,
            worker=self.worker,
            own_claimed=own,
        )
        return _BatchFacts(own, found.sent_today, found.mergeable)

    async def _still_mine(
        self, conn: asyncpg.Connection, claimed: Notification
    ) -> Notification | None:
        current = await notifications.rows.get(conn, claimed.id)
        if current is None or current.status != "sending" or current.leased_by != self.worker:
            return None
        return current

    async def _release(self, conn: asyncpg.Connection, notification_id: int) -> None:
        await notifications.dispatch.release(
            conn,
            notification_id,
            worker=self.worker,
            now=self.clock.now(),
            reason=f"handed back: {self.worker} is stopping",
        )

    # -- one row: checks, waits, merging, composing --------------------------------------------

    async def _prepare(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        facts: _BatchFacts,
        preloaded: MessageContext | ContextError | None,
    ) -> _Prepared | _HoldBack | None:
        """Checks, waits, merging and composing; None when the row was settled or put back,
        _HOLD_BACK when it is to be decided again after this round's sends.
        `preloaded`: the row's context read with its batch (None: read it now)."""
        now = self.clock.now()
        ctx = await self._load(conn, notification, preloaded)
        if ctx is None:
            return None
        stop = send_checks.stop_now(notification, ctx, now)
        if stop is not None:
            await self._settle(conn, notification, stop)
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
            return _HOLD_BACK
        if wait is not None:
            await self._wait(conn, notification, wait)
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
            await self._settle(conn, notification, Stop("failed", f"cannot compose: {exc}"))
            return None
        except Exception as exc:  # a template bug: retrying the same row will not fix it
            log.exception("render failed", extra={"notification_id": notification.id})
            reason = f"cannot compose: {type(exc).__name__}"
            await self._settle(conn, notification, Stop("failed", reason))
            return None
        return _Prepared(notification, ctx, composed, ctx.appointment_versions)

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
            await self._settle(conn, notification, Stop("failed", reason))
            return None
        return preloaded

    async def _settle(
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
            raise _LostLease
        if stop.status == "failed":
            self.metrics.failed(notification.channel, None, "compose")
        merged = notification.context.get("merged_notification_ids")
        if stop.status in ("cancelled", "expired") and isinstance(merged, list) and merged:
            # The reminders folded into this one are still owed to the patient.
            await notifications.dispatch.unmerge(
                conn,
                notification.id,
                [i for i in merged if isinstance(i, int)],
                now=self.clock.now(),
                reason=f"notification {notification.id} was {stop.status}: sent on its own",
            )

    async def _wait(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        wait: Wait,
        *,
        sender_slot: datetime | None = None,
    ) -> None:
        decided = send_checks.wait_or_expire(notification, wait)
        if isinstance(decided, Stop):
            await self._settle(conn, notification, decided)
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
            raise _LostLease

    # -- the sender's pace -------------------------------------------------------------------

    async def _pace(self, conn: asyncpg.Connection, prepared: _Prepared) -> bool:
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
            slot = await notifications.dispatch.reserve_sender_slot(
                conn, sender=self.sender, now=now, cost=cost, urgent=notification.urgent
            )
        if slot - now > PACE_INLINE_WAIT:
            wait = Wait(slot, "rate limit: waits for the sender's next free slot")
            await self._wait(conn, notification, wait, sender_slot=slot)
            return False
        if slot > now:
            await asyncio.sleep((slot - now).total_seconds())
        return True

    # -- the provider calls ------------------------------------------------------------------

    async def _send_batch(
        self, conn: asyncpg.Connection, ready: list[_Prepared]
    ) -> tuple[list[notifications.dispatch.SendOutcome], bool]:
        """Begin the attempts (committed before any call), then lock, check, call and record
        inside one transaction (see the module docstring, steps 3 and 4). Returns the outcomes
        recorded, and whether the calls were cut off by shutdown."""
        now = self.clock.now()
        started = await notifications.dispatch.begin_attempts(
            conn,
            [
                notifications.dispatch.AttemptStart(
                    p.notification.id, body_hash(p.composed.body), self._extra(p)
                )
                for p in ready
            ],
            worker=self.worker,
            now=now,
            lease=self.lease,
        )
        sending: list[tuple[_Prepared, int]] = []
        for prepared in ready:
            attempt_id = started.get(prepared.notification.id)
            if attempt_id is None:
                log.info("lease lost", extra={"notification_id": prepared.notification.id})
            else:
                sending.append((prepared, attempt_id))
        if not sending:
            return [], False
        calling = False
        interrupted = False
        outcomes: list[notifications.dispatch.SendOutcome] = []
        try:
            async with conn.transaction():
                going = await self._lock_for_send(conn, sending)
                calling = True
                outcomes, interrupted = await self._call_all(going)
                if outcomes:
                    await notifications.dispatch.record_outcomes(conn, outcomes)
                for (prepared, _), outcome in zip(going, outcomes, strict=True):
                    patient_id = prepared.notification.patient_id
                    if outcome.error_code == OPTED_OUT_CODE and patient_id is not None:
                        await self._record_opt_out(conn, patient_id, outcome.at)
        except asyncpg.DeadlockDetectedError:
            if calling:
                raise  # after the calls: the sweeps reconcile them like a crash
            # A change locking several sessions in another order (cancelling the rest of a
            # course) met these messages' locks before any call: nothing left, so try again.
            await self._retry_after_deadlock(conn, sending)
            return [], False
        for (prepared, _), outcome in zip(going, outcomes, strict=True):
            self._observe(prepared.notification, outcome)
        return outcomes, interrupted

    async def _call_all(
        self, going: list[tuple[_Prepared, int]]
    ) -> tuple[list[notifications.dispatch.SendOutcome], bool]:
        """Make the batch's provider calls at once. Each ends in its own outcome: a call that
        raises is `unknown` for itself alone. Cancelled (the drain time ran out at shutdown):
        the calls still open are cut off and become `unknown`, the finished ones keep their
        outcomes, and the second value says so (the caller records them, then stops)."""
        calls = [asyncio.create_task(self._call(p, a)) for p, a in going]
        interrupted = False
        if calls:
            try:
                await asyncio.wait(calls)
            except asyncio.CancelledError:
                interrupted = True
                for call in calls:
                    call.cancel()
                await asyncio.wait(calls)
        outcomes: list[notifications.dispatch.SendOutcome] = []
        for (prepared, attempt_id), call in zip(going, calls, strict=True):
            if not call.cancelled() and call.exception() is None:
                outcomes.append(call.result())
                continue
            why = "cut off at shutdown" if call.cancelled() else "the send failed unexpectedly"
            if not call.cancelled():
                log.error(
                    "send raised",
                    exc_info=call.exception(),
                    extra={"notification_id": prepared.notification.id},
                )
            outcomes.append(self._failed(prepared.notification, attempt_id, "ambiguous", None, why))
        return outcomes, interrupted

    async def _record_opt_out(
        self, conn: asyncpg.Connection, patient_id: int, at: datetime
    ) -> None:
        # In a savepoint: a lock problem on the patient's record must not undo the batch's
        # outcomes (the opt-out is learnt again from the next refusal).
        try:
            async with conn.transaction():
                await patients.record_sms_opt_out(conn, patient_id, now=at)
        except asyncpg.PostgresError as exc:
            log.warning(
                "opt-out not recorded",
                extra={"patient_id": patient_id, "sqlstate": getattr(exc, "sqlstate", None)},
            )

    def _extra(self, prepared: _Prepared) -> dict[str, object]:
        """What reconciliation needs if the call's outcome is lost: where it went, and for an
        email its Message-ID."""
        extra: dict[str, object] = {"attempt_to": prepared.composed.to}
        if prepared.notification.channel == "email":
            sender = self.settings.email_from or ""
            extra["message_id"] = message_id_for(prepared.notification.id, sender)
        return extra

    async def _lock_for_send(
        self, conn: asyncpg.Connection, sending: list[tuple[_Prepared, int]]
    ) -> list[tuple[_Prepared, int]]:
        """Hold the rows and share-lock their appointments until the transaction ends; returns
        those still to be sent (held by this worker, appointments unchanged since composing)."""
        ids = sorted(
            {i for p, _ in sending for i in send_checks.covered_appointment_ids(p.notification)}
        )
        locked, held = await notifications.dispatch.lock_for_send(
            conn, ids, [p.notification.id for p, _ in sending], worker=self.worker
        )
        going: list[tuple[_Prepared, int]] = []
        for prepared, attempt_id in sending:
            notification = prepared.notification
            if notification.id not in held:
                # Rescued meanwhile (a lease outlived): the sweeps own the row now.
                await notifications.dispatch.abandon_attempt(
                    conn, attempt_id, now=self.clock.now(), detail="not sent: lease lost"
                )
                log.info("lease lost", extra={"notification_id": notification.id})
                continue
            covered = send_checks.covered_appointment_ids(notification)
            if {i: locked[i] for i in covered if i in locked} != prepared.seen_versions:
                await self._changed_under_us(conn, notification, attempt_id)
                continue
            going.append((prepared, attempt_id))
        return going

    async def _retry_after_deadlock(
        self, conn: asyncpg.Connection, sending: list[tuple[_Prepared, int]]
    ) -> None:
        now = self.clock.now()
        for prepared, attempt_id in sending:
            await notifications.dispatch.abandon_attempt(
                conn, attempt_id, now=now, detail="not sent: locked by a concurrent change"
            )
            wait = Wait(now + timedelta(seconds=1), "locked by a concurrent change; trying again")
            try:
                await self._wait(conn, prepared.notification, wait)
            except _LostLease:
                log.info("lease lost", extra={"notification_id": prepared.notification.id})

    def _observe(
        self, notification: Notification, outcome: notifications.dispatch.SendOutcome
    ) -> None:
        if outcome.status == "sent":
            lag = max(0.0, (outcome.at - notification.due_at).total_seconds())
            self.metrics.lag.labels(notification.channel).observe(lag)
        elif outcome.status == "failed":
            self.metrics.failed(notification.channel, outcome.error_code, "send")

    async def _changed_under_us(
        self, conn: asyncpg.Connection, notification: Notification, attempt_id: int
    ) -> None:
        """An appointment changed between composing and locking: end the row if the change
        makes it stale, else compose again from the new data."""
        now = self.clock.now()
        appointment = (
            await appointments.get(conn, notification.appointment_id)
            if notification.appointment_id is not None
            else None
        )
        stop = send_checks.appointment_stop(notification, appointment)
        if stop is not None:
            await notifications.dispatch.abandon_attempt(
                conn, attempt_id, now=now, detail=f"not sent: {stop.reason}"
            )
            await self._settle(conn, notification, stop)
            return
        await notifications.dispatch.abandon_attempt(
            conn, attempt_id, now=now, detail="not sent: appointment changed while composing"
        )
        await self._wait(
            conn, notification, Wait(now, "appointment changed while composing; composing again")
        )

    async def _call(
        self, prepared: _Prepared, attempt_id: int
    ) -> notifications.dispatch.SendOutcome:
        if prepared.notification.channel == "sms":
            return await self._call_sms(prepared.notification, prepared.composed, attempt_id)
        return await self._call_email(prepared.notification, prepared.composed, attempt_id)

    async def _call_sms(
        self, notification: Notification, composed: Composed, attempt_id: int
    ) -> notifications.dispatch.SendOutcome:
        assert composed.to is not None
        validity = None
        if notification.expires_at is not None:
            remaining = (notification.expires_at - self.clock.now()).total_seconds()
            validity = max(1, int(remaining))
        callback = f"{self.settings.public_url}/twilio/status?n={notification.id}"
        try:
            sent = await self.sms.send(
                composed.to, composed.body, status_callback=callback, validity_period=validity
            )
        except SmsError as exc:
            kind = "temporary" if exc.code == TWILIO_AUTH_CODE else exc.kind
            self.metrics.provider_call("sms", kind, exc.code)
            return self._failed(notification, attempt_id, kind, exc.code, exc.reason)
        except Exception as exc:  # the request may have left: never assume it did not
            log.exception("sms send raised", extra={"notification_id": notification.id})
            reason = f"send raised {type(exc).__name__}"
            return self._failed(notification, attempt_id, "ambiguous", None, reason)
        self.metrics.provider_call("sms", "sent")
        return notifications.dispatch.SendOutcome(
            notification.id,
            attempt_id,
            "sent",
            self.clock.now(),
            f"accepted by Twilio ({sent.status})",
            "sent",
            provider_id=sent.sid,
            segments=sent.segments or composed.segments,
        )

    async def _call_email(
        self, notification: Notification, composed: Composed, attempt_id: int
    ) -> notifications.dispatch.SendOutcome:
        assert composed.to is not None
        sender = self.settings.email_from
        if not sender:
            reason = "REGIMEN_EMAIL_FROM is not set"
            return self._failed(notification, attempt_id, "temporary", None, reason)
        try:
            message = build_message(
                sender=sender,
                to=composed.to,
                subject=composed.subject or "",
                text=composed.body,
                html=composed.html,
                attachments=composed.attachments,
                message_id=message_id_for(notification.id, sender),
            )
        except (ValueError, UnicodeError) as exc:  # nothing left: the address cannot be used
            reason = f"cannot build the email: {type(exc).__name__}"
            return self._failed(notification, attempt_id, "permanent", None, reason)
        try:
            await self.email.send(message)
        except EmailError as exc:
            self.metrics.provider_call("email", exc.kind, exc.code)
            return self._failed(notification, attempt_id, exc.kind, exc.code, exc.reason)
        except Exception as exc:  # the message may have been accepted: never assume it was not
            log.exception("email send raised", extra={"notification_id": notification.id})
            reason = f"send raised {type(exc).__name__}"
            return self._failed(notification, attempt_id, "ambiguous", None, reason)
        self.metrics.provider_call("email", "sent")
        return notifications.dispatch.SendOutcome(
            notification.id,
            attempt_id,
            "sent",
            self.clock.now(),
            "accepted by the SMTP server",
            "sent",
            provider_id=str(message["Message-ID"]),
        )

    # -- outcomes ------------------------------------------------------------------------------

    def _failed(
        self,
        notification: Notification,
        attempt_id: int,
        kind: str,
        code: int | None,
        reason: str,
    ) -> notifications.dispatch.SendOutcome:
        """A call that did not succeed: `temporary` is retried after the backoff unless the
        attempts are used up or the retry would come after the expiry (then failed, with the
        last error); `ambiguous` is left for reconciliation; anything else fails at once."""
        now = self.clock.now()
        if kind == "ambiguous":
            reason = f"outcome unknown, to be reconciled: {reason}"
            return notifications.dispatch.SendOutcome(
                notification.id, attempt_id, "unknown", now, reason, kind
            )
        if kind != "temporary":
            return notifications.dispatch.SendOutcome(
                notification.id, attempt_id, "failed", now, reason, "permanent", error_code=code
            )
        attempts = notification.attempts + 1
        due_at = now + backoff(attempts, timedelta(seconds=self.settings.notify_retry_seconds))
        if attempts >= self.settings.notify_max_attempts:
            final = f"gave up after {attempts} attempts: {reason}"
        elif notification.expires_at is not None and due_at >= notification.expires_at:
            final = f"no retry before it expires: {reason}"
        else:
            return notifications.dispatch.SendOutcome(
                notification.id,
                attempt_id,
                "scheduled",
                now,
                f"temporary failure, retry {attempts + 1} later: {reason}",
                "temporary",
                error_code=code,
                due_at=due_at,
            )
        return notifications.dispatch.SendOutcome(
            notification.id, attempt_id, "failed", now, final, "temporary", error_code=code
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
    if notification.kind in send_checks.REMINDER_KINDS and notification.patient_id is not None:
        return (notification.patient_id, notification.channel)
    return None


def _batches(claimed: list[Notification], size: int) -> list[list[Notification]]:
    """Claimed rows (in due order) cut into batches of about `size`. One patient's rows on one
    channel stay in one batch, decided in due order: the daily limit counts those decided
    before, and no two batches merge the same reminders."""
    groups: dict[tuple[int, str] | int, list[Notification]] = {}
    for notification in claimed:
        key: tuple[int, str] | int = notification.id
        if notification.patient_id is not None:
            key = (notification.patient_id, notification.channel)
        groups.setdefault(key, []).append(notification)
    batches: list[list[Notification]] = []
    current: list[Notification] = []
    for group in groups.values():
        current.extend(group)
        if len(current) >= size:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


def _interrupted(notification_ids: list[int], exc: BaseException) -> None:
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


def _set_event(event: asyncio.Event, *_args: object) -> None:
    event.set()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


DISPATCHER = web.AppKey("dispatcher", Dispatcher)


def install_dispatch(
    app: web.Application,
    *,
    make: Callable[[web.Application], Dispatcher],
) -> None:
    """Run a dispatcher while the app runs; install after the pool and the provider clients."""

    async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
        dispatcher = make(app)
        app[DISPATCHER] = dispatcher
        await dispatcher.start()
        yield
        await dispatcher.stop()

    app.cleanup_ctx.append(dispatcher_ctx)
