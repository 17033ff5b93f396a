"""Dispatch: claim due notifications by lane and send them, never twice, never lost, and never
after a cancellation has committed.

The parts: `wakeup` (NOTIFY, the clock, the poll timer), the lanes here (claiming), `preparing`
(data, send-time checks, merging, composing, pacing), the decision here, `sending` (the provider
calls), `outcomes` (the pure policy: retry, fail, reconcile, expire) and `recording` (each
outcome committed as soon as its call returns).

**Lanes.** SMS and email each have a lane, and urgent rows (staff alerts, emergency answers) a
priority lane per channel. A lane claims only its own rows (channel, urgent), has its own slots
(`REGIMEN_NOTIFIER_CONCURRENCY` for SMS and for email, a quarter of that, at least 2, for each
priority lane) and claims more as its slots free, so a hung provider holds only its own lane,
and urgent rows are claimed before anything scheduled: they never wait behind reminders, are
never merged, and their sender slot is taken at once (they go now and push the queue back).

**A row's way** (each step commits before the next; no transaction is open during a call):

1. claim: scheduled → sending with a lease (SKIP LOCKED: replicas never take the same row);
2. prepare, without locks (services/notifier/preparing.py): end it, put it back, merge into it,
   compose it;
3. decide, in one statement per batch (its own transaction; decide_sends): FOR SHARE on every
   appointment the messages talk about and the rows held FOR NO KEY UPDATE; a row still held by
   this worker whose appointments are at the versions it was composed from begins its attempt
   (attempts + 1, the body's hash and the address, for reconciliation); commit;
4. call the provider (services/notifier/sending.py), holding nothing; while calls are in flight
   the worker renews their leases, so only a dead worker's rows are ever rescued;
5. record: the call's outcome goes to the writer, which commits it within milliseconds
   (services/notifier/recording.py); an email's acceptance is recorded inside the call, before
   the next email may be accepted (the acceptance gate of shared/providers/email.py), so a crash
   leaves at most one accepted email unrecorded. A crash before the record leaves the row to
   the sweeps, which reconcile it (an SMS is looked up at Twilio; an email is sent again with
   the same Message-ID).

**Never sent after a cancellation has committed.** A cancel or move of an appointment updates
the appointment row (a FOR UPDATE lock) and cancels its scheduled messages in the same
transaction. The decision (step 3) reads the appointment under FOR SHARE, which conflicts with
that lock, so the two are ordered:
* the cancel committed first: the decision reads the new version, the row is not sent (it is
  cancelled, or composed again if the change does not make it stale);
* the decision holds the lock first: the cancel waits for that transaction only (a few
  statements, no provider call in it), so it never waits for a provider. When it commits, the
  message has been decided and is on its way: from the cancel's point of view it was sent
  before the cancel. The cancel's own sweep of pending rows does not match it (it is
  `sending`), and whatever happens to the call afterwards, nothing more is sent for it: a
  retry, a resend after a lost answer or a lease rescue all go through step 3 again, which
  sees the cancel.
So every provider call follows a decision that committed before any conflicting cancel did.
A patient-wide cancel (an erasure, an opt-out) locks the rows themselves the same way
(outbox.cancel_pending_for_patient): it cancels those not yet decided and leaves those in
flight to their outcome.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import asyncpg
from aiohttp import web

from services.notifier import outcomes, send_checks
from services.notifier.metrics import NotifierMetrics
from services.notifier.outcomes import Refused, RetryRules
from services.notifier.preparing import BatchFacts, LostLease, Prepared, Preparer, interrupted
from services.notifier.recording import OutcomeWriter
from services.notifier.send_checks import Wait
from services.notifier.sending import Sender, reconcile_extra
from services.notifier.wakeup import Waker
from shared.clock import Clock
from shared.config import Settings
from shared.messaging import compile_templates
from shared.providers.email import EmailClient
from shared.providers.sms import SmsClient
from shared.store import notifications
from shared.store.notifications.dispatch import LaneKey, SendOutcome
from shared.store.notifications.rows import Notification

log = logging.getLogger("regimen.notifier.dispatch")

# On shutdown, sends in flight get this long to finish before they are cut off (their rows are
# recorded as unknown and reconciled like a crash).
DRAIN_SECONDS = 8.0
# What is left to record at shutdown gets this long to reach the database.
RECORD_SECONDS = 5.0
# First look again at a due row that could not be claimed (it was locked for a moment).
RECHECK_FIRST = 0.01
# A decision that keeps meeting deadlocks (a change locking several sessions in another order)
# puts its rows back for this long.
DEADLOCK_PAUSE = timedelta(seconds=1)
DECIDE_ATTEMPTS = 3
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def worker_name() -> str:
    """Unique per dispatcher (two apps in one test process must differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LaneSpec:
    name: str
    key: LaneKey
    slots: int


def lanes_for(settings: Settings) -> list[LaneSpec]:
    """Priority lanes first: they claim before the others whenever both wake together."""
    slots = settings.notifier_concurrency
    priority = max(2, slots // 4)
    return [
        LaneSpec("sms-priority", LaneKey("sms", True), priority),
        LaneSpec("email-priority", LaneKey("email", True), priority),
        LaneSpec("sms", LaneKey("sms", False), slots),
        LaneSpec("email", LaneKey("email", False), slots),
    ]


class Lane:
    """Claims its rows as slots free and hands them to the dispatcher in batches."""

    def __init__(self, spec: LaneSpec, dispatcher: Dispatcher) -> None:
        self.spec = spec
        self.dispatcher = dispatcher
        self.wake = dispatcher.waker.event()
        self.busy = 0
        # Claim once this many slots are free (or the lane is idle): a claim and a batch's reads
        # cost a round trip each however many rows they carry.
        self.claim_at = max(1, spec.slots // 2)
        # Two or more batches per lane: one composing or deciding while another's calls are out.
        self.batch_size = max(1, spec.slots)
        self._recheck = 0.0

    async def run(self) -> None:
        d = self.dispatcher
        while not d.stopping:
            self.wake.clear()
            free = self.spec.slots - self.busy
            claimed: list[Notification] = []
            if free > 0 and (free >= self.claim_at or self.busy == 0):
                claimed = await d.claim(self.spec.key, free)
                for batch in _batches(claimed, self.batch_size):
                    d.start_batch(self, batch)
                if claimed:
                    self._recheck = 0.0
            if free <= 0 or len(claimed) == free or (free < self.claim_at and self.busy > 0):
                timeout = d.poll  # the lane is busy: a send finishing wakes it
            else:
                timeout = await self._until_next_due()
            if d.stopping:
                break
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    def take(self, count: int) -> None:
        self.busy += count

    def give_back(self, count: int = 1) -> None:
        self.busy -= count
        self.wake.set()

    async def _until_next_due(self) -> float:
        """Seconds to sleep: until the lane's next row is due, at most the poll interval."""
        d = self.dispatcher
        try:
            due = await notifications.dispatch.next_due_at(d.pool, self.spec.key)
        except (*DATABASE_ERRORS, TimeoutError):
            return d.poll
        if due is None:
            return d.poll
        wait = (due - d.clock.now()).total_seconds()
        if wait <= 0:
            # Due, yet not claimable a moment ago (another transaction held it): look again
            # soon, backing off so that a long-held lock does not make us spin.
            self._recheck = min(d.poll, max(RECHECK_FIRST, self._recheck * 2))
            return self._recheck
        self._recheck = 0.0
        return min(d.poll, max(wait, 0.001))


class _Slots:
    """A batch's rows, each holding one slot of its lane until it is done with."""

    def __init__(self, lane: Lane, dispatcher: Dispatcher, rows: list[Notification]) -> None:
        self.lane = lane
        self.dispatcher = dispatcher
        self.open = {n.id for n in rows}
        lane.take(len(rows))

    def done(self, notification_id: int, *, keep_lease: bool = False) -> None:
        if notification_id in self.open:
            self.open.discard(notification_id)
            self.lane.give_back()
            if not keep_lease:
                self.dispatcher.held.discard(notification_id)

    def done_all_but(self, keep: set[int]) -> None:
        for notification_id in list(self.open - keep):
            self.done(notification_id)


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
        self.metrics = metrics
        self.worker = worker or worker_name()
        self.poll = settings.notifier_poll_seconds
        self.lease = timedelta(seconds=settings.notifier_lease_seconds)
        self.rules = RetryRules(
            timedelta(seconds=settings.notify_retry_seconds), settings.notify_max_attempts
        )
        self._stop = asyncio.Event()
        self._stopping = False
        self.waker = Waker(database_url, clock, self._stop)
        self.preparer = Preparer(
            clock=clock,
            settings=settings,
            worker=self.worker,
            metrics=metrics,
            sender=settings.twilio_messaging_service_sid
            or settings.twilio_from
            or "default-sender",
            stopping=lambda: self._stopping,
        )
        self.sender = Sender(settings=settings, sms=sms, email=email, metrics=metrics)
        self.writer = OutcomeWriter(pool, metrics, self._warn)
        self.lanes = [Lane(spec, self) for spec in lanes_for(settings)]
        # Rows this worker has claimed and not finished with (their leases are renewed).
        self.held: set[int] = set()
        self._batches: set[asyncio.Task[None]] = set()
        self._lane_tasks: list[asyncio.Task[None]] = []
        self._renewing: asyncio.Task[None] | None = None
        self._last_error = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # What the first sends after a start would otherwise wait for, with calls in flight.
        compile_templates()
        await self.writer.open()
        self.waker.start()
        self._renewing = asyncio.create_task(self._renew_leases(), name="notifier-leases")
        self._lane_tasks = [
            asyncio.create_task(lane.run(), name=f"notifier-{lane.spec.name}")
            for lane in self.lanes
        ]

    async def stop(self) -> None:
        """Stop claiming, let sends in flight finish (bounded), hand back unstarted rows, record
        every outcome that came back."""
        self._stopping = True
        self._stop.set()
        self.waker.wake_all()
        await asyncio.gather(*self._lane_tasks)
        if self._batches:
            _, late = await asyncio.wait(set(self._batches), timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.writer.close(within=RECORD_SECONDS)
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
        await self.waker.stopped()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def listening(self) -> asyncio.Event:
        return self.waker.listening

    def wake(self) -> None:
        self.waker.wake_all()

    def wake_threadsafe(self) -> None:
        self.waker.wake_threadsafe()

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, lane: LaneKey, limit: int) -> list[Notification]:
        try:
            rows = await notifications.dispatch.claim_due(
                self.pool,
                lane=lane,
                now=self.clock.now(),
                lease=self.lease,
                worker=self.worker,
                limit=limit,
            )
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            self._warn("cannot claim notifications", exc)
            return []
        self._last_error = ""
        self.held.update(n.id for n in rows)
        return rows

    def start_batch(self, lane: Lane, batch: list[Notification]) -> None:
        slots = _Slots(lane, self, batch)
        task = asyncio.create_task(self._handle_batch(batch, slots))
        self._batches.add(task)
        task.add_done_callback(functools.partial(self._batch_ended, slots=slots))

    def _batch_ended(self, task: asyncio.Task[None], *, slots: _Slots) -> None:
        self._batches.discard(task)
        slots.done_all_but(set())

    async def _renew_leases(self) -> None:
        every = max(1.0, self.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(every)
            if not self.held:
                continue
            try:
                await notifications.dispatch.renew_leases(
                    self.pool,
                    sorted(self.held),
                    worker=self.worker,
                    now=self.clock.now(),
                    lease=self.lease,
                )
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                self._warn("cannot renew leases", exc)

    def _warn(self, message: str, exc: BaseException) -> None:
        # Once per distinct problem, not once per poll: a database outage must not flood logs.
        text = f"{message}: {type(exc).__name__}"
        if text != self._last_error:
            log.warning(
                message,
                extra={"error": type(exc).__name__, "sqlstate": getattr(exc, "sqlstate", None)},
            )
            self._last_error = text

    # -- one batch ---------------------------------------------------------------------------

    async def _handle_batch(self, batch: list[Notification], slots: _Slots) -> None:
        """Prepare the rows (rounds: rows held back by the daily limit until the patient's
        earlier rows of the batch have gone are decided again), decide, call, record."""
        pending = batch
        facts: BatchFacts | None = None
        contexts = None
        while pending:
            try:
                async with self.pool.acquire() as proxy:
                    conn = cast(asyncpg.Connection, proxy)
                    if contexts is None or facts is None:
                        contexts, facts = await self.preparer.read(conn, pending)
                    ready, held_back = await self.preparer.prepare_round(
                        conn, pending, contexts, facts
                    )
                    going = await self._decide(conn, ready)
            except DATABASE_ERRORS as exc:
                # The rows are left as they are: their leases run out and the sweeps take over.
                interrupted([n.id for n in pending], exc)
                return
            except Exception:
                log.exception(
                    "dispatch failed", extra={"notification_ids": [n.id for n in pending]}
                )
                return
            slots.done_all_but({p.notification.id for p, _ in going} | {n.id for n in held_back})
            results = await asyncio.gather(*(self._send(p, a, slots) for p, a in going))
            facts.after_round([p for p, _ in going], list(results))
            pending = held_back

    async def _decide(
        self, conn: asyncpg.Connection, ready: list[Prepared]
    ) -> list[tuple[Prepared, int]]:
        """Step 3 of the module docstring: the decision to send, one statement for the batch
        (decide_sends); returns the rows to call, with their attempt ids."""
        if not ready:
            return []
        candidates = [
            notifications.dispatch.SendCandidate(
                notifications.dispatch.AttemptStart(
                    p.notification.id,
                    outcomes.body_hash(p.composed.body),
                    reconcile_extra(self.settings, p.notification, p.composed),
                ),
                send_checks.covered_appointment_ids(p.notification),
                p.seen_versions,
            )
            for p in ready
        ]
        for attempt in range(DECIDE_ATTEMPTS):
            try:
                decision = await notifications.dispatch.decide_sends(
                    conn, candidates, worker=self.worker, now=self.clock.now(), lease=self.lease
                )
                break
            except asyncpg.DeadlockDetectedError:
                # A change locking several sessions in another order met this batch's locks;
                # nothing was sent, so deciding again is safe.
                if attempt == DECIDE_ATTEMPTS - 1:
                    await self._put_back(conn, ready, "locked by a concurrent change")
                    return []
        going: list[tuple[Prepared, int]] = []
        for prepared in ready:
            notification_id = prepared.notification.id
            if notification_id in decision.attempts:
                going.append((prepared, decision.attempts[notification_id]))
                continue
            try:
                if notification_id in decision.changed:
                    await self.preparer.changed_under_us(conn, prepared.notification)
                else:
                    log.info("lease lost", extra={"notification_id": notification_id})
            except LostLease:
                log.info("lease lost", extra={"notification_id": notification_id})
        return going

    async def _put_back(self, conn: asyncpg.Connection, ready: list[Prepared], why: str) -> None:
        wait = Wait(self.clock.now() + DEADLOCK_PAUSE, f"{why}; trying again")
        for prepared in ready:
            try:
                await self.preparer.defer(conn, prepared.notification, wait)
            except LostLease:
                log.info("lease lost", extra={"notification_id": prepared.notification.id})

    async def _send(self, prepared: Prepared, attempt_id: int, slots: _Slots) -> SendOutcome:
        """Step 4 and 5: call, then record the outcome. An email's acceptance is recorded
        inside the call, before the next email may be accepted (Sender.call). The slot frees
        when the call returns; the lease is renewed until the outcome is committed."""
        notification = prepared.notification
        recorded: list[SendOutcome] = []

        def committed(notification_id: int = notification.id) -> None:
            self.held.discard(notification_id)

        def outcome_of(result: outcomes.CallResult) -> SendOutcome:
            return outcomes.after_call(
                notification, attempt_id, result, now=self.clock.now(), rules=self.rules
            )

        async def record_acceptance(result: outcomes.Accepted) -> None:
            outcome = outcome_of(result)
            recorded.append(outcome)
            await self.writer.record(
                outcome,
                channel=notification.channel,
                patient_id=notification.patient_id,
                on_committed=committed,
                wait=True,
            )

        cut_off = False
        try:
            result = await self.sender.call(
                notification, prepared.composed, self.clock.now(), on_accepted=record_acceptance
            )
        except asyncio.CancelledError:
            cut_off = True
            result = Refused("ambiguous", "cut off at shutdown")
        slots.done(notification.id, keep_lease=True)
        if recorded:  # an accepted email: recorded inside the call
            self._observe(notification, recorded[0])
            if cut_off:
                raise asyncio.CancelledError
            return recorded[0]
        outcome = outcome_of(result)
        self._observe(notification, outcome)
        if cut_off:
            self.writer.queue(
                outcome,
                channel=notification.channel,
                patient_id=notification.patient_id,
                on_committed=committed,
            )
            raise asyncio.CancelledError
        await self.writer.record(
            outcome,
            channel=notification.channel,
            patient_id=notification.patient_id,
            on_committed=committed,
        )
        return outcome

    def _observe(self, notification: Notification, outcome: SendOutcome) -> None:
        if outcome.status == "sent":
            lag = max(0.0, (outcome.at - notification.due_at).total_seconds())
            self.metrics.lag.labels(notification.channel).observe(lag)
        elif outcome.status == "failed":
            self.metrics.failed(notification.channel, outcome.error_code, "send")


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
