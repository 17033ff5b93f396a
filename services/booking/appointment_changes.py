"""What staff do to booked appointments: state actions (confirm, check in, complete, no-show,
review), cancelling one session or the rest of a course, rescheduling under the course's gap
rules, and changing a series.

Each operation is one transaction holding the state change, its history event and its audit
row, so none of them can exist without the others. Operations take the version the caller last
read and refuse with `VersionConflict` / `StaleSeries` when it moved on. They know nothing of
HTTP: refusals are the exceptions below, which the admin API turns into problem documents.

Lock order, to stay clear of deadlocks: a series row before any of its appointments. Changes
that touch several sessions of a course (reschedule, cancel the rest) take the series lock
first, so they run one at a time per course; single-appointment actions lock only their row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg

from shared import outbox_plan
from shared.domain.appointment_states import ACTIVE, TERMINAL, Status, check_transition
from shared.scheduling import gaps
from shared.scheduling.availability import FreeStart, format_local, free_starts, why_not_free
from shared.scheduling.gaps import Gap, MoveCheck, Session, Shift, ShiftPlan
from shared.scheduling.loader import (
    ClinicInfo,
    TreatmentInfo,
    load_clinic,
    load_schedules,
    load_treatment,
)
from shared.store import appointments, audit
from shared.store import series as series_store
from shared.store.appointments import Appointment, VersionConflict
from shared.store.audit import Actor
from shared.store.series import SeriesStatus

Executor = asyncpg.Connection | asyncpg.Pool

# Check-in opens this long before the start (the patient is early); it closes at end + grace.
CHECK_IN_OPENS_BEFORE = timedelta(hours=2)
# How many next free starts a refused move offers, and how far ahead it looks for them.
ALTERNATIVES = 5
ALTERNATIVES_DAYS = 14

CancelScope = Literal["this", "rest_of_course"]


# -- refusals --------------------------------------------------------------------------------------


class NotFound(Exception):
    def __init__(self, what: str, ident: int) -> None:
        super().__init__(f"no {what} with id {ident}")
        self.what = what
        self.ident = ident


class InvalidChange(Exception):
    """A request field that cannot work with this appointment (the API's 422 for `path`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class OverrideNotAllowed(Exception):
    """The caller's role may not override this rule (the API's 403)."""


class Refused(Exception):
    """The current state forbids the change (the API's 409); `code` is a stable problem type,
    `details` JSON-ready extra members for the problem document."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class NotActive(Refused):
    """The appointment's status does not allow this action at all (409 with current_status)."""

    def __init__(self, current: str, message: str) -> None:
        super().__init__("illegal-transition", message, current_status=current)
        self.current = current


class SlotUnavailable(Refused):
    def __init__(self, message: str, alternatives: Sequence[FreeStart]) -> None:
        super().__init__("slot-unavailable", message)
        self.alternatives = list(alternatives)


class GapRefused(Refused):
    """A move below the hard minimum gap, without an override."""

    def __init__(self, message: str, check: MoveCheck, plan: ShiftPlan) -> None:
        super().__init__("gap-below-minimum", message)
        self.check = check
        self.plan = plan


class SeriesConflict(Refused):
    pass


# -- who is changing things ------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """Who makes a change, when, and the request it came in on (for the audit log)."""

    actor: Actor
    now: datetime
    request_id: str | None = None


async def _audit(
    conn: Executor,
    change: Change,
    action: str,
    appointment: Appointment,
    *,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    await audit.record(
        conn,
        at=change.now,
        actor=change.actor,
        action=action,
        entity="appointment",
        entity_id=appointment.id,
        patient_id=appointment.patient_id,
        reason=reason,
        details=details,
        request_id=change.request_id,
    )


async def _locked(
    conn: asyncpg.Connection,
    appointment_id: int,
    expected_version: int | None,
    *,
    lock_series: bool = False,
) -> Appointment:
    """The appointment, locked for this transaction and at the version the caller read.

    With `lock_series`, its series row is locked first (see the module's lock order).
    """
    if lock_series:
        head = await appointments.get(conn, appointment_id)
        if head is None:
            raise NotFound("appointment", appointment_id)
        if head.series_id is not None:
            await series_store.lock(conn, head.series_id)
    current = await appointments.get(conn, appointment_id, for_update=True)
    if current is None:
        raise NotFound("appointment", appointment_id)
    if expected_version is not None and current.version != expected_version:
        raise VersionConflict(current)
    return current


async def _clinic(db: Executor, clinic_id: int) -> ClinicInfo:
    clinic = await load_clinic(db, clinic_id)
    if clinic is None:  # the foreign key makes this impossible; say so if it ever happens
        raise LookupError(f"clinic {clinic_id} vanished")
    return clinic


async def _treatment(db: Executor, treatment_id: int) -> TreatmentInfo:
    treatment = await load_treatment(db, treatment_id)
    if treatment is None:
        raise LookupError(f"treatment {treatment_id} vanished")
    return treatment


async def _transition_audited(
    conn: asyncpg.Connection,
    current: Appointment,
    to_status: Status,
    action: str,
    change: Change,
    *,
    reason: str = "",
    details: dict[str, Any] | None = None,
    audit_details: dict[str, Any],
) -> Appointment:
    """Move a locked appointment and audit it in the same transaction, so the move and its
    audit row (which names the status it left) commit or roll back together."""
    updated = await appointments.transition(
        conn,
        current.id,
        to_status,
        actor=change.actor.label,
        now=change.now,
        reason=reason,
        details=details,
    )
    assert updated is not None  # the caller holds the row's lock
    await _audit(
        conn,
        change,
        f"appointment.{action}",
        updated,
        reason=reason,
        details={"from_status": current.status, **audit_details},
    )
    return updated


# -- state actions ---------------------------------------------------------------------------------

Guard = Callable[[Appointment, ClinicInfo, datetime], None]


async def _act(
    pool: asyncpg.Pool,
    appointment_id: int,
    to_status: Status,
    action: str,
    *,
    expected_version: int,
    change: Change,
    guard: Guard | None = None,
    details: dict[str, Any] | None = None,
) -> Appointment:
    """One state transition: version, legality, then the action's own rule (`guard`)."""
    async with pool.acquire() as conn, conn.transaction():
        current = await _locked(conn, appointment_id, expected_version)
        check_transition(current.status, to_status)
        if guard is not None:
            guard(current, await _clinic(conn, current.clinic_id), change.now)
        updated = await _transition_audited(
            conn,
            current,
            to_status,
            action,
            change,
            details=details,
            audit_details={"to_status": to_status, **(details or {})},
        )
        if to_status == "no_show" and updated.patient_id is not None:
            # After a missed session the patient's later ones get the 2-hour reminder too.
            await outbox_plan.on_no_show(conn, updated.patient_id, now=change.now)
        return updated


def _check_in_guard(current: Appointment, clinic: ClinicInfo, now: datetime) -> None:
    zone = clinic.zone
    if current.needs_review:
        raise Refused(
            "needs-review",
            "a clinician must review this appointment before check-in: "
            + "; ".join(current.review_reasons or ["flagged for review"]),
            review_reasons=current.review_reasons,
        )
    opens = current.starts_at - CHECK_IN_OPENS_BEFORE
    closes = current.ends_at + clinic.no_show_grace
    if now < opens:
        raise Refused(
            "check-in-not-open",
            f"check-in opens at {format_local(opens, zone)} ({clinic.time_zone}), "
            f"{CHECK_IN_OPENS_BEFORE.seconds // 3600} h before the start",
            opens_at=opens.isoformat(),
        )
    if now > closes:
        raise Refused(
            "check-in-closed",
            f"check-in closed at {format_local(closes, zone)} ({clinic.time_zone}), the end "
            "plus the no-show grace; mark it as a no-show or reschedule it",
            closed_at=closes.isoformat(),
        )


def _no_show_guard(current: Appointment, clinic: ClinicInfo, now: datetime) -> None:
    allowed_from = current.ends_at + clinic.no_show_grace
    if now < allowed_from:
        raise Refused(
            "too-early-for-no-show",
            f"a no-show can be recorded from {format_local(allowed_from, clinic.zone)} "
            f"({clinic.time_zone}), the end plus the clinic's grace",
            allowed_from=allowed_from.isoformat(),
        )


async def confirm(
    pool: asyncpg.Pool, appointment_id: int, *, expected_version: int, change: Change
) -> Appointment:
    """Confirm on the patient's behalf (they phoned or told the desk)."""
    return await _act(
        pool,
        appointment_id,
        "confirmed",
        "confirm",
        expected_version=expected_version,
        change=change,
        details={"on_behalf_of": "patient"},
    )


async def check_in(
    pool: asyncpg.Pool, appointment_id: int, *, expected_version: int, change: Change
) -> Appointment:
    return await _act(
        pool,
        appointment_id,
        "checked_in",
        "check_in",
        expected_version=expected_version,
        change=change,
        guard=_check_in_guard,
    )


async def complete(
    pool: asyncpg.Pool, appointment_id: int, *, expected_version: int, change: Change
) -> Appointment:
    return await _act(
        pool,
        appointment_id,
        "completed",
        "complete",
        expected_version=expected_version,
        change=change,
    )


async def no_show(
    pool: asyncpg.Pool, appointment_id: int, *, expected_version: int, change: Change
) -> Appointment:
    return await _act(
        pool,
        appointment_id,
        "no_show",
        "no_show",
        expected_version=expected_version,
        change=change,
        guard=_no_show_guard,
    )


async def review(
    pool: asyncpg.Pool,
    appointment_id: int,
    *,
    note: str,
    expected_version: int,
    change: Change,
) -> Appointment:
    """A clinician clears the needs-review flag, with a note saying what they checked."""
    async with pool.acquire() as conn, conn.transaction():
        current = await _locked(conn, appointment_id, expected_version)
        if current.status in TERMINAL:
            raise NotActive(current.status, f"the appointment is {current.status}")
        if not current.needs_review:
            raise Refused("nothing-to-review", "the appointment is not flagged for review")
        updated = await appointments.set_review(
            conn,
            appointment_id,
            needs_review=False,
            reasons=[],
            actor=change.actor.label,
            now=change.now,
            note=note,
        )
        assert updated is not None
        await _audit(
            conn,
            change,
            "appointment.review",
            updated,
            reason=note,
            details={"cleared_reasons": current.review_reasons},
        )
        return updated


# -- cancel ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelOutcome:
    appointment: Appointment
    cancelled_ids: list[int]
    override_used: bool
    series_status: SeriesStatus | None


def _later_active(sessions: Sequence[Appointment], current: Appointment) -> list[Appointment]:
    """Active sessions after `current` in course order (the rest of the course)."""

    def order(a: Appointment) -> tuple[int, datetime]:
        return (a.position or 0, a.starts_at)

    return [
        a
        for a in sessions
        if a.id != current.id and a.status in ACTIVE and order(a) > order(current)
    ]


async def cancel(
    pool: asyncpg.Pool,
    appointment_id: int,
    *,
    reason: str,
    scope: CancelScope,
    override_reason: str | None,
    expected_version: int,
    change: Change,
) -> CancelOutcome:
    """Cancel one session, or it and every later active session of its course.

    A session starting within the clinic's cancellation notice is refused unless staff give an
    `override_reason` (logged with each cancelled session). Cancelling the rest of a course also
    cancels the series itself.
    """
    rest = scope == "rest_of_course"
    async with pool.acquire() as conn, conn.transaction():
        current = await _locked(conn, appointment_id, expected_version, lock_series=rest)
        if rest and current.series_id is None:
            raise InvalidChange("scope", "the appointment is not part of a course")
        check_transition(current.status, "cancelled")
        targets = [current]
        if rest:
            assert current.series_id is not None
            sessions = await appointments.for_series(conn, current.series_id, for_update=True)
            targets += _later_active(sessions, current)
        clinic = await _clinic(conn, current.clinic_id)
        late = [a for a in targets if a.starts_at - change.now < clinic.cancellation_notice]
        if late and override_reason is None:
            raise Refused(
                "inside-cancellation-notice",
                f"{_describe_late(late, clinic)} within the clinic's cancellation notice of "
                f"{_hours(clinic.cancellation_notice)} h; staff may override with a reason",
                notice_hours=_hours(clinic.cancellation_notice),
                appointment_ids=[a.id for a in late],
            )
        overriding = override_reason if late else None
        cancelled = [await _cancel_one(conn, a, reason, scope, overriding, change) for a in targets]
        # Their pending reminders end in this transaction; one notice names every session.
        await outbox_plan.on_cancelled_together(
            conn, [a.id for a in cancelled], now=change.now, notify_patient=True
        )
        series_status = await _end_series(conn, current, change, reason) if rest else None
        named = cancelled[0]
        return CancelOutcome(named, [a.id for a in cancelled], bool(late), series_status)


def _hours(span: timedelta) -> int:
    return int(span.total_seconds() // 3600)


def _describe_late(late: Sequence[Appointment], clinic: ClinicInfo) -> str:
    starts = ", ".join(format_local(a.starts_at, clinic.zone) for a in late)
    return f"the session(s) at {starts} ({clinic.time_zone}) start"


async def _cancel_one(
    conn: asyncpg.Connection,
    appointment: Appointment,
    reason: str,
    scope: CancelScope,
    override_reason: str | None,
    change: Change,
) -> Appointment:
    details: dict[str, Any] = {"scope": scope}
    if override_reason is not None:
        details["notice_override"] = override_reason
    return await _transition_audited(
        conn,
        appointment,
        "cancelled",
        "cancel",
        change,
        reason=reason,
        details=details,
        audit_details=details,
    )


async def _end_series(
    conn: asyncpg.Connection, current: Appointment, change: Change, reason: str
) -> SeriesStatus | None:
    assert current.series_id is not None
    series = await series_store.lock(conn, current.series_id)
    if series is None or series.status not in ("active", "paused"):
        return series.status if series is not None else None
    await series_store.update(
        conn,
        series.id,
        plan_notes=None,
        status="cancelled",
        expected_version=None,
        now=change.now,
    )
    await audit.record(
        conn,
        at=change.now,
        actor=change.actor,
        action="series.cancel",
        entity="series",
        entity_id=series.id,
        patient_id=series.patient_id,
        reason=reason,
        details={"from_status": series.status, "via": "cancel rest of course"},
        request_id=change.request_id,
    )
    return "cancelled"


ERASURE_REASON = "patient erased"


@dataclass(frozen=True)
class ErasureCancellation:
    appointment_ids: list[int]
    series_ids: list[int]


async def cancel_for_erasure(
    conn: asyncpg.Connection, patient_id: int, change: Change
) -> ErasureCancellation:
    """Erasure, inside the caller's transaction: every future active session of the patient is
    cancelled (history event and audit row each, as a staff cancellation), their pending
    messages end, and every active or paused course of theirs is cancelled. No notice is
    planned: there is nobody to write to. The cancellation notice does not apply (the patient
    asked for it, and no slot is given away late on their account)."""
    courses = await series_store.lock_for_patient(conn, patient_id)
    sessions = await appointments.lock_future_active_for_patient(conn, patient_id, change.now)
    details: dict[str, Any] = {"scope": "erasure"}
    cancelled = [
        await _transition_audited(
            conn,
            session,
            "cancelled",
            "cancel",
            change,
            reason=ERASURE_REASON,
            details=details,
            audit_details=details,
        )
        for session in sessions
    ]
    await outbox_plan.on_cancelled_together(
        conn, [a.id for a in cancelled], now=change.now, notify_patient=False
    )
    ended = []
    for course in courses:
        if course.status not in ("active", "paused"):
            continue
        await series_store.update(
            conn,
            course.id,
            plan_notes=None,
            status="cancelled",
            expected_version=None,
            now=change.now,
        )
        await audit.record(
            conn,
            at=change.now,
            actor=change.actor,
            action="series.cancel",
            entity="series",
            entity_id=course.id,
            patient_id=patient_id,
            reason=ERASURE_REASON,
            details={"from_status": course.status, "via": "erasure"},
            request_id=change.request_id,
        )
        ended.append(course.id)
    return ErasureCancellation([a.id for a in cancelled], ended)


# -- reschedule ------------------------------------------------------------------------------------


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
    pool: asyncpg.Pool,
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
            pool, appointment_id, request, may_override, expected_version, change
        )
    except asyncpg.ExclusionViolationError:
        # Someone took the slot between our check and our write; the transaction is gone.
        moving = await appointments.get(pool, appointment_id)
        assert moving is not None
        practitioner_id = request.practitioner_id or moving.practitioner_id
        offered = await next_free_starts(
            pool, moving, practitioner_id, request.starts_at, now=change.now
        )
        raise SlotUnavailable(
            "the slot was taken by another booking a moment ago", offered
        ) from None


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
    pool: asyncpg.Pool,
    appointment_id: int,
    request: MoveRequest,
    may_override: bool,
    expected_version: int,
    change: Change,
) -> RescheduleOutcome:
    async with pool.acquire() as conn, conn.transaction():
        move = await _prepare_move(conn, appointment_id, request, expected_version, change)
        sessions, check, plan = await _course_check(move)
        if request.shift_later and not plan.complete:
            raise Refused(
                "shift-impossible", f"the later sessions cannot all be moved: {plan.failure}"
            )
        overridden = _authorise_gaps(check, plan, request, may_override)
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
        await _audit(
            conn,
            change,
            "appointment.reschedule",
            moved,
            reason=request.override_reason if overridden else request.reason,
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
    current = await _locked(conn, appointment_id, expected_version, lock_series=True)
    if current.status not in gaps.MOVABLE_STATUSES:
        raise NotActive(
            current.status, f"an appointment that is {current.status} cannot be rescheduled"
        )
    move = _Move(
        conn=conn,
        current=current,
        clinic=await _clinic(conn, current.clinic_id),
        treatment=await _treatment(conn, current.treatment_id),
        practitioner_id=request.practitioner_id or current.practitioner_id,
        start=request.starts_at.astimezone(UTC),
        request=request,
        change=change,
    )
    if move.start == current.starts_at and move.practitioner_id == current.practitioner_id:
        raise InvalidChange("starts_at", "is the appointment's current start")
    await _check_slot(move)
    return move


async def _course_check(move: _Move) -> tuple[list[Session], MoveCheck, ShiftPlan]:
    """The course's sessions (locked), the gaps around the new start, and the shifts of later
    sessions when the gap after it falls outside its window."""
    series_id = move.current.series_id
    if series_id is None:
        return [], MoveCheck(None, None), ShiftPlan((), True)
    rows = await appointments.for_series(move.conn, series_id, for_update=True)
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
        raise InvalidChange(
            "practitioner_id",
            f"practitioner {move.practitioner_id} is not an active practitioner of this clinic",
        )
    problem = why_not_free(
        move.treatment.spec, found[0], clinic.rules, move.start, now=now, step=clinic.slot_step
    )
    if problem is not None:
        offered = await next_free_starts(
            move.conn, move.current, move.practitioner_id, move.start, now=now
        )
        raise SlotUnavailable(
            f"{format_local(move.start, clinic.zone)} ({clinic.time_zone}) is not free: {problem}",
            offered,
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
    check: MoveCheck, plan: ShiftPlan, request: MoveRequest, may_override: bool
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
        )
    if not may_override:
        raise OverrideNotAllowed("only a clinician or an admin may override the hard minimum gap")
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
    await _audit(
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
        later = await appointments.get(conn, gap.later_id, for_update=True)
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
        await _audit(conn, change, "appointment.flag_review", updated, reason=note)
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


async def next_free_starts(
    db: Executor,
    appointment: Appointment,
    practitioner_id: int,
    around: datetime,
    *,
    now: datetime,
) -> list[FreeStart]:
    """The next few free starts for this appointment's treatment from the day of `around`:
    with `practitioner_id` first; with anyone in the clinic if they have none."""
    clinic = await _clinic(db, appointment.clinic_id)
    treatment = await _treatment(db, appointment.treatment_id)
    first_day = around.astimezone(clinic.zone).date()
    last_day = first_day + timedelta(days=ALTERNATIVES_DAYS - 1)
    for only in ([practitioner_id], None):
        schedules = await load_schedules(
            db,
            clinic.id,
            practitioner_ids=only,
            first_day=first_day,
            last_day=last_day,
            zone=clinic.zone,
            now=now,
            exclude_appointment_ids=[appointment.id],
        )
        found = free_starts(
            treatment.spec,
            schedules,
            clinic.rules,
            first_day=first_day,
            last_day=last_day,
            now=now,
            step=clinic.slot_step,
        )
        if found:
            return found[:ALTERNATIVES]
    return []


# -- series ----------------------------------------------------------------------------------------

SERIES_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"active", "paused", "completed", "cancelled"}),
    "paused": frozenset({"active", "paused", "completed", "cancelled"}),
    "completed": frozenset({"completed"}),
    "cancelled": frozenset({"cancelled"}),
}


