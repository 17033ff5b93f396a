"""Periodic sweeps on APScheduler (in-memory job store: every durable fact is in our tables).

Replicas: any number of processes may run the same sweeps at once, so every sweep must be
idempotent by itself, and its function's docstring says why (a "Replicas:" paragraph):
* a row claim: an UPDATE that re-checks the row's state (`WHERE status = 'held'`), or a claim
  with `FOR UPDATE SKIP LOCKED`, changes each row once however many replicas sweep;
* once-only work that a row's state cannot guard (filing a task exactly once) takes a
  transaction-level advisory lock inside its own transaction (`once_per_cluster`), so the work
  and the lock commit together;
* a sweep marked `exclusive` (it spans several transactions or calls a provider) holds a
  transaction-level advisory lock on a connection of its own for the whole run, and the other
  replicas skip that run. This only saves duplicate effort: its work must still be idempotent,
  since a lost lock connection frees the lock mid-run. Transaction-level locks (never session
  locks) are what a pooler in transaction mode (PgBouncer) keeps on one server connection.

Health: each run is recorded in memory (when it ran by the service's clock, how it ended, how
long it took in real time, consecutive failures), and shown as `/readyz` detail (`sweeps`) and
as Prometheus metrics. A sweep is *late* when it has not succeeded for LATE_AFTER_INTERVALS of
its intervals; that is shown (`late_sweeps`, `regimen_sweep_late`) but never makes the service
unready: a late sweep is for an alert and a person, and taking the replica out of a load
balancer, or restarting it, would not make a broken sweep work.

A failing sweep is logged in one line (the traceback only for the first failure of a streak),
counted, and run again on its next tick; the other sweeps go on as before.

Until this release's migrations are applied (a scheduler started before `regimen migrate`),
every tick is recorded as a failure (`waiting for migrations`, so the sweep turns late) and
logged as that one line, without running the sweep or printing a traceback. Once the schema has
been seen current the check is not made again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import asyncpg
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import Counter, Gauge, Histogram

from shared.clock import Clock
from shared.db import migrate
from shared.db.outage import database_unavailable
from shared.logging import describe_database_error
from shared.store import Executor
from shared.web import CLOCK, POOL, READY_DETAILS, REGISTRY

log = logging.getLogger("regimen.sweeps")

SweepFunction = Callable[[asyncpg.Pool, Clock], Awaitable[int]]
Outcome = Literal["ok", "error", "skipped"]

# A sweep that has not succeeded for this many of its intervals is shown as late.
LATE_AFTER_INTERVALS = 3

WAITING_FOR_MIGRATIONS = "waiting for migrations"


class MigrationsPending(Exception):
    """The database lacks some of this release's migrations; the sweep did not run."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} migration(s) not applied")
        self.pending = pending


@dataclass(frozen=True)
class Sweep:
    name: str
    interval: timedelta
    run: SweepFunction  # returns how many items it handled
    exclusive: bool = False


def lock_key(name: str) -> str:
    """The text behind a sweep's advisory lock (hashed to the lock's bigint key)."""
    return f"regimen.sweep:{name}"


