"""What can be booked and when: a treatment with its clinic (`Offer`), the free starts in a span
of local days, a course proposed from a first start, and the alternatives offered when a time is
not free (one rule everywhere: a few with the same practitioner, then a few with anyone).

Pure reads: nothing here writes. The engine (shared.scheduling) decides; this module loads what
it needs for a window of days, and no more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from shared.domain.errors import InvalidField
from shared.scheduling.availability import FreeStart, PractitionerSchedule, TimeOff, free_starts
from shared.scheduling.course import CourseProposal, propose_course
from shared.scheduling.loader import (
    ClinicInfo,
    TreatmentInfo,
    load_clinic,
    load_schedules,
    load_treatment,
)
from shared.store import practitioners

Executor = asyncpg.Connection | asyncpg.Pool
# A conflict answers with this many next free starts with the same practitioner, then with any.
ALTERNATIVES_SAME_PRACTITIONER = 3
ALTERNATIVES_ANY = 3
ALTERNATIVES_DAYS = 14  # how far ahead alternatives are looked for


# -- what is being booked --------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A treatment and the clinic that offers it: everything the engine needs to know."""

    clinic: ClinicInfo
    treatment: TreatmentInfo


async def load_offer(db: Executor, treatment_id: int, *, public: bool) -> Offer | None:
    """An active treatment (and, for the public, one shown on the form), or None."""
    treatment = await load_treatment(db, treatment_id)
    if treatment is None or not treatment.active or (public and not treatment.public):
        return None
    clinic = await load_clinic(db, treatment.clinic_id)
    return None if clinic is None else Offer(clinic, treatment)


def missing_gap_rules(treatment: TreatmentInfo, count: int) -> list[int]:
    return [k for k in range(2, count + 1) if k not in treatment.gaps]


def check_session_count(
    treatment: TreatmentInfo, count: int, path: str, *, first_only: bool = False
) -> None:
    """A course has sessions_min..sessions_max sessions; a single visit exactly one. With
    `first_only`, a course may also be booked one session at a time (its first session now:
    the scheduler proposes each next one after the session before it is completed)."""
    low, high = treatment.sessions_min, treatment.sessions_max
    if first_only and treatment.is_course and count == 1:
        return
    if not low <= count <= high:
        wanted = f"{low}" if low == high else f"{low} to {high}"
        raise InvalidField(path, f"{treatment.name} has {wanted} session(s), not {count}")
    missing = missing_gap_rules(treatment, count)
    if missing:
        raise InvalidField(
            path, f"the clinic has not set the gap before session(s) {missing} of this course"
        )


# -- free slots and proposals ------------------------------------------------------------------


def bookable_days(offer: Offer, first: date, last: date, now: datetime) -> tuple[date, date] | None:
    """The local dates of [first, last] that can hold a slot at all (notice and horizon)."""
    rules, zone = offer.clinic.rules, offer.clinic.zone
    low = max(first, (now + rules.min_notice).astimezone(zone).date())
    high = min(last, (now + rules.horizon).astimezone(zone).date())
    return (low, high) if low <= high else None


async def schedules_for(
    db: Executor,
    offer: Offer,
    practitioner_ids: Sequence[int] | None,
    days: tuple[date, date],
    now: datetime,
    *,
    exclude_appointment_ids: Sequence[int] = (),
) -> list[PractitionerSchedule]:
    """The practitioners' schedules over `days` (all active ones for None); appointments in
    `exclude_appointment_ids` do not count as busy (one being moved does not block itself)."""
    return await load_schedules(
        db,
        offer.clinic.id,
        practitioner_ids=practitioner_ids,
        first_day=days[0],
        last_day=days[1],
        zone=offer.clinic.zone,
        now=now,
        exclude_appointment_ids=list(exclude_appointment_ids),
    )


