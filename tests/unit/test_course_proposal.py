"""Proposing a whole treatment course: gaps, preferences, DST, collisions and failures."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.scheduling.availability import (
    Busy,
    ClinicRules,
    PractitionerSchedule,
    TimeOff,
    TreatmentSpec,
    WorkingRange,
)
from shared.scheduling.course import (
    DIFFERENT_PRACTITIONER,
    DIFFERENT_TIME,
    GAP_NOT_TARGET,
    CourseProposal,
    GapRule,
    propose_course,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
MESOTHERAPY = TreatmentSpec(timedelta(minutes=30), buffer_after=timedelta(minutes=5))
NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)
WEEKLY = GapRule(target_days=7, min_days=6, max_days=10)
FORTNIGHTLY = GapRule(target_days=14, min_days=12, max_days=21)


def mesotherapy_gaps() -> dict[int, GapRule]:
    # clinical-defaults.md: "8: four weekly, then four fortnightly", gaps "7 d, then 14 d".
    # Read as sessions 1-4 a week apart and sessions 5-8 a fortnight apart, so the gap *before*
    # positions 2, 3, 4 is weekly and before 5, 6, 7, 8 fortnightly: 3 + 4 = 7 gaps for 8
    # sessions. (Four weekly *gaps* would need nine sessions.) The switch to the fortnightly
    # rhythm starts with the gap before session 5.
    return {position: WEEKLY if position <= 4 else FORTNIGHTLY for position in range(2, 9)}


def rules(zone: ZoneInfo = LONDON, horizon: timedelta = timedelta(days=180)) -> ClinicRules:
    return ClinicRules(time_zone=str(zone), min_notice=timedelta(hours=2), horizon=horizon)


def weekdays(starts: time = time(9), ends: time = time(17)) -> tuple[WorkingRange, ...]:
    return tuple(WorkingRange(day, starts, ends) for day in range(1, 6))


def at(zone: ZoneInfo, day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=zone)


def propose(
    schedules: list[PractitionerSchedule],
    first_start: datetime,
    *,
    gaps: dict[int, GapRule] | None = None,
    sessions: int = 8,
    clinic: ClinicRules | None = None,
    preferred: int = 1,
) -> CourseProposal:
    return propose_course(
        MESOTHERAPY,
        gaps or mesotherapy_gaps(),
        sessions,
        first_start,
        preferred,
        schedules,
        clinic or rules(),
        now=NOW,
    )


def test_mesotherapy_course_keeps_ten_o_clock_across_spring_dst_in_london() -> None:
    schedules = [PractitionerSchedule(1, weekdays()), PractitionerSchedule(2, weekdays())]

    proposal = propose(schedules, at(LONDON, date(2026, 3, 2), 10))

    assert proposal.complete and proposal.failed_position is None and proposal.failure is None
    assert [s.position for s in proposal.sessions] == list(range(1, 9))
    assert [s.local_date for s in proposal.sessions] == [
        date(2026, 3, 2),
        date(2026, 3, 9),
        date(2026, 3, 16),
        date(2026, 3, 23),
        date(2026, 4, 6),  # British Summer Time from 29 March
        date(2026, 4, 20),
        date(2026, 5, 4),
        date(2026, 5, 18),
    ]
    assert [s.gap_days for s in proposal.sessions] == [None, 7, 7, 7, 14, 14, 14, 14]
    assert {s.local_time for s in proposal.sessions} == {time(10)}
    # Same wall clock, different instant: 10:00 GMT then 10:00 BST (09:00 UTC).
    assert [s.start.hour for s in proposal.sessions] == [10, 10, 10, 10, 9, 9, 9, 9]
    assert all(s.start.tzinfo is UTC for s in proposal.sessions)
    assert all(s.end - s.start == timedelta(minutes=30) for s in proposal.sessions)
    assert {s.practitioner_id for s in proposal.sessions} == {1}
    assert all(s.flags == () and s.reasons == () for s in proposal.sessions)


def test_mesotherapy_course_keeps_ten_o_clock_across_autumn_dst_in_new_york() -> None:
    schedules = [PractitionerSchedule(1, weekdays())]

    proposal = propose(
        schedules, at(NEW_YORK, date(2026, 10, 12), 10), clinic=rules(NEW_YORK, timedelta(days=400))
    )

    assert proposal.complete
    assert [s.local_date for s in proposal.sessions] == [
        date(2026, 10, 12),
        date(2026, 10, 19),
        date(2026, 10, 26),
        date(2026, 11, 2),  # Eastern Standard Time from 1 November
        date(2026, 11, 16),
        date(2026, 11, 30),
        date(2026, 12, 14),
        date(2026, 12, 28),
    ]
    assert {s.local_time for s in proposal.sessions} == {time(10)}
    assert [s.start.hour for s in proposal.sessions] == [14, 14, 14, 15, 15, 15, 15, 15]


def test_week_of_time_off_moves_a_later_session_within_its_window_and_says_why() -> None:
    holiday = TimeOff(at(LONDON, date(2026, 4, 6), 0), at(LONDON, date(2026, 4, 11), 0))
    schedules = [
        PractitionerSchedule(1, weekdays(), time_off=(holiday,)),
        PractitionerSchedule(2, weekdays()),
    ]

    proposal = propose(schedules, at(LONDON, date(2026, 3, 2), 10))

    assert proposal.complete
    fifth = proposal.sessions[4]
    # Target 6 April is in the holiday; every nearer day in 4..13 April is either off or a
    # weekend, so the same practitioner at the same time on 13 April (gap 21) wins over
    # practitioner 2, who was free on the target day.
    assert (fifth.local_date, fifth.local_time, fifth.practitioner_id) == (
        date(2026, 4, 13),
        time(10),
        1,
    )
    assert fifth.gap_days == 21
    assert fifth.flags == (GAP_NOT_TARGET,)
    assert fifth.reasons[0] == (
        "target 2026-04-06 10:00 with practitioner 1 not available: "
        "practitioner 1 has time off from 2026-04-06 00:00 to 2026-04-11 00:00"
    )
    assert "gap of 21 days instead of the target 14 (allowed 12–21)" in fifth.reasons
    # Later gaps count from the date actually chosen.
    assert [s.local_date for s in proposal.sessions[5:]] == [
        date(2026, 4, 27),
        date(2026, 5, 11),
        date(2026, 5, 25),
    ]
    assert all(s.flags == () for s in proposal.sessions if s.position != 5)


def test_busy_target_time_keeps_the_day_and_takes_the_nearest_time() -> None:
    # Works Mondays only, so the 6-10 day window holds a single working day.
    mondays = (WorkingRange(1, time(9), time(17)),)
    booked = Busy(at(LONDON, date(2026, 3, 16), 10, 5), at(LONDON, date(2026, 3, 16), 10, 30))
    schedules = [PractitionerSchedule(1, mondays, busy=(booked,))]

    proposal = propose(schedules, at(LONDON, date(2026, 3, 2), 10), sessions=4)

    assert proposal.complete
    third = proposal.sessions[2]
    # 09:30 (its 5-minute buffer ends exactly at 10:05) and 10:30 are both 30 minutes away from
    # the preferred 10:00; the earlier one wins the tie.
    assert (third.local_date, third.local_time, third.gap_days) == (
        date(2026, 3, 16),
        time(9, 30),
        7,
    )
    assert third.flags == (DIFFERENT_TIME,)
    assert "starts at 09:30 instead of 10:00 local" in third.reasons
    assert "another booking or hold from 2026-03-16 10:05" in third.reasons[0]
    # The next session goes back to the preferred time.
    assert proposal.sessions[3].local_time == time(10)


def test_same_time_on_a_nearby_day_beats_another_time_on_the_target_day() -> None:
    every_day = tuple(WorkingRange(day, time(9), time(17)) for day in range(1, 8))

    def third_session(*busy_days: date) -> tuple[date, time, int | None, tuple[str, ...]]:
        busy = tuple(Busy(at(LONDON, d, 10), at(LONDON, d, 10, 30)) for d in busy_days)
        schedules = [PractitionerSchedule(1, every_day, busy=busy)]
        third = propose(schedules, at(LONDON, date(2026, 3, 2), 10), sessions=3).sessions[2]
        return third.local_date, third.local_time, third.gap_days, third.flags

    # Target Monday 16 March at 10:00 is taken, though 10:45 that day is free. Days are tried
    # target, +1, -1, +2, ...: Tuesday first, then Sunday, then Wednesday.
    assert third_session(date(2026, 3, 16)) == (date(2026, 3, 17), time(10), 8, (GAP_NOT_TARGET,))
    assert third_session(date(2026, 3, 16), date(2026, 3, 17)) == (
        date(2026, 3, 15),
        time(10),
        6,
        (GAP_NOT_TARGET,),
    )
    assert third_session(date(2026, 3, 15), date(2026, 3, 16), date(2026, 3, 17)) == (
        date(2026, 3, 18),
        time(10),
        9,
        (GAP_NOT_TARGET,),
    )


def test_other_practitioner_only_when_preferred_has_nothing_in_the_window() -> None:
    away = TimeOff(at(LONDON, date(2026, 3, 14), 0), at(LONDON, date(2026, 3, 21), 0))
    schedules = [
        PractitionerSchedule(1, weekdays(), time_off=(away,)),
        PractitionerSchedule(2, weekdays()),
    ]

    proposal = propose(schedules, at(LONDON, date(2026, 3, 2), 10), sessions=4)

    assert proposal.complete
    third = proposal.sessions[2]
    assert (third.practitioner_id, third.local_date, third.local_time) == (
        2,
        date(2026, 3, 16),
        time(10),
    )
    assert third.flags == (DIFFERENT_PRACTITIONER,)
    assert any("practitioner 2 instead of 1" in reason for reason in third.reasons)
    # Preference is for the chosen practitioner, not whoever did the previous session.
    assert proposal.sessions[3].practitioner_id == 1
    assert proposal.sessions[3].local_date == date(2026, 3, 23)


def test_course_that_cannot_be_placed_names_the_failing_position() -> None:
    # Both practitioners are away for the whole window of session 4 (22-26 March).
    away = TimeOff(at(LONDON, date(2026, 3, 21), 0), at(LONDON, date(2026, 3, 27), 0))
    schedules = [
        PractitionerSchedule(1, weekdays(), time_off=(away,)),
        PractitionerSchedule(2, weekdays(), time_off=(away,)),
    ]

    proposal = propose(schedules, at(LONDON, date(2026, 3, 2), 10))

    assert not proposal.complete
    assert proposal.failed_position == 4
    assert [s.local_date for s in proposal.sessions] == [
        date(2026, 3, 2),
        date(2026, 3, 9),
        date(2026, 3, 16),
    ]
    assert proposal.failure == (
        "session 4: no free slot between 2026-03-22 and 2026-03-26 "
        "(6–10 days after session 3 on 2026-03-16)"
    )


def test_course_beyond_the_booking_horizon_fails_and_says_so() -> None:
    schedules = [PractitionerSchedule(1, weekdays())]

    proposal = propose(
        schedules, at(LONDON, date(2026, 3, 2), 10), clinic=rules(horizon=timedelta(days=30))
    )

    assert not proposal.complete
    assert proposal.failed_position == 4
    assert len(proposal.sessions) == 3
    assert proposal.failure is not None
    assert proposal.failure.startswith("session 4: no free slot between 2026-03-22 and 2026-03-26")
    assert proposal.failure.endswith("bookings open only until 2026-03-22")


def test_first_session_is_checked_too() -> None:
    schedules = [PractitionerSchedule(1, weekdays())]

    outside = propose(schedules, at(LONDON, date(2026, 3, 2), 8))
    too_soon = propose(schedules, NOW + timedelta(hours=1))

    assert (outside.complete, outside.failed_position, outside.sessions) == (False, 1, ())
    assert outside.failure == (
        "session 1 at 2026-03-02 08:00: "
        "outside practitioner 1's working hours on 2026-03-02 (09:00–17:00)"
    )
    assert too_soon.failed_position == 1
    assert "minimum notice" in str(too_soon.failure)


def test_earlier_proposed_sessions_block_later_ones() -> None:
    # A same-day protocol (zero-day gap) makes session 2 compete with session 1 itself.
    same_day = {2: GapRule(target_days=0, min_days=0, max_days=0)}
    schedules = [PractitionerSchedule(1, weekdays())]

    proposal = propose(schedules, at(LONDON, date(2026, 3, 2), 10), gaps=same_day, sessions=2)

    assert proposal.complete
    second = proposal.sessions[1]
    # Session 1 holds 10:00-10:35 (5 minutes' buffer after), and a course never runs backwards,
    # so 09:30 is out too: the first free start is 10:45.
    assert (second.local_date, second.local_time) == (date(2026, 3, 2), time(10, 45))
    assert second.flags == (DIFFERENT_TIME,)
    assert "another booking or hold from 2026-03-02 10:00 to 2026-03-02 10:35" in second.reasons[0]


def test_invalid_course_inputs_are_rejected() -> None:
    schedules = [PractitionerSchedule(1, weekdays())]
    first = at(LONDON, date(2026, 3, 2), 10)

    with pytest.raises(ValueError, match=r"position\(s\) \[5, 6, 7, 8\]"):
        propose(schedules, first, gaps={2: WEEKLY, 3: WEEKLY, 4: WEEKLY})
    with pytest.raises(ValueError, match="preferred practitioner 9"):
        propose(schedules, first, preferred=9)
    with pytest.raises(ValueError, match="min_days <= target_days"):
        GapRule(target_days=5, min_days=6, max_days=10)
