"""Dispatch workers: claim due notifications and send them, never twice and never lost.

One claim loop per notifier process keeps up to `REGIMEN_NOTIFIER_CONCURRENCY` messages in
flight. It wakes on a NOTIFY from the outbox trigger (channel `regimen_notification_due`, on its
own LISTEN connection), when a send finishes, when the dev or test clock jumps, when the next
scheduled row comes due, and at the latest every `REGIMEN_NOTIFIER_POLL_SECONDS` (the fallback
if a notification is missed, e.g. while the LISTEN connection reconnects).

One message, in order (each step commits before the next):

1. claim: scheduled → sending with a lease (SKIP LOCKED: replicas never take the same row);
2. prepare, without locks: read the current data, end the row if the checks say so (cancelled,
   suppressed, expired), put it back if it must wait (quiet hours, daily limit), merge the
   patient's nearby reminders into it, compose it, and reserve the sender's next send slot
   (put back until then if the slot is not now);
3. begin the attempt: attempts + 1 and the body's hash are committed *before* the provider call,
   so a crash mid-call leaves a row whose lease runs out, which the sweeps turn into `unknown`
   and reconcile instead of sending again;
4. send, in one transaction that holds the appointments FOR SHARE and the row FOR UPDATE across
   the provider call: a cancel or move either commits first (the check sees it and the row is
   cancelled) or waits until the message has left; the outcome (sent, retry, failed, unknown) is
   written in the same transaction.
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import asyncpg
from aiohttp import web

from services.notifier import send_checks
from services.notifier.metrics import NotifierMetrics
from services.notifier.send_checks import Stop, Wait
from shared.clock import Clock
from shared.config import Settings
from shared.messaging import Composed, MessageContext, RenderError, load_context, render
from shared.messaging.context import ContextError
from shared.providers.email import EmailClient, EmailError, build_message
from shared.providers.sms import OPTED_OUT_CODE, SmsClient, SmsError
from shared.store import appointments
from shared.store import notifications as store
from shared.store.notifications import Notification

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
                conn = await asyncpg.connect(self.database_url, timeout=10)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
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
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
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
            rows = await store.claim_due(
                self.pool, now=self.clock.now(), lease=self.lease, worker=self.worker, limit=limit
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self._warn("cannot claim notifications", exc)
            return []
        self._last_error = ""
        return rows

    async def _until_next_due(self) -> float:
        """Seconds to sleep: until the next scheduled row is due, at most the poll interval."""
        try:
            due = await store.next_due_at(self.pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
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
        for group in _groups(claimed):
            self._busy += len(group)
            task = asyncio.create_task(self._handle_group(group))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, size=len(group)))

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

    # -- one group of claimed rows (a patient's reminders claimed together) ------------------

    async def _handle_group(self, group: list[Notification]) -> None:
        own = [n.id for n in group]
        async with self.pool.acquire() as conn:
            for index, claimed in enumerate(group):
                if self._stopping and index > 0:
                    await self._release(conn, claimed.id)
                    continue
                notification = claimed if index == 0 else await self._still_mine(conn, claimed)
                if notification is None:
                    continue  # merged into an earlier row of the group
                try:
                    await self._handle(conn, notification, own)
                except _LostLease:
                    log.info("lease lost", extra={"notification_id": claimed.id})
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    # Left as it is: the lease runs out and the sweeps take over.
                    log.warning(
                        "dispatch interrupted",
                        extra={
                            "notification_id": claimed.id,
                            "error": type(exc).__name__,
                            # SQLSTATE and constraint, never the message (it may quote values)
                            "sqlstate": getattr(exc, "sqlstate", None),
                            "constraint": getattr(exc, "constraint_name", None),
                        },
                    )
                except Exception:
                    log.exception("dispatch failed", extra={"notification_id": claimed.id})

    async def _still_mine(
        self, conn: asyncpg.Connection, claimed: Notification
    ) -> Notification | None:
        current = await store.get(conn, claimed.id)
        if current is None or current.status != "sending" or current.leased_by != self.worker:
            return None
        return current

    async def _release(self, conn: asyncpg.Connection, notification_id: int) -> None:
        await store.release(
            conn,
            notification_id,
            worker=self.worker,
            now=self.clock.now(),
            reason=f"handed back: {self.worker} is stopping",
        )

    # -- one row -------------------------------------------------------------------------------

    async def _handle(
        self, conn: asyncpg.Connection, notification: Notification, own: list[int]
    ) -> None:
        prepared = await self._prepare(conn, notification, own)
        if prepared is None:
            return
        if not await self._pace(conn, prepared):
            return
        await self._send(conn, prepared)

    async def _prepare(
        self, conn: asyncpg.Connection, notification: Notification, own: list[int]
    ) -> _Prepared | None:
        """Checks, waits, merging and composing; None when the row was settled or put back."""
        now = self.clock.now()
        loaded = await self._load(conn, notification)
        if loaded is None:
            return None
        seen, ctx = loaded
        stop = send_checks.stop_now(notification, ctx, now)
        if stop is not None:
            await self._settle(conn, notification, stop)
            return None
        quiet = await send_checks.quiet_hours_of(conn, notification.clinic_id)
        wait = send_checks.quiet_hours_wait(
            notification, now, ctx.patient_zone, quiet
        ) or await send_checks.daily_limit_wait(
            conn,
            notification,
            now,
            ctx.patient_zone,
            quiet,
            self.settings.max_scheduled_per_day,
            worker=self.worker,
        )
        if wait is not None:
            await self._wait(conn, notification, wait)
            return None
        merged_context = await send_checks.merge_nearby(
            conn,
            notification,
            now=now,
            window=timedelta(minutes=self.settings.notify_merge_minutes),
            worker=self.worker,
            own_claimed=own,
        )
        if merged_context is not None:
            notification = replace(notification, context=merged_context)
            loaded = await self._load(conn, notification)
            if loaded is None:
                return None
            seen, ctx = loaded
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
        return _Prepared(notification, ctx, composed, seen)

    async def _load(
        self, conn: asyncpg.Connection, notification: Notification
    ) -> tuple[dict[int, int], MessageContext] | None:
        # Versions first: a change after this read is caught under lock before sending.
        seen = await store.appointment_versions(
            conn, send_checks.covered_appointment_ids(notification)
        )
        try:
            ctx = await load_context(conn, notification, settings=self.settings)
        except ContextError as exc:
            await self._settle(conn, notification, Stop("failed", f"cannot compose: {exc}"))
            return None
        return seen, ctx

    async def _settle(
        self, conn: asyncpg.Connection, notification: Notification, stop: Stop
    ) -> None:
        done = await store.settle(
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
            await store.unmerge(
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
        done = await store.defer(
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
            slot = await store.reserve_sender_slot(
                conn, sender=self.sender, now=now, cost=cost, urgent=notification.urgent
            )
        if slot - now > PACE_INLINE_WAIT:
            wait = Wait(slot, "rate limit: waits for the sender's next free slot")
            await self._wait(conn, notification, wait, sender_slot=slot)
            return False
        if slot > now:
            await asyncio.sleep((slot - now).total_seconds())
        return True

    # -- the provider call -------------------------------------------------------------------

    async def _send(self, conn: asyncpg.Connection, prepared: _Prepared) -> None:
        notification, composed = prepared.notification, prepared.composed
        now = self.clock.now()
        extra: dict[str, object] = {"attempt_to": composed.to}
        if notification.channel == "email":
            extra["message_id"] = message_id_for(notification.id, self.settings.email_from or "")
        attempt_id = await store.begin_attempt(
            conn,
            notification.id,
            worker=self.worker,
            now=now,
            lease=self.lease,
            body_hash=body_hash(composed.body),
            context=extra,
        )
        if attempt_id is None:
            raise _LostLease
        calling: list[bool] = []
        try:
            await self._send_locked(conn, prepared, attempt_id, calling)
        except asyncpg.DeadlockDetectedError:
            if calling:
                raise  # after the call: the sweeps reconcile it like a crash
            # A change locking several sessions in another order (cancelling the rest of a
            # course) met this message's locks before the call: nothing left, so try again.
            now = self.clock.now()
            await store.abandon_attempt(
                conn, attempt_id, now=now, detail="not sent: locked by a concurrent change"
            )
            wait = Wait(now + timedelta(seconds=1), "locked by a concurrent change; trying again")
            await self._wait(conn, notification, wait)

    async def _send_locked(
        self,
        conn: asyncpg.Connection,
        prepared: _Prepared,
        attempt_id: int,
        calling: list[bool],
    ) -> None:
        """Lock, check and call inside one transaction (see the module docstring, step 4);
        `calling` gets an entry once the provider call may have started."""
        notification, composed = prepared.notification, prepared.composed
        async with conn.transaction():
            ids = send_checks.covered_appointment_ids(notification)
            locked = await store.lock_appointments_for_send(conn, ids) if ids else {}
            if locked != prepared.seen_versions:
                await self._changed_under_us(conn, notification, attempt_id)
                return
            if not await store.hold_for_send(conn, notification.id, worker=self.worker):
                # Rescued meanwhile (a lease outlived): the sweeps own the row now.
                await store.abandon_attempt(
                    conn, attempt_id, now=self.clock.now(), detail="not sent: lease lost"
                )
                log.info("lease lost", extra={"notification_id": notification.id})
                return
            calling.append(True)
            if notification.channel == "sms":
                await self._send_sms(conn, notification, composed, attempt_id)
            else:
                await self._send_email(conn, notification, composed, attempt_id)

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
            await store.abandon_attempt(
                conn, attempt_id, now=now, detail=f"not sent: {stop.reason}"
            )
            await self._settle(conn, notification, stop)
            return
        await store.abandon_attempt(
            conn, attempt_id, now=now, detail="not sent: appointment changed while composing"
        )
        await self._wait(
            conn, notification, Wait(now, "appointment changed while composing; composing again")
        )

    async def _send_sms(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        composed: Composed,
        attempt_id: int,
    ) -> None:
        assert composed.to is not None
        now = self.clock.now()
        validity = None
        if notification.expires_at is not None:
            validity = max(1, int((notification.expires_at - now).total_seconds()))
        callback = f"{self.settings.public_url}/twilio/status?n={notification.id}"
        try:
            sent = await self.sms.send(
                composed.to, composed.body, status_callback=callback, validity_period=validity
            )
        except SmsError as exc:
            await self._sms_failed(conn, notification, attempt_id, exc)
            return
        except Exception as exc:  # the request may have left: never assume it did not
            log.exception("sms send raised", extra={"notification_id": notification.id})
            await self._ambiguous(
                conn, notification, attempt_id, f"send raised {type(exc).__name__}"
            )
            return
        done = self.clock.now()
        await store.record_sent(
            conn,
            notification.id,
            attempt_id,
            provider_id=sent.sid,
            segments=sent.segments or composed.segments,
            now=done,
            detail=f"accepted by Twilio ({sent.status})",
        )
        self.metrics.provider_call("sms", "sent")
        self.metrics.lag.labels("sms").observe(
            max(0.0, (done - notification.due_at).total_seconds())
        )

    async def _sms_failed(
        self, conn: asyncpg.Connection, notification: Notification, attempt_id: int, exc: SmsError
    ) -> None:
        kind = exc.kind
        if exc.code == TWILIO_AUTH_CODE:
            kind = "temporary"
        self.metrics.provider_call("sms", kind, exc.code)
        if kind == "ambiguous":
            await self._ambiguous(conn, notification, attempt_id, exc.reason)
        elif kind == "temporary":
            await self._retry(conn, notification, attempt_id, exc.code, exc.reason)
        else:
            await self._fail(conn, notification, attempt_id, exc.code, exc.reason)
            if exc.code == OPTED_OUT_CODE and notification.patient_id is not None:
                await store.record_sms_opt_out(conn, notification.patient_id, now=self.clock.now())

    async def _send_email(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        composed: Composed,
        attempt_id: int,
    ) -> None:
        assert composed.to is not None
        sender = self.settings.email_from
        if not sender:
            await self._retry(conn, notification, attempt_id, None, "REGIMEN_EMAIL_FROM is not set")
            return
        message = build_message(
            sender=sender,
            to=composed.to,
            subject=composed.subject or "",
            text=composed.body,
            html=composed.html,
            attachments=composed.attachments,
        )
        message_id = message_id_for(notification.id, sender)
        del message["Message-ID"]
        message["Message-ID"] = message_id
        try:
            await self.email.send(message)
        except EmailError as exc:
            self.metrics.provider_call("email", exc.kind, exc.code)
            if exc.kind == "temporary":
                await self._retry(conn, notification, attempt_id, exc.code, exc.reason)
            else:
                await self._fail(conn, notification, attempt_id, exc.code, exc.reason)
            return
        except Exception as exc:  # the message may have been accepted: never assume it was not
            log.exception("email send raised", extra={"notification_id": notification.id})
            await self._ambiguous(
                conn, notification, attempt_id, f"send raised {type(exc).__name__}"
            )
            return
        done = self.clock.now()
        await store.record_sent(
            conn,
            notification.id,
            attempt_id,
            provider_id=message_id,
            segments=None,
            now=done,
            detail="accepted by the SMTP server",
        )
        self.metrics.provider_call("email", "sent")
        self.metrics.lag.labels("email").observe(
            max(0.0, (done - notification.due_at).total_seconds())
        )

    # -- outcomes ------------------------------------------------------------------------------

    async def _retry(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        attempt_id: int,
        code: int | None,
        reason: str,
    ) -> None:
        """Back to scheduled after the backoff, unless the attempts are used up or the retry
        would come after the expiry (then failed, with the last error)."""
        now = self.clock.now()
        attempts = notification.attempts + 1
        due_at = now + backoff(attempts, timedelta(seconds=self.settings.notify_retry_seconds))
        if attempts >= self.settings.notify_max_attempts:
            final = f"gave up after {attempts} attempts: {reason}"
        elif notification.expires_at is not None and due_at >= notification.expires_at:
            final = f"no retry before it expires: {reason}"
        else:
            await store.record_retry(
                conn,
                notification.id,
                attempt_id,
                due_at=due_at,
                now=now,
                error_code=code,
                reason=f"temporary failure, retry {attempts + 1} later: {reason}",
            )
            return
        await store.record_failure(
            conn,
            notification.id,
            attempt_id,
            now=now,
            error_code=code,
            reason=final,
            attempt_outcome="temporary",
        )
        self.metrics.failed(notification.channel, code, "send")

    async def _fail(
        self,
        conn: asyncpg.Connection,
        notification: Notification,
        attempt_id: int,
        code: int | None,
        reason: str,
    ) -> None:
        await store.record_failure(
            conn, notification.id, attempt_id, now=self.clock.now(), error_code=code, reason=reason
        )
        self.metrics.failed(notification.channel, code, "send")

    async def _ambiguous(
        self, conn: asyncpg.Connection, notification: Notification, attempt_id: int, reason: str
    ) -> None:
        await store.record_unknown(
            conn,
            notification.id,
            attempt_id,
            now=self.clock.now(),
            reason=f"outcome unknown, to be reconciled: {reason}",
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


def _groups(claimed: list[Notification]) -> list[list[Notification]]:
    """Reminders of one patient on one channel go together (the first may absorb the others);
    every other row goes alone."""
    groups: dict[tuple[int, str], list[Notification]] = {}
    alone: list[list[Notification]] = []
    for notification in claimed:
        if notification.kind in send_checks.REMINDER_KINDS and notification.patient_id is not None:
            groups.setdefault((notification.patient_id, notification.channel), []).append(
                notification
            )
        else:
            alone.append([notification])
    return alone + list(groups.values())


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
