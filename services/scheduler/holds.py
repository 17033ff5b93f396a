"""The hold-expiry sweep: held appointments whose hold has run out are cancelled, so their times
are free for everyone again (availability already ignores them; this also clears them out of
the exclusion constraint's way and out of staff views)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from shared.clock import Clock
from shared.store import appointments, audit
from shared.sweeps import Sweep

INTERVAL = timedelta(seconds=30)


async def expire_holds(pool: asyncpg.Pool, clock: Clock) -> int:
    """Cancel every held appointment of an expired hold; returns how many. Their client hashes
    (kept only for the cap on holds per address) are dropped too."""
    now = clock.now()
    async with pool.acquire() as conn, conn.transaction():
        released = await appointments.release_expired_holds(conn, now=now)
        await appointments.forget_hold_clients(conn, now=now)
        if released:
            await audit.record(
                conn,
                at=now,
                actor=audit.SYSTEM,
                action="hold.expire",
                entity="appointment",
                entity_id=None,
                reason="hold expired",
                details={"appointments": released},
            )
    return released


# Not exclusive: the UPDATE re-checks each row under its lock, so two replicas sweeping at once
# cancel each row once.
EXPIRE_HOLDS = Sweep("expire-holds", INTERVAL, expire_holds)
