"""The one source of "now" for business decisions.

Services receive a clock instead of calling `datetime.now()`, and SQL receives `now` as a
parameter, so tests and the dev inbox can move time forward instead of waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
