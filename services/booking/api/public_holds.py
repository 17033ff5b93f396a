"""Holds in the public booking API: one slot or every session of a course held while the patient
fills in the form, its state, and releasing it (the flow is in `public`'s docstring). The hold's
token is shown once, and travels in a header, never in a URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import asyncpg
from pydantic import BaseModel, Field, StringConstraints

from services.booking.api import API, idempotency, ratelimit
from services.booking.api.fields import Body, Id, Instant
from services.booking.api.framework import ApiError, Ctx
from services.booking.api.public import TAG, PublicSession, public_offer, session_out
from services.booking.clients import client_key
from services.booking.domain import holds
from services.booking.domain.sessions import SessionRequest
from shared.db.transactions import in_transaction
from shared.store import appointments
from shared.web import SETTINGS

HoldToken = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,128}$")]


class SessionChoice(Body):
    practitioner_id: Id
    start: Instant = Field(description="the session's start, with its UTC offset")


class PublicHold(BaseModel):
    hold_id: int
    token: str = Field(description="shown once: keep it to see, release or book the hold")
    expires_at: datetime
    seconds_left: int
    time_zone: str
    treatment_id: int
    sessions: list[PublicSession]


class PublicHoldStatus(BaseModel):
    state: Literal["active", "expired", "released", "booked"]
    expires_at: datetime
    seconds_left: int
    time_zone: str
    treatment_id: int
    sessions: list[PublicSession]


class _Session(Protocol):
    practitioner_id: int
    start: datetime


def session_requests(sessions: Sequence[_Session]) -> list[SessionRequest]:
    """A body's `sessions` list for the booking core, each named by its path for a refusal."""
    return [
        SessionRequest(s.practitioner_id, s.start, f"sessions.{i}") for i, s in enumerate(sessions)
    ]


def _seconds_left(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))


def _secret(ctx: Ctx) -> str:
    secret = ctx.request.app[SETTINGS].secret_key
    assert secret, "create_app refuses to start without REGIMEN_SECRET_KEY"
    return secret


# -- holds -------------------------------------------------------------------------------------


class HoldRequest(Body):
    treatment_id: Id
    sessions: list[SessionChoice] = Field(
        min_length=1,
        max_length=50,
        description="one slot, or every session of the course in order (e.g. a proposal's)",
    )


class HoldTokenHeader(BaseModel):
    """The hold's token travels in a header, never in the URL: addresses end up in proxy logs,
    browser history and Referer headers, and the token is what books or releases the hold."""

    token: HoldToken = Field(alias="Hold-Token", description="the token the hold was created with")


@API.route(
    "POST",
    "/api/v1/public/holds",
    summary="Hold one slot or a whole course while the patient fills in the form",
    tag=TAG,
    roles=None,
    body=HoldRequest,
    response=PublicHold,
    status=201,
    idempotent=True,
    errors=(409, 422),
    rate_limit=ratelimit.public_writes,
)
async def public_create_hold(ctx: Ctx) -> Any:
    """Every session is checked again here (free, gaps within the course's limits). The token is
    shown once; the hold expires after the clinic's hold time. One client address may have only a
    few holds running at once (429 `too-many-holds` beyond them, with Retry-After)."""
    body: HoldRequest = ctx.body
    offer = await public_offer(ctx, body.treatment_id, "body")
    secret = _secret(ctx)
    requests = session_requests(body.sessions)
    client = client_key(ctx.request, secret)

    async def work(conn: asyncpg.Connection) -> PublicHold:
        created = await holds.create_hold(
            conn,
            offer,
            requests,
            token_for=lambda hold_id: holds.hold_token(secret, hold_id),
            now=ctx.now,
            actor=ctx.actor,
            request_id=ctx.request_id,
            client=client,
        )
        found = await appointments.get_many(conn, created.appointment_ids)
        rows = [found[i] for i in created.appointment_ids]
        return PublicHold(
            hold_id=created.hold_id,
            token=created.token,
            expires_at=created.expires_at,
            seconds_left=_seconds_left(created.expires_at, ctx.now),
            time_zone=offer.clinic.time_zone,
            treatment_id=offer.treatment.id,
            sessions=[session_out(r, offer, n) for n, r in enumerate(rows, start=1)],
        )

    def conceal(stored: dict[str, Any]) -> dict[str, Any]:
        return {**stored, "token": ""}  # the database keeps only the token's hash

    def reveal(stored: dict[str, Any]) -> dict[str, Any]:
        return {**stored, "token": holds.hold_token(secret, stored["hold_id"])}

    return await idempotency.run(ctx, work, status=201, conceal=conceal, reveal=reveal)


@API.route(
    "GET",
    "/api/v1/public/hold",
    summary="A hold's state and the time left",
    tag=TAG,
    roles=None,
    header=HoldTokenHeader,
    response=PublicHoldStatus,
    errors=(404,),
    rate_limit=ratelimit.public_reads,
)
async def public_hold_status(ctx: Ctx) -> PublicHoldStatus:
    view = await holds.hold_view(ctx.pool, ctx.header.token, ctx.now)
    if view is None or view.offer is None:
        raise ApiError(404, "Not Found", "no hold with this token", type_="not-found")
    offer = view.offer
    return PublicHoldStatus(
        state=view.state,
        expires_at=view.hold.expires_at,
        seconds_left=_seconds_left(view.hold.expires_at, ctx.now) if view.state == "active" else 0,
        time_zone=offer.clinic.time_zone,
        treatment_id=offer.treatment.id,
        sessions=[session_out(r, offer, n) for n, r in enumerate(view.sessions, start=1)],
    )


@API.route(
    "DELETE",
    "/api/v1/public/hold",
    summary="Release a hold: its times are free again at once",
    tag=TAG,
    roles=None,
    header=HoldTokenHeader,
    errors=(404, 409),
    status=204,
    rate_limit=ratelimit.public_writes,
)
async def public_release_hold(ctx: Ctx) -> None:
    """Releasing twice is fine; a hold already booked cannot be released (409)."""
    token = ctx.header.token

    async def work(conn: asyncpg.Connection) -> None:
        await holds.release_hold(
            conn, token, now=ctx.now, actor=ctx.actor, request_id=ctx.request_id
        )

    await in_transaction(ctx.pool, work)
