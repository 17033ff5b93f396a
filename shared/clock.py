"""The one source of "now" for business decisions.

Services receive a clock instead of calling `datetime.now()`, and SQL receives `now` as a
parameter, so tests and the dev inbox can move time forward instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """Real time plus an offset that only moves forward (the dev clock).

    Listeners are told after every jump, so sweeps can run at once instead of at their next tick.
    """

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        if delta <= timedelta(0):
            raise ValueError("the clock only moves forward")
        self.offset += delta
        for listener in list(self._listeners):
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)


class FrozenClock:
    """A clock that stands still until told to move (tests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta
        for listener in list(self._listeners):
            listener()

    def set(self, moment: datetime) -> None:
        self._now = moment

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)


def read_offset(path: Path) -> timedelta | None:
    """The offset (seconds, as text) in `path`; None when it is missing or not a number."""
    try:
        return timedelta(seconds=float(path.read_text().strip()))
    except (OSError, ValueError, OverflowError):
        return None


class FileOffsetClock(OffsetClock):
    """The dev clock of a `regimen serve` process (REGIMEN_DEV_CLOCK_FILE, tests and demos):
    real time plus the seconds written in a file, so that several processes (two scheduler
    replicas, say) move together when the file changes. Forward only, like the dev clock: a
    smaller number is ignored. `follow` watches the file; listeners run after each jump."""

    def __init__(self, path: Path) -> None:
        super().__init__(max(read_offset(path) or timedelta(0), timedelta(0)))
        self.path = path

    def catch_up(self) -> bool:
        """Take the file's offset if it is ahead of ours; whether the clock moved."""
        offset = read_offset(self.path)
        if offset is None or offset <= self.offset:
            return False
        self.advance(offset - self.offset)
        return True

    async def follow(self, every: float = 0.05) -> None:
        while True:
            self.catch_up()
            await asyncio.sleep(every)
