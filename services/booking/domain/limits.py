"""Limits on what one client, one mobile number or one address may do, counted in PostgreSQL so
that every booking replica counts against the same numbers.

Fixed windows follow the injectable clock, like every other time decision, so tests move the
clock instead of sleeping. A limit reached is the domain's `TooMany` (with when to try again);
the faces turn it into a 429 or a friendly page. The limits are settings (REGIMEN_PUBLIC_*,
REGIMEN_BOOKINGS_PER_MOBILE_PER_HOUR, REGIMEN_HOLDS_PER_ADDRESS), set once when the booking app
is built; 0 turns one off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.clock import Clock
from shared.config import Settings
from shared.domain.errors import TooMany
from shared.store import holds, rate_limits

WINDOW = timedelta(minutes=1)
MOBILE_WINDOW = timedelta(hours=1)
# Counters older than this are useless; purge_counters removes them.
KEEP_COUNTERS = timedelta(hours=2)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Executor = asyncpg.Connection | asyncpg.Pool


@dataclass
class Limits:
    """Per client address and minute (reads, writes) and per mobile number and hour (bookings);
    0 turns a limit off."""

    reads: int = 120  # clinic, treatments, availability, proposals, hold status, pages
    writes: int = 30  # holds, releases, bookings, form posts
    bookings_per_mobile: int = 5
    holds_per_address: int = 3  # holds not yet expired, released or booked
    trusted_proxy_hops: int = 0  # 0: the connecting address is the client


LIMITS = Limits()


def configure(settings: Settings) -> None:
    LIMITS.reads = settings.public_reads_per_minute
    LIMITS.writes = settings.public_writes_per_minute
    LIMITS.bookings_per_mobile = settings.bookings_per_mobile_per_hour
    LIMITS.holds_per_address = settings.holds_per_address
    LIMITS.trusted_proxy_hops = settings.trusted_proxy_hops


@dataclass(frozen=True)
class Verdict:
    hits: int
    limit: int
    retry_after: int  # seconds until the window ends

    @property
    def allowed(self) -> bool:
        return self.hits <= self.limit


def window_start(now: datetime, window: timedelta) -> datetime:
    """The start of the fixed window containing `now` (windows are aligned to the epoch)."""
    return _EPOCH + ((now - _EPOCH) // window) * window


async def hit(
    db: Executor, bucket: str, *, limit: int, window: timedelta, now: datetime
) -> Verdict:
    """Count one request in `bucket` and say whether it is within `limit` for this window."""
    starts = window_start(now, window)
    hits = await rate_limits.count(db, bucket, starts)
    remaining = (starts + window - now).total_seconds()
    return Verdict(hits, limit, max(1, math.ceil(remaining)))


def too_many(verdict: Verdict, what: str) -> TooMany:
    return TooMany(
        f"more than {verdict.limit} {what}; try again in {verdict.retry_after} s",
        retry_after=verdict.retry_after,
    )


async def limit_mobile(db: Executor, mobile: str, *, now: datetime) -> None:
    """Bookings per mobile number (E.164), whatever address they come from."""
    if LIMITS.bookings_per_mobile <= 0:
        return
    verdict = await hit(
        db,
        f"booking-mobile:{mobile}",
        limit=LIMITS.bookings_per_mobile,
        window=MOBILE_WINDOW,
        now=now,
    )
    if not verdict.allowed:
        raise too_many(verdict, "bookings an hour for one mobile number")


async def limit_holds(conn: asyncpg.Connection, client: bytes, *, now: datetime) -> None:
    """Refuse one more hold from a client that already has LIMITS.holds_per_address holds
    neither expired, released nor booked. Holds a patient replaces are released first, in the
    same transaction, so replacing one's own hold never counts twice. Concurrent holds from one
    client are serialised on a lock, so they cannot all squeeze under the cap together."""
    limit = LIMITS.holds_per_address
    if limit <= 0:
        return
    await holds.lock_client(conn, client)
    active = await holds.running_for_client(conn, client, now=now)
    if len(active) < limit:
        return
    retry_after = max(1, math.ceil((min(active) - now).total_seconds()))
    raise TooMany(
        f"{len(active)} holds from this address are still running (at most {limit}); book or "
        f"release one, or try again in {retry_after} s",
        retry_after=retry_after,
        code="too-many-holds",
    )


async def purge_counters(pool: asyncpg.Pool, clock: Clock) -> int:
    """Delete counters of windows long gone (a sweep).

    Replicas: a DELETE of rows past a cutoff is idempotent; two replicas delete each row once
    between them."""
    return await rate_limits.purge_before(pool, clock.now() - KEEP_COUNTERS)
