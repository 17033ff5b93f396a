"""The hold-expiry sweep: held appointments whose hold has run out are cancelled, so their times
are free for everyone again (availability already ignores them; this also clears them out of
the exclusion constraint's way and out of staff views)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.domain import hold_expiry
from shared.store import holds
from shared.sweeps import Sweep

INTERVAL = timedelta(seconds=30)


async def expire_holds(pool: asyncpg.Pool, clock: Clock) -> int:
    """Cancel every held appointment of an expired hold; returns how many. Their client hashes
    (kept only for the cap on holds per address) are dropped too.

    Replicas: a row claim. The UPDATE re-checks `status = 'held'` under each row's lock, so of
    two replicas sweeping at once the second waits for the first and then finds the row
    cancelled: each appointment is cancelled, and has its history event, once. The audit row
    counts what this run released (none: no row). Dropping hashes is idempotent."""
    now = clock.now()

    async def work(conn: asyncpg.Connection) -> int:
        released = await hold_expiry.release_expired(conn, now=now, reason="hold expired")
        await holds.forget_clients(conn, now=now)
        return released

    return await in_transaction(pool, work)


# Not exclusive: each row is claimed by its own UPDATE (see expire_holds).
EXPIRE_HOLDS = Sweep("expire-holds", INTERVAL, expire_holds)
