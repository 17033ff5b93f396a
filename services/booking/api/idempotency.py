"""`Idempotency-Key` for the API's booking POSTs.

A client that retries a POST with the same key and the same body gets the answer of the first
attempt (status and body), not a second booking; the same key with another body is a 422.

How it stays exact under concurrency: the key row is taken as the *first* statement of the
request's transaction and its answer is written in that same transaction
(shared/store/idempotent_requests). A concurrent duplicate blocks on the primary key until the
first commits, then finds the committed answer (or, if the first rolled back, takes the key
itself). The work runs inside a savepoint so that a refusal by the current state (409 conflict,
404 not found, 412 stale) rolls back the booking but still commits the key with its answer: the
request was executed, and its retry is answered the same (Stripe's rule; a changed request needs a
new key).

What is not stored, so the key stays free (the IETF draft "The Idempotency-Key HTTP Header Field"
and Stripe: only a request that began executing is saved): a request refused as invalid (400,
422: a bad mobile, a patient id not on file, a malformed body) or not allowed (403). Nothing was
done and the request itself was wrong, so the client may correct it and send it again with the
same key; the whole transaction, key row included, rolls back. The same for transient refusals
(429, busy, 503), so that a retry starts anew. The transaction, and its retries on deadlock,
belong to `shared.db.transactions.in_transaction`.

Keys belong to one staff token, or on the public API to one client address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from services.booking.api.errors import api_error
from services.booking.api.framework import ApiError, Ctx, invalid
from services.booking.clients import client_address
from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.domain.errors import Busy, DomainError, Forbidden, InvalidField, TooMany
from shared.store import idempotent_requests
from shared.web import PROBLEM_JSON, SETTINGS

HEADER = "Idempotency-Key"
# Printable ASCII without spaces: UUIDs, ULIDs and random strings all fit.
_KEY = re.compile(r"[\x21-\x7e]{1,200}")
# A key is remembered this long; later it may be reused (purge_keys removes old rows).
RETENTION = timedelta(hours=24)
# Refusals that must not be replayed: a retry should really be tried again (transient), or
# the request was refused as it stands and a corrected one may reuse the key (refused).
_TRANSIENT = (TooMany, Busy)
_REFUSED = (InvalidField, Forbidden)
_NOT_STORED_STATUSES = frozenset({400, 403, 422, 429, 503})


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
    conn: asyncpg.Connection, *, scope: str, key: str, request_hash: bytes, now: Any
) -> tuple[int, Any] | None:
    """Take the key for this transaction (None), or return the answer already given for it
    (status, body). Raises a 422 when the key was used for a different request."""
    if await idempotent_requests.take(
        conn, scope=scope, key=key, request_hash=request_hash, now=now
    ):
        return None
    found = await idempotent_requests.lock(conn, scope=scope, key=key)
    if found is None or found.created_at <= now - RETENTION:
        # Purged meanwhile, or old enough to be forgotten: the key starts a new request.
        await idempotent_requests.restart(
            conn, scope=scope, key=key, request_hash=request_hash, now=now
        )
        return None
    if found.request_hash != request_hash:
        raise ApiError(
            422,
            "Unprocessable Content",
            f"{HEADER} was already used for a different request; use a new key",
            type_="idempotency-key-reused",
            errors=[{"in": "header", "path": HEADER, "message": "used for another request"}],
        )
    return found.status, found.response


async def purge_keys(pool: asyncpg.Pool, clock: Clock) -> int:
    """Forget keys older than RETENTION (a sweep).

    Replicas: a DELETE of rows past a cutoff is idempotent; two replicas delete each row once
    between them."""
    return await idempotent_requests.purge_before(pool, clock.now() - RETENTION)


def problem_body(error: ApiError) -> dict[str, Any]:
    """The problem+json document `error` is sent as (mirrors shared.web.problem)."""
    body: dict[str, Any] = {"type": error.type_, "title": error.title, "status": error.status}
    if error.detail is not None:
        body["detail"] = error.detail
    if error.errors is not None:
        body["errors"] = error.errors
    body.update(error.extra)
    return body


def replay(status: int, body: Any, reveal: Callable[[Any], Any]) -> web.Response:
    is_problem = status >= 400
    return web.json_response(
        body if is_problem else reveal(body),
        status=status,
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

    async def attempt(conn: asyncpg.Connection) -> BaseModel | web.Response | ApiError:
        if key is not None:
            stored = await claim(conn, scope=scope, key=key, request_hash=request_hash, now=ctx.now)
            if stored is not None:
                return replay(*stored, reveal)
        outcome: BaseModel | ApiError
        try:
            async with conn.transaction():  # a savepoint: a refusal undoes the work only
                outcome = await work(conn)
        except (*_TRANSIENT, *_REFUSED):
            raise  # rolls back the key too: a later retry (or a corrected request) is new
        except DomainError as refusal:
            await refusal.explain(conn)
            # Stored as the API shows it, so that a replay answers exactly the same.
            outcome = api_error(refusal, ctx.staff.role if ctx.staff is not None else None)
        except ApiError as error:
            if error.status in _NOT_STORED_STATUSES:
                raise
            outcome = error
        if key is not None:
            if isinstance(outcome, ApiError):
                answer: tuple[int, Any] = (outcome.status, problem_body(outcome))
            else:
                answer = (status, conceal(outcome.model_dump(mode="json")))
            await idempotent_requests.remember(
                conn, scope=scope, key=key, status=answer[0], body=answer[1]
            )
        return outcome

    result = await in_transaction(ctx.pool, attempt)
    if isinstance(result, ApiError):
        raise result
    return result
