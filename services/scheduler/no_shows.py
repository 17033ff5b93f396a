"""The no-show sweep: booked or confirmed appointments whose end plus their clinic's no-show
grace has passed without a check-in become `no_show`.

Safe with any number of scheduler replicas: rows are claimed with SKIP LOCKED, so two sweeps
never mark the same appointment and a row that staff are changing right now waits for the next
run. Each batch is one transaction holding the state changes, their history events (actor
'system') and their audit rows.
"""

from __future__ import annotations

import asyncpg

from shared import outbox_plan
from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.store import appointments, audit

# Rows per transaction: small enough to keep locks short, large enough to catch up quickly.
BATCH = 200
REASON = "not checked in by the end of the appointment plus the clinic's no-show grace"


async def mark_no_shows(pool: asyncpg.Pool, clock: Clock) -> int:
    """Mark every overdue appointment as a no-show; returns how many were marked.

    Replicas: a row claim. Rows are taken `FOR UPDATE SKIP LOCKED` and re-checked as booked or
    confirmed, so a row is marked by one replica once; its audit row and the 2 h reminders it
    plans are written by the transaction that marked it, so they happen once too."""
    now = clock.now()
    total = 0

    async def batch(conn: asyncpg.Connection) -> int:
        marked = await appointments.mark_overdue_no_shows(conn, now=now, limit=BATCH)
        for item in marked:
            await audit.insert(
                conn,
                at=now,
                actor=audit.SYSTEM,
                action="appointment.no_show",
                entity="appointment",
                entity_id=item.id,
                patient_id=item.patient_id,
                reason=REASON,
                details={"from_status": item.from_status, "by": "no-show sweep"},
            )
            if item.patient_id is not None:
                await outbox_plan.on_no_show(conn, item.patient_id, now=now)
        return len(marked)

    while True:
        marked = await in_transaction(pool, batch)
        total += marked
        if marked < BATCH:
            return total
