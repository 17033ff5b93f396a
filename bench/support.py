"""What the benchmarks share: a PostgreSQL of their own, a migrated database, `BENCH` lines."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.db import embedded, migrate


def report(name: str, value: float, unit: str) -> None:
    text = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    print(f"BENCH {name} {text} {unit}", flush=True)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(fraction * 100) - 1]


@dataclass
class BenchServer:
    admin_url: str

    def url(self, name: str) -> str:
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + name))


@contextlib.contextmanager
def postgres() -> Iterator[BenchServer]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield BenchServer(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="regimen-bench-pg-"))
    server = embedded.start_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield BenchServer(server.get_uri("postgres"))
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(server: BenchServer) -> AsyncIterator[str]:
    name = "bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = server.url(name)
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(server.admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
