"""The one place transactions are opened for domain work, and retried.

`in_transaction(pool, work)` runs `work(conn)` in a transaction and commits it. A deadlock or a
serialization failure (two writers each waiting on the other; the database aborts one) is not
the caller's fault: the work runs again from the start, up to `attempts` times, and then the
caller gets `Busy`. A domain refusal rolls the work back and, once the connection is clean,
`explain`s itself (a conflict looks up the next free times) before it propagates.

Domain functions never open transactions themselves: they take the connection they are given,
so that one request's changes, their history, audit rows and outbox messages commit together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import asyncpg

from shared.domain.errors import Busy, DomainError

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]

RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


async def in_transaction(pool: asyncpg.Pool, work: Work[T], *, attempts: int = 3) -> T:
    for attempt in range(attempts):
        async with pool.acquire() as proxy:
            # The pool hands out a proxy that stands for the connection it holds.
            conn = cast(asyncpg.Connection, proxy)
            try:
                async with conn.transaction():
                    return await work(conn)
            except RETRYABLE:
                if attempt == attempts - 1:
                    raise Busy(
                        "other changes to the same records kept interfering; please try again"
                    ) from None
            except DomainError as refusal:
                await refusal.explain(conn)
                raise
    raise AssertionError("unreachable")
