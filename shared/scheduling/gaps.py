"""The spacing of a treatment course's sessions: is a session's start acceptable next to the
sessions before and after it, and where should later sessions go when a move breaks their gap?

Pure functions (no database, no clock), like the availability engine they build on. Gaps are
counted in local calendar days in the clinic's zone, so a session at 10:00 on a Friday in GMT and
one at 10:00 the next Friday in BST are exactly 7 days apart, whatever the UTC difference.

The rules (clinical-defaults.md), for the gap before session k under `GapRule` k:
* below the hard minimum: refused unless a clinician overrides it with a logged reason;
* past the soft maximum: allowed, but staff are warned (the patient should be offered a new time);
* beyond twice the target: the later session needs clinician review before it goes ahead.

Which sessions count: those that take or took place (held, booked, confirmed, checked in,
completed). A cancelled or missed session leaves no mark on the course's timing, so the gap is
measured between its neighbours, under the rule of the later session's position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.scheduling.availability import (
    DEFAULT_STEP,
    Busy,
    ClinicRules,
    FreeStart,
    PractitionerSchedule,
    TreatmentSpec,
    free_starts,
)
from shared.scheduling.course import GapRule

# Sessions that occupy a place in the course's timeline.
COUNTED_STATUSES = frozenset({"held", "booked", "confirmed", "checked_in", "completed"})
# Sessions staff may still move (a checked-in or finished session is history).
MOVABLE_STATUSES = frozenset({"booked", "confirmed"})

# Stable codes for a gap's problems (the API shows them).
BELOW_MINIMUM = "below_minimum"
PAST_SOFT_MAXIMUM = "past_soft_maximum"
NEEDS_CLINICIAN_REVIEW = "needs_clinician_review"


@dataclass(frozen=True)
class Session:
    """One appointment of a series, as far as spacing is concerned."""

    appointment_id: int
    position: int | None
    start: datetime  # aware
    practitioner_id: int
    status: str


@dataclass(frozen=True)
class Gap:
    """The gap between two consecutive counted sessions, and what is wrong with it."""

    earlier_id: int
    later_id: int
    earlier_position: int | None
    later_position: int | None
    days: int
    rule: GapRule | None  # None: the later position has no rule (nothing to check)
    problems: tuple[str, ...]
    messages: tuple[str, ...]  # one sentence per problem

    @property
    def below_minimum(self) -> bool:
        return BELOW_MINIMUM in self.problems

    @property
    def past_soft_maximum(self) -> bool:
        return PAST_SOFT_MAXIMUM in self.problems

    @property
    def needs_review(self) -> bool:
        return NEEDS_CLINICIAN_REVIEW in self.problems

    @property
    def outside_window(self) -> bool:
        """Below the minimum or past the soft maximum: the later session should move."""
        return self.below_minimum or self.past_soft_maximum


@dataclass(frozen=True)
class MoveCheck:
    """The gaps on either side of one session at a (possibly new) start."""

    before: Gap | None
    after: Gap | None

    @property
    def gaps(self) -> tuple[Gap, ...]:
        return tuple(gap for gap in (self.before, self.after) if gap is not None)

    @property
    def refusals(self) -> list[str]:
        return messages(self.gaps, BELOW_MINIMUM)

    @property
    def warnings(self) -> list[str]:
        return messages(self.gaps, PAST_SOFT_MAXIMUM)

    @property
    def review_notes(self) -> list[str]:
        return messages(self.gaps, NEEDS_CLINICIAN_REVIEW)


def messages(gaps: Sequence[Gap], problem: str) -> list[str]:
    """The sentences of every `problem` (a code above) among `gaps`."""
    return [
        message
        for gap in gaps
        for code, message in zip(gap.problems, gap.messages, strict=True)
        if code == problem
    ]


def gap_days(earlier: datetime, later: datetime, zone: ZoneInfo) -> int:
    """Local calendar days from one start to another (negative if `later` is earlier)."""
    return (later.astimezone(zone).date() - earlier.astimezone(zone).date()).days


def _name(position: int | None) -> str:
    return f"session {position}" if position is not None else "the session"


def measure(earlier: Session, later: Session, rule: GapRule | None, zone: ZoneInfo) -> Gap:
    days = gap_days(earlier.start, later.start, zone)
    problems: list[str] = []
    messages: list[str] = []
    if rule is not None:
        what = (
            f"{_name(later.position)} on {later.start.astimezone(zone):%Y-%m-%d} is {days} days "
            f"after {_name(earlier.position)} on {earlier.start.astimezone(zone):%Y-%m-%d}"
        )
        if days < rule.min_days:
            problems.append(BELOW_MINIMUM)
            messages.append(f"{what}: below the hard minimum of {rule.min_days} days")
        elif days > rule.max_days:
            problems.append(PAST_SOFT_MAXIMUM)
            messages.append(
                f"{what}: past the soft maximum of {rule.max_days} days; offer the patient "
                "an earlier time"
            )
        if days > 2 * rule.target_days:
            problems.append(NEEDS_CLINICIAN_REVIEW)
            messages.append(
                f"{what}: more than twice the target of {rule.target_days} days, so "
                f"{_name(later.position)} needs clinician review before it goes ahead"
            )
    return Gap(
        earlier_id=earlier.appointment_id,
        later_id=later.appointment_id,
        earlier_position=earlier.position,
        later_position=later.position,
        days=days,
        rule=rule,
        problems=tuple(problems),
        messages=tuple(messages),
    )


def timeline(sessions: Sequence[Session]) -> list[Session]:
    """The counted sessions in course order: by position, then start (unnumbered ones last)."""
    counted = [s for s in sessions if s.status in COUNTED_STATUSES]
    return sorted(
        counted, key=lambda s: (s.position is None, s.position or 0, s.start, s.appointment_id)
    )


def course_gaps(
    sessions: Sequence[Session], rules: Mapping[int, GapRule], zone: ZoneInfo
) -> list[Gap]:
    """Every gap between consecutive counted sessions of a series."""
    ordered = timeline(sessions)
    return [
        measure(earlier, later, _rule_for(later, rules), zone)
        for earlier, later in zip(ordered, ordered[1:], strict=False)
    ]


def _rule_for(session: Session, rules: Mapping[int, GapRule]) -> GapRule | None:
    return rules.get(session.position) if session.position is not None else None


def _moved(sessions: Sequence[Session], appointment_id: int, start: datetime) -> list[Session]:
    if not any(s.appointment_id == appointment_id for s in sessions):
        raise ValueError(f"appointment {appointment_id} is not one of the sessions")
    return [replace(s, start=start) if s.appointment_id == appointment_id else s for s in sessions]


def check_move(
    sessions: Sequence[Session],
    appointment_id: int,
    new_start: datetime,
    rules: Mapping[int, GapRule],
    zone: ZoneInfo,
) -> MoveCheck:
    """The gaps before and after session `appointment_id` if it started at `new_start`.

    The neighbours are found by course order (position), not by date, so moving session 3 past
    session 4 shows up as a negative, below-minimum gap rather than a silent reordering.
    """
    ordered = timeline(_moved(sessions, appointment_id, new_start))
    index = next((i for i, s in enumerate(ordered) if s.appointment_id == appointment_id), None)
    if index is None:  # a cancelled session being looked at: nothing to space
        return MoveCheck(None, None)
    session = ordered[index]
    before = after = None
    if index > 0:
        before = measure(ordered[index - 1], session, _rule_for(session, rules), zone)
    if index + 1 < len(ordered):
        later = ordered[index + 1]
        after = measure(session, later, _rule_for(later, rules), zone)
    return MoveCheck(before, after)


# -- shifting later sessions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    """A proposed new time for one later session."""

    appointment_id: int
    position: int | None
    from_start: datetime
    from_practitioner_id: int
    to_start: datetime  # aware, UTC
    to_practitioner_id: int
    gap_days: int  # to the session before it, after every move
    reason: str


@dataclass(frozen=True)
class ShiftPlan:
    shifts: tuple[Shift, ...]  # in course order; partial when not complete
    complete: bool
    failure: str | None = None


def later_sessions(sessions: Sequence[Session], appointment_id: int) -> list[Session]:
    """The counted sessions after `appointment_id` in course order (what a shift may move)."""
    ordered = timeline(sessions)
    ids = [s.appointment_id for s in ordered]
    if appointment_id not in ids:
        return []
    return ordered[ids.index(appointment_id) + 1 :]


def shift_later_sessions(
    treatment: TreatmentSpec,
    rules: Mapping[int, GapRule],
    sessions: Sequence[Session],
    moved_id: int,
    new_start: datetime,
    new_practitioner_id: int,
    schedules: Sequence[PractitionerSchedule],
    clinic_rules: ClinicRules,
    *,
    now: datetime,
    step: timedelta = DEFAULT_STEP,
) -> ShiftPlan:
    """New times for the sessions after `moved_id` so that every gap is back in its window.

    `schedules` must leave out the busy time of the moved session and of every later session of
    the series (load them with those ids excluded): this function puts back the moved session's
    new slot, each shifted session's new slot and the old slots of the sessions not (yet) moved.

    Minimal disruption: walking forward from the moved session, a later session moves only if
    its gap to the session before it is outside [min, max]; the first one that still fits ends
    the walk, since nothing after it changes. A moved session prefers its own practitioner, its
    own local time and the target gap, in that order (as the course proposal does). A session
    that cannot move (checked in, completed) or cannot be placed ends the plan incomplete, with
    a sentence saying which and why.
    """
    zone = clinic_rules.zone
    by_id = {schedule.practitioner_id: schedule for schedule in schedules}
    order = {pid: rank for rank, pid in enumerate(by_id)}
    previous = Session(
        moved_id, _position_of(sessions, moved_id), new_start, new_practitioner_id, "booked"
    )
    placed: list[Busy] = [treatment.occupied(new_start)]
    placed_by: list[int] = [new_practitioner_id]
    remaining = later_sessions(sessions, moved_id)
    shifts: list[Shift] = []
    for index, session in enumerate(remaining):
        rule = _rule_for(session, rules)
        if rule is None:
            break
        days = gap_days(previous.start, session.start, zone)
        fits = rule.min_days <= days <= rule.max_days
        if fits and session.start >= previous.start + treatment.duration:
            break
        who = _name(session.position)
        if session.status not in MOVABLE_STATUSES:
            failure = f"{who} is {session.status} and cannot be moved to keep the course valid"
            return ShiftPlan(tuple(shifts), False, failure)
        # Sessions further on have not moved (yet): their current slots stay taken.
        still_there = remaining[index + 1 :]
        busy = [
            *zip(placed_by, placed, strict=True),
            *((s.practitioner_id, treatment.occupied(s.start)) for s in still_there),
        ]
        current = _with_busy(by_id, busy)
        chosen = _place(
            session, previous, rule, treatment, current, clinic_rules, order, now=now, step=step
        )
        if chosen is None:
            first = previous.start.astimezone(zone).date() + timedelta(days=rule.min_days)
            last = previous.start.astimezone(zone).date() + timedelta(days=rule.max_days)
            failure = (
                f"{who}: no free slot between {first} and {last} "
                f"({rule.min_days}–{rule.max_days} days after {_name(previous.position)})"
            )
            return ShiftPlan(tuple(shifts), False, failure)
        new_gap = gap_days(previous.start, chosen.start, zone)
        shifts.append(
            Shift(
                appointment_id=session.appointment_id,
                position=session.position,
                from_start=session.start,
                from_practitioner_id=session.practitioner_id,
                to_start=chosen.start,
                to_practitioner_id=chosen.practitioner_id,
                gap_days=new_gap,
                reason=f"was {days} days after {_name(previous.position)}, allowed "
                f"{rule.min_days}–{rule.max_days}",
            )
        )
        placed.append(treatment.occupied(chosen.start))
        placed_by.append(chosen.practitioner_id)
        previous = replace(session, start=chosen.start, practitioner_id=chosen.practitioner_id)
    return ShiftPlan(tuple(shifts), True)


def _position_of(sessions: Sequence[Session], appointment_id: int) -> int | None:
    for session in sessions:
        if session.appointment_id == appointment_id:
            return session.position
    raise ValueError(f"appointment {appointment_id} is not one of the sessions")


def _with_busy(
    by_id: Mapping[int, PractitionerSchedule], extra: Sequence[tuple[int, Busy]]
) -> list[PractitionerSchedule]:
    added: dict[int, list[Busy]] = {}
    for practitioner_id, busy in extra:
        added.setdefault(practitioner_id, []).append(busy)
    return [
        replace(schedule, busy=(*schedule.busy, *added[pid])) if pid in added else schedule
        for pid, schedule in by_id.items()
    ]


def _place(
    session: Session,
    previous: Session,
    rule: GapRule,
    treatment: TreatmentSpec,
    schedules: Sequence[PractitionerSchedule],
    clinic_rules: ClinicRules,
    order: Mapping[int, int],
    *,
    now: datetime,
    step: timedelta,
) -> FreeStart | None:
    zone = clinic_rules.zone
    previous_day = previous.start.astimezone(zone).date()
    target_day = previous_day + timedelta(days=rule.target_days)
    wanted_time = session.start.astimezone(zone).time()
    candidates = [
        slot
        for slot in free_starts(
            treatment,
            schedules,
            clinic_rules,
            first_day=previous_day + timedelta(days=rule.min_days),
            last_day=previous_day + timedelta(days=rule.max_days),
            now=now,
            step=step,
        )
        if slot.start >= previous.start + treatment.duration
    ]
    if not candidates:
        return None

    def preference(slot: FreeStart) -> tuple[bool, bool, int, int, int, datetime]:
        local = slot.start.astimezone(zone)
        off_by = abs(_seconds(local.time()) - _seconds(wanted_time))
        return (
            slot.practitioner_id != session.practitioner_id,
            off_by != 0,
            _day_rank(local.date(), target_day),
            off_by,
            order.get(slot.practitioner_id, len(order)),
            slot.start,
        )

    return min(candidates, key=preference)


def _seconds(wall: time) -> int:
    return wall.hour * 3600 + wall.minute * 60 + wall.second


def _day_rank(day: date, target_day: date) -> int:
    """0 for the target day, then +1, -1, +2, -2, ... days: 1, 2, 3, 4, ..."""
    offset = (day - target_day).days
    return 2 * offset - 1 if offset > 0 else -2 * offset


# -- proposing the next session ----------------------------------------------------------------


def propose_next(
    treatment: TreatmentSpec,
    rule: GapRule,
    previous: Session,
    position: int,
    schedules: Sequence[PractitionerSchedule],
    clinic_rules: ClinicRules,
    *,
    now: datetime,
    step: timedelta = DEFAULT_STEP,
) -> FreeStart | None:
    """A free start for session `position` inside its gap window after `previous` (the last
    completed session), preferring `previous`'s practitioner, then its local time of day, then
    the target gap (as a shifted session does); None when the window has no free start left.

    `schedules` are the clinic's practitioners in preference order after the first."""
    order = {schedule.practitioner_id: rank for rank, schedule in enumerate(schedules)}
    wanted = Session(0, position, previous.start, previous.practitioner_id, "booked")
    return _place(
        wanted, previous, rule, treatment, schedules, clinic_rules, order, now=now, step=step
    )
