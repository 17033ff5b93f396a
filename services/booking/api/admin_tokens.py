"""Staff API tokens: list, create, revoke.

Roles: `admin` only. A token is a key to patient records; who holds one, and what it may do, is
the admin's decision alone.

Shapes:
* the token itself is in the answer to `POST /api/v1/tokens` and nowhere else, ever: only its
  hash is stored. That answer carries `Cache-Control: no-store`, and the endpoint takes no
  Idempotency-Key, whose stored replay would keep the token in the database.
* `state` is `active`, `revoked` or `expired`. A token expires `REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS`
  after it was created (0: never); `expires_at` says when, from the setting as it is now.
* `last_used_at` is the last successful use, to the minute.
* `POST /api/v1/tokens/{token_id}/revoke` stops the token at once. It answers 200 with the token
  every time: revoking a revoked token changes nothing (`already_revoked: true`, the first
  `revoked_at` kept). Revoking the token of the request itself is allowed and said in
  `own_token`; from the next request on, that token gets 401.
* creating and revoking are audited under entity `staff_token` and the token's id (never the
  token); a revoke that changes nothing writes no audit row.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.common import ADMIN, or_not_found, record, record_item, write
from services.booking.api.fields import Body, Name
from services.booking.api.framework import Ctx
from services.booking.api.pagination import Page, PageQuery
from shared.store import staff_tokens
from shared.store.staff_tokens import Role, State
from shared.web import SETTINGS


class Token(BaseModel):
    id: int
    name: str = Field(description="who or what the token is for")
    role: Role
    created_at: datetime
    last_used_at: datetime | None = Field(description="last successful use, to the minute")
    revoked_at: datetime | None
    expires_at: datetime | None = Field(
        description="created_at plus REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS; null when there is no limit"
    )
    state: State


class TokenCreate(Body):
    name: Name = Field(description="who or what the token is for, e.g. 'Reception iPad'")
    role: Role


class TokenCreated(Token):
    token: str = Field(
        description="the token itself: shown this once and never again; send it as "
        "'Authorization: Bearer <token>'"
    )


class Revocation(BaseModel):
    token: Token
    already_revoked: bool = Field(description="true when it was revoked before this request")
    own_token: bool = Field(description="true when it is the token this request was made with")
    message: str


def _view(ctx: Ctx, row: staff_tokens.StaffTokenRow) -> Token:
    limit = staff_tokens.max_age(ctx.request.app[SETTINGS].staff_token_max_age_days)
    return Token(
        **asdict(row),
        expires_at=staff_tokens.expires_at(row.created_at, limit),
        state=staff_tokens.state(row, now=ctx.now, age_limit=limit),
    )


@API.route(
    "GET",
    "/api/v1/tokens",
    summary="List staff API tokens (never the tokens themselves)",
    tag="tokens",
    roles=ADMIN,
    query=PageQuery,
    response=Page[Token],
)
async def list_tokens(ctx: Ctx) -> Page[Token]:
    """Every token by id, revoked and expired ones included."""
    query: PageQuery = ctx.query
    rows = await staff_tokens.list_page(ctx.pool, after_id=query.after_id(), limit=query.fetch)
    return Page[Token].of(rows, query.limit, lambda row: _view(ctx, row))


@API.route(
    "POST",
    "/api/v1/tokens",
    summary="Create a staff API token (the answer shows it once)",
    tag="tokens",
    roles=ADMIN,
    body=TokenCreate,
    response=TokenCreated,
    status=201,
)
async def create_token(ctx: Ctx) -> web.Response:
    """The answer is the only place the token ever appears: store it at once."""
    body: TokenCreate = ctx.body

    async def work(conn: asyncpg.Connection) -> Any:
        secret, created = await staff_tokens.insert(
            conn, name=body.name, role=body.role, now=ctx.now
        )
        view = _view(ctx, created)
        await record_item(conn, ctx, "create", "staff_token", created.id, view)
        return secret, view

    secret, view = await write(ctx, work)
    answer = TokenCreated(**view.model_dump(), token=secret)
    return web.json_response(
        answer.model_dump(mode="json"), status=201, headers={"Cache-Control": "no-store"}
    )


@API.route(
    "POST",
    "/api/v1/tokens/{token_id}/revoke",
    summary="Revoke a staff API token at once (revoking it again changes nothing)",
    tag="tokens",
    roles=ADMIN,
    response=Revocation,
    errors=(404,),
)
async def revoke_token(ctx: Ctx) -> Revocation:
    """200 every time the token exists, with `already_revoked` saying whether this request
    revoked it. Revoking the token the request was made with is allowed (`own_token: true`)."""
    token_id = ctx.path["token_id"]
    assert ctx.staff is not None
    own = ctx.staff.id == token_id

    async def work(conn: asyncpg.Connection) -> Any:
        found = await staff_tokens.revoke(conn, token_id, now=ctx.now)
        row, revoked_now = or_not_found(found, "token", token_id)
        view = _view(ctx, row)
        if revoked_now:
            await record(
                conn,
                ctx,
                action="revoke",
                entity="staff_token",
                entity_id=token_id,
                details={"name": view.name, "role": view.role, "own_token": own},
            )
        return revoked_now, view

    revoked_now, view = await write(ctx, work)
    label = f"token {token_id} ({view.name!r}, {view.role})"
    if not revoked_now:
        message = f"{label} was already revoked at {view.revoked_at:%Y-%m-%d %H:%M} UTC"
    elif own:
        message = f"{label} revoked; it is the token of this request, so it no longer works"
    else:
        message = f"{label} revoked; it no longer works"
    return Revocation(token=view, already_revoked=not revoked_now, own_token=own, message=message)
