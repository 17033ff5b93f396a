"""The call list's "not confirmed" sweep: the 72 h reminder asks the patient to reply C; a
session still not confirmed a clinic-set number of hours before its start (48 by default,
`clinic.unconfirmed_call_hours`) goes on the staff call list, reason 'not_confirmed'.

Only sessions whose patient was asked: one booked inside 72 h never got the question (that
reminder is skipped, not sent late), so it is not "unconfirmed"; it still gets its 24 h
reminder. Which message counts as asking, and why each session is filed once per time, is
`call_tasks.file_unconfirmed`'s docstring.

A task whose reason has gone (the patient confirmed after it was filed, the session was
cancelled, moved or has passed) is closed by the same sweep, done by 'regimen' with the reason
as its outcome, so staff do not phone someone who has already answered.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.store import audit, call_tasks
from shared.sweeps import Sweep, once_per_cluster

NAME = "call-unconfirmed"
INTERVAL = timedelta(minutes=5)
# Tasks filed per transaction.
BATCH = 200


async def file_unconfirmed(pool: asyncpg.Pool, clock: Clock) -> int:
    """Put every asked and still unconfirmed session inside its clinic's window on the call
    list; returns how many tasks were filed.

    Replicas: once-only work under a transaction-level advisory lock. Each batch is one
    transaction that first takes the sweep's lock (`once_per_cluster`; a replica that finds it
    taken does nothing this tick), then files with a statement that skips sessions already
    filed: taken after the lock, that statement sees every task an earlier holder committed,
    so two replicas never file one session twice. The task's audit row is written in the same
    transaction, so it exists once too."""
    now = clock.now()

    async def batch(conn: asyncpg.Connection) -> int | None:
        if not await once_per_cluster(conn, NAME):
            return None
        closed = await call_tasks.close_settled_unconfirmed(conn, now=now)
        if closed:
            await audit.insert(
                conn,
                at=now,
                actor=audit.SYSTEM,
                action="call_task.close",
                entity="call_task",
                entity_id=None,
                reason="the session was confirmed, cancelled, moved or has passed",
                details={"call_tasks": [t.id for t in closed], "by": "call-unconfirmed sweep"},
            )
        filed = await call_tasks.file_unconfirmed(conn, now=now, limit=BATCH)
        for task in filed:
            await audit.insert(
                conn,
                at=now,
                actor=audit.SYSTEM,
                action="call_task.file",
                entity="call_task",
                entity_id=task.task_id,
                patient_id=task.patient_id,
                reason="asked to confirm and not confirmed in time",
                details={
                    "appointment_id": task.appointment_id,
                    "reason": "not_confirmed",
                    "by": "call-unconfirmed sweep",
                },
            )
        return len(filed)

    total = 0
    while True:
        filed = await in_transaction(pool, batch)
        if filed is None:
            return total  # another replica is filing right now
        total += filed
        if filed < BATCH:
            return total


CALL_UNCONFIRMED = Sweep(NAME, INTERVAL, file_unconfirmed)