async def update_series(
    pool: asyncpg.Pool,
    series_id: int,
    *,
    plan_notes: str | None,
    status: SeriesStatus | None,
    expected_version: int,
    change: Change,
) -> series_store.Series:
    """Change a course's plan notes and/or status (None leaves a field alone).

    Completed and cancelled are final. A course with sessions still on the books cannot be
    marked completed or cancelled: cancel them first (cancel with scope rest_of_course), so
    the course and its appointments never disagree.
    """
    async with pool.acquire() as conn, conn.transaction():
        current = await series_store.lock(conn, series_id)
        if current is None:
            raise NotFound("series", series_id)
        if current.version != expected_version:
            raise series_store.StaleSeries(current)
        if status is not None:
            await _check_series_status(conn, current, status)
        updated = await series_store.update(
            conn,
            series_id,
            plan_notes=plan_notes,
            status=status,
            expected_version=expected_version,
            now=change.now,
        )
        assert updated is not None
        changed = {
            name: {"from": getattr(current, name), "to": getattr(updated, name)}
            for name in ("status", "plan_notes")
            if getattr(current, name) != getattr(updated, name)
        }
        await audit.record(
            conn,
            at=change.now,
            actor=change.actor,
            action="series.update",
            entity="series",
            entity_id=series_id,
            patient_id=current.patient_id,
            details={"changed": changed},
            request_id=change.request_id,
        )
        return updated


async def _check_series_status(
    conn: asyncpg.Connection, current: series_store.Series, status: SeriesStatus
) -> None:
    if status not in SERIES_TRANSITIONS[current.status]:
        raise NotActive(current.status, f"a {current.status} course cannot become {status}")
    if status in ("completed", "cancelled") and current.status != status:
        active = [
            a.id for a in await appointments.for_series(conn, current.id) if a.status in ACTIVE
        ]
        if active:
            raise SeriesConflict(
                "sessions-still-booked",
                f"the course still has {len(active)} session(s) on the books; cancel them "
                "first (cancel with scope rest_of_course) or complete them",
                appointment_ids=active,
            )
