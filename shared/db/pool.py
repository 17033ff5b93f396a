"""The asyncpg pool every service uses, with start-up errors that name DATABASE_URL.

The services act as the database role `regimen_app` (created by migration 0006), which may read
and write ordinary tables but only INSERT and SELECT the append-only history (audit log, state
changes, consents), and may not TRUNCATE or change the schema. In production DATABASE_URL names
a login role that is a member of it; with one URL for everything (dev, the embedded database, a
superuser) each connection still switches to it, so the application cannot rewrite history by
accident. Only `regimen migrate` (and `regimen dev`'s own set-up) connects as the owner.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import asyncpg

from shared.config import ConfigError

# The services' role; its name is fixed by the migration that creates it (0006_app_role.sql).
APP_ROLE = "regimen_app"


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns come back as Python objects, and times are always compared in UTC.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute("SET TIME ZONE 'UTC'")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # What asyncpg does on release, plus RESET ROLE: RESET ALL leaves the role alone, and RESET
    # ROLE returns to the role the connection was opened with, so a SET ROLE cannot outlive the
    # acquire that ran it.
    await conn.execute(conn.get_reset_query() + "\nRESET ROLE;")


def _role_settings(act_as: str | None) -> dict[str, str]:
    # A startup parameter rather than a SET ROLE after connecting: it is the connection's
    # default, so RESET ROLE and RESET ALL come back to it.
    return {"role": act_as} if act_as else {}


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
    message = str(error)
    if isinstance(error, asyncpg.InvalidParameterValueError) and f'role "{APP_ROLE}"' in message:
        return f"the database role {APP_ROLE} does not exist yet; run 'regimen migrate' first"
    if isinstance(error, asyncpg.InsufficientPrivilegeError) and "set role" in message:
        return (
            f"this login role may not act as {APP_ROLE}; as the database owner run "
            f"'GRANT {APP_ROLE} TO <the services' login role>'"
        )
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text


async def connect(
    url: str,
    *,
    act_as: str | None = None,
    setting: str = "DATABASE_URL",
    connect_timeout: float = 10.0,
) -> asyncpg.Connection:
    """One connection, as the URL's own role unless `act_as` names the role to act as.
    `setting` is the variable the URL came from, for the error message."""
    try:
        conn = await asyncpg.connect(
            url, timeout=connect_timeout, server_settings=_role_settings(act_as)
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as e:
        raise ConfigError(f"{setting}: {describe_connect_error(e)}") from e
    await _init_connection(conn)
    return conn


async def create_pool(
    url: str, *, max_size: int = 10, act_as: str | None = APP_ROLE, **kwargs: Any
) -> asyncpg.Pool:
    """The services' pool: every connection acts as `act_as` (the application role unless told
    otherwise; None keeps the URL's own role, for owner work such as test set-up)."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=max_size,
            init=_init_connection,
            reset=_reset_connection,
            server_settings=_role_settings(act_as),
            timeout=10.0,
            **kwargs,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as e:
        raise ConfigError(f"DATABASE_URL: {describe_connect_error(e)}") from e
    assert pool is not None
    return pool
