"""Fixed-window rate limits kept in PostgreSQL (`rate_limit_counter`), so every booking replica
counts against the same numbers.

One upsert per request: the row for (bucket, current window) is created or incremented and the
new count returned. Windows follow the injectable clock, like every other time decision, so tests
move the clock instead of sleeping. Counters are disposable (the table is UNLOGGED); old windows
are removed by `purge_counters`.

The client is identified by the connecting address (`request.remote`). Behind a load balancer
set REGIMEN_TRUST_FORWARDED_FOR so that the left-most X-Forwarded-For address is used; leave it
off otherwise, or any client could pick a fresh identity per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from services.booking.api.framework import ApiError, Ctx
from shared.clock import Clock
from shared.config import Settings

WINDOW = timedelta(minutes=1)
MOBILE_WINDOW = timedelta(hours=1)


@dataclass
class Limits:
    """Per client address and minute (reads, writes) and per mobile number and hour (bookings);
    0 turns a limit off. Set from REGIMEN_PUBLIC_* settings when the booking app is built."""

    reads: int = 120  # clinic, treatments, availability, proposals, hold status
    writes: int = 30  # holds, releases, bookings
    bookings_per_mobile: int = 5
    trust_forwarded_for: bool = False


LIMITS = Limits()


def configure(settings: Settings) -> None:
    LIMITS.reads = settings.public_reads_per_minute
    LIMITS.writes = settings.public_writes_per_minute
    LIMITS.bookings_per_mobile = settings.bookings_per_mobile_per_hour
    LIMITS.trust_forwarded_for = settings.trust_forwarded_for


# Counters older than this are useless; purge_counters removes them.
KEEP_COUNTERS = timedelta(hours=2)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Executor = asyncpg.Connection | asyncpg.Pool


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
    hits = await db.fetchval(
        """
        INSERT INTO rate_limit_counter (bucket, window_start, hits) VALUES ($1, $2, 1)
        ON CONFLICT (bucket, window_start)
        DO UPDATE SET hits = rate_limit_counter.hits + 1
        RETURNING hits
        """,
        bucket,
        starts,
    )
    remaining = (starts + window - now).total_seconds()
    return Verdict(int(hits), limit, max(1, math.ceil(remaining)))


def too_many(verdict: Verdict, what: str) -> ApiError:
    return ApiError(
        429,
        "Too Many Requests",
        f"more than {verdict.limit} {what}; try again in {verdict.retry_after} s",
        type_="rate-limited",
        headers={"Retry-After": str(verdict.retry_after)},
        retry_after=verdict.retry_after,
    )


def client_address(request: web.Request) -> str:
    if LIMITS.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return request.remote or "unknown"


async def _limit_client(request: web.Request, ctx: Ctx, kind: str, limit: int) -> None:
    if limit <= 0:
        return
    bucket = f"public-{kind}:{client_address(request)}"
    verdict = await hit(ctx.pool, bucket, limit=limit, window=WINDOW, now=ctx.now)
    if not verdict.allowed:
        raise too_many(verdict, f"{kind} per {int(WINDOW.total_seconds())} s from one address")


async def public_reads(request: web.Request, ctx: Ctx) -> None:
    """Rate-limit hook for the public API's reads (per client address)."""
    await _limit_client(request, ctx, "reads", LIMITS.reads)


async def public_writes(request: web.Request, ctx: Ctx) -> None:
    """Rate-limit hook for the public API's writes (per client address)."""
    await _limit_client(request, ctx, "writes", LIMITS.writes)


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


async def purge_counters(pool: asyncpg.Pool, clock: Clock) -> int:
    """Delete counters of windows long gone (a sweep for the scheduler)."""
    result = await pool.execute(
        "DELETE FROM rate_limit_counter WHERE window_start < $1", clock.now() - KEEP_COUNTERS
    )
    return int(result.split()[-1])
