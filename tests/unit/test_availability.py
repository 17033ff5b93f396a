"""The availability engine: working hours, breaks, time off, buffers, notice, horizon and DST."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.scheduling.availability import (
    Busy,
    ClinicRules,
    DayOverride,
    FreeStart,
    PractitionerSchedule,
    TimeOff,
    TreatmentSpec,
    WorkingRange,
    free_starts,
    why_not_free,
)

LONDON = "Europe/London"
NEW_YORK = "America/New_York"
HALF_HOUR = TreatmentSpec(duration=timedelta(minutes=30))
NOW = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # well before every date used below


def rules(
    zone: str = LONDON,
    notice: timedelta = timedelta(0),
    horizon: timedelta = timedelta(days=400),
) -> ClinicRules:
    return ClinicRules(time_zone=zone, min_notice=notice, horizon=horizon)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: str, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone))  # type: ignore[misc]


def every_day(starts: time, ends: time) -> tuple[WorkingRange, ...]:
    return tuple(WorkingRange(weekday, starts, ends) for weekday in range(1, 8))


def weekdays(*ranges: tuple[time, time]) -> tuple[WorkingRange, ...]:
    return tuple(WorkingRange(day, a, b) for day in range(1, 6) for a, b in ranges)


def starts_on(
    schedule: PractitionerSchedule,
    day: date,
    *,
    treatment: TreatmentSpec = HALF_HOUR,
    clinic: ClinicRules | None = None,
    now: datetime = NOW,
    step: timedelta = timedelta(minutes=15),
) -> list[datetime]:
    found = free_starts(
        treatment,
        [schedule],
        clinic or rules(),
        first_day=day,
        last_day=day,
        now=now,
        step=step,
    )
    return [slot.start for slot in found]


def grid(
    first: datetime, last: datetime, step: timedelta = timedelta(minutes=15)
) -> list[datetime]:
    out = []
    while first <= last:
        out.append(first)
        first += step
    return out


# --- daylight saving -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "change_day", "utc_hour_before", "utc_hour_after"),
    [
        (LONDON, date(2026, 3, 29), 10, 9),  # last Sunday of March: GMT -> BST
        (LONDON, date(2026, 10, 25), 9, 10),  # last Sunday of October: BST -> GMT
        (NEW_YORK, date(2026, 3, 8), 15, 14),  # second Sunday of March: EST -> EDT
        (NEW_YORK, date(2026, 11, 1), 14, 15),  # first Sunday of November: EDT -> EST
    ],
)
def test_slots_keep_local_wall_clock_across_dst_change(
    zone: str, change_day: date, utc_hour_before: int, utc_hour_after: int
) -> None:
    tz = ZoneInfo(zone)
    before, after = change_day - timedelta(days=1), change_day + timedelta(days=1)
    # Guard the test data: the offset really changes between the day before and the day after.
    noon = time(12)
    assert (
        datetime.combine(before, noon, tzinfo=tz).utcoffset()
        != datetime.combine(after, noon, tzinfo=tz).utcoffset()
    )
    schedule = PractitionerSchedule(1, every_day(time(10), time(11)))

    found = free_starts(
        HALF_HOUR,
        [schedule],
        rules(zone),
        first_day=change_day - timedelta(days=2),
        last_day=change_day + timedelta(days=2),
        now=NOW,
        step=timedelta(minutes=30),
    )

    assert [slot.start.astimezone(tz).strftime("%H:%M") for slot in found] == ["10:00", "10:30"] * 5
    assert all(slot.start.tzinfo is UTC for slot in found)
    expected = []
    for offset in range(-2, 3):
        day = change_day + timedelta(days=offset)
        hour = utc_hour_before if offset < 0 else utc_hour_after
        first = datetime.combine(day, time(hour), tzinfo=UTC)
        expected += [first, first + timedelta(minutes=30)]
    assert [slot.start for slot in found] == expected


def test_nonexistent_local_times_are_skipped_in_spring_gap() -> None:
    # Clocks in London jump from 01:00 to 02:00 on 2026-03-29; 01:00-01:45 never happen.
    schedule = PractitionerSchedule(1, every_day(time(0), time(4)))

    found = starts_on(schedule, date(2026, 3, 29))

    walls = [s.astimezone(ZoneInfo(LONDON)).strftime("%H:%M") for s in found]
    assert walls == ["00:00", "00:15", "00:30", "00:45"] + [
        "02:00", "02:15", "02:30", "02:45", "03:00", "03:15", "03:30",
    ]  # fmt: skip
    # The range is 3 real hours long (00:00 GMT to 04:00 BST); the last 30 minutes fit exactly.
    assert found[-1] == utc(2026, 3, 29, 2, 30)
    assert found[4] == utc(2026, 3, 29, 1, 0)


def test_working_range_ending_inside_the_spring_gap_offers_no_later_wall_time() -> None:
    # 01:30 never happens on 2026-03-29 in London; 02:00 BST must not sneak in as a start.
    schedule = PractitionerSchedule(1, every_day(time(0), time(1, 30)))

    found = starts_on(schedule, date(2026, 3, 29))

    assert found == grid(utc(2026, 3, 29, 0), utc(2026, 3, 29, 0, 45))


def test_ambiguous_local_times_use_first_occurrence() -> None:
    # London repeats 01:00-01:59 on 2026-10-25; fold=0 means the first (BST) pass.
    schedule = PractitionerSchedule(1, every_day(time(0, 30), time(2, 30)))

    found = starts_on(schedule, date(2026, 10, 25), step=timedelta(minutes=30))

    assert found == [
        utc(2026, 10, 24, 23, 30),  # 00:30 BST
        utc(2026, 10, 25, 0, 0),  # 01:00 BST, first pass
        utc(2026, 10, 25, 0, 30),  # 01:30 BST, first pass
        utc(2026, 10, 25, 2, 0),  # 02:00 GMT, ends 02:30 GMT = end of the range
    ]


# --- working hours ---------------------------------------------------------------------------


def test_lunch_break_splits_the_day() -> None:
    schedule = PractitionerSchedule(1, weekdays((time(9), time(12, 30)), (time(13, 30), time(17))))

    found = starts_on(schedule, date(2026, 3, 2))  # a Monday, GMT so local == UTC

    morning = grid(utc(2026, 3, 2, 9), utc(2026, 3, 2, 12))
    afternoon = grid(utc(2026, 3, 2, 13, 30), utc(2026, 3, 2, 16, 30))
    assert found == morning + afternoon
    # 12:15 would run into lunch; nothing starts during it.
    assert utc(2026, 3, 2, 12, 15) not in found
    assert utc(2026, 3, 2, 13) not in found


def test_no_slots_on_days_without_working_hours() -> None:
    schedule = PractitionerSchedule(1, weekdays((time(9), time(17))))

    assert starts_on(schedule, date(2026, 3, 7)) == []  # Saturday
    assert starts_on(schedule, date(2026, 3, 8)) == []  # Sunday


def test_grid_is_aligned_to_the_start_of_the_working_range() -> None:
    schedule = PractitionerSchedule(1, weekdays((time(9, 10), time(10))))

    assert starts_on(schedule, date(2026, 3, 2)) == [utc(2026, 3, 2, 9, 10), utc(2026, 3, 2, 9, 25)]


def test_overrides_close_a_day_or_replace_its_hours() -> None:
    schedule = PractitionerSchedule(
        1,
        weekdays((time(9), time(17))),
        overrides=(
            DayOverride(date(2026, 3, 3)),  # closed
            DayOverride(date(2026, 3, 4), ((time(18), time(19)),)),
            DayOverride(date(2026, 3, 7), ((time(10), time(11)),)),  # an extra Saturday
        ),
    )

    assert starts_on(schedule, date(2026, 3, 3)) == []
    assert starts_on(schedule, date(2026, 3, 4)) == grid(
        utc(2026, 3, 4, 18), utc(2026, 3, 4, 18, 30)
    )
    assert starts_on(schedule, date(2026, 3, 7)) == grid(
        utc(2026, 3, 7, 10), utc(2026, 3, 7, 10, 30)
    )
    assert len(starts_on(schedule, date(2026, 3, 5))) == 31  # untouched day: 09:00..16:30


# --- time off, bookings, buffers -------------------------------------------------------------


def test_time_off_removes_overlapping_starts_only() -> None:
    schedule = PractitionerSchedule(
        1,
        weekdays((time(9), time(17))),
        time_off=(TimeOff(utc(2026, 3, 2, 14), utc(2026, 3, 2, 15)),),
    )

    found = starts_on(schedule, date(2026, 3, 2))

    removed = set(grid(utc(2026, 3, 2, 9), utc(2026, 3, 2, 16, 30))) - set(found)
    assert removed == set(grid(utc(2026, 3, 2, 13, 45), utc(2026, 3, 2, 14, 45)))
    # Touching the time off on either side is fine.
    assert utc(2026, 3, 2, 13, 30) in found
    assert utc(2026, 3, 2, 15) in found


def test_multi_day_time_off_blocks_whole_days() -> None:
    schedule = PractitionerSchedule(
        1,
        weekdays((time(9), time(17))),
        time_off=(TimeOff(local(LONDON, 2026, 3, 3), local(LONDON, 2026, 3, 5)),),
    )

    found = free_starts(
        HALF_HOUR,
        [schedule],
        rules(),
        first_day=date(2026, 3, 2),
        last_day=date(2026, 3, 6),
        now=NOW,
    )

    assert sorted({slot.start.date() for slot in found}) == [
        date(2026, 3, 2),
        date(2026, 3, 5),
        date(2026, 3, 6),
    ]


def test_buffers_keep_clear_of_busy_but_may_leave_working_hours() -> None:
    treatment = TreatmentSpec(timedelta(minutes=30), timedelta(minutes=10), timedelta(minutes=15))
    schedule = PractitionerSchedule(
        1,
        weekdays((time(9), time(17))),
        busy=(Busy(utc(2026, 3, 2, 11), utc(2026, 3, 2, 12)),),
    )

    found = starts_on(schedule, date(2026, 3, 2), treatment=treatment)

    # 10:15 + 30 min + 15 min after ends exactly at 11:00; 12:15 - 10 min before is 12:05.
    assert found == grid(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10, 15)) + grid(
        utc(2026, 3, 2, 12, 15), utc(2026, 3, 2, 16, 30)
    )


def test_busy_intervals_are_half_open() -> None:
    schedule = PractitionerSchedule(
        1,
        weekdays((time(9), time(12))),
        busy=(Busy(utc(2026, 3, 2, 10), utc(2026, 3, 2, 10, 30)),),
    )

    found = starts_on(schedule, date(2026, 3, 2))

    assert utc(2026, 3, 2, 9, 30) in found
    assert utc(2026, 3, 2, 10, 30) in found
    for blocked in (utc(2026, 3, 2, 9, 45), utc(2026, 3, 2, 10), utc(2026, 3, 2, 10, 15)):
        assert blocked not in found


# --- notice and horizon ----------------------------------------------------------------------


def test_min_notice_and_horizon_bound_the_starts() -> None:
    schedule = PractitionerSchedule(1, weekdays((time(9), time(17))))
    now = utc(2026, 3, 2, 8)  # Monday 08:00
    clinic = rules(notice=timedelta(hours=2, minutes=5), horizon=timedelta(days=2, hours=2))

    found = free_starts(
        HALF_HOUR,
        [schedule],
        clinic,
        first_day=date(2026, 3, 1),
        last_day=date(2026, 3, 10),
        now=now,
    )

    # 10:05 is the earliest allowed instant; the next grid point is 10:15.
    assert found[0].start == utc(2026, 3, 2, 10, 15)
    # The horizon (Wednesday 10:00) is inclusive.
    assert found[-1].start == utc(2026, 3, 4, 10)
    assert len(found) == 26 + 31 + 5


# --- several practitioners -------------------------------------------------------------------


def test_any_practitioner_merges_sorted_by_start_then_given_order() -> None:
    anna = PractitionerSchedule(
        7, weekdays((time(9), time(10))), busy=(Busy(utc(2026, 3, 2, 9), utc(2026, 3, 2, 9, 30)),)
    )
    ben = PractitionerSchedule(3, weekdays((time(9), time(10))))

    found = free_starts(
        HALF_HOUR,
        [anna, ben],
        rules(),
        first_day=date(2026, 3, 2),
        last_day=date(2026, 3, 2),
        now=NOW,
    )

    assert found == [
        FreeStart(utc(2026, 3, 2, 9), 3),
        FreeStart(utc(2026, 3, 2, 9, 15), 3),
        FreeStart(utc(2026, 3, 2, 9, 30), 7),
        FreeStart(utc(2026, 3, 2, 9, 30), 3),
    ]


# --- why_not_free ----------------------------------------------------------------------------


def test_why_not_free_names_the_reason() -> None:
    schedule = PractitionerSchedule(
        5,
        weekdays((time(9), time(12, 30)), (time(13, 30), time(17))),
        time_off=(TimeOff(utc(2026, 3, 3, 9), utc(2026, 3, 3, 12)),),
        busy=(Busy(utc(2026, 3, 4, 10), utc(2026, 3, 4, 11)),),
    )
    clinic = rules(notice=timedelta(hours=2), horizon=timedelta(days=30))
    now = utc(2026, 3, 2, 8)

    def why(start: datetime) -> str | None:
        return why_not_free(HALF_HOUR, schedule, clinic, start, now=now)

    assert why(utc(2026, 3, 2, 11)) is None
    assert "minimum notice of 2 h" in str(why(utc(2026, 3, 2, 9, 30)))
    assert "booking horizon" in str(why(utc(2026, 4, 6, 10)))
    assert why(utc(2026, 3, 7, 10)) == "practitioner 5 does not work on 2026-03-07"
    assert "outside practitioner 5's working hours" in str(why(utc(2026, 3, 2, 12, 15)))
    assert "09:00–12:30, 13:30–17:00" in str(why(utc(2026, 3, 2, 12, 15)))
    assert "slot grid" in str(why(utc(2026, 3, 2, 11, 5)))
    assert why(utc(2026, 3, 3, 10)) == (
        "practitioner 5 has time off from 2026-03-03 09:00 to 2026-03-03 12:00"
    )
    assert "another booking or hold from 2026-03-04 10:00" in str(why(utc(2026, 3, 4, 10, 30)))


# --- validation ------------------------------------------------------------------------------


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="time zone"):
        ClinicRules("Mars/Olympus", timedelta(0), timedelta(days=1))
    with pytest.raises(ValueError, match="start before it ends"):
        WorkingRange(1, time(12), time(9))
    with pytest.raises(ValueError, match="weekday"):
        WorkingRange(0, time(9), time(12))
    with pytest.raises(ValueError, match="overlapping"):
        PractitionerSchedule(
            1, (WorkingRange(1, time(9), time(12)), WorkingRange(1, time(11), time(13)))
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        Busy(datetime(2026, 3, 2, 9), datetime(2026, 3, 2, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        starts_on(PractitionerSchedule(1, ()), date(2026, 3, 2), now=datetime(2026, 3, 1))


# --- against a slow reference (speed is measured in bench/, not here) ---


def _random_schedules(seed: int, count: int, busy_each: int) -> list[PractitionerSchedule]:
    rng = random.Random(seed)
    london = ZoneInfo(LONDON)
    schedules = []
    for pid in range(1, count + 1):
        busy = []
        for _ in range(busy_each):
            day = date(2026, 3, 16) + timedelta(days=rng.randrange(28))
            start = datetime.combine(day, time(8), tzinfo=london) + timedelta(
                minutes=5 * rng.randrange(12 * 12)
            )
            busy.append(
                Busy(start.astimezone(UTC), start + timedelta(minutes=rng.randrange(5, 90)))
            )
        off_day = date(2026, 3, 16) + timedelta(days=rng.randrange(28))
        off_start = datetime.combine(off_day, time(rng.randrange(8, 16)), tzinfo=london)
        schedules.append(
            PractitionerSchedule(
                pid,
                weekdays((time(9), time(12, 30)), (time(13, 30), time(18))),
                time_off=(TimeOff(off_start, off_start + timedelta(hours=rng.randrange(1, 30))),),
                busy=tuple(busy),
            )
        )
    return schedules


def _reference(
    treatment: TreatmentSpec,
    schedules: list[PractitionerSchedule],
    clinic: ClinicRules,
    first_day: date,
    last_day: date,
    now: datetime,
    step: timedelta,
) -> list[FreeStart]:
    """Slot by slot, interval by interval: obviously right, far too slow for production."""
    zone = clinic.zone
    out = []
    for order, schedule in enumerate(schedules):
        day = first_day
        while day <= last_day:
            for starts, ends in schedule.ranges_on(day):
                opening = datetime.combine(day, starts, tzinfo=zone)
                closing = datetime.combine(day, ends, tzinfo=zone)
                wall = datetime.combine(day, starts)
                while wall < datetime.combine(day, ends):
                    start = wall.replace(tzinfo=zone)
                    real = start.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall
                    lo = start - treatment.buffer_before
                    hi = start + treatment.duration + treatment.buffer_after
                    if (
                        real
                        and opening <= start
                        and start + treatment.duration <= closing
                        and now + clinic.min_notice <= start <= now + clinic.horizon
                        and not any(
                            b.start < hi and lo < b.end
                            for b in (*schedule.busy, *schedule.time_off)
                        )
                    ):
                        out.append((start.astimezone(UTC), order, schedule.practitioner_id))
                    wall += step
            day += timedelta(days=1)
    out.sort()
    return [FreeStart(start, pid) for start, _, pid in out]


def test_matches_slow_reference_across_dst_on_random_data() -> None:
    schedules = _random_schedules(seed=42, count=4, busy_each=120)
    treatment = TreatmentSpec(timedelta(minutes=45), timedelta(minutes=5), timedelta(minutes=10))
    clinic = rules(notice=timedelta(hours=3), horizon=timedelta(days=25))
    now = utc(2026, 3, 16, 10, 7)
    args = (treatment, schedules, clinic, date(2026, 3, 14), date(2026, 4, 14), now)

    for step in (timedelta(minutes=15), timedelta(minutes=10)):
        fast = free_starts(*args[:3], first_day=args[3], last_day=args[4], now=now, step=step)
        slow = _reference(*args, step=step)
        assert fast == slow
        assert 100 < len(fast) < 10_000  # the data leaves a real mix of free and taken slots
