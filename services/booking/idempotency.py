"""`Idempotency-Key` for booking requests (owner of `idempotent_request`).

A client that retries a booking POST with the same key and the same body gets the answer of the
first attempt (status and body), not a second booking; the same key with another body is a 422.

How it stays exact under concurrency: the key row is inserted as the *first* statement of the
booking's transaction and its answer is written in that same transaction. A concurrent duplicate
blocks on the primary key until the first commits, then finds the committed answer (or, if the
first rolled back, takes the key itself). The work runs inside a savepoint so that a domain
failure (409, 404, 422 from the business rules) rolls back the booking but still commits the key
with its answer; transient failures (429, deadlocks) roll everything back so a retry starts anew.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from services.booking.api.framework import ApiError, Ctx, invalid
from services.booking.ratelimit import client_address
from shared.clock import Clock
from shared.web import PROBLEM_JSON, SETTINGS

HEADER = "Idempotency-Key"
# Printable ASCII without spaces: UUIDs, ULIDs and random strings all fit.
_KEY = re.compile(r"[\x21-\x7e]{1,200}")
# A key is remembered this long; later it may be reused (purge_keys removes old rows).
RETENTION = timedelta(hours=24)
# Answers that must not be replayed: the retry should really be tried again.
_TRANSIENT = frozenset({429, 503})
# Deadlocks between two course bookings are possible (each waits on the other's rows); the
# loser simply runs again.
_ATTEMPTS = 3


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: Any


class Failure(Exception):
    """A business-rule failure that the runner turns into a problem *after* rolling back the
    work, because describing it may need the database (e.g. the next free alternatives)."""

    async def as_api_error(self, db: asyncpg.Connection) -> ApiError:
        raise NotImplementedError


def key_from(request: web.Request) -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not _KEY.fullmatch(raw):
        raise invalid(HEADER, "1 to 200 printable ASCII characters, no spaces", where="header")
    return raw


def scope_for(ctx: Ctx) -> str:
    """Keys belong to one staff token, or on the public API to one client address: a key seen
    (or guessed) from elsewhere replays nothing, and never another client's hold token. The
    address is kept as a keyed hash, not as such."""
    if ctx.staff is not None:
        return f"staff:{ctx.staff.id}"
    secret = ctx.request.app[SETTINGS].secret_key or ""
    address = client_address(ctx.request)
    digest = hmac.new(secret.encode(), f"regimen-idempotency:{address}".encode(), "sha256")
    return "public:" + digest.hexdigest()[:32]


def fingerprint(method: str, path: str, body: BaseModel | None) -> bytes:
    """What "the same request" means: method, path and the validated body, canonicalised (so
    key order and spacing do not matter)."""
    payload = body.model_dump(mode="json") if body is not None else None
    canonical = json.dumps([method, path, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


async def claim(
    conn: asyncpg.Connection, *, scope: str, key: str, request_hash: bytes, now: datetime
) -> StoredAnswer | None:
    """Take the key for this transaction (None), or return the answer already given for it.

    Raises a 422 when the key was used for a different request.
    """
    taken = await conn.fetchval(
        """
        INSERT INTO idempotent_request (scope, key, request_hash, status, response, created_at)
        VALUES ($1, $2, $3, 0, 'null'::jsonb, $4)
        ON CONFLICT (scope, key) DO NOTHING
        RETURNING true
        """,
        scope,
        key,
        request_hash,
        now,
    )
    if taken:
        return None
    row = await conn.fetchrow(
        """
        SELECT request_hash, status, response, created_at FROM idempotent_request
        WHERE scope = $1 AND key = $2 FOR UPDATE
        """,
        scope,
        key,
    )
    if row is None or row["created_at"] <= now - RETENTION:
        # Purged meanwhile, or old enough to be forgotten: the key starts a new request.
        await _restart(conn, scope=scope, key=key, request_hash=request_hash, now=now)
        return None
    if bytes(row["request_hash"]) != request_hash:
        raise ApiError(
            422,
            "Unprocessable Content",
            f"{HEADER} was already used for a different request; use a new key",
            type_="idempotency-key-reused",
            errors=[{"in": "header", "path": HEADER, "message": "used for another request"}],
        )
    return StoredAnswer(int(row["status"]), row["response"])


async def _restart(
    conn: asyncpg.Connection, *, scope: str, key: str, request_hash: bytes, now: datetime
) -> None:
    await conn.execute(
        """
        INSERT INTO idempotent_request (scope, key, request_hash, status, response, created_at)
        VALUES ($1, $2, $3, 0, 'null'::jsonb, $4)
        ON CONFLICT (scope, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, status = 0, response = 'null'::jsonb,
            created_at = EXCLUDED.created_at
        """,
        scope,
        key,
        request_hash,
        now,
    )


async def remember(
    conn: asyncpg.Connection, *, scope: str, key: str, status: int, body: Any
) -> None:
    await conn.execute(
        "UPDATE idempotent_request SET status = $3, response = $4 WHERE scope = $1 AND key = $2",
        scope,
        key,
        status,
        body,
    )


async def purge_keys(pool: asyncpg.Pool, clock: Clock) -> int:
    """Forget keys older than RETENTION (a sweep for the scheduler)."""
    result = await pool.execute(
        "DELETE FROM idempotent_request WHERE created_at < $1", clock.now() - RETENTION
    )
    return int(result.split()[-1])


def problem_body(error: ApiError) -> dict[str, Any]:
    """The problem+json document `error` is sent as (mirrors shared.web.problem)."""
    body: dict[str, Any] = {"type": error.type_, "title": error.title, "status": error.status}
    if error.detail is not None:
        body["detail"] = error.detail
    if error.errors is not None:
        body["errors"] = error.errors
    body.update(error.extra)
    return body


def replay(answer: StoredAnswer, reveal: Callable[[Any], Any]) -> web.Response:
    is_problem = answer.status >= 400
    body = answer.body if is_problem else reveal(answer.body)
    return web.json_response(
        body,
        status=answer.status,
        content_type=PROBLEM_JSON if is_problem else "application/json",
        headers={"Idempotent-Replayed": "true"},
    )


Work = Callable[[asyncpg.Connection], Awaitable[BaseModel]]


def _same(body: Any) -> Any:
    return body


async def run(
    ctx: Ctx,
    work: Work,
    *,
    status: int,
    conceal: Callable[[Any], Any] = _same,
    reveal: Callable[[Any], Any] = _same,
) -> BaseModel | web.Response:
    """Run one booking write in a transaction, idempotently when the request has a key.

    `conceal` removes secrets from a success body before it is stored (a hold token is kept only
    hashed) and `reveal` puts them back when the answer is replayed.
    """
    key = key_from(ctx.request)
    scope = scope_for(ctx)
    request_hash = fingerprint(ctx.request.method, ctx.request.path, ctx.body)
    for attempt in range(_ATTEMPTS):
        try:
            return await _attempt(ctx, work, key, scope, request_hash, status, conceal, reveal)
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if attempt == _ATTEMPTS - 1:
                raise ApiError(
                    409,
                    "Conflict",
                    "other bookings for the same times kept interfering; please try again",
                    type_="busy",
                ) from None
    raise AssertionError("unreachable")


async def _attempt(
    ctx: Ctx,
    work: Work,
    key: str | None,
    scope: str,
    request_hash: bytes,
    status: int,
    conceal: Callable[[Any], Any],
    reveal: Callable[[Any], Any],
) -> BaseModel | web.Response:
    outcome: BaseModel | ApiError
    async with ctx.pool.acquire() as conn, conn.transaction():
        if key is not None:
            stored = await claim(conn, scope=scope, key=key, request_hash=request_hash, now=ctx.now)
            if stored is not None:
                return replay(stored, reveal)
        try:
            async with conn.transaction():  # a savepoint: failures undo the work only
                outcome = await work(conn)
        except Failure as failure:
            outcome = await failure.as_api_error(conn)
        except ApiError as error:
            outcome = error
        if isinstance(outcome, ApiError) and outcome.status in _TRANSIENT:
            raise outcome  # rolls back the key too: a later retry is a new attempt
        if key is not None:
            if isinstance(outcome, ApiError):
                answer: tuple[int, Any] = (outcome.status, problem_body(outcome))
            else:
                answer = (status, conceal(outcome.model_dump(mode="json")))
            await remember(conn, scope=scope, key=key, status=answer[0], body=answer[1])
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome
