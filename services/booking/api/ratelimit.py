"""The public API's per-address request limits, as endpoint hooks (`rate_limit=` of a route).
Reads and writes count apart, and apart from the pages' own counts (services/booking/clients)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from services.booking.api.framework import Ctx
from services.booking.clients import hit_client
from services.booking.domain.limits import WINDOW, too_many


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
