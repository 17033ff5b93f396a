"""Waking the lanes: a NOTIFY from the outbox trigger, a jump of the dev or test clock, or the
lane's own timer (the next due row, at the latest every poll interval: the fallback when a
notification is missed, e.g. while the LISTEN connection reconnects).

The LISTEN connection is the process's own (not from the pool), re-opened after it drops; each
time it is (re)established every lane looks at once, since rows may have come due while nobody
listened.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

import asyncpg

from shared.clock import Clock
from shared.db.outage import CLIENT_ERRORS
from shared.db.pool import APP_ROLE

log = logging.getLogger("regimen.notifier.wakeup")

CHANNEL = "regimen_notification_due"
LISTEN_RETRY_SECONDS = 2.0
# asyncpg's errors, InternalClientError included (a connection the server closed while idle).
DATABASE_ERRORS = CLIENT_ERRORS


class Waker:
    """One event per lane, all set by whatever may have made rows due."""

    def __init__(self, database_url: str, clock: Clock, stop: asyncio.Event) -> None:
        self.database_url = database_url
        self.clock = clock
        self._stop = stop
        self._events: list[asyncio.Event] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_warning = ""
        self.listening = asyncio.Event()

    def event(self) -> asyncio.Event:
        """A new lane's event."""
        event = asyncio.Event()
        self._events.append(event)
        return event

    def wake_all(self) -> None:
        for event in self._events:
            event.set()

    def wake_threadsafe(self) -> None:
        loop = self._loop
        if self._stop.is_set() or loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self.wake_all)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        on_advance: Callable[[Callable[[], None]], None] | None = getattr(
            self.clock, "on_advance", None
        )
        if on_advance is not None:
            # After the dev or test clock jumps, rows may be due: look at once.
            on_advance(self.wake_threadsafe)
        self._task = asyncio.create_task(self._listen(), name="notifier-listen")

    async def stopped(self) -> None:
        if self._task is not None:
            await self._task

    async def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                conn = await asyncpg.connect(
                    self.database_url, timeout=10, server_settings={"role": APP_ROLE}
                )
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                self._warn("cannot open the LISTEN connection; polling meanwhile", exc)
                await self._pause(LISTEN_RETRY_SECONDS)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(functools.partial(_set_event, lost))
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                self._last_warning = ""
                self.wake_all()
                await _first_of(self._stop, lost)
            except DATABASE_ERRORS as exc:
                self._warn("LISTEN connection failed; polling meanwhile", exc)
            finally:
                self.listening.clear()
                if not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), timeout=2)
                    except (OSError, asyncpg.InterfaceError, TimeoutError):
                        conn.terminate()
            if not self._stop.is_set():
                await self._pause(LISTEN_RETRY_SECONDS)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self.wake_all()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _warn(self, message: str, exc: BaseException) -> None:
        # Once per distinct problem: a database outage must not flood the logs.
        text = f"{message}: {type(exc).__name__}"
        if text != self._last_warning:
            log.warning(
                message,
                extra={"error": type(exc).__name__, "sqlstate": getattr(exc, "sqlstate", None)},
            )
            self._last_warning = text


def _set_event(event: asyncio.Event, *_args: object) -> None:
    event.set()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
