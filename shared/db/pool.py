"""The asyncpg pool every service uses, with start-up errors that name DATABASE_URL."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import asyncpg

from shared.config import ConfigError


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns come back as Python objects, and times are always compared in UTC.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute("SET TIME ZONE 'UTC'")


def describe_connect_error(error: BaseException) -> str:
    """One line saying why PostgreSQL could not be reached, without echoing the password."""
    if isinstance(error, socket.gaierror):
        return f"host name not found ({error.strerror})"
    if isinstance(error, ConnectionRefusedError | OSError) and not isinstance(
        error, asyncpg.PostgresError
    ):
        return f"cannot connect ({error.strerror or error})"
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return "timed out connecting"
    if isinstance(
        error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return "authentication failed"
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return "the database does not exist"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text


async def connect(url: str, *, connect_timeout: float = 10.0) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as e:
        raise ConfigError(f"DATABASE_URL: {describe_connect_error(e)}") from e
    await _init_connection(conn)
    return conn


async def create_pool(url: str, *, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=max_size,
            init=_init_connection,
            timeout=10.0,
            **kwargs,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as e:
        raise ConfigError(f"DATABASE_URL: {describe_connect_error(e)}") from e
    assert pool is not None
    return pool
