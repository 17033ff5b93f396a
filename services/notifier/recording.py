"""Recording outcomes: each provider call's outcome is committed as soon as that call returns.

The caller whose call just returned writes its outcome itself, at once, on the writer's own
connection (kept for the process's lifetime, so an outcome never queues behind batches waiting
for the pool); if a write is in progress, that write takes the new outcome in its next
statement, together with whatever else came back meanwhile. One statement (record_outcomes)
per write, committed when it returns: an outcome waits for at most the write in progress, never
for another call. The time from a call's return to that commit is the window in which a crash
resends an email the SMTP server had already accepted (SMTP cannot be asked afterwards); it is
measured (`regimen_notifier_outcome_record_seconds`, and the attempt's `recorded_at`) and is a
few milliseconds.

If the database is away the outcomes stay queued in memory and are written when it is back; if
the process dies first, its leases run out and the sweeps reconcile those rows (an SMS is found
at Twilio, an email is sent again with the same Message-ID).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import asyncpg

from services.notifier.metrics import NotifierMetrics
from shared.providers.sms import OPTED_OUT_CODE
from shared.store import notifications, patients
from shared.store.notifications.dispatch import SendOutcome

log = logging.getLogger("regimen.notifier.recording")

DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
RETRY_FIRST = 0.05
RETRY_MAX = 2.0


@dataclass
class _Pending:
    outcome: SendOutcome
    channel: str
    patient_id: int | None
    returned_at: float  # monotonic: when the call returned
    done: asyncio.Future[None]


@dataclass
class _Slot:
    """One of the writer's connections, and whether a write is using it."""

    conn: asyncpg.Connection | None = None
    busy: bool = False


# Two connections: while one statement is in flight, an outcome that comes back meanwhile is
# written at once on the other instead of waiting for it (the calls of one batch tend to return
# together); more would only add connections.
WRITER_CONNECTIONS = 2