async def free_slots(
    db: Executor,
    offer: Offer,
    practitioner_id: int | None,
    first_day: date,
    last_day: date,
    now: datetime,
    *,
    exclude_appointment_ids: Sequence[int] = (),
) -> list[FreeStart]:
    """Free starts on local dates first_day..last_day with one practitioner (or any)."""
    days = bookable_days(offer, first_day, last_day, now)
    if days is None:
        return []
    ids = None if practitioner_id is None else [practitioner_id]
    schedules = await schedules_for(
        db, offer, ids, days, now, exclude_appointment_ids=exclude_appointment_ids
    )
    return free_starts(
        offer.treatment.spec,
        schedules,
        offer.clinic.rules,
        first_day=days[0],
        last_day=days[1],
        now=now,
        step=offer.clinic.slot_step,
    )


async def works_here(db: Executor, offer: Offer, practitioner_id: int) -> bool:
    """Whether this is an active practitioner of the offer's clinic."""
    return bool(await practitioners.active_ids(db, offer.clinic.id, [practitioner_id]))


async def alternatives(
    db: Executor,
    offer: Offer,
    practitioner_id: int,
    after: datetime,
    now: datetime,
    *,
    exclude_appointment_ids: Sequence[int] = (),
) -> list[FreeStart]:
    """What a conflict offers instead, wherever it happens (a booking, a hold, a move): the next
    free starts from `after` on, a few with the same practitioner, then a few with anyone."""
    zone = offer.clinic.zone
    first_day = max(after, now).astimezone(zone).date()
    chosen: list[FreeStart] = []
    others: list[FreeStart] = []
    # The next free times are nearly always within a day or two: look there first, and only
    # load the whole fortnight (every conflict answer pays for it) when that is not enough.
    for days in (1, ALTERNATIVES_DAYS):
        slots = await free_slots(
            db,
            offer,
            None,
            first_day,
            first_day + timedelta(days=days),
            now,
            exclude_appointment_ids=exclude_appointment_ids,
        )
        later = [slot for slot in slots if slot.start >= after]
        same = [s for s in later if s.practitioner_id == practitioner_id]
        chosen = same[:ALTERNATIVES_SAME_PRACTITIONER]
        others = [s for s in later if s not in chosen][:ALTERNATIVES_ANY]
        if len(chosen) == ALTERNATIVES_SAME_PRACTITIONER and len(others) == ALTERNATIVES_ANY:
            break
    return chosen + others


async def propose(
    db: Executor,
    offer: Offer,
    *,
    first_start: datetime,
    practitioner_id: int,
    sessions: int,
    now: datetime,
    practitioner_path: str = "practitioner_id",
    count_path: str = "sessions",
    exclude_appointment_ids: Sequence[int] = (),
) -> CourseProposal:
    """Every session of the course from `first_start` (or its first alone, `sessions=1`), any
    practitioner allowed for later ones (the preferred one first); raises InvalidField for an
    unknown practitioner or a number of sessions the course does not have."""
    treatment, zone = offer.treatment, offer.clinic.zone
    check_session_count(treatment, sessions, count_path, first_only=True)
    first_day = first_start.astimezone(zone).date()
    span = sum(treatment.gaps[k].max_days for k in range(2, sessions + 1))
    # Outside notice and horizon the engine answers without looking at schedules; load a
    # single day then, rather than a window that might not even be a valid date range.
    today = now.astimezone(zone).date()
    days = bookable_days(offer, first_day, first_day + timedelta(days=span), now) or (today, today)

    # The preferred practitioner wins every session they have a slot for, so a proposal from
    # their diary alone is the final answer when it is complete; only a course they cannot
    # finish needs everyone's diaries (months of them, the expensive part).
    def proposal_from(schedules: list[PractitionerSchedule]) -> CourseProposal:
        return propose_course(
            treatment.spec,
            treatment.gaps,
            sessions,
            first_start,
            practitioner_id,
            schedules,
            offer.clinic.rules,
            now=now,
            step=offer.clinic.slot_step,
        )

    preferred = await schedules_for(
        db, offer, [practitioner_id], days, now, exclude_appointment_ids=exclude_appointment_ids
    )
    if not preferred:
        raise InvalidField(practitioner_path, f"no active practitioner {practitioner_id} here")
    proposal = proposal_from(preferred)
    # Sessions before the one that failed stay exactly as placed (the preferred practitioner had
    # a slot for each, and wins it whoever else is free). So the others' diaries are read only
    # for the window of a session the preferred one cannot take, and stand as closed outside
    # what was read; should a later session then need them too, their cover grows to its window
    # and the proposal is made again. A failure inside what was read is the real answer.
    covered: tuple[date, date] | None = None
    while not proposal.complete and proposal.failed_position not in (None, 1):
        failed = proposal.failed_position
        assert failed is not None
        previous = proposal.sessions[-1].local_date
        rule = treatment.gaps[failed]
        window = (
            previous + timedelta(days=rule.min_days),
            previous + timedelta(days=rule.max_days),
        )
        if covered is not None and covered[0] <= window[0] and window[1] <= covered[1]:
            break
        covered = (
            window if covered is None else (min(covered[0], window[0]), max(covered[1], window[1]))
        )
        readable = bookable_days(offer, *covered, now)
        if readable is None:
            break  # beyond the horizon: nobody can take it
        others = [
            _closed_outside(schedule, readable, zone)
            for schedule in await schedules_for(
                db, offer, None, readable, now, exclude_appointment_ids=exclude_appointment_ids
            )
            if schedule.practitioner_id != practitioner_id
        ]
        proposal = proposal_from(sorted([*preferred, *others], key=lambda s: s.practitioner_id))
    return proposal


_LONG_AGO = datetime(1971, 1, 1, tzinfo=UTC)
_FAR_AHEAD = datetime(9000, 1, 1, tzinfo=UTC)


def _closed_outside(
    schedule: PractitionerSchedule, days: tuple[date, date], zone: ZoneInfo
) -> PractitionerSchedule:
    """The schedule as read for `days` only, unavailable before and after them (so that what
    was not read can never look free)."""
    opens = datetime.combine(days[0], time(0), zone)
    closes = datetime.combine(days[1] + timedelta(days=1), time(0), zone)
    closed = (TimeOff.trusted(_LONG_AGO, opens), TimeOff.trusted(closes, _FAR_AHEAD))
    return replace(schedule, time_off=(*schedule.time_off, *closed))


# -- as the faces show them ------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def slots_json(slots: Sequence[FreeStart], offer: Offer) -> list[dict[str, Any]]:
    """Slots as the API shows them. Four weeks of "any" can list a couple of thousand."""
    zone = offer.clinic.zone
    shown: list[dict[str, Any]] = []
    for slot in slots:
        start, start_local, local_date, local_time = _time_fields(slot.start, zone)
        shown.append(
            {
                "start": start,
                "start_local": start_local,
                "local_date": local_date,
                "local_time": local_time,
                "practitioner_id": slot.practitioner_id,
            }
        )
    return shown


@lru_cache(maxsize=32_768)
def _time_fields(start: datetime, zone: ZoneInfo) -> tuple[str, str, str, str]:
    """A start's text fields. Formatting them was the largest cost of an availability answer
    (about 2.4 µs a start), and they depend only on the instant and the zone: the starts of a
    clinic's next weeks are asked for again and again, so they are kept (a few MB at most)."""
    local = start.astimezone(zone)
    return (
        iso(start),
        local.isoformat(),
        local.date().isoformat(),
        # Not f"{local:%H:%M}": strftime is slower.
        f"{local.hour:02d}:{local.minute:02d}",
    )


@dataclass(frozen=True)
class SessionConflict:
    """A session of a booking that is not free, and why."""

    position: int
    practitioner_id: int
    start: datetime
    reason: str


def conflict_json(conflict: SessionConflict, offer: Offer) -> dict[str, Any]:
    local = conflict.start.astimezone(offer.clinic.zone)
    return {
        "position": conflict.position,
        "practitioner_id": conflict.practitioner_id,
        "start": iso(conflict.start),
        "start_local": local.isoformat(),
        "reason": conflict.reason,
    }
