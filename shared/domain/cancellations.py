"""Cancelling: one session, or it and every later active session of its course (which ends
the course too), under the clinic's cancellation notice; and everything of an erased patient.
Each takes the caller's connection; the cancelled sessions' pending messages end in the same
transaction (shared/outbox_plan)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from shared import outbox_plan
from shared.domain.appointment_changes import Change, clinic_of, locked, transition_audited
from shared.domain.appointment_states import ACTIVE, check_transition
from shared.domain.errors import Conflict, InvalidField
from shared.scheduling.availability import format_local
from shared.scheduling.loader import ClinicInfo
from shared.store import appointments, audit
from shared.store import series as series_store
from shared.store.appointments import Appointment
from shared.store.series import SeriesStatus

CancelScope = Literal["this", "rest_of_course"]


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
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    reason: str,
    scope: CancelScope,
    override_reason: str | None,
    expected_version: int | None,
    change: Change,
    notify_patient: bool = True,
) -> CancelOutcome:
    """Cancel one session, or it and every later active session of its course.

    A session starting within the clinic's cancellation notice is refused unless staff give an
    `override_reason` (logged with each cancelled session). Cancelling the rest of a course also
    cancels the series itself. Without `notify_patient` no cancellation notice is planned (the
    patient asked by SMS and is answered in the same exchange).
    """
    rest = scope == "rest_of_course"
    current = await locked(conn, appointment_id, expected_version, lock_series=rest)
    if rest and current.series_id is None:
        raise InvalidField("scope", "the appointment is not part of a course")
    check_transition(current.status, "cancelled")
    targets = [current]
    if rest:
        assert current.series_id is not None
        sessions = await appointments.lock_series(conn, current.series_id)
        targets += _later_active(sessions, current)
    clinic = await clinic_of(conn, current.clinic_id)
    late = [a for a in targets if a.starts_at - change.now < clinic.cancellation_notice]
    if late and override_reason is None:
        raise Conflict(
            code="inside-cancellation-notice",
            message=f"{_describe_late(late, clinic)} within the clinic's cancellation notice of "
            f"{_hours(clinic.cancellation_notice)} h; staff may override with a reason",
            notice_hours=_hours(clinic.cancellation_notice),
            appointment_ids=[a.id for a in late],
        )
    overriding = override_reason if late else None
    cancelled = [await _cancel_one(conn, a, reason, scope, overriding, change) for a in targets]
    # Their pending reminders end in this transaction; one notice names every session.
    await outbox_plan.on_cancelled_together(
        conn, [a.id for a in cancelled], now=change.now, notify_patient=notify_patient
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
    return await transition_audited(
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
    await _cancel_course(conn, series, change, reason, via="cancel rest of course")
    return "cancelled"


async def _cancel_course(
    conn: asyncpg.Connection, course: series_store.Series, change: Change, reason: str, *, via: str
) -> None:
    """An active or paused course (locked by the caller) becomes cancelled, audited."""
    await series_store.update(
        conn,
        course.id,
        plan_notes=None,
        status="cancelled",
        expected_version=None,
        now=change.now,
    )
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action="series.cancel",
        entity="series",
        entity_id=course.id,
        patient_id=course.patient_id,
        reason=reason,
        details={"from_status": course.status, "via": via},
        request_id=change.request_id,
    )


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
        await transition_audited(
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
        await _cancel_course(conn, course, change, ERASURE_REASON, via="erasure")
        ended.append(course.id)
    return ErasureCancellation([a.id for a in cancelled], ended)
