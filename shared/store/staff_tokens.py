"""Staff API tokens (owner of `staff_token`). Only a hash is stored; the token is shown once
when created, and never read back.

Invariants: a token works until it is revoked or, when a maximum age is set
(REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS), until it is that old. The age is measured from
`created_at` at the moment of use, so shortening the setting retires old tokens at once. A
revoked token stays revoked, with its first `revoked_at`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from shared.store import Executor

Role = Literal["admin", "front_desk", "clinician"]
ROLES: tuple[Role, ...] = ("admin", "front_desk", "clinician")
State = Literal["active", "revoked", "expired"]
TOKEN_PREFIX = "rgm_"
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class StaffToken:
    """Who a request's token belongs to."""

    id: int
    name: str
    role: Role


@dataclass(frozen=True)
class StaffTokenRow:
    """One `staff_token` row, never its hash."""

    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


_COLUMNS = "id, name, role, created_at, last_used_at, revoked_at"


class TokenExpired(Exception):
    """The token is genuine and not revoked, but older than the maximum age."""

    def __init__(self, token: StaffToken, expired_at: datetime) -> None:
        super().__init__(f"token {token.id} expired at {expired_at.isoformat()}")
        self.token = token
        self.expired_at = expired_at


def max_age(days: int) -> timedelta | None:
    """The maximum age a setting in days stands for; 0 means no limit."""
    return timedelta(days=days) if days > 0 else None


def expires_at(created_at: datetime, age_limit: timedelta | None) -> datetime | None:
    return created_at + age_limit if age_limit is not None else None


def state(row: StaffTokenRow, *, now: datetime, age_limit: timedelta | None) -> State:
    """Revoked wins over expired: it is the one an admin did on purpose."""
    if row.revoked_at is not None:
        return "revoked"
    ends = expires_at(row.created_at, age_limit)
    if ends is not None and now >= ends:
        return "expired"
    return "active"


def hash_token(token: str) -> bytes:
    # The token has 256 random bits, so a fast hash is safe; a slow KDF would only cost latency.
    return hashlib.sha256(token.encode()).digest()


async def insert(
    conn: Executor, *, name: str, role: Role, now: datetime
) -> tuple[str, StaffTokenRow]:
    """A new token: (the token itself, to be shown once, and its row)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        f"""
        INSERT INTO staff_token (name, role, token_hash, created_at)
        VALUES ($1, $2, $3, $4)
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        name,
        role,
        hash_token(token),
        now,
    )
    assert row is not None
    return token, StaffTokenRow(**dict(row))


async def authenticate(
    conn: Executor,
    token: str,
    *,
    now: datetime,
    age_limit: timedelta | None = None,
) -> StaffToken | None:
    """The token's identity, or None when it is unknown or revoked; raises TokenExpired when it
    is older than `age_limit`. Only a successful use moves `last_used_at`."""
    row = await conn.fetchrow(
        """
        SELECT id, name, role, created_at, last_used_at FROM staff_token
        WHERE token_hash = $1 AND revoked_at IS NULL
        """,
        hash_token(token),
    )
    if row is None:
        return None
    ends = expires_at(row["created_at"], age_limit)
    if ends is not None and now >= ends:
        raise TokenExpired(StaffToken(row["id"], row["name"], row["role"]), ends)
    # Recording every use would make all requests of one token queue on its row lock; a
    # minute's precision is enough to see which tokens are alive.
    if row["last_used_at"] is None or now - row["last_used_at"] > LAST_USED_PRECISION:
        await conn.execute(
            """
            UPDATE staff_token SET last_used_at = $2
            WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)
            """,
            row["id"],
            now,
        )
    return StaffToken(row["id"], row["name"], row["role"])


async def list_page(
    conn: Executor, *, after_id: int | None = None, limit: int | None = None
) -> list[StaffTokenRow]:
    """Every token by id, revoked ones included (no limit: all of them)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM staff_token
        WHERE $1::bigint IS NULL OR id > $1
        ORDER BY id
        LIMIT $2
        """,  # noqa: S608 - constant
        after_id,
        limit,
    )
    return [StaffTokenRow(**dict(row)) for row in rows]


async def get(conn: Executor, token_id: int) -> StaffTokenRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM staff_token WHERE id = $1",  # noqa: S608 - constant
        token_id,
    )
    return None if row is None else StaffTokenRow(**dict(row))


async def revoke(
    conn: asyncpg.Connection, token_id: int, *, now: datetime
) -> tuple[StaffTokenRow, bool] | None:
    """Revoke one token: (the token as it now is, whether this call revoked it), or None when
    there is no such token. Revoking a revoked token keeps its first `revoked_at`."""
    row = await conn.fetchrow(
        f"""
        UPDATE staff_token SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        token_id,
        now,
    )
    if row is not None:
        return StaffTokenRow(**dict(row)), True
    existing = await get(conn, token_id)
    return (existing, False) if existing is not None else None


async def revoke_by_name(conn: Executor, name: str, *, now: datetime) -> list[StaffTokenRow]:
    """Revoke every active token of that name (names need not be unique); return those."""
    rows = await conn.fetch(
        f"""
        UPDATE staff_token SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        name,
        now,
    )
    return [StaffTokenRow(**dict(row)) for row in rows]


async def count_named(conn: Executor, name: str) -> int:
    """How many tokens, revoked or not, carry this name."""
    return int(await conn.fetchval("SELECT count(*) FROM staff_token WHERE name = $1", name))
