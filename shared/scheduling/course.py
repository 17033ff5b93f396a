"""Propose every session of a treatment course from its first one.

Pure function on top of `free_starts`: no database, no clock. The proposal is what the booking
form shows and what staff confirm; each session says which preference it could not keep and why,
and a course that cannot be placed names the session that failed instead of silently stopping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.scheduling.availability import (
    DEFAULT_STEP,
    Busy,
    ClinicRules,
    FreeStart,
    PractitionerSchedule,
    TreatmentSpec,
    existing_local_to_utc,
    format_local,
    free_starts,
    why_not_free,
)

# Flag codes on a proposed session (stable strings for the API and the admin UI).
DIFFERENT_PRACTITIONER = "different_practitioner"
DIFFERENT_TIME = "different_time"
GAP_NOT_TARGET = "gap_not_target"


@dataclass(frozen=True)
class GapRule:
    """The gap before one session, in local calendar days, counted from the previous session.

    The database insists on min_days >= 1; zero is accepted here so that same-day protocols can
    be modelled, and the proposal then keeps sessions in order and apart.
    """

    target_days: int
    min_days: int
    max_days: int

    def __post_init__(self) -> None:
        if not 0 <= self.min_days <= self.target_days <= self.max_days:
            raise ValueError(
                "a gap needs 0 <= min_days <= target_days <= max_days, got "
                f"{self.min_days}/{self.target_days}/{self.max_days}"
            )


@dataclass(frozen=True)
class ProposedSession:
    position: int
    practitioner_id: int
    start: datetime  # aware, UTC
    end: datetime  # aware, UTC; the appointment itself, without buffers
    local_date: date
    local_time: time
    gap_days: int | None  # None for the first session
    flags: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()  # human-readable, one per flag plus why the target was missed


@dataclass(frozen=True)
class CourseProposal:
    sessions: tuple[ProposedSession, ...]  # those placed, in order; partial when not complete
    complete: bool
    failed_position: int | None = None
    failure: str | None = None


@dataclass(frozen=True)
class _Preferences:
    practitioner_id: int
    local_time: time
    order: Mapping[int, int]  # practitioner id -> rank among the candidates


def propose_course(
    treatment: TreatmentSpec,
    gaps: Mapping[int, GapRule],
    sessions: int,
    first_start: datetime,
    preferred_practitioner_id: int,
    schedules: Sequence[PractitionerSchedule],
    rules: ClinicRules,
    *,
    now: datetime,
    step: timedelta = DEFAULT_STEP,
) -> CourseProposal:
    """Place sessions 1..`sessions`; `gaps[k]` governs the gap before session k (k = 2..n).

    Session 1 is exactly `first_start` with the preferred practitioner, or the proposal fails
    at position 1. For each later session the candidates are the free starts on local dates
    within [previous date + min_days, previous date + max_days]; the best one is, in order:
    the preferred practitioner before any other, the first session's local time before any other
    time, the day nearest the target (target, +1, -1, +2, -2, ...), the time nearest the first
    session's, then the order of `schedules`.
    """
    if sessions < 1:
        raise ValueError("a course has at least one session")
    missing = [k for k in range(2, sessions + 1) if k not in gaps]
    if missing:
        raise ValueError(f"no gap rule for session position(s) {missing}")
    if first_start.tzinfo is None or first_start.utcoffset() is None:
        raise ValueError("first_start must be a timezone-aware datetime")
    by_id = _index(schedules, preferred_practitioner_id)

    zone = rules.zone
    local_first = first_start.astimezone(zone)
    prefs = _Preferences(
        practitioner_id=preferred_practitioner_id,
        local_time=local_first.time().replace(fold=0),
        order={pid: rank for rank, pid in enumerate(by_id)},
    )
    first_problem = why_not_free(
        treatment, by_id[preferred_practitioner_id], rules, first_start, now=now, step=step
    )
    if first_problem is not None:
        return CourseProposal(
            sessions=(),
            complete=False,
            failed_position=1,
            failure=f"session 1 at {format_local(first_start, zone)}: {first_problem}",
        )

    placed = [_session(1, first_start, preferred_practitioner_id, treatment, zone, None)]
    for position in range(2, sessions + 1):
        # Earlier sessions of this proposal are not in the database yet; block them here.
        current = _with_proposed(by_id, placed, treatment)
        outcome = _place(
            position,
            gaps[position],
            placed[-1],
            treatment,
            current,
            rules,
            prefs,
            now=now,
            step=step,
        )
        if isinstance(outcome, str):
            return CourseProposal(tuple(placed), False, failed_position=position, failure=outcome)
        placed.append(outcome)
    return CourseProposal(tuple(placed), complete=True)


def _index(
    schedules: Sequence[PractitionerSchedule], preferred: int
) -> dict[int, PractitionerSchedule]:
    by_id: dict[int, PractitionerSchedule] = {}
    for schedule in schedules:
        if schedule.practitioner_id in by_id:
            raise ValueError(f"practitioner {schedule.practitioner_id} is listed twice")
        by_id[schedule.practitioner_id] = schedule
    if preferred not in by_id:
        raise ValueError(f"no schedule for the preferred practitioner {preferred}")
    return by_id


def _with_proposed(
    by_id: Mapping[int, PractitionerSchedule],
    placed: Sequence[ProposedSession],
    treatment: TreatmentSpec,
) -> dict[int, PractitionerSchedule]:
    extra: dict[int, list[Busy]] = {}
    for session in placed:
        extra.setdefault(session.practitioner_id, []).append(treatment.occupied(session.start))
    return {pid: schedule.with_busy(extra.get(pid, ())) for pid, schedule in by_id.items()}


def _session(
    position: int,
    start: datetime,
    practitioner_id: int,
    treatment: TreatmentSpec,
    zone: ZoneInfo,
    gap_days: int | None,
    flags: tuple[str, ...] = (),
    reasons: tuple[str, ...] = (),
) -> ProposedSession:
    local = start.astimezone(zone)
    return ProposedSession(
        position=position,
        practitioner_id=practitioner_id,
        start=start.astimezone(UTC),
        end=(start + treatment.duration).astimezone(UTC),
        local_date=local.date(),
        local_time=local.time().replace(fold=0),
        gap_days=gap_days,
        flags=flags,
        reasons=reasons,
    )


def _place(
    position: int,
    rule: GapRule,
    previous: ProposedSession,
    treatment: TreatmentSpec,
    schedules: Mapping[int, PractitionerSchedule],
    rules: ClinicRules,
    prefs: _Preferences,
    *,
    now: datetime,
    step: timedelta,
) -> ProposedSession | str:
    """The best session for `position`, or a sentence saying why there is none."""
    zone = rules.zone
    first_day = previous.local_date + timedelta(days=rule.min_days)
    last_day = previous.local_date + timedelta(days=rule.max_days)
    target_day = previous.local_date + timedelta(days=rule.target_days)
    preferred = [schedules[prefs.practitioner_id]]
    others = [sch for pid, sch in schedules.items() if pid != prefs.practitioner_id]
    # The preferred practitioner beats any other whatever the day or time, so the others are
    # only searched when the preferred one has nothing in the window (most courses never do).
    candidates: list[FreeStart] = []
    for group in (preferred, others):
        candidates = [
            slot
            for slot in free_starts(
                treatment, group, rules, first_day=first_day, last_day=last_day, now=now, step=step
            )
            # Only bites with a zero-day gap: a course runs forwards, one session after another.
            if slot.start >= previous.end
        ]
        if candidates:
            break
    if not candidates:
        return _no_slot_message(position, rule, previous, first_day, last_day, rules, now=now)

    best = min(candidates, key=lambda slot: _preference_key(slot, zone, target_day, prefs))
    local = best.start.astimezone(zone)
    gap = (local.date() - previous.local_date).days
    flags, reasons = _deviations(best, gap, rule, prefs, zone, first_day, last_day)
    if flags:
        missed = _why_target_missed(
            treatment, preferred[0], rules, target_day, prefs, previous, now=now, step=step
        )
        reasons = (missed, *reasons)
    return _session(
        position, best.start, best.practitioner_id, treatment, zone, gap, flags, reasons
    )


def _day_rank(day: date, target_day: date) -> int:
    """0 for the target, then +1, -1, +2, -2, ... days: 1, 2, 3, 4, ..."""
    offset = (day - target_day).days
    return 2 * offset - 1 if offset > 0 else -2 * offset


def _micros_of_day(wall: time) -> int:
    return ((wall.hour * 60 + wall.minute) * 60 + wall.second) * 1_000_000 + wall.microsecond


def _preference_key(
    slot: FreeStart, zone: ZoneInfo, target_day: date, prefs: _Preferences
) -> tuple[bool, bool, int, int, int, datetime]:
    local = slot.start.astimezone(zone)
    time_off_by = abs(_micros_of_day(local.time()) - _micros_of_day(prefs.local_time))
    return (
        slot.practitioner_id != prefs.practitioner_id,
        time_off_by != 0,
        _day_rank(local.date(), target_day),
        time_off_by,
        prefs.order[slot.practitioner_id],
        slot.start,  # equal distance before and after: the earlier time
    )


def _deviations(
    chosen: FreeStart,
    gap: int,
    rule: GapRule,
    prefs: _Preferences,
    zone: ZoneInfo,
    first_day: date,
    last_day: date,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    flags: list[str] = []
    reasons: list[str] = []
    if gap != rule.target_days:
        flags.append(GAP_NOT_TARGET)
        reasons.append(
            f"gap of {gap} days instead of the target {rule.target_days} "
            f"(allowed {rule.min_days}–{rule.max_days})"
        )
    local_time = chosen.start.astimezone(zone).time()
    if _micros_of_day(local_time) != _micros_of_day(prefs.local_time):
        flags.append(DIFFERENT_TIME)
        reasons.append(f"starts at {local_time:%H:%M} instead of {prefs.local_time:%H:%M} local")
    if chosen.practitioner_id != prefs.practitioner_id:
        flags.append(DIFFERENT_PRACTITIONER)
        reasons.append(
            f"with practitioner {chosen.practitioner_id} instead of {prefs.practitioner_id}, "
            f"who has no free slot between {first_day} and {last_day}"
        )
    return tuple(flags), tuple(reasons)


def _why_target_missed(
    treatment: TreatmentSpec,
    preferred: PractitionerSchedule,
    rules: ClinicRules,
    target_day: date,
    prefs: _Preferences,
    previous: ProposedSession,
    *,
    now: datetime,
    step: timedelta,
) -> str:
    zone = rules.zone
    wanted = f"{target_day} {prefs.local_time:%H:%M} with practitioner {prefs.practitioner_id}"
    target = existing_local_to_utc(datetime.combine(target_day, prefs.local_time), zone)
    if target is None:
        return f"target {wanted} not available: that local time does not exist that day"
    problem = why_not_free(treatment, preferred, rules, target, now=now, step=step)
    if problem is None:
        # Free on its own, so only the course's own order can have excluded it.
        problem = f"it would start before session {previous.position} ends"
    return f"target {wanted} not available: {problem}"


def _no_slot_message(
    position: int,
    rule: GapRule,
    previous: ProposedSession,
    first_day: date,
    last_day: date,
    rules: ClinicRules,
    *,
    now: datetime,
) -> str:
    message = (
        f"session {position}: no free slot between {first_day} and {last_day} "
        f"({rule.min_days}–{rule.max_days} days after session {previous.position} "
        f"on {previous.local_date})"
    )
    horizon_day = (now + rules.horizon).astimezone(rules.zone).date()
    if last_day > horizon_day:
        message += f"; bookings open only until {horizon_day}"
    return message
