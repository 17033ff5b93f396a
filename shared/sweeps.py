"""Periodic sweeps on APScheduler (in-memory job store: every durable fact is in our tables).

Any number of replicas may run the same sweeps; a sweep marked `exclusive` takes a PostgreSQL
advisory lock first and is skipped by the others while one holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import Counter, Histogram

from shared.clock import Clock
from shared.web import CLOCK, POOL, REGISTRY

log = logging.getLogger("regimen.sweeps")

SweepFunction = Callable[[asyncpg.Pool, Clock], Awaitable[int]]


@dataclass(frozen=True)
class Sweep:
    name: str
    interval: timedelta
    run: SweepFunction  # returns how many items it handled
    exclusive: bool = False


SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
_RUNNING = web.AppKey("running_sweeps", set)


def install_sweeps(app: web.Application, sweeps: Sequence[Sweep]) -> None:
    """Run `sweeps` while the app runs; call after the pool's cleanup context is installed."""
    registry = app[REGISTRY]
    runs = Counter(
        "regimen_sweep_runs", "Sweep runs by outcome", ["sweep", "outcome"], registry=registry
    )
    handled = Counter(
        "regimen_sweep_items", "Items handled by sweeps", ["sweep"], registry=registry
    )
    duration = Histogram(
        "regimen_sweep_seconds", "Time a sweep run takes", ["sweep"], registry=registry
    )
    running: set[asyncio.Task[None]] = set()
    app[_RUNNING] = running

    async def run_once(sweep: Sweep) -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            with duration.labels(sweep.name).time():
                count = await _run_guarded(app[POOL], app[CLOCK], sweep)
            if count is None:
                runs.labels(sweep.name, "skipped").inc()
                return
            runs.labels(sweep.name, "ok").inc()
            handled.labels(sweep.name).inc(count)
        except Exception:
            runs.labels(sweep.name, "error").inc()
            log.exception("sweep failed", extra={"sweep": sweep.name})
        finally:
            running.discard(task)

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for sweep in sweeps:
            scheduler.add_job(
                run_once,
                IntervalTrigger(seconds=sweep.interval.total_seconds()),
                args=[sweep],
                id=sweep.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        scheduler.start()
        app[SCHEDULER] = scheduler
        clock = app[CLOCK]
        if hasattr(clock, "on_advance"):
            # After the dev or test clock jumps, sweep at once rather than at the next tick.
            clock.on_advance(lambda: run_all_now(scheduler))
        yield
        scheduler.shutdown(wait=False)
        if running:
            # Let sweeps in progress finish their transaction; SIGTERM must not cut one in half.
            await asyncio.wait(set(running), timeout=5)

    app.cleanup_ctx.append(scheduler_ctx)


def run_all_now(scheduler: AsyncIOScheduler) -> None:
    if not scheduler.running:
        return
    now = datetime.now(UTC)
    for job in scheduler.get_jobs():
        job.modify(next_run_time=now)


async def _run_guarded(pool: asyncpg.Pool, clock: Clock, sweep: Sweep) -> int | None:
    if not sweep.exclusive:
        return await sweep.run(pool, clock)
    async with pool.acquire() as conn:
        locked = await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1))", f"regimen.sweep.{sweep.name}"
        )
        if not locked:
            return None
        try:
            return await sweep.run(pool, clock)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext($1))", f"regimen.sweep.{sweep.name}"
            )
