"""Expired holds, released: their held appointments cancelled, so the times are free for
everyone again, with one audit row saying how many. The scheduler's sweep releases them all;
a booking releases those in its way first (availability already ignores expired holds, but the
exclusion constraint does not until their rows are cancelled, and the sweep may not have run)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.store import appointments, audit


async def release_expired(
    conn: asyncpg.Connection,
    *,
    now: datetime,
    reason: str,
    in_the_way: list[tuple[int, datetime, datetime]] | None = None,
    request_id: str | None = None,
) -> int:
    """Cancel the held appointments of expired holds: all of them, or only those of
    `in_the_way` (practitioner id, start, end); returns how many, audited as `hold.expire`."""
    released = 0
    if in_the_way is None:
        released = await appointments.release_expired_holds(conn, now=now)
    else:
        for practitioner_id, start, end in in_the_way:
            released += await appointments.release_expired_holds(
                conn, now=now, practitioner_id=practitioner_id, overlapping=(start, end)
            )
    if released:
        await audit.insert(
            conn,
            at=now,
            actor=audit.SYSTEM,
            action="hold.expire",
            entity="appointment",
            entity_id=None,
            reason=reason,
            details={"appointments": released},
            request_id=request_id,
        )
    return released
