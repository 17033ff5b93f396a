"""The sessions of one booking: numbered and checked against the course's gap rules, checked
free against the engine, and inserted, where the exclusion constraint has the final word.

Whether a time is free is decided twice: first by the pure engine (`why_not_free`, which
explains *why* not), then by the constraint on insert, which settles races between replicas.
Both verdicts end as the same `SlotsTaken` with alternatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import asyncpg

from services.booking.domain.errors import SlotsTaken
from services.booking.domain.offers import (
    Executor,
    Offer,
    SessionConflict,
    bookable_days,
    schedules_for,
)
from shared.domain import hold_expiry
from shared.domain.appointment_states import Status
from shared.domain.errors import InvalidField
from shared.scheduling.availability import why_not_free
from shared.store import appointments
from shared.store.appointments import Appointment, NewAppointment
from shared.store.audit import Actor


@dataclass(frozen=True)
class SessionRequest:
    practitioner_id: int
    start: datetime
    path: str = ""  # where the session's fields are in the request ("sessions.2", or "")


@dataclass(frozen=True)
class PlannedSession:
    position: int
    practitioner_id: int
    start: datetime
    end: datetime
    gap_days: int | None
    path: str = ""

    def path_of(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


@dataclass
class Plan:
    sessions: list[PlannedSession]
    warnings: list[str] = field(default_factory=list)
    review_reasons: list[str] = field(default_factory=list)


def plan_sessions(
    offer: Offer,
    requests: Sequence[SessionRequest],
    *,
    first_position: int,
    previous: Appointment | None,
    strict: bool,
    override_reason: str | None,
    approved_delay: str | None = None,
) -> Plan:
    """Number the sessions and check their order and gaps (local calendar days).

    strict (the public form): a gap outside [hard minimum, soft maximum] is refused. Otherwise
    (staff): the hard minimum is refused unless an override reason is given; the soft maximum
    only warns, and a gap beyond twice the target flags the session for clinician review.

    `approved_delay` (a clinician cleared an adverse-event hold after `previous`: why, from
    shared.domain.adverse_events.delay_approval): the first session's gap after `previous` is
    neither refused past the soft maximum nor flagged for review; the approval is a warning,
    so it is in the booking's audit row. The hard minimum still applies.
    """
    zone, spec = offer.clinic.zone, offer.treatment.spec
    plan = Plan(sessions=[])
    before: tuple[int, date, datetime] | None = None
    if previous is not None and previous.position is not None:
        before = (previous.position, previous.starts_at.astimezone(zone).date(), previous.ends_at)
    for offset, request in enumerate(requests):
        position = first_position + offset
        session = PlannedSession(
            position,
            request.practitioner_id,
            request.start,
            request.start + spec.duration,
            None,
            request.path,
        )
        if before is not None:
            approved = approved_delay if offset == 0 else None
            gap = _check_gap(offer, plan, session, before, strict, override_reason, approved)
            session = replace(session, gap_days=gap)
        plan.sessions.append(session)
        before = (position, session.start.astimezone(zone).date(), session.end)
    return plan


def _check_gap(
    offer: Offer,
    plan: Plan,
    session: PlannedSession,
    before: tuple[int, date, datetime],
    strict: bool,
    override_reason: str | None,
    approved_delay: str | None = None,
) -> int:
    position = session.position
    previous_position, previous_day, previous_end = before
    if session.start < previous_end:
        raise InvalidField(
            session.path_of("start"),
            f"session {position} must start after session {previous_position} ends",
        )
    rule = offer.treatment.gaps.get(position)
    if rule is None:
        raise InvalidField(
            session.path_of("start"), f"the clinic has not set the gap before session {position}"
        )
    gap = (session.start.astimezone(offer.clinic.zone).date() - previous_day).days
    said = f"session {position} is {gap} days after session {previous_position}"
    if gap < rule.min_days:
        if strict or override_reason is None:
            raise InvalidField(
                session.path_of("start"), f"{said}; the minimum is {rule.min_days} days"
            )
        plan.warnings.append(f"{said}, under the minimum of {rule.min_days}: {override_reason}")
    elif gap > rule.max_days and approved_delay is not None:
        plan.warnings.append(
            f"{said}, beyond the usual maximum of {rule.max_days}: {approved_delay}"
        )
    elif gap > rule.max_days:
        if strict:
            raise InvalidField(
                session.path_of("start"), f"{said}; the maximum is {rule.max_days} days"
            )
        plan.warnings.append(f"{said}, beyond the usual maximum of {rule.max_days}")
    if gap > 2 * rule.target_days and approved_delay is None:
        plan.review_reasons.append(
            f"{said}, more than twice the target of {rule.target_days}: clinician review"
        )
    return gap


async def find_conflicts(
    conn: Executor, offer: Offer, sessions: Sequence[PlannedSession], now: datetime
) -> list[SessionConflict]:
    """Sessions that are not free (with why), checked in time order, each against the others
    too; raises InvalidField for a practitioner who is not active at this clinic."""
    zone = offer.clinic.zone
    local_days = [s.start.astimezone(zone).date() for s in sessions]
    today = now.astimezone(zone).date()
    days = bookable_days(offer, min(local_days), max(local_days), now) or (today, today)
    ids = sorted({s.practitioner_id for s in sessions})
    loaded = {s.practitioner_id: s for s in await schedules_for(conn, offer, ids, days, now)}
    for session in sessions:
        if session.practitioner_id not in loaded:
            raise InvalidField(
                session.path_of("practitioner_id"),
                f"no active practitioner {session.practitioner_id} at this clinic",
            )
    conflicts: list[SessionConflict] = []
    for session in sorted(sessions, key=lambda s: s.start):
        schedule = loaded[session.practitioner_id]
        reason = why_not_free(
            offer.treatment.spec,
            schedule,
            offer.clinic.rules,
            session.start,
            now=now,
            step=offer.clinic.slot_step,
        )
        if reason is not None:
            conflicts.append(
                SessionConflict(session.position, session.practitioner_id, session.start, reason)
            )
        # Later sessions of this same booking must not overlap this one.
        busy = (*schedule.busy, offer.treatment.spec.occupied(session.start))
        loaded[session.practitioner_id] = replace(schedule, busy=busy)
    return sorted(conflicts, key=lambda c: c.position)


async def insert_sessions(
    conn: asyncpg.Connection,
    offer: Offer,
    sessions: Sequence[PlannedSession],
    *,
    status: Status,
    patient_id: int | None,
    series_id: int | None,
    hold_id: int | None,
    needs_review: bool,
    review_reasons: list[str],
    source: str,
    actor: Actor,
    now: datetime,
    request_id: str | None = None,
) -> list[int]:
    """Insert every session; expired holds in the way are released first. The exclusion
    constraint is the final word: a time taken meanwhile raises SlotsTaken (and the caller's
    transaction, hence the whole course, is rolled back)."""
    spec = offer.treatment.spec
    # Time order everywhere: concurrent bookings then lock rows in the same order, which keeps
    # deadlocks rare (the transaction helper retries the few that remain).
    ordered = sorted(sessions, key=lambda s: s.start)
    await appointments.lock_practitioner_calendars(conn, [s.practitioner_id for s in ordered])
    await _release_expired_in_the_way(conn, offer, ordered, now=now, request_id=request_id)
    ids: dict[int, int] = {}
    for session in ordered:
        try:
            new = NewAppointment(
                clinic_id=offer.clinic.id,
                practitioner_id=session.practitioner_id,
                treatment_id=offer.treatment.id,
                patient_id=patient_id,
                series_id=series_id,
                position=session.position if offer.treatment.is_course else None,
                hold_id=hold_id,
                status=status,
                starts_at=session.start,
                ends_at=session.end,
                buffer_before=spec.buffer_before,
                buffer_after=spec.buffer_after,
                needs_review=needs_review,
                review_reasons=review_reasons,
                source=source,
            )
            ids[session.position] = await appointments.insert(conn, new, actor=actor.label, now=now)
        except asyncpg.ExclusionViolationError:
            taken = SessionConflict(
                session.position,
                session.practitioner_id,
                session.start,
                "taken by another booking a moment ago",
            )
            raise SlotsTaken(offer, [taken], now) from None
    return [ids[s.position] for s in sessions]


async def _release_expired_in_the_way(
    conn: asyncpg.Connection,
    offer: Offer,
    ordered: Sequence[PlannedSession],
    *,
    now: datetime,
    request_id: str | None,
) -> None:
    in_the_way = []
    for session in ordered:
        occupied = offer.treatment.spec.occupied(session.start)
        in_the_way.append((session.practitioner_id, occupied.start, occupied.end))
    await hold_expiry.release_expired(
        conn,
        now=now,
        reason="expired hold in the way of a booking",
        in_the_way=in_the_way,
        request_id=request_id,
    )
