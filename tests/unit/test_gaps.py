"""Course spacing: gaps in local calendar days, the three rules, and shifting later sessions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.scheduling.availability import (
    ClinicRules,
    PractitionerSchedule,
    TimeOff,
    TreatmentSpec,
    WorkingRange,
)
from shared.scheduling.course import GapRule
from shared.scheduling.gaps import (
    BELOW_MINIMUM,
    NEEDS_CLINICIAN_REVIEW,
    PAST_SOFT_MAXIMUM,
    Session,
    check_move,
    course_gaps,
    gap_days,
    measure,
    shift_later_sessions,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
WEEKLY = GapRule(target_days=7, min_days=6, max_days=10)
RULES = {position: WEEKLY for position in range(2, 9)}
SPEC = TreatmentSpec(timedelta(minutes=30), buffer_after=timedelta(minutes=10))
NOW = datetime(2026, 3, 1, 8, tzinfo=UTC)
CLINIC = ClinicRules("Europe/London", min_notice=timedelta(hours=2), horizon=timedelta(days=365))


def at(day: date, hour: int = 10, minute: int = 0, zone: ZoneInfo = LONDON) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


def session(ident: int, position: int, start: datetime, status: str = "booked") -> Session:
    return Session(ident, position, start, practitioner_id=1, status=status)


def weekly_course(first: date, count: int = 4) -> list[Session]:
    """Sessions 1..count a week apart at 10:00 local, ids 101, 102, ..."""
    return [
        session(100 + p, p, at(first + timedelta(days=7 * (p - 1)))) for p in range(1, count + 1)
    ]


def every_day(practitioner_id: int = 1, **kwargs: object) -> PractitionerSchedule:
    working = tuple(WorkingRange(day, time(9), time(17)) for day in range(1, 8))
    return PractitionerSchedule(practitioner_id, working, **kwargs)  # type: ignore[arg-type]


# -- counting and the three rules ------------------------------------------------------------------


def test_gaps_are_local_calendar_days_across_the_clock_change() -> None:
    # 27 March 10:00 GMT to 3 April 10:00 BST: 6 days 23 hours of real time, 7 calendar days.
    before, after = at(date(2026, 3, 27)), at(date(2026, 4, 3))
    assert after - before == timedelta(days=6, hours=23)
    assert gap_days(before, after, LONDON) == 7
    # Late evening in New York is already the next day in UTC: the zone decides.
    evening = datetime(2026, 3, 10, 22, tzinfo=NEW_YORK)
    assert gap_days(evening, evening + timedelta(hours=3), NEW_YORK) == 1
    assert gap_days(evening, evening + timedelta(hours=1), NEW_YORK) == 0


@pytest.mark.parametrize(
    ("days", "problems"),
    [
        (5, (BELOW_MINIMUM,)),
        (6, ()),
        (7, ()),
        (10, ()),
        (11, (PAST_SOFT_MAXIMUM,)),
        (14, (PAST_SOFT_MAXIMUM,)),
        (15, (PAST_SOFT_MAXIMUM, NEEDS_CLINICIAN_REVIEW)),
        (-1, (BELOW_MINIMUM,)),
    ],
)
def test_a_gap_is_checked_against_minimum_soft_maximum_and_twice_the_target(
    days: int, problems: tuple[str, ...]
) -> None:
    first = date(2026, 3, 2)
    gap = measure(
        session(1, 1, at(first)), session(2, 2, at(first + timedelta(days=days))), WEEKLY, LONDON
    )
    assert gap.days == days
    assert gap.problems == problems
    assert len(gap.messages) == len(problems)


def test_review_without_passing_the_soft_maximum_when_the_maximum_is_generous() -> None:
    rule = GapRule(target_days=7, min_days=6, max_days=30)
    first = date(2026, 3, 2)
    gap = measure(
        session(1, 1, at(first)), session(2, 2, at(first + timedelta(days=15))), rule, LONDON
    )
    assert gap.problems == (NEEDS_CLINICIAN_REVIEW,)
    assert "session 2 needs clinician review" in gap.messages[0]


def test_a_gap_without_a_rule_is_measured_but_not_judged() -> None:
    first = date(2026, 3, 2)
    gap = measure(
        session(1, 1, at(first)), session(2, 2, at(first + timedelta(days=1))), None, LONDON
    )
    assert gap.days == 1 and gap.problems == ()


def test_cancelled_and_missed_sessions_do_not_count() -> None:
    course = weekly_course(date(2026, 3, 2))
    course[1] = session(102, 2, course[1].start, status="cancelled")
    course[2] = session(103, 3, course[2].start, status="no_show")
    found = course_gaps(course, RULES, LONDON)
    assert [(g.earlier_position, g.later_position, g.days) for g in found] == [(1, 4, 21)]
    assert found[0].rule == WEEKLY  # the later session's rule
    assert found[0].problems == (PAST_SOFT_MAXIMUM, NEEDS_CLINICIAN_REVIEW)


# -- checking a move -------------------------------------------------------------------------------


def test_check_move_looks_both_ways() -> None:
    course = weekly_course(date(2026, 3, 2))
    # Session 2 from 9 March to 12 March: 10 days after session 1, 4 before session 3.
    check = check_move(course, 102, at(date(2026, 3, 12)), RULES, LONDON)
    assert check.before is not None and check.before.days == 10 and check.before.problems == ()
    assert check.after is not None and check.after.days == 4
    assert check.refusals and "below the hard minimum of 6 days" in check.refusals[0]
    assert check.warnings == [] and check.review_notes == []


def test_moving_past_the_next_session_is_a_negative_gap_not_a_reordering() -> None:
    course = weekly_course(date(2026, 3, 2))
    check = check_move(course, 102, at(date(2026, 3, 20)), RULES, LONDON)
    assert check.after is not None and check.after.later_position == 3
    assert check.after.days == -4 and check.after.below_minimum


def test_first_and_last_sessions_have_one_neighbour() -> None:
    course = weekly_course(date(2026, 3, 2))
    first = check_move(course, 101, at(date(2026, 3, 3)), RULES, LONDON)
    assert first.before is None and first.after is not None and first.after.days == 6
    last = check_move(course, 104, at(date(2026, 3, 28)), RULES, LONDON)
    assert last.after is None and last.before is not None and last.before.days == 12
    assert last.warnings and "past the soft maximum of 10 days" in last.warnings[0]


def test_check_move_needs_a_session_of_the_course() -> None:
    with pytest.raises(ValueError, match="not one of the sessions"):
        check_move(weekly_course(date(2026, 3, 2)), 999, at(date(2026, 3, 3)), RULES, LONDON)


# -- shifting later sessions -----------------------------------------------------------------------


def shift(
    course: list[Session],
    moved_id: int,
    new_start: datetime,
    schedules: list[PractitionerSchedule] | None = None,
):  # type: ignore[no-untyped-def]
    return shift_later_sessions(
        SPEC,
        RULES,
        course,
        moved_id,
        new_start,
        1,
        schedules or [every_day()],
        CLINIC,
        now=NOW,
    )


def test_a_later_move_shifts_the_sessions_it_squeezes_and_stops_at_the_first_that_fits() -> None:
    course = weekly_course(date(2026, 3, 2), count=5)
    # Session 2 moves from 9 to 13 March: session 3 (16 March) would be 3 days after it.
    plan = shift(course, 102, at(date(2026, 3, 13)))
    assert plan.complete
    moved = {s.position: s for s in plan.shifts}
    # Session 3 goes to the target, 7 days on, at its own 10:00 local.
    assert moved[3].to_start == at(date(2026, 3, 20))
    assert moved[3].gap_days == 7 and "was 3 days after session 2" in moved[3].reason
    # Session 4 (23 March) is now 3 days after session 3 and moves too; session 5 (30 March)
    # is 3 days after 27 March... and moves as well: the cascade runs to the end.
    assert moved[4].to_start == at(date(2026, 3, 27))
    assert moved[5].to_start == at(date(2026, 4, 3))  # 10:00 BST: the local time is kept


def test_the_walk_stops_when_a_later_session_still_fits() -> None:
    course = weekly_course(date(2026, 3, 2), count=4)
    # Session 2 one day later (10 March): session 3 is 6 days after it, still allowed.
    plan = shift(course, 102, at(date(2026, 3, 10)))
    assert plan.complete and plan.shifts == ()


def test_an_earlier_move_pulls_a_session_whose_gap_became_too_long() -> None:
    course = weekly_course(date(2026, 3, 2), count=3)
    # Session 2 from 9 to 3 March: session 3 (16 March) would be 13 days on, past the maximum.
    plan = shift(course, 102, at(date(2026, 3, 3)))
    assert plan.complete
    assert [(s.position, s.to_start) for s in plan.shifts] == [(3, at(date(2026, 3, 10)))]


def test_the_shift_avoids_time_off_and_prefers_the_nearest_day_to_the_target() -> None:
    course = weekly_course(date(2026, 3, 2), count=3)
    away = TimeOff(at(date(2026, 3, 20), 0), at(date(2026, 3, 21), 0))
    plan = shift(course, 102, at(date(2026, 3, 13)), [every_day(time_off=(away,))])
    assert plan.complete
    # Target 20 March is taken off; the next preference is the day after.
    assert plan.shifts[0].to_start == at(date(2026, 3, 21))
    assert plan.shifts[0].gap_days == 8


def test_sessions_not_moved_yet_still_block_their_slots() -> None:
    course = weekly_course(date(2026, 3, 2), count=3)
    course.append(session(104, 4, at(date(2026, 3, 20))))
    # Session 2 to 13 March: session 3's target, 20 March 10:00, is where session 4 still is,
    # so session 3 keeps its 10:00 on the next best day; session 4 then follows a week later.
    plan = shift(course, 102, at(date(2026, 3, 13)))
    assert [(s.position, s.to_start) for s in plan.shifts] == [
        (3, at(date(2026, 3, 21))),
        (4, at(date(2026, 3, 28))),
    ]


def test_a_session_that_cannot_move_makes_the_plan_incomplete() -> None:
    course = weekly_course(date(2026, 3, 2), count=3)
    course[2] = session(103, 3, course[2].start, status="checked_in")
    plan = shift(course, 102, at(date(2026, 3, 13)))
    assert not plan.complete and plan.shifts == ()
    assert plan.failure == "session 3 is checked_in and cannot be moved to keep the course valid"


def test_no_free_slot_in_the_window_makes_the_plan_incomplete_and_says_where() -> None:
    course = weekly_course(date(2026, 3, 2), count=3)
    away = TimeOff(at(date(2026, 3, 18), 0), at(date(2026, 3, 25), 0))
    plan = shift(course, 102, at(date(2026, 3, 12)), [every_day(time_off=(away,))])
    assert not plan.complete
    assert plan.failure is not None
    assert plan.failure.startswith("session 3: no free slot between 2026-03-18 and 2026-03-22")


def test_a_busy_own_practitioner_hands_the_session_to_another() -> None:
    course = weekly_course(date(2026, 3, 2), count=3)
    away = TimeOff(at(date(2026, 3, 10), 0), at(date(2026, 3, 30), 0))
    plan = shift(course, 102, at(date(2026, 3, 13)), [every_day(1, time_off=(away,)), every_day(2)])
    assert plan.complete
    assert plan.shifts[0].to_practitioner_id == 2
    assert plan.shifts[0].to_start == at(date(2026, 3, 20))
