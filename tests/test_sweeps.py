"""APScheduler sweeps: they run, the clock moving makes them run at once, exclusive ones run on
one replica at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import aiohttp
import asyncpg

from services.scheduler.app import create_app as create_scheduler
from shared.clock import Clock, FrozenClock
from shared.config import Settings
from shared.sweeps import Sweep
from tests.conftest import serve_app


async def _wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_sweep_runs_at_start_and_again_when_the_clock_jumps(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    seen: list[datetime] = []

    async def remember(pool: asyncpg.Pool, clock: Clock) -> int:
        assert await pool.fetchval("SELECT 1") == 1
        seen.append(clock.now())
        return 1

    sweep = Sweep("remember", timedelta(hours=1), remember)
    runner, base = await serve_app(create_scheduler(settings, clock, db_url, sweeps=[sweep]))
    try:
        await _wait_for(lambda: len(seen) == 1)
        clock.advance(timedelta(days=2))
        await _wait_for(lambda: len(seen) == 2)
        assert seen[1] - seen[0] == timedelta(days=2)
    finally:
        await runner.cleanup()


async def test_an_exclusive_sweep_runs_on_one_replica_at_a_time(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    running = 0
    most_at_once = 0
    runs = 0

    async def slow(pool: asyncpg.Pool, clock: Clock) -> int:
        nonlocal running, most_at_once, runs
        running += 1
        runs += 1
        most_at_once = max(most_at_once, running)
        await asyncio.sleep(0.3)
        running -= 1
        return 0

    sweep = Sweep("slow", timedelta(milliseconds=50), slow, exclusive=True)
    replicas = [
        await serve_app(create_scheduler(settings, clock, db_url, sweeps=[sweep])) for _ in range(3)
    ]
    try:
        await _wait_for(lambda: runs >= 3)
    finally:
        for runner, _ in replicas:
            await runner.cleanup()
    assert most_at_once == 1


async def test_a_failing_sweep_is_counted_and_does_not_stop_the_others(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    good_runs = 0

    async def broken(pool: asyncpg.Pool, clock: Clock) -> int:
        raise RuntimeError("boom")

    async def good(pool: asyncpg.Pool, clock: Clock) -> int:
        nonlocal good_runs
        good_runs += 1
        return 2

    sweeps = [Sweep("broken", timedelta(hours=1), broken), Sweep("good", timedelta(hours=1), good)]
    runner, base = await serve_app(create_scheduler(settings, clock, db_url, sweeps=sweeps))
    try:
        await _wait_for(lambda: good_runs == 1)
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as response:
            text = await response.text()
        assert 'regimen_sweep_runs_total{outcome="error",sweep="broken"} 1.0' in text
        assert 'regimen_sweep_items_total{sweep="good"} 2.0' in text
    finally:
        await runner.cleanup()
