"""REGIMEN_DEV_CLOCK_FILE's clock: several processes move together by one file; it only moves
forward, and a half-written or garbled file leaves it where it is."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from shared.clock import FileOffsetClock


def test_the_clock_follows_the_file_forward_only_and_tells_its_listeners(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = FileOffsetClock(path)  # no file yet: real time
    assert clock.offset == timedelta(0)
    jumps: list[timedelta] = []
    clock.on_advance(lambda: jumps.append(clock.offset))

    path.write_text("7200")
    assert clock.catch_up() is True
    assert jumps == [timedelta(hours=2)]
    for unchanged in ("7200", "3600", "", "two hours"):
        path.write_text(unchanged)
        assert clock.catch_up() is False
    assert clock.offset == timedelta(hours=2) and len(jumps) == 1

    path.write_text("86400.5\n")
    assert FileOffsetClock(path).offset == timedelta(seconds=86400.5)  # a process started later
