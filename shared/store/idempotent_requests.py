"""Answers given to requests that carried an `Idempotency-Key` (owner of `idempotent_request`).

A key row is taken as the first statement of the request's own transaction and its answer is
written in that same transaction, so a concurrent duplicate waits on the primary key until the
first commits (services/booking/api/idempotency.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.store import Executor, affected


@dataclass(frozen=True)
class Taken:
    request_hash: bytes
    status: int
    response: Any
    created_at: datetime


async def take(conn: Executor, *, scope: str, key: str, request_hash: bytes, now: datetime) -> bool:
    """Take the key for this transaction; False when a row for it exists already."""
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
    return bool(taken)


async def lock(conn: Executor, *, scope: str, key: str) -> Taken | None:
    row = await conn.fetchrow(
        """
        SELECT request_hash, status, response, created_at FROM idempotent_request
        WHERE scope = $1 AND key = $2 FOR UPDATE
        """,
        scope,
        key,
    )
    if row is None:
        return None
    return Taken(bytes(row["request_hash"]), int(row["status"]), row["response"], row["created_at"])


async def restart(
    conn: Executor, *, scope: str, key: str, request_hash: bytes, now: datetime
) -> None:
    """The key starts a new request (its old answer was purged or is too old to replay)."""
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


async def remember(conn: Executor, *, scope: str, key: str, status: int, body: Any) -> None:
    await conn.execute(
        "UPDATE idempotent_request SET status = $3, response = $4 WHERE scope = $1 AND key = $2",
        scope,
        key,
        status,
        body,
    )


async def purge_before(db: Executor, cutoff: datetime) -> int:
    result = await db.execute("DELETE FROM idempotent_request WHERE created_at < $1", cutoff)
    return affected(result)
