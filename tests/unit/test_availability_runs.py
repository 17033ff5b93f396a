"""The free starts of a full diary are found by walking from booking to booking rather than
slot by slot; whatever the bookings, buffers, notice and horizon, the answer is the slot-by-slot
one."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import pytest

from shared.scheduling.availability import (
    Busy,
    BusyTimes,
    ClinicRules,
    PractitionerSchedule,
    TimeOff,
    TreatmentSpec,
    WorkingRange,
    free_starts,
)

DAY = date(2026, 3, 4)  # a Wednesday
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _slot_by_slot(
    spec: TreatmentSpec, busy: list[Busy], off: list[TimeOff], earliest: datetime, latest: datetime
) -> list[datetime]:
    """Every start on the 15-minute grid of 08:00-18:00 UTC that fits and meets nothing."""
    found = []
    start = datetime.combine(DAY, time(8), UTC)
    closing = datetime.combine(DAY, time(18), UTC)
    while start + spec.duration <= closing:
        taken_from = start - spec.buffer_before
        taken_until = start + spec.duration + spec.buffer_after
        clash = any(b.start < taken_until and taken_from < b.end for b in [*busy, *off])
        if earliest <= start <= latest and not clash:
            found.append(start)
        start += timedelta(minutes=15)
    return found


@pytest.mark.parametrize("seed", range(300))
def test_a_random_diary_gets_the_slot_by_slot_answer(seed: int) -> None:
    rng = random.Random(seed)
    spec = TreatmentSpec(
        duration=timedelta(minutes=rng.choice([10, 15, 30, 45, 60, 90])),
        buffer_before=timedelta(minutes=rng.choice([0, 0, 5, 10, 20])),
        buffer_after=timedelta(minutes=rng.choice([0, 0, 5, 10, 15])),
    )
    opening = datetime.combine(DAY, time(7), UTC)
    intervals = []
    for _ in range(rng.randrange(0, 25)):
        begin = opening + timedelta(minutes=rng.randrange(0, 12 * 60, rng.choice([1, 5, 15])))
        intervals.append(Busy(begin, begin + timedelta(minutes=rng.randrange(1, 120))))
    loaded = sorted(intervals[: len(intervals) // 2], key=lambda b: b.start)
    loose = intervals[len(intervals) // 2 :]
    off = []
    if rng.random() < 0.3:
        begin = opening + timedelta(minutes=rng.randrange(0, 11 * 60, 30))
        off.append(TimeOff(begin, begin + timedelta(minutes=rng.randrange(15, 180))))
    now = datetime.combine(DAY, time(6), UTC) + timedelta(minutes=rng.randrange(0, 6 * 60))
    rules = ClinicRules(
        "UTC",
        min_notice=timedelta(minutes=rng.choice([0, 30, 120])),
        horizon=timedelta(hours=rng.choice([6, 12, 48])),
    )
    schedule = PractitionerSchedule(
        1,
        (WorkingRange(3, time(8), time(18)),),
        time_off=tuple(off),
        busy=tuple(loose),
        busy_times=BusyTimes(
            tuple(_us(b.start) for b in loaded), tuple(_us(b.end) for b in loaded)
        ),
    )
    found = free_starts(spec, [schedule], rules, first_day=DAY, last_day=DAY, now=now)
    expected = _slot_by_slot(spec, intervals, off, now + rules.min_notice, now + rules.horizon)
    assert [slot.start for slot in found] == expected


@pytest.mark.parametrize("seed", range(100))
def test_sessions_added_to_a_diary_block_as_if_it_had_been_read_with_them(seed: int) -> None:
    # A course proposal adds its own sessions to a loaded diary; the shortcut that derives the
    # blocked times from the diary's must give what a schedule built with them all would.
    rng = random.Random(seed)
    opening = datetime.combine(DAY, time(7), UTC)

    def some(count: int) -> list[Busy]:
        found = []
        for _ in range(count):
            begin = opening + timedelta(minutes=rng.randrange(0, 12 * 60, 5))
            found.append(Busy(begin, begin + timedelta(minutes=rng.randrange(5, 240))))
        return found

    loaded = sorted(some(rng.randrange(0, 30)), key=lambda b: b.start)
    extra = some(rng.randrange(1, 6))
    base = PractitionerSchedule(
        1,
        (WorkingRange(3, time(8), time(18)),),
        busy_times=BusyTimes(
            tuple(_us(b.start) for b in loaded), tuple(_us(b.end) for b in loaded)
        ),
    )
    base.blocked_us()
    added = base.with_busy(extra)
    rebuilt = PractitionerSchedule(1, base.working, busy=tuple(extra), busy_times=base.busy_times)
    assert added.blocked_us() == rebuilt.blocked_us()
    assert added.busy == tuple(extra)
