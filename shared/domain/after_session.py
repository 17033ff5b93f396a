"""What completing a session sets going, in the completing transaction: the session record's
follow-up (aftercare, check-ins). Every path that completes a session (the admin API's
complete action) calls `on_completed` once, after the transition is written, so what it plans
commits with the completion or not at all (the outbox is written in the causing transaction)."""

from __future__ import annotations

import asyncpg

from shared.domain import aftercare, check_ins
from shared.domain.appointment_changes import Change
from shared.store.appointments import Appointment


async def on_completed(conn: asyncpg.Connection, appointment: Appointment, change: Change) -> None:
    """Plan what follows a completed session: the treatment's aftercare message (none for a
    treatment without an aftercare template) and its check-ins (none without a plan)."""
    await aftercare.plan_aftercare(conn, appointment, now=change.now)
    await check_ins.plan_for_completed(conn, appointment, change)
