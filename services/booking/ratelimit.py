"""Fixed-window rate limits kept in PostgreSQL (`rate_limit_counter`), so every booking replica
counts against the same numbers.

One upsert per request: the row for (bucket, current window) is created or incremented and the
new count returned. Windows follow the injectable clock, like every other time decision, so tests
move the clock instead of sleeping. Counters are disposable (the table is UNLOGGED); old windows
are removed by `purge_counters`.

The client is identified by `client_address`, the one function every per-address limit uses
(the JSON API, the booking pages, the self-service pages, the cap on holds): the connecting
address, or behind REGIMEN_TRUSTED_PROXY_HOPS proxies the address the outermost of them saw.
IPv6 clients are counted per /64, the block one subscriber usually gets, so that rotating through
their own addresses gains them nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
from aiohttp import web

from services.booking.api.framework import ApiError, Ctx
from shared.clock import Clock
from shared.config import Settings
from shared.store import appointments

WINDOW = timedelta(minutes=1)
MOBILE_WINDOW = timedelta(hours=1)


@dataclass
class Limits:
    """Per client address and minute (reads, writes) and per mobile number and hour (bookings);
    0 turns a limit off. Set from REGIMEN_PUBLIC_* settings when the booking app is built."""

    reads: int = 120  # clinic, treatments, availability, proposals, hold status
    writes: int = 30  # holds, releases, bookings
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


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as a proxy writes it ("203.0.113.7", "2001:db8::1", "[2001:db8::1]:443",
    "203.0.113.7:51234"), or None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _counted_as(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_address(request: web.Request) -> str:
    """Who is asking, as every per-address limit counts them.

    With N trusted proxy hops, each proxy appends the address it was connected from to
    X-Forwarded-For, so the N-th entry from the right is the address the outermost proxy saw:
    entries further left were sent by the client and are ignored. A header with fewer entries
    than N (the request did not pass every proxy) or an entry that is not an address gives the
    connecting address, which no client can choose.
    """
    peer = _ip(request.remote or "")
    hops = LIMITS.trusted_proxy_hops
    if hops > 0:
        # Several X-Forwarded-For headers are one list, in order (RFC 9110 section 5.3).
        headers = request.headers.getall("X-Forwarded-For", [])
        entries = ",".join(headers).split(",") if headers else []
        if len(entries) >= hops:
            forwarded = _ip(entries[-hops])
            if forwarded is not None:
                return _counted_as(forwarded)
    return _counted_as(peer) if peer is not None else "unknown"


def client_key(request: web.Request, secret: str) -> bytes:
    """The client's address as a keyed hash, for storing beside a hold: the same address gives
    the same key while the secret key stays, and the address cannot be read back from it."""
    return hmac.new(
        secret.encode(), f"regimen-client:{client_address(request)}".encode(), hashlib.sha256
    ).digest()


async def hit_client(
    db: Executor, request: web.Request, area: str, kind: Literal["reads", "writes"], now: datetime
) -> Verdict | None:
    """Count one read or write of the client in `area` (each area counts apart: the JSON API,
    the booking pages, the self-service pages); None when that limit is off."""
    limit = LIMITS.reads if kind == "reads" else LIMITS.writes
    if limit <= 0:
        return None
    bucket = f"{area}-{kind}:{client_address(request)}"
    return await hit(db, bucket, limit=limit, window=WINDOW, now=now)


async def _limit_client(request: web.Request, ctx: Ctx, kind: Literal["reads", "writes"]) -> None:
    verdict = await hit_client(ctx.pool, request, "public", kind, ctx.now)
    if verdict is not None and not verdict.allowed:
        raise too_many(verdict, f"{kind} per {int(WINDOW.total_seconds())} s from one address")


async def public_reads(request: web.Request, ctx: Ctx) -> None:
    """Rate-limit hook for the public API's reads (per client address)."""
    await _limit_client(request, ctx, "reads")


async def public_writes(request: web.Request, ctx: Ctx) -> None:
    """Rate-limit hook for the public API's writes (per client address)."""
    await _limit_client(request, ctx, "writes")


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
    """Refuse (429) one more hold from a client that already has LIMITS.holds_per_address holds
    neither expired, released nor booked. Holds a patient replaces are released first, in the
    same transaction, so replacing one's own hold never counts twice. Concurrent holds from one
    client are serialised on a lock, so they cannot all squeeze under the cap together."""
    limit = LIMITS.holds_per_address
    if limit <= 0:
        return
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        "regimen.holds-of-client:" + client.hex(),
    )
    active = await appointments.active_holds_of_client(conn, client, now=now)
    if len(active) < limit:
        return
    retry_after = max(1, math.ceil((min(active) - now).total_seconds()))
    raise ApiError(
        429,
        "Too Many Requests",
        f"{len(active)} holds from this address are still running (at most {limit}); book or "
        f"release one, or try again in {retry_after} s",
        type_="too-many-holds",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


async def purge_counters(pool: asyncpg.Pool, clock: Clock) -> int:
    """Delete counters of windows long gone (a sweep for the scheduler)."""
    result = await pool.execute(
        "DELETE FROM rate_limit_counter WHERE window_start < $1", clock.now() - KEEP_COUNTERS
    )
    return int(result.split()[-1])