async def once_per_cluster(conn: Executor, name: str) -> bool:
    """Take the transaction-level advisory lock `name` in the caller's transaction; False when
    another transaction holds it now (then the caller does nothing: the holder does the work).

    Taken as the transaction's first statement, every later statement of the transaction sees
    all that an earlier holder committed: under READ COMMITTED each statement takes a fresh
    snapshot, and the lock is only released when the earlier holder's transaction ends."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", lock_key(name)
        )
    )


@dataclass
class SweepState:
    """What one process knows about one sweep's runs. Times are the service clock's (which the
    dev clock moves); durations are real time."""

    sweep: Sweep
    # When this process began running the sweep: "late" counts from here until a first success.
    since: datetime
    runs: int = 0
    running_since: datetime | None = None
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_outcome: Outcome | None = None
    last_duration_seconds: float | None = None
    last_items: int | None = None
    # Last run that did not fail: "skipped" counts, since another replica holds the lock and is
    # running the sweep (if that one fails, its own /readyz and metrics say so).
    last_success_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    # A run asked for (the clock jumped) while one was going: run again when it ends.
    again: bool = False
    finished: asyncio.Condition = field(default_factory=asyncio.Condition)

    def late(self, now: datetime) -> bool:
        reference = self.last_success_at or self.since
        return now - reference > self.sweep.interval * LATE_AFTER_INTERVALS

    def describe(self, now: datetime) -> dict[str, Any]:
        def at(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        duration = self.last_duration_seconds
        return {
            "interval_seconds": self.sweep.interval.total_seconds(),
            "exclusive": self.sweep.exclusive,
            "running": self.running_since is not None,
            "last_started_at": at(self.last_started_at),
            "last_finished_at": at(self.last_finished_at),
            "last_outcome": self.last_outcome,
            "last_duration_ms": None if duration is None else round(duration * 1000, 1),
            "last_items": self.last_items,
            "last_success_at": at(self.last_success_at),
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "late": self.late(now),
        }


def _error_name(exc: BaseException) -> str:
    # The class (and for a database error its SQLSTATE and object names), never the message:
    # messages may quote row values.
    if isinstance(exc, asyncpg.PostgresError):
        return describe_database_error(exc)
    return type(exc).__name__


class SweepRunner:
    """Runs sweeps and keeps their state and metrics; APScheduler only says when."""

    def __init__(
        self,
        sweeps: Sequence[Sweep],
        *,
        pool: Callable[[], asyncpg.Pool],
        clock: Clock,
        registry: Any,
    ) -> None:
        names = [s.name for s in sweeps]
        if len(set(names)) != len(names):
            raise ValueError(f"two sweeps share a name: {names}")
        self._pool = pool
        self.clock = clock
        # Set once the database has had every migration of this release (see the module doc).
        self._schema_current = False
        now = clock.now()
        self.states: dict[str, SweepState] = {s.name: SweepState(s, since=now) for s in sweeps}
        self.tasks: set[asyncio.Task[None]] = set()
        self._runs = Counter(
            "regimen_sweep_runs", "Sweep runs by outcome", ["sweep", "outcome"], registry=registry
        )
        self._items = Counter(
            "regimen_sweep_items", "Items handled by sweeps", ["sweep"], registry=registry
        )
        self._seconds = Histogram(
            "regimen_sweep_seconds", "Time a sweep run takes", ["sweep"], registry=registry
        )
        gauges = {
            "last_run": Gauge(
                "regimen_sweep_last_run_timestamp_seconds",
                "When the sweep's last run ended (service clock; 0: not yet)",
                ["sweep"],
                registry=registry,
            ),
            "last_success": Gauge(
                "regimen_sweep_last_success_timestamp_seconds",
                "When the sweep last ended without failing (service clock; 0: not yet)",
                ["sweep"],
                registry=registry,
            ),
            "duration": Gauge(
                "regimen_sweep_last_duration_seconds",
                "How long the sweep's last run took",
                ["sweep"],
                registry=registry,
            ),
            "failures": Gauge(
                "regimen_sweep_consecutive_failures",
                "Runs in a row that failed (0 after a success)",
                ["sweep"],
                registry=registry,
            ),
            "late": Gauge(
                "regimen_sweep_late",
                f"1 when the sweep has not succeeded for {LATE_AFTER_INTERVALS} of its intervals",
                ["sweep"],
                registry=registry,
            ),
        }
        for name, state in self.states.items():
            # Read when scraped, so "late" moves with the clock even while nothing runs.
            gauges["last_run"].labels(name).set_function(_stamp(state, "last_finished_at"))
            gauges["last_success"].labels(name).set_function(_stamp(state, "last_success_at"))
            gauges["duration"].labels(name).set_function(_reader(state, _duration))
            gauges["failures"].labels(name).set_function(_reader(state, _failures))
            gauges["late"].labels(name).set_function(
                _reader(state, lambda s: float(s.late(self.clock.now())))
            )
            for outcome in ("ok", "error", "skipped"):
                self._runs.labels(name, outcome)  # present at 0 before the first run

    async def run(self, name: str) -> None:
        """One run of the sweep `name` (and another straight after, if the clock jumped while
        it ran: `request_all`). A tick that comes while a run is going is dropped: that run is
        the tick's. Never raises: a failure is recorded, logged and left for the next tick."""
        state = self.states[name]
        if state.running_since is not None:
            return
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            while True:
                state.again = False
                await self._run_once(state)
                if not state.again:
                    return
        finally:
            if task is not None:
                self.tasks.discard(task)

    def request_all(self) -> list[str]:
        """Ask for a run of every sweep; returns the names of those not running now (their
        runs are the caller's to start). A running one will run again when it ends."""
        idle = []
        for name, state in self.states.items():
            if state.running_since is None:
                idle.append(name)
            else:
                state.again = True
        return idle

    async def wait_for_runs(self, name: str, runs: int) -> None:
        """Until the sweep has finished `runs` runs in this process (tests, tools)."""
        state = self.states[name]
        async with state.finished:
            await state.finished.wait_for(lambda: state.runs >= runs)

    async def _wait_for_migrations(self) -> None:
        """Raise MigrationsPending while this release's migrations are not all applied.

        Migrations that differ from the code's (a newer release migrated the database during a
        rolling deploy) are `/readyz`'s to report; the sweeps go on as they did before."""
        if self._schema_current:
            return
        async with self._pool().acquire() as conn:
            try:
                pending = await migrate.pending_migrations(cast(asyncpg.Connection, conn))
            except migrate.MigrationMismatch:
                pending = []
        if pending:
            raise MigrationsPending(len(pending))
        self._schema_current = True

    def describe(self) -> dict[str, Any]:
        now = self.clock.now()
        sweeps = {name: state.describe(now) for name, state in self.states.items()}
        return {
            "sweeps": sweeps,
            "late_sweeps": sorted(name for name, s in sweeps.items() if s["late"]),
        }

    async def _run_once(self, state: SweepState) -> None:
        sweep = state.sweep
        state.running_since = state.last_started_at = self.clock.now()
        started = time.perf_counter()
        outcome: Outcome
        count: int | None = None
        try:
            await self._wait_for_migrations()
            count = await _run_guarded(self._pool(), self.clock, sweep)
        except MigrationsPending as exc:
            outcome = "error"
            state.last_error = WAITING_FOR_MIGRATIONS
            state.consecutive_failures += 1
            log.warning(
                WAITING_FOR_MIGRATIONS,
                extra={
                    "sweep": sweep.name,
                    "pending_migrations": exc.pending,
                    "consecutive_failures": state.consecutive_failures,
                    "next_try_in_seconds": sweep.interval.total_seconds(),
                    "hint": "run 'regimen migrate'",
                },
            )
        except Exception as exc:
            outcome = "error"
            state.last_error = _error_name(exc)
            state.consecutive_failures += 1
            # One line a failure; the traceback once a streak, not on every tick, and never for
            # the database being away (a restart is not a bug: the error's name says it all).
            traceback = state.consecutive_failures == 1 and not database_unavailable(exc)
            log.error(
                "sweep failed",
                exc_info=traceback,
                extra={
                    "sweep": sweep.name,
                    "error": state.last_error,
                    "consecutive_failures": state.consecutive_failures,
                    "next_try_in_seconds": sweep.interval.total_seconds(),
                },
            )
        else:
            outcome = "skipped" if count is None else "ok"
            if state.consecutive_failures:
                log.info(
                    "sweep recovered",
                    extra={"sweep": sweep.name, "after_failures": state.consecutive_failures},
                )
            state.consecutive_failures = 0
            state.last_error = None
        finally:
            elapsed = time.perf_counter() - started
            finished_at = self.clock.now()
            state.running_since = None
        state.last_finished_at = finished_at
        state.last_duration_seconds = elapsed
        state.last_outcome = outcome
        if outcome != "error":
            state.last_success_at = finished_at
        state.last_items = count
        self._seconds.labels(sweep.name).observe(elapsed)
        self._runs.labels(sweep.name, outcome).inc()
        if count:
            self._items.labels(sweep.name).inc(count)
        async with state.finished:
            state.runs += 1
            state.finished.notify_all()


