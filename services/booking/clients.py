"""Who is asking: the client's address as every per-address limit counts it, used by both faces
(the JSON API and the pages).

The client is the connecting address, or behind REGIMEN_TRUSTED_PROXY_HOPS proxies the address
the outermost of them saw. IPv6 clients are counted per /64, the block one subscriber usually
gets, so that rotating through their own addresses gains them nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import datetime
from typing import Literal

from aiohttp import web

from services.booking.domain import limits
from services.booking.domain.limits import LIMITS, WINDOW, Executor, Verdict


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
    return await limits.hit(db, bucket, limit=limit, window=WINDOW, now=now)
