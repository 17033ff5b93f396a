"""Booking holds (owner of `booking_hold`): a slot, or a whole course, reserved while a patient
fills in the booking form.

Invariants: the hold's token is never stored, only its hash (the token derives from the id, so
the hash is set right after the insert, `set_token_hash`); a hold ends once (`end`: released
by the patient or turned into a booking) and an ended hold is never re-opened. The client hash
(an HMAC of the client's address, never the address) and the session hash (an HMAC of the
booking pages' browser-session cookie) exist only while the hold runs: `end` clears them, and
the hold-expiry sweep clears them once the hold has run out (`forget_clients`).
The held appointments themselves are rows of shared/store/appointments.py naming the hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.store import Executor, affected


@dataclass(frozen=True)
class Hold:
    """One `booking_hold` row (its hashes aside: they are only ever looked up by)."""

    id: int
    clinic_id: int
    treatment_id: int
    expires_at: datetime
    created_at: datetime
    released_at: datetime | None


_COLUMNS = "id, clinic_id, treatment_id, expires_at, created_at, released_at"


@dataclass(frozen=True)
class NewHold:
    clinic_id: int
    treatment_id: int
    token_hash: bytes
    expires_at: datetime
    client_hash: bytes | None = None
    session_hash: bytes | None = None


async def insert(conn: Executor, new: NewHold, *, now: datetime) -> int:
    return int(
        await conn.fetchval(
            """
            INSERT INTO booking_hold (clinic_id, treatment_id, token_hash, expires_at, created_at,
                                      client_hash, session_hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id
            """,
            new.clinic_id,
            new.treatment_id,
            new.token_hash,
            new.expires_at,
            now,
            new.client_hash,
            new.session_hash,
        )
    )


async def set_token_hash(conn: Executor, hold_id: int, token_hash: bytes) -> None:
    """Replace the placeholder hash once the token (derived from the id) is known."""
    await conn.execute("UPDATE booking_hold SET token_hash = $2 WHERE id = $1", hold_id, token_hash)


async def by_token_hash(db: Executor, token_hash: bytes) -> Hold | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM booking_hold WHERE token_hash = $1",  # noqa: S608 - constant
        token_hash,
    )
    return None if row is None else Hold(**dict(row))


async def lock_by_token_hash(conn: Executor, token_hash: bytes) -> Hold | None:
    """`by_token_hash`, locked for the rest of the caller's transaction."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM booking_hold WHERE token_hash = $1 FOR UPDATE",  # noqa: S608
        token_hash,
    )
    return None if row is None else Hold(**dict(row))


async def end(conn: Executor, hold_id: int, *, now: datetime) -> None:
    """Mark a hold as finished (released by the patient, or turned into a booking); the client
    and session hashes go with it."""
    await conn.execute(
        "UPDATE booking_hold SET released_at = $2, client_hash = NULL, session_hash = NULL "
        "WHERE id = $1 AND released_at IS NULL",
        hold_id,
        now,
    )


async def lock_client(conn: asyncpg.Connection, client_hash: bytes) -> None:
    """Serialise, until the transaction ends, the holds one client creates (a transaction-level
    advisory lock on the client's hash), so concurrent requests are counted one after another."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        "regimen.holds-of-client:" + client_hash.hex(),
    )


async def lock_session(conn: asyncpg.Connection, session_hash: bytes) -> None:
    """Serialise, until the transaction ends, the holds one browser session takes, so that two
    identical submits at once are answered one after the other (the second finds the first's
    hold) rather than racing for the same times."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        "regimen.holds-of-session:" + session_hash.hex(),
    )


async def running_for_session(
    conn: Executor, session_hash: bytes, treatment_id: int, *, now: datetime
) -> list[Hold]:
    """The holds of this browser session on this treatment that are still running (neither
    expired, released nor booked), oldest first."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM booking_hold
        WHERE session_hash = $1 AND treatment_id = $2 AND released_at IS NULL
          AND expires_at > $3
        ORDER BY id
        """,  # noqa: S608 - constant columns
        session_hash,
        treatment_id,
        now,
    )
    return [Hold(**dict(row)) for row in rows]


async def running_for_client(
    conn: Executor, client_hash: bytes, *, now: datetime
) -> list[datetime]:
    """When each hold of this client that is still running (not expired, released or booked)
    runs out."""
    rows = await conn.fetch(
        """
        SELECT expires_at FROM booking_hold
        WHERE client_hash = $1 AND released_at IS NULL AND expires_at > $2
        """,
        client_hash,
        now,
    )
    return [row["expires_at"] for row in rows]


async def forget_clients(db: Executor, *, now: datetime) -> int:
    """Drop the client and session hashes of holds that have run out: neither the cap nor a
    repeated submit needs them any more. (A booked or released hold lost them in `end`.)"""
    result = await db.execute(
        """
        UPDATE booking_hold SET client_hash = NULL, session_hash = NULL
        WHERE (client_hash IS NOT NULL OR session_hash IS NOT NULL)
          AND released_at IS NULL AND expires_at <= $1
        """,
        now,
    )
    return affected(result)