def _reader(state: SweepState, value: Callable[[SweepState], float]) -> Callable[[], float]:
    return lambda: value(state)


def _duration(state: SweepState) -> float:
    return state.last_duration_seconds or 0.0


def _failures(state: SweepState) -> float:
    return float(state.consecutive_failures)


def _stamp(state: SweepState, attribute: str) -> Callable[[], float]:
    def read() -> float:
        moment: datetime | None = getattr(state, attribute)
        return 0.0 if moment is None else moment.timestamp()

    return read


SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
SWEEP_RUNNER = web.AppKey("sweep_runner", SweepRunner)


def install_sweeps(app: web.Application, sweeps: Sequence[Sweep]) -> SweepRunner:
    """Run `sweeps` while the app runs; call after the pool's cleanup context is installed."""
    runner = SweepRunner(sweeps, pool=lambda: app[POOL], clock=app[CLOCK], registry=app[REGISTRY])
    app[SWEEP_RUNNER] = runner
    app[READY_DETAILS].append(runner.describe)

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for sweep in sweeps:
            scheduler.add_job(
                runner.run,
                IntervalTrigger(seconds=sweep.interval.total_seconds()),
                args=[sweep.name],
                id=sweep.name,
                # A tick during a long run reaches the runner, which drops it quietly
                # (APScheduler would log a warning for each).
                max_instances=2,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        scheduler.start()
        app[SCHEDULER] = scheduler
        clock = app[CLOCK]
        if hasattr(clock, "on_advance"):
            # After the dev or test clock jumps, sweep at once rather than at the next tick.
            clock.on_advance(lambda: run_all_now(scheduler, runner))
        yield
        scheduler.shutdown(wait=False)
        if runner.tasks:
            # Let sweeps in progress finish their transaction; SIGTERM must not cut one in half.
            await asyncio.wait(set(runner.tasks), timeout=5)

    app.cleanup_ctx.append(scheduler_ctx)
    return runner


def run_all_now(scheduler: AsyncIOScheduler, runner: SweepRunner) -> None:
    """Every sweep at once: idle ones now, running ones again as soon as they end."""
    if not scheduler.running:
        return
    now = datetime.now(UTC)
    for name in runner.request_all():
        job = scheduler.get_job(name)
        if job is not None:
            job.modify(next_run_time=now)


async def _run_guarded(pool: asyncpg.Pool, clock: Clock, sweep: Sweep) -> int | None:
    """The sweep's count, or None when it is exclusive and another replica is running it."""
    if not sweep.exclusive:
        return await sweep.run(pool, clock)
    async with pool.acquire() as conn, conn.transaction():
        if not await once_per_cluster(cast(asyncpg.Connection, conn), sweep.name):
            return None
        return await sweep.run(pool, clock)
