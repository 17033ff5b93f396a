"""Fixed-window request counters (owner of `rate_limit_counter`), shared by every booking
replica. The table is UNLOGGED: counters lost in a crash only forgive a few requests."""

from __future__ import annotations

from datetime import datetime

from shared.store import Executor, affected


async def count(db: Executor, bucket: str, window_start: datetime) -> int:
    """Count one hit in (bucket, window) and return the window's hits so far: one upsert."""
    hits = await db.fetchval(
        """
        INSERT INTO rate_limit_counter (bucket, window_start, hits) VALUES ($1, $2, 1)
        ON CONFLICT (bucket, window_start)
        DO UPDATE SET hits = rate_limit_counter.hits + 1
        RETURNING hits
        """,
        bucket,
        window_start,
    )
    return int(hits)


async def purge_before(db: Executor, cutoff: datetime) -> int:
    """Delete the counters of windows that started before `cutoff`; how many."""
    result = await db.execute("DELETE FROM rate_limit_counter WHERE window_start < $1", cutoff)
    return affected(result)
