"""Staff API tokens (owner of the `staff_token` table). Only a hash is stored; the token is shown
once when created."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

Role = Literal["admin", "front_desk", "clinician"]
ROLES: tuple[Role, ...] = ("admin", "front_desk", "clinician")
TOKEN_PREFIX = "rgm_"
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class StaffToken:
    id: int
    name: str
    role: Role


def hash_token(token: str) -> bytes:
    # The token has 256 random bits, so a fast hash is safe; a slow KDF would only cost latency.
    return hashlib.sha256(token.encode()).digest()


async def create_token(
    conn: asyncpg.Connection | asyncpg.Pool, *, name: str, role: Role, now: datetime
) -> tuple[str, StaffToken]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        """
        INSERT INTO staff_token (name, role, token_hash, created_at)
        VALUES ($1, $2, $3, $4)
        RETURNING id, name, role
        """,
        name,
        role,
        hash_token(token),
        now,
    )
    assert row is not None
    return token, StaffToken(row["id"], row["name"], row["role"])


async def authenticate(
    conn: asyncpg.Connection | asyncpg.Pool, token: str, *, now: datetime
) -> StaffToken | None:
    row = await conn.fetchrow(
        """
        SELECT id, name, role, last_used_at FROM staff_token
        WHERE token_hash = $1 AND revoked_at IS NULL
        """,
        hash_token(token),
    )
    if row is None:
        return None
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


async def revoke_by_name(
    conn: asyncpg.Connection | asyncpg.Pool, name: str, *, now: datetime
) -> int:
    result = await conn.execute(
        "UPDATE staff_token SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL", name, now
    )
    return int(result.split()[-1])
