"""State actions on a booked appointment: confirm, check in, complete, no-show (and undoing a
no-show recorded by mistake), and a clinician's review. Each takes the caller's connection and
the version the caller last read; the transaction helper owns the transaction
(shared/domain/appointment_changes for what every change is made of)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.booking.domain.errors import NotActive
from shared import outbox_plan
from shared.domain import adverse_events, after_session
from shared.domain.appointment_changes import (
    Change,
    audit_appointment,
    clinic_of,
    locked,
    transition_audited,
)
from shared.domain.appointment_states import (
    TERMINAL,
    Status,
    check_transition,
)
from shared.domain.errors import Conflict
from shared.scheduling.availability import format_local
from shared.scheduling.loader import ClinicInfo
from shared.store import appointments, notifications
from shared.store.appointments import Appointment

# Check-in opens this long before the start (the patient is early); it closes at end + grace.
CHECK_IN_OPENS_BEFORE = timedelta(hours=2)


Guard = Callable[[Appointment, ClinicInfo, datetime], None]
# A rule that needs the database (another record holds the change back), run before `guard`.
DbGuard = Callable[[asyncpg.Connection, Appointment], Awaitable[None]]
# What an action writes with the transition, before its follow-up is planned (the session record).
Then = Callable[[asyncpg.Connection, Appointment], Awaitable[None]]


@dataclass(frozen=True)
class StateAction:
    """One of the plain state changes: its name in the audit log, the state it leads to, its own
    rule beyond the state machine (`guard`), and what its history event records."""

    name: str
    to_status: Status
    guard: Guard | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    db_guard: DbGuard | None = None


async def act(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    state: StateAction,
    expected_version: int,
    change: Change,
    then: Then | None = None,
) -> Appointment:
    """One state transition: version, legality, then the action's own rule (`guard`); `then`
    writes what belongs with the transition (a completed session's record) before the
    follow-ups that may read it are planned."""
    current = await locked(conn, appointment_id, expected_version)
    check_transition(current.status, state.to_status)
    if state.db_guard is not None:
        await state.db_guard(conn, current)
    if state.guard is not None:
        state.guard(current, await clinic_of(conn, current.clinic_id), change.now)
    details = dict(state.details)
    updated = await transition_audited(
        conn,
        current,
        state.to_status,
        state.name,
        change,
        details=details or None,
        audit_details={"to_status": state.to_status, **details},
    )
    if then is not None:
        await then(conn, updated)
    if state.to_status == "no_show" and updated.patient_id is not None:
        # After a missed session the patient's later ones get the 2-hour reminder too.
        await outbox_plan.on_no_show(conn, updated.patient_id, now=change.now)
    if state.to_status == "completed":
        await after_session.on_completed(conn, updated, change)
    return updated


def _check_in_guard(current: Appointment, clinic: ClinicInfo, now: datetime) -> None:
    zone = clinic.zone
    if current.needs_review:
        raise Conflict(
            code="needs-review",
            message="a clinician must review this appointment before check-in: "
            + "; ".join(current.review_reasons or ["flagged for review"]),
            review_reasons=current.review_reasons,
        )
    opens = current.starts_at - CHECK_IN_OPENS_BEFORE
    closes = current.ends_at + clinic.no_show_grace
    if now < opens:
        raise Conflict(
            code="check-in-not-open",
            message=f"check-in opens at {format_local(opens, zone)} ({clinic.time_zone}), "
            f"{CHECK_IN_OPENS_BEFORE.seconds // 3600} h before the start",
            opens_at=opens.isoformat(),
        )
    if now > closes:
        raise Conflict(
            code="check-in-closed",
            message=f"check-in closed at {format_local(closes, zone)} ({clinic.time_zone}), "
            "the end plus the no-show grace; mark it as a no-show or reschedule it",
            closed_at=closes.isoformat(),
        )


def _no_show_guard(current: Appointment, clinic: ClinicInfo, now: datetime) -> None:
    allowed_from = current.ends_at + clinic.no_show_grace
    if now < allowed_from:
        raise Conflict(
            code="too-early-for-no-show",
            message=f"a no-show can be recorded from {format_local(allowed_from, clinic.zone)} "
            f"({clinic.time_zone}), the end plus the clinic's grace",
            allowed_from=allowed_from.isoformat(),
        )


# Confirm on the patient's behalf (they phoned or told the desk); check in from 2 h before the
# start until the end plus the no-show grace, never while a clinician review is pending nor
# while an adverse event of the patient holds their next session (refused naming the event);
# complete; record a no-show once the end plus the grace has passed.
CONFIRM = StateAction("confirm", "confirmed", details={"on_behalf_of": "patient"})
CHECK_IN = StateAction(
    "check_in",
    "checked_in",
    guard=_check_in_guard,
    db_guard=adverse_events.check_in_hold,
)
COMPLETE = StateAction("complete", "completed")
NO_SHOW = StateAction("no_show", "no_show", guard=_no_show_guard)


async def review(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    note: str,
    expected_version: int,
    change: Change,
) -> Appointment:
    """A clinician clears the needs-review flag, with a note saying what they checked."""
    current = await locked(conn, appointment_id, expected_version)
    if current.status in TERMINAL:
        raise NotActive(current.status, f"the appointment is {current.status}")
    if not current.needs_review:
        raise Conflict("the appointment is not flagged for review", code="nothing-to-review")
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
    await audit_appointment(
        conn,
        change,
        "appointment.review",
        updated,
        reason=note,
        details={"cleared_reasons": current.review_reasons},
    )
    return updated


async def undo_no_show(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    reason: str,
    expected_version: int,
    change: Change,
    attended: bool = False,
) -> Appointment:
    """Staff recorded a no-show by mistake: the appointment goes back to the status it had
    before, read from its history (booked or confirmed), audited with the reason; with
    `attended` (the patient came and was seen) it goes to checked_in, so that the session can
    be completed although the check-in window has closed.
    The 2 h reminders the no-show earned the patient's later sessions (outbox_plan.on_no_show)
    are cancelled, unless another no-show of theirs still earns them."""
    current = await locked(conn, appointment_id, expected_version)
    if current.status != "no_show":
        raise Conflict(
            f"the appointment is {current.status}, not a no-show",
            code="not-a-no-show",
            current_status=current.status,
        )
    events = await appointments.history(conn, appointment_id)
    before = next((e.from_status for e in reversed(events) if e.to_status == "no_show"), None)
    if before not in ("booked", "confirmed"):
        raise Conflict(
            "the appointment's history does not say what it was before the no-show",
            code="no-show-origin-unknown",
        )
    back: Status = (
        "checked_in" if attended else ("confirmed" if before == "confirmed" else "booked")
    )
    updated = await appointments.undo_no_show(
        conn,
        appointment_id,
        back,
        actor=change.actor.label,
        now=change.now,
        reason=reason,
        details={"undo": "no_show", "attended": attended},
    )
    assert updated is not None  # locked above
    cancelled: list[int] = []
    patient_id = updated.patient_id
    if patient_id is not None and not await appointments.has_no_show_other_than(
        conn, patient_id, appointment_id
    ):
        rows = await notifications.outbox.cancel_scheduled_for_patient(
            conn,
            patient_id,
            kinds={outbox_plan.REMINDER_2H},
            channel=None,
            reason="the no-show that called for it was undone",
            now=change.now,
        )
        cancelled = [row.id for row in rows]
    await audit_appointment(
        conn,
        change,
        "appointment.undo_no_show",
        updated,
        reason=reason,
        details={
            "from_status": "no_show",
            "to_status": back,
            "cancelled_notification_ids": cancelled,
        },
    )
    return updated
