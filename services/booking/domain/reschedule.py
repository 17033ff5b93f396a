"""Rescheduling a booked or confirmed appointment under its course's gap rules: the new slot
checked free (the appointment does not block itself), the gaps to the sessions before and after
re-checked, later sessions shifted when asked, all in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from services.booking.domain.errors import GapRefused, NotActive, SlotUnavailable
from shared import outbox_plan
from shared.domain.appointment_changes import (
    Change,
    audit_appointment,
    clinic_of,
    locked,
    treatment_of,
)
from shared.domain.appointment_states import ACTIVE
from shared.domain.errors import Conflict, Forbidden, InvalidField, NotFound
from shared.scheduling import gaps
from shared.scheduling.availability import format_local, why_not_free
from shared.scheduling.gaps import Gap, MoveCheck, Session, Shift, ShiftPlan
from shared.scheduling.loader import ClinicInfo, TreatmentInfo, load_schedules
from shared.store import appointments
from shared.store.appointments import Appointment


@dataclass(frozen=True)
class MoveRequest:
    starts_at: datetime  # aware
    practitioner_id: int | None = None  # None: the same practitioner
    reason: str = ""
    override_reason: str | None = None  # overrides a hard-minimum gap (clinician or admin)
    shift_later: bool = False  # apply the proposed shifts of later sessions too


@dataclass(frozen=True)
class RescheduleOutcome:
    appointment: Appointment
    gaps: list[Gap]  # around the moved session (and any shifted one), after every move
    warnings: list[str]
    review_notes: list[str]
    overridden: list[str]  # hard-minimum breaches accepted with the override reason
    proposed_shifts: tuple[Shift, ...]  # not applied (shift_later was false)
    applied_shifts: tuple[Shift, ...]
    shift_failure: str | None
    flagged_for_review: list[int] = field(default_factory=list)


def session_of(appointment: Appointment) -> Session:
    """An appointment as the gap rules see it."""
    return Session(
        appointment_id=appointment.id,
        position=appointment.position,
        start=appointment.starts_at,
        practitioner_id=appointment.practitioner_id,
        status=appointment.status,
    )


async def reschedule(
    conn: asyncpg.Connection,
    appointment_id: int,
    request: MoveRequest,
    *,
    may_override: bool,
    expected_version: int,
    change: Change,
) -> RescheduleOutcome:
    """Move a booked or confirmed appointment to a free slot, keeping its id.

    The new slot is checked with the engine (the appointment itself does not block it). For a
    course session the gaps to the sessions before and after are re-checked: below the hard
    minimum is refused unless `override_reason` is given by a role that `may_override`; past the
    soft maximum is a warning. Later sessions whose gap the move breaks get proposed new times,
    applied in the same transaction when `shift_later` is set (all or nothing).
    """
    try:
        return await _reschedule(
            conn, appointment_id, request, may_override, expected_version, change
        )
    except asyncpg.ExclusionViolationError:
        # Someone took the slot between our check and our write; the transaction is gone, and
        # the refusal finds the alternatives once it has rolled back.
        raise SlotUnavailable(
            "the slot was taken by another booking a moment ago",
            appointment_id=appointment_id,
            practitioner_id=request.practitioner_id,
            start=request.starts_at,
            now=change.now,
        ) from None


async def as_it_stands(
    conn: asyncpg.Connection, appointment_id: int, *, change: Change
) -> RescheduleOutcome:
    """What `reschedule` answers about a move already made, read again with nothing written:
    the gaps around the session where it stands, the new times later sessions would need, and
    the later sessions a clinician must review. A move submitted twice (a double click, Back
    then submit) is answered by this the second time, as the first was answered."""
    current = await appointments.get(conn, appointment_id)
    if current is None:
        raise NotFound("appointment", appointment_id)
    move = _Move(
        conn=conn,
        current=current,
        clinic=await clinic_of(conn, current.clinic_id),
        treatment=await treatment_of(conn, current.treatment_id),
        practitioner_id=current.practitioner_id,
        start=current.starts_at,
        request=MoveRequest(starts_at=current.starts_at),
        change=change,
    )
    sessions, _, plan = await _course_check(move)
    around = [
        gap
        for gap in gaps.course_gaps(sessions, move.treatment.gaps, move.clinic.zone)
        if current.id in (gap.earlier_id, gap.later_id)
    ]
    return RescheduleOutcome(
        appointment=current,
        gaps=around,
        warnings=gaps.messages(around, gaps.PAST_SOFT_MAXIMUM),
        review_notes=gaps.messages(around, gaps.NEEDS_CLINICIAN_REVIEW),
        overridden=[],
        proposed_shifts=plan.shifts,
        applied_shifts=(),
        shift_failure=plan.failure,
        flagged_for_review=[gap.later_id for gap in around if gap.needs_review],
    )


@dataclass(frozen=True)
class _Move:
    """One reschedule in progress: the locked appointment and where it is going."""

    conn: asyncpg.Connection
    current: Appointment
    clinic: ClinicInfo
    treatment: TreatmentInfo
    practitioner_id: int
    start: datetime  # UTC
    request: MoveRequest
    change: Change


async def _reschedule(
    conn: asyncpg.Connection,
    appointment_id: int,
    request: MoveRequest,
    may_override: bool,
    expected_version: int,
    change: Change,
) -> RescheduleOutcome:
    move = await _prepare_move(conn, appointment_id, request, expected_version, change)
    sessions, check, plan = await _course_check(move)
    if request.shift_later and not plan.complete:
        raise Conflict(
            f"the later sessions cannot all be moved: {plan.failure}", code="shift-impossible"
        )
    overridden = _authorise_gaps(check, plan, request, may_override, move.clinic.zone)
    applied = await _write_moves(move, plan, overridden)
    final = _after_moves(sessions, move.current.id, move.start, move.practitioner_id, applied)
    touched = {move.current.id, *(s.appointment_id for s in applied)}
    around = [
        gap
        for gap in gaps.course_gaps(final, move.treatment.gaps, move.clinic.zone)
        if gap.earlier_id in touched or gap.later_id in touched
    ]
    flagged = await _flag_for_review(conn, around, change)
    # After every change to these rows (their messages carry the final version): reminders
    # for the old times end, new ones are planned, and one notice names every moved session.
    await outbox_plan.on_moved_together(
        conn, [move.current.id, *(s.appointment_id for s in applied)], now=change.now
    )
    moved = await appointments.get(conn, move.current.id)
    assert moved is not None
    outcome = RescheduleOutcome(
        appointment=moved,
        gaps=around,
        warnings=gaps.messages(around, gaps.PAST_SOFT_MAXIMUM),
        review_notes=gaps.messages(around, gaps.NEEDS_CLINICIAN_REVIEW),
        overridden=overridden,
        proposed_shifts=() if request.shift_later else plan.shifts,
        applied_shifts=applied,
        shift_failure=plan.failure,
        flagged_for_review=flagged,
    )
    await audit_appointment(
        conn,
        change,
        "appointment.reschedule",
        moved,
        reason=(request.override_reason or "") if overridden else request.reason,
        details=_reschedule_audit(move.current, moved, request, outcome),
    )
    return outcome


async def _prepare_move(
    conn: asyncpg.Connection,
    appointment_id: int,
    request: MoveRequest,
    expected_version: int,
    change: Change,
) -> _Move:
    """Lock the appointment (and its series), check it may move and the new slot is free."""
    current = await locked(conn, appointment_id, expected_version, lock_series=True)
    if current.status not in gaps.MOVABLE_STATUSES:
        raise NotActive(
            current.status, f"an appointment that is {current.status} cannot be rescheduled"
        )
    move = _Move(
        conn=conn,
        current=current,
        clinic=await clinic_of(conn, current.clinic_id),
        treatment=await treatment_of(conn, current.treatment_id),
        practitioner_id=request.practitioner_id or current.practitioner_id,
        start=request.starts_at.astimezone(UTC),
        request=request,
        change=change,
    )
    if move.start == current.starts_at and move.practitioner_id == current.practitioner_id:
        raise InvalidField("starts_at", "is the appointment's current start")
    await _check_slot(move)
    return move


async def _course_check(move: _Move) -> tuple[list[Session], MoveCheck, ShiftPlan]:
    """The course's sessions (locked), the gaps around the new start, and the shifts of later
    sessions when the gap after it falls outside its window."""
    series_id = move.current.series_id
    if series_id is None:
        return [], MoveCheck(None, None), ShiftPlan((), True)
    rows = await appointments.lock_series(move.conn, series_id)
    sessions = [session_of(a) for a in rows]
    check = gaps.check_move(
        sessions, move.current.id, move.start, move.treatment.gaps, move.clinic.zone
    )
    plan = ShiftPlan((), True)
    if check.after is not None and check.after.outside_window:
        plan = await _plan_shifts(move, sessions)
    return sessions, check, plan


async def _write_moves(move: _Move, plan: ShiftPlan, overridden: list[str]) -> tuple[Shift, ...]:
    """Move the appointment, then the later sessions when asked; returns the shifts applied."""
    spec = move.treatment.spec
    moved = await appointments.move(
        move.conn,
        move.current.id,
        practitioner_id=move.practitioner_id,
        starts_at=move.start,
        ends_at=move.start + spec.duration,
        buffer_before=spec.buffer_before,
        buffer_after=spec.buffer_after,
        actor=move.change.actor.label,
        now=move.change.now,
        reason=move.request.reason,
        details=_move_details(move.request, overridden),
    )
    assert moved is not None  # locked
    applied = plan.shifts if move.request.shift_later else ()
    for shift in applied:
        await _apply_shift(move, shift)
    return applied


async def _check_slot(move: _Move) -> None:
    clinic, now = move.clinic, move.change.now
    day = move.start.astimezone(clinic.zone).date()
    found = await load_schedules(
        move.conn,
        clinic.id,
        practitioner_ids=[move.practitioner_id],
        first_day=day,
        last_day=day,
        zone=clinic.zone,
        now=now,
        exclude_appointment_ids=[move.current.id],
    )
    if not found:
        raise InvalidField(
            "practitioner_id",
            f"practitioner {move.practitioner_id} is not an active practitioner of this clinic",
        )
    problem = why_not_free(
        move.treatment.spec, found[0], clinic.rules, move.start, now=now, step=clinic.slot_step
    )
    if problem is not None:
        raise SlotUnavailable(
            f"{format_local(move.start, clinic.zone)} ({clinic.time_zone}) is not free: {problem}",
            appointment_id=move.current.id,
            practitioner_id=move.practitioner_id,
            start=move.start,
            now=now,
        )


async def _plan_shifts(move: _Move, sessions: Sequence[Session]) -> ShiftPlan:
    clinic, treatment, now = move.clinic, move.treatment, move.change.now
    later = gaps.later_sessions(sessions, move.current.id)
    zone = clinic.zone
    first_day = move.start.astimezone(zone).date()
    # Far enough for every later session at its longest gap, never past the horizon.
    reach = sum(
        treatment.gaps[s.position].max_days
        for s in later
        if s.position is not None and s.position in treatment.gaps
    )
    horizon_day = (now + clinic.rules.horizon).astimezone(zone).date()
    last_day = max(first_day, min(first_day + timedelta(days=reach), horizon_day))
    schedules = await load_schedules(
        move.conn,
        clinic.id,
        practitioner_ids=None,
        first_day=first_day,
        last_day=last_day,
        zone=zone,
        now=now,
        exclude_appointment_ids=[move.current.id, *(s.appointment_id for s in later)],
    )
    return gaps.shift_later_sessions(
        treatment.spec,
        treatment.gaps,
        sessions,
        move.current.id,
        move.start,
        move.practitioner_id,
        schedules,
        clinic.rules,
        now=now,
        step=clinic.slot_step,
    )


def _authorise_gaps(
    check: MoveCheck, plan: ShiftPlan, request: MoveRequest, may_override: bool, zone: ZoneInfo
) -> list[str]:
    """The hard-minimum breaches this move accepts; raises if they are not allowed."""
    breaches = []
    if check.before is not None and check.before.below_minimum:
        breaches += gaps.messages([check.before], gaps.BELOW_MINIMUM)
    # Shifting the later sessions repairs the gap after; without it, it is a breach too.
    repaired = request.shift_later and plan.complete
    if check.after is not None and check.after.below_minimum and not repaired:
        breaches += gaps.messages([check.after], gaps.BELOW_MINIMUM)
    if not breaches:
        return []
    if request.override_reason is None:
        hint = "; or send shift_later: true" if plan.shifts and not repaired else ""
        raise GapRefused(
            "; ".join(breaches) + ". A clinician or admin may override with override_reason" + hint,
            check,
            plan,
            zone,
        )
    if not may_override:
        raise Forbidden(
            "only a clinician or an admin may override the hard minimum gap",
            code="override-not-allowed",
        )
    return breaches


def _move_details(request: MoveRequest, overridden: list[str]) -> dict[str, Any]:
    details: dict[str, Any] = {"shift_later": request.shift_later}
    if overridden:
        details["gap_override"] = {"reason": request.override_reason, "breaches": overridden}
    return details


async def _apply_shift(move: _Move, shift: Shift) -> None:
    spec, cause = move.treatment.spec, move.current
    shifted = await appointments.move(
        move.conn,
        shift.appointment_id,
        practitioner_id=shift.to_practitioner_id,
        starts_at=shift.to_start,
        ends_at=shift.to_start + spec.duration,
        buffer_before=spec.buffer_before,
        buffer_after=spec.buffer_after,
        actor=move.change.actor.label,
        now=move.change.now,
        reason=f"shifted to keep the course valid after appointment {cause.id} moved",
        details={"shift": {"cause_appointment_id": cause.id, "why": shift.reason}},
    )
    assert shifted is not None  # locked with the series
    await audit_appointment(
        move.conn,
        move.change,
        "appointment.shift",
        shifted,
        reason=shift.reason,
        details={
            "cause_appointment_id": cause.id,
            "from_starts_at": shift.from_start.isoformat(),
            "to_starts_at": shift.to_start.isoformat(),
            "from_practitioner_id": shift.from_practitioner_id,
            "to_practitioner_id": shift.to_practitioner_id,
        },
    )


def _after_moves(
    sessions: Sequence[Session],
    moved_id: int,
    start: datetime,
    practitioner_id: int,
    applied: Sequence[Shift],
) -> list[Session]:
    new_times = {moved_id: (start, practitioner_id)}
    new_times.update({s.appointment_id: (s.to_start, s.to_practitioner_id) for s in applied})
    return [
        replace(
            s, start=new_times[s.appointment_id][0], practitioner_id=new_times[s.appointment_id][1]
        )
        if s.appointment_id in new_times
        else s
        for s in sessions
    ]


async def _flag_for_review(
    conn: asyncpg.Connection, around: Sequence[Gap], change: Change
) -> list[int]:
    """A gap beyond twice the target puts the later session on the clinician's review list
    (check-in waits for it), rather than only saying so in this one answer."""
    flagged = []
    for gap in around:
        if not gap.needs_review:
            continue
        later = await appointments.lock(conn, gap.later_id)
        note = gaps.messages([gap], gaps.NEEDS_CLINICIAN_REVIEW)[0]
        if later is None or later.status not in ACTIVE or note in later.review_reasons:
            continue
        updated = await appointments.set_review(
            conn,
            later.id,
            needs_review=True,
            reasons=[*later.review_reasons, note],
            actor=change.actor.label,
            now=change.now,
            note="gap beyond twice the target",
        )
        assert updated is not None
        await audit_appointment(conn, change, "appointment.flag_review", updated, reason=note)
        flagged.append(later.id)
    return flagged


def _reschedule_audit(
    before: Appointment, after: Appointment, request: MoveRequest, outcome: RescheduleOutcome
) -> dict[str, Any]:
    return {
        "from": {
            "starts_at": before.starts_at.isoformat(),
            "practitioner_id": before.practitioner_id,
        },
        "to": {"starts_at": after.starts_at.isoformat(), "practitioner_id": after.practitioner_id},
        "reason": request.reason,
        "gap_override": (
            {"reason": request.override_reason, "breaches": outcome.overridden}
            if outcome.overridden
            else None
        ),
        "warnings": outcome.warnings,
        "applied_shifts": [s.appointment_id for s in outcome.applied_shifts],
        "proposed_shifts": [s.appointment_id for s in outcome.proposed_shifts],
    }