class OutcomeWriter:
    """Writes outcomes on connections of its own. The caller whose call just returned writes
    it at once, in its own turn of the event loop (no hand-over to another task, which under
    load costs a turn or two of the loop each), on a connection no write is using; when both
    are busy, the first to finish takes it in its next statement, together with whatever else
    came back meanwhile."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: NotifierMetrics,
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self._on_error = on_error
        self._pending: list[_Pending] = []
        # The connections come from the service's pool: a small pool keeps most for the batches.
        count = WRITER_CONNECTIONS if pool.get_max_size() >= 3 * WRITER_CONNECTIONS else 1
        self._slots = [_Slot() for _ in range(count)]
        self._idle = asyncio.Event()
        self._idle.set()
        self._flushers: set[asyncio.Task[None]] = set()
        self._stopped = False

    async def open(self) -> None:
        """Take the connections and have the statement prepared before the first outcome: the
        first write on a fresh connection parses and plans it, which would widen the window of
        the first sends after every start."""
        for slot in self._slots:
            try:
                slot.conn = cast(asyncpg.Connection, await self.pool.acquire())
                await notifications.dispatch.record_outcomes(slot.conn, [])
            except DATABASE_ERRORS as exc:
                self._on_error("cannot prepare the outcome writer; it connects when needed", exc)
                if slot.conn is not None:
                    await self._drop(slot.conn)
                    slot.conn = None

    async def record(
        self,
        outcome: SendOutcome,
        *,
        channel: str,
        patient_id: int | None,
        on_committed: Callable[[], None] | None = None,
        wait: bool = False,
    ) -> None:
        """Record an outcome: written now on a connection no write is using, else by the
        first write to finish, right after its current statement. `wait`: return only once it
        is committed (an email's acceptance, recorded before the next may be accepted)."""
        done = self.queue(
            outcome, channel=channel, patient_id=patient_id, on_committed=on_committed
        )
        # An email waiting at the acceptance gate has the first connection to itself (only one
        # is there at a time), so its write never queues behind other outcomes' writes.
        slot = self._slots[0] if wait and not self._slots[0].busy else self._free_slot()
        if slot is not None:
            await self._flush(slot, until=done)
        if wait:
            await asyncio.shield(done)

    def queue(
        self,
        outcome: SendOutcome,
        *,
        channel: str,
        patient_id: int | None,
        on_committed: Callable[[], None] | None = None,
    ) -> asyncio.Future[None]:
        """Queue an outcome without writing (a call cut off at shutdown: close() writes it);
        the future resolves once it is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if on_committed is not None:
            done.add_done_callback(lambda _f: on_committed())
        self._pending.append(_Pending(outcome, channel, patient_id, time.monotonic(), done))
        return done

    async def close(self, within: float) -> None:
        """Write what is queued (for at most `within` seconds), then let the connection go."""
        self._kick()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=within)
        except TimeoutError:
            self._stopped = True
            late = list(self._flushers)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._pending:
            log.warning(
                "outcomes not recorded at shutdown: the sweeps will reconcile them",
                extra={"notification_ids": [p.outcome.notification_id for p in self._pending]},
            )
        for slot in self._slots:
            if slot.conn is not None:
                await self._drop(slot.conn)
                slot.conn = None

    def _free_slot(self) -> _Slot | None:
        """A connection for any outcome: the first is kept for emails at the gate when there
        are two."""
        shared = self._slots[1:] if len(self._slots) > 1 else self._slots
        return next((slot for slot in shared if not slot.busy), None)

    async def _flush(self, slot: _Slot, *, until: asyncio.Future[None] | None = None) -> None:
        """Write until nothing is pending; on a database error keep the outcomes and try again
        (they are never dropped while the process lives). A caller writing its own outcome
        (`until`) returns once that is committed and leaves the rest to a task of its own."""
        slot.busy = True
        self._idle.clear()
        pause = RETRY_FIRST
        try:
            while self._pending:
                if until is not None and until.done():
                    break  # ours is committed: the rest is written by a task of its own
                batch, self._pending = self._pending, []
                try:
                    if slot.conn is None:
                        slot.conn = cast(asyncpg.Connection, await self.pool.acquire())
                    await self._write(slot.conn, batch)
                except asyncio.CancelledError:
                    # Cut off mid-statement (shutdown): the connection's state is unknown, and
                    # the statement may or may not have run; writing it again changes nothing.
                    self._pending = batch + self._pending
                    if slot.conn is not None:
                        slot.conn.terminate()
                        await self._drop(slot.conn)
                        slot.conn = None
                    raise
                except DATABASE_ERRORS as exc:
                    self._on_error("cannot record outcomes; keeping them to write again", exc)
                    if _refused_by_the_data(exc) and len(batch) > 1:
                        # Not the connection: one outcome the database refuses must not hold the
                        # others back, so they are written one by one.
                        batch = await self._one_by_one(slot.conn, batch)
                    self._pending = batch + self._pending
                    if slot.conn is not None and not _refused_by_the_data(exc):
                        await self._drop(slot.conn)
                        slot.conn = None
                    await asyncio.sleep(pause)
                    pause = min(RETRY_MAX, pause * 2)
                    continue
                pause = RETRY_FIRST
                committed = time.monotonic()
                for item in batch:
                    self.metrics.record_wait.labels(item.channel).observe(
                        committed - item.returned_at
                    )
                    if not item.done.done():
                        item.done.set_result(None)
        finally:
            slot.busy = False
            self._kick()
            if all(not other.busy for other in self._slots):
                self._idle.set()

    def _kick(self) -> None:
        """Outcomes left waiting get a writer of their own on a free shared connection (marked
        busy at once, so no two writes ever share a connection)."""
        if not self._pending or self._stopped:
            return
        free = self._free_slot()
        if free is None:
            return  # the write running there takes them in its next statement
        free.busy = True
        self._idle.clear()
        task = asyncio.create_task(self._flush(free))
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _write(self, conn: asyncpg.Connection, batch: list[_Pending]) -> None:
        await notifications.dispatch.record_outcomes(conn, [p.outcome for p in batch])
        for item in batch:
            if item.outcome.error_code == OPTED_OUT_CODE and item.patient_id is not None:
                # Twilio refused with 21610: the patient sent STOP somewhere we did not see.
                try:
                    await patients.record_sms_opt_out(conn, item.patient_id, now=item.outcome.at)
                except asyncpg.PostgresError as exc:
                    # Learnt again from the next refusal; the outcome itself is recorded.
                    log.warning(
                        "opt-out not recorded",
                        extra={
                            "patient_id": item.patient_id,
                            "sqlstate": getattr(exc, "sqlstate", None),
                        },
                    )

    async def _one_by_one(
        self, conn: asyncpg.Connection | None, batch: list[_Pending]
    ) -> list[_Pending]:
        """Write each outcome alone; returns those still to write (a refused one is given up:
        its lease runs out and the sweeps reconcile the row)."""
        left: list[_Pending] = []
        for item in batch:
            if conn is None:
                left.append(item)
                continue
            try:
                await self._write(conn, [item])
            except asyncpg.PostgresError as exc:
                if not _refused_by_the_data(exc):
                    left.append(item)
                    continue
                log.error(
                    "outcome refused by the database: left to reconciliation",
                    extra={
                        "notification_id": item.outcome.notification_id,
                        "sqlstate": getattr(exc, "sqlstate", None),
                    },
                )
                item.done.set_result(None)
            except DATABASE_ERRORS:
                left.append(item)
            else:
                item.done.set_result(None)
        return left

    async def _drop(self, conn: asyncpg.Connection) -> None:
        try:
            await self.pool.release(cast(asyncpg.pool.PoolConnectionProxy, conn))
        except DATABASE_ERRORS:
            conn.terminate()


def _refused_by_the_data(exc: BaseException) -> bool:
    """A database error about the statement itself, not the connection or the server's state
    (classes 08 connection, 53 resources, 57 operator intervention, 40 transaction rollback)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return (
        isinstance(exc, asyncpg.PostgresError)
        and isinstance(sqlstate, str)
        and sqlstate[:2] not in ("08", "53", "57", "40")
    )
