"""APScheduler sweeps: they run at start and when the clock jumps, exclusive ones run on one
replica at a time, a failing one is logged once a streak and does not stop the others, and each
run's time, outcome and duration show in /readyz and /metrics. Tests move the clock; they wait
for runs to finish (SweepRunner.wait_for_runs), never for time to pass."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from services.scheduler.app import create_app as create_scheduler
from services.scheduler.sweeps import DEFAULT_SWEEPS
from shared.clock import Clock, FrozenClock
from shared.config import Settings
from shared.sweeps import LATE_AFTER_INTERVALS, SWEEP_RUNNER, Sweep, SweepRunner
from shared.web import REGISTRY
from tests.conftest import serve_app


def _runner(app: web.Application) -> SweepRunner:
    return app[SWEEP_RUNNER]


async def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json(content_type=None)


async def _get_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.text()


async def test_sweep_runs_at_start_and_again_when_the_clock_jumps(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    seen: list[datetime] = []

    async def remember(pool: asyncpg.Pool, clock: Clock) -> int:
        assert await pool.fetchval("SELECT 1") == 1
        seen.append(clock.now())
        return 1

    sweep = Sweep("remember", timedelta(hours=1), remember)
    app = create_scheduler(settings, clock, db_url, sweeps=[sweep])
    runner, _ = await serve_app(app)
    try:
        await _runner(app).wait_for_runs("remember", 1)
        clock.advance(timedelta(days=2))
        await _runner(app).wait_for_runs("remember", 2)
        assert seen[1] - seen[0] == timedelta(days=2)
    finally:
        await runner.cleanup()


async def test_a_clock_jump_during_a_run_is_not_lost(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    # The accident: the dev clock moves while a sweep is half-way; APScheduler alone would
    # drop the run asked for (one instance at a time) and wait a whole interval.
    seen: list[datetime] = []
    begun, release = asyncio.Event(), asyncio.Event()

    async def slow_once(pool: asyncpg.Pool, clock: Clock) -> int:
        seen.append(clock.now())
        if len(seen) == 1:
            begun.set()
            await release.wait()
        return 0

    sweep = Sweep("slow-once", timedelta(hours=1), slow_once)
    app = create_scheduler(settings, clock, db_url, sweeps=[sweep])
    runner, _ = await serve_app(app)
    try:
        await begun.wait()
        clock.advance(timedelta(hours=5))
        release.set()
        await _runner(app).wait_for_runs("slow-once", 2)
        assert seen[1] - seen[0] == timedelta(hours=5)
    finally:
        await runner.cleanup()


async def test_an_exclusive_sweep_runs_on_one_replica_at_a_time(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    running = 0
    most_at_once = 0
    release = asyncio.Event()

    async def held(pool: asyncpg.Pool, clock: Clock) -> int:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        await release.wait()
        running -= 1
        return 0

    sweep = Sweep("held", timedelta(hours=1), held, exclusive=True)
    apps = [create_scheduler(settings, clock, db_url, sweeps=[sweep]) for _ in range(3)]
    replicas = [await serve_app(app) for app in apps]
    try:
        # Every replica tries at start: one gets in and holds the lock, two finish skipped.
        first_runs = [asyncio.create_task(_runner(app).wait_for_runs("held", 1)) for app in apps]
        done, pending = await asyncio.wait(first_runs, return_when=asyncio.FIRST_COMPLETED)
        while len(done) < 2:
            more, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done |= more
        assert running == 1
        outcomes = sorted(str(_runner(app).states["held"].last_outcome) for app in apps)
        assert outcomes == ["None", "skipped", "skipped"]
        release.set()
        await asyncio.gather(*pending)
    finally:
        release.set()
        for runner, _ in replicas:
            await runner.cleanup()
    assert most_at_once == 1


async def test_a_failing_sweep_is_logged_once_a_streak_and_does_not_stop_the_others(
    settings: Settings, clock: FrozenClock, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    good_runs = 0

    async def broken(pool: asyncpg.Pool, clock: Clock) -> int:
        raise RuntimeError("boom")

    async def good(pool: asyncpg.Pool, clock: Clock) -> int:
        nonlocal good_runs
        good_runs += 1
        return 2

    interval = timedelta(minutes=10)
    sweeps = [Sweep("broken", interval, broken), Sweep("good", interval, good)]
    app = create_scheduler(settings, clock, db_url, sweeps=sweeps)
    runner, base = await serve_app(app)
    caplog.set_level(logging.INFO, logger="regimen.sweeps")
    try:
        sweeping = _runner(app)
        await sweeping.wait_for_runs("broken", 1)
        await sweeping.wait_for_runs("good", 1)
        for times in (2, 3):
            clock.advance(interval * LATE_AFTER_INTERVALS)
            await sweeping.wait_for_runs("broken", times)
            await sweeping.wait_for_runs("good", times)
        assert good_runs == 3

        failures = [r for r in caplog.records if r.getMessage() == "sweep failed"]
        assert [getattr(r, "sweep", None) for r in failures] == ["broken"] * 3
        assert [bool(r.exc_info) for r in failures] == [True, False, False]
        assert [getattr(r, "consecutive_failures", None) for r in failures] == [1, 2, 3]

        text = await _get_text(base + "/metrics")
        assert 'regimen_sweep_runs_total{outcome="error",sweep="broken"} 3.0' in text
        assert 'regimen_sweep_runs_total{outcome="ok",sweep="good"} 3.0' in text
        assert 'regimen_sweep_items_total{sweep="good"} 6.0' in text
        assert 'regimen_sweep_consecutive_failures{sweep="broken"} 3.0' in text
        # Late: no success for three of its intervals (it never succeeded since the start).
        assert 'regimen_sweep_late{sweep="broken"} 1.0' in text
        assert 'regimen_sweep_late{sweep="good"} 0.0' in text

        # Still ready: a late sweep is shown, it does not take the service out of service.
        status, ready = await _get_json(base + "/readyz")
        assert status == 200 and ready["status"] == "ready"
        assert ready["late_sweeps"] == ["broken"]
        assert ready["sweeps"]["broken"]["last_error"] == "RuntimeError"
        assert ready["sweeps"]["broken"]["consecutive_failures"] == 3
        assert ready["sweeps"]["broken"]["last_success_at"] is None
        assert ready["sweeps"]["good"]["last_outcome"] == "ok"
        assert ready["sweeps"]["good"]["late"] is False
    finally:
        await runner.cleanup()


async def test_readyz_and_metrics_show_when_each_sweep_last_ran_and_how_long_it_took(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    async def query(pool: asyncpg.Pool, clock: Clock) -> int:
        return int(await pool.fetchval("SELECT count(*) FROM clinic"))

    interval = timedelta(minutes=1)
    app = create_scheduler(settings, clock, db_url, sweeps=[Sweep("count", interval, query)])
    runner, base = await serve_app(app)
    try:
        await _runner(app).wait_for_runs("count", 1)
        clock.advance(timedelta(hours=2))
        await _runner(app).wait_for_runs("count", 2)
        status, ready = await _get_json(base + "/readyz")
        assert status == 200
        detail = ready["sweeps"]["count"]
        assert detail["last_finished_at"] == clock.now().isoformat()
        assert detail["last_success_at"] == clock.now().isoformat()
        assert detail["last_outcome"] == "ok"
        assert detail["last_duration_ms"] > 0
        assert detail["interval_seconds"] == 60
        assert detail["late"] is False and ready["late_sweeps"] == []

        registry = app[REGISTRY]
        labels = {"sweep": "count"}
        last_run = registry.get_sample_value("regimen_sweep_last_run_timestamp_seconds", labels)
        assert last_run == clock.now().timestamp()
        duration = registry.get_sample_value("regimen_sweep_last_duration_seconds", labels)
        assert duration is not None and 0 < duration < 10
        assert registry.get_sample_value("regimen_sweep_seconds_count", labels) == 2

        # Nothing runs while the clock stands still past three intervals: late, and says so.
        clock.set(clock.now() + interval * LATE_AFTER_INTERVALS + timedelta(seconds=1))
        _, ready = await _get_json(base + "/readyz")
        assert ready["late_sweeps"] == ["count"]
        assert registry.get_sample_value("regimen_sweep_late", labels) == 1
    finally:
        await runner.cleanup()


async def test_the_scheduler_starts_its_sweeps_and_shows_them_all_in_readyz(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    from services.scheduler.sweeps import default_sweeps

    app = create_scheduler(settings, clock, db_url)
    runner, base = await serve_app(app)
    every = default_sweeps(settings)
    try:
        for sweep in every:
            await _runner(app).wait_for_runs(sweep.name, 1)
        status, ready = await _get_json(base + "/readyz")
        assert status == 200
        assert set(ready["sweeps"]) == {s.name for s in every}
        assert {d["last_outcome"] for d in ready["sweeps"].values()} <= {"ok", "skipped"}
    finally:
        await runner.cleanup()


def test_every_registered_sweep_states_why_it_is_safe_with_several_replicas() -> None:
    # Each sweep's docstring carries its "Replicas:" argument (shared/sweeps.py says what
    # counts); a new sweep without one fails here.
    from services.booking.app import BOOKING_SWEEPS
    from services.scheduler.sweeps import default_sweeps
    from tests.conftest import make_settings

    for sweep in [*DEFAULT_SWEEPS, *default_sweeps(make_settings()), *BOOKING_SWEEPS]:
        assert "Replicas:" in (sweep.run.__doc__ or ""), sweep.name


async def test_booking_keeps_sweep_detail_off_its_public_readyz(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    from services.booking.app import create_app as create_booking

    app = create_booking(settings, clock, db_url)
    runner, base = await serve_app(app)
    try:
        status, ready = await _get_json(base + "/readyz")
        assert status == 200 and "sweeps" not in ready
    finally:
        await runner.cleanup()


def test_every_notifier_sweep_states_why_it_is_safe_with_several_replicas(
    settings: Settings, clock: FrozenClock, db_url: str
) -> None:
    from services.notifier.app import create_app as create_notifier

    app = create_notifier(settings, clock, db_url)
    states = app[SWEEP_RUNNER].states
    assert states
    for name, state in states.items():
        assert "Replicas:" in (state.sweep.run.__doc__ or ""), name
