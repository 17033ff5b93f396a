"""Real `regimen serve scheduler` processes for the replica tests: started against one database,
their clocks moved through REGIMEN_DEV_CLOCK_FILE (one file shared, or one each), and waited for
until every sweep has run at the new time (their /readyz detail says when each sweep last
started, by their clock). Shared by tests/scheduler/test_two_schedulers*.py."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.processes import clean_env, free_port, start_regimen
from tests.test_processes import PRODUCTION


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    base: str
    clock_file: Path
    log: Path


def start_replicas(db_url: str, clock_files: list[Path], folder: Path) -> list[Replica]:
    """One scheduler process per clock file (a file may be given more than once: shared)."""
    replicas = []
    for number, clock_file in enumerate(clock_files):
        port = free_port()
        env = clean_env(
            DATABASE_URL=db_url,
            **PRODUCTION,
            REGIMEN_SCHEDULER_PORT=str(port),
            REGIMEN_DEV_CLOCK_FILE=str(clock_file),
        )
        log = folder / f"s{number}.log"
        process = start_regimen(["serve", "scheduler", "--host", "127.0.0.1"], env, log)
        replicas.append(Replica(process, f"http://127.0.0.1:{port}", clock_file, log))
    return replicas


async def ready(http: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    try:
        async with http.get(base + "/readyz") as response:
            if response.status != 200:
                return None
            body: dict[str, Any] = await response.json()
            return body
    except aiohttp.ClientConnectionError:
        return None


async def swept_at(http: aiohttp.ClientSession, base: str, moment: datetime) -> bool:
    """Whether every sweep of the process has finished a run that began at `moment` or later."""
    body = await ready(http, base)
    if body is None:
        return False
    for detail in body["sweeps"].values():
        started = detail["last_started_at"]
        if detail["running"] or started is None or datetime.fromisoformat(started) < moment:
            return False
    return True


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not seen within {within}s")
        await asyncio.sleep(0.02)


async def wait_until_up(http: aiohttp.ClientSession, replicas: list[Replica]) -> None:
    for replica in replicas:

        async def up(base: str = replica.base) -> bool:
            return await ready(http, base) is not None

        await until(up, f"{replica.base}/readyz answering")


async def wait_until_swept(
    http: aiohttp.ClientSession, replicas: list[Replica], moment: datetime
) -> None:
    for replica in replicas:

        async def swept(base: str = replica.base) -> bool:
            return await swept_at(http, base, moment)

        await until(swept, f"{replica.base} sweeping at {moment}")


async def items_by_sweep(http: aiohttp.ClientSession, replica: Replica) -> dict[str, float]:
    """The process's regimen_sweep_items_total, by sweep (what it says it handled)."""
    items: dict[str, float] = {}
    async with http.get(replica.base + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith('regimen_sweep_items_total{sweep="'):
                name = line.split('"')[1]
                items[name] = float(line.split()[-1])
    return items


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


async def stop_all(replicas: list[Replica]) -> None:
    for replica in replicas:
        await asyncio.to_thread(stop, replica.process)
