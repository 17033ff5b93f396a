"""Bookings: a hold turned into a booking for the patient on the form, and staff booking a known
patient directly, every session or none. Every write happens inside the caller's transaction,
with the booking's audit row and its outbox messages (the confirmation and the reminders), so a
booking without its messages, or the other way round, cannot exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.booking.domain import consultation_gate, screening_checks
from services.booking.domain.errors import (
    CourseNotPlaceable,
    HoldFinished,
    HoldLapsed,
    HoldNotFound,
    SlotsTaken,
)
from services.booking.domain.holds import hold_view
from services.booking.domain.intake import (
    ConsentAnswers,
    PatientForm,
    ResolvedPatient,
    consents_differing,
    record_consents,
    resolve_patient,
    screening_reasons,
)
from services.booking.domain.offers import Offer, check_session_count, propose
from services.booking.domain.sessions import (
    PlannedSession,
    SessionRequest,
    find_conflicts,
    insert_sessions,
    plan_sessions,
)
from shared import outbox_plan
from shared.domain import adverse_events, proposals
from shared.domain.appointment_changes import Change
from shared.domain.appointment_states import ACTIVE
from shared.domain.errors import InvalidField
from shared.domain.screening import Given
from shared.store import appointments, audit, form_differences, holds, patients, series
from shared.store.appointments import Appointment
from shared.store.audit import Actor
from shared.store.screening import AnswerSource


@dataclass(frozen=True)
class BookingResult:
    offer: Offer
    patient_id: int
    series_id: int | None
    appointments: list[Appointment]
    warnings: list[str]
    # Whether this booking created the patient: only then may the answer reveal the private link
    # (a matched patient may not be whoever filled in the form).
    patient_created: bool = False
    # Whether the submitted answers alone (screening, allergies, medications) flag a review:
    # what may be said to whoever submitted them, unlike a comparison with the record.
    answers_need_review: bool = False


async def book_hold(
    conn: asyncpg.Connection,
    token: str,
    form: PatientForm,
    consents: ConsentAnswers,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
    consultation_declared: bool = False,
    screening_source: AnswerSource = "public_api",
    record_blind: bool = False,
) -> BookingResult:
    """Turn a hold into a booking: patient, consents, series, every session `booked`.

    A course that needs a consultation passes the consultation gate first
    (consultation_gate.check; `consultation_declared`: the form's "I have had one", which
    flags the sessions for review; `record_blind`: the public API, whose answer may not depend
    on the record of a patient matched by mobile or email, so a consultation on file does not
    count there); refused, nothing is booked (not even a new patient).

    An expired hold whose times are still free is re-taken (its rows may already have been
    swept); if a time was taken meanwhile, nothing is booked and the answer is a 409 with
    alternatives.
    """
    view = await hold_view(conn, token, now, for_update=True)
    if view is None:
        raise HoldNotFound()
    if view.state in ("booked", "released") or view.offer is None:
        raise HoldFinished(view.hold, view.state, view.offer, now)
    offer = view.offer
    planned = _planned_from_rows(view.sessions, offer)
    if view.state == "expired":
        await _cancel_own_held(conn, view.sessions, now=now)
        conflicts = await find_conflicts(conn, offer, planned, now)
        if conflicts:
            raise HoldLapsed(offer, conflicts, now)
    patient = await resolve_patient(
        conn, offer.clinic, form, now=now, actor=actor, request_id=request_id
    )
    differs = dict(patient.differs)
    if patient.created:
        await record_consents(
            conn, patient.id, consents, now=now, actor=actor, request_id=request_id
        )
    else:
        changed = await consents_differing(conn, patient.id, consents)
        if changed:
            differs["consents"] = changed
    gate = await consultation_gate.check(
        conn,
        offer.treatment,
        clinic_id=offer.clinic.id,
        patient_id=patient.id,
        first_start=min(p.start for p in planned),
        declared=consultation_declared,
        on_file_counts=not record_blind,
    )
    reasons = screening_reasons(form)
    answers_need_review = bool(reasons)
    reasons.extend(gate.review_reasons)
    if differs:
        reasons.append(
            "booking form differs from the patient record ("
            + ", ".join(sorted(differs))
            + "): compare the form's answers with the patient"
        )
    # A course booked one session at a time still plans the course's sessions: the scheduler
    # proposes each next one, and completes the course after its last.
    course_length = max(offer.treatment.sessions_min, len(planned))
    series_id = await _new_series(conn, offer, patient.id, course_length, now=now)
    held = list(view.sessions)
    if view.state == "expired":
        # Re-take the times under the same hold, then book them like a live hold's.
        ids = await insert_sessions(
            conn,
            offer,
            planned,
            status="held",
            patient_id=None,
            series_id=None,
            hold_id=view.hold.id,
            needs_review=False,
            review_reasons=[],
            source="public",
            actor=actor,
            now=now,
            request_id=request_id,
        )
        held = [await _get(conn, i) for i in ids]
    booked = await _book_held_rows(conn, held, patient, series_id, reasons, now=now, actor=actor)
    await holds.end(conn, view.hold.id, now=now)
    if patient.created:
        # A new patient's answers become real answers; a matched patient's record is not
        # changed by a form (what differs waits in form_difference, and check-in asks again).
        await screening_checks.record_form(
            conn,
            form,
            min(booked, key=lambda a: a.starts_at),
            patient_id=patient.id,
            source=screening_source,
            actor=actor.label,
            now=now,
        )
    if differs:
        # Not in the appointment's history or the audit log: those are append-only, and these
        # values (maybe a stranger's) must go when the patient is erased.
        await form_differences.insert(
            conn,
            clinic_id=offer.clinic.id,
            patient_id=patient.id,
            hold_id=view.hold.id,
            appointment_ids=[a.id for a in booked],
            submitted=differs,
            now=now,
        )
    await _audit_booking(
        conn,
        offer,
        patient.id,
        series_id,
        booked,
        now=now,
        actor=actor,
        request_id=request_id,
        details={
            "hold_id": view.hold.id,
            "retaken": view.state == "expired",
            "patient_created": patient.created,
            **({"consultation": gate.audit_details()} if gate.basis != "not_needed" else {}),
            # Which fields differed, never their values (the log is append-only).
            **({"form_differs": sorted(differs)} if differs else {}),
        },
    )
    # The confirmation and reminders commit with the booking or not at all.
    await outbox_plan.plan_booking(
        conn,
        appointment_ids=[a.id for a in booked],
        patient_id=patient.id,
        clinic_id=offer.clinic.id,
        now=now,
    )
    return BookingResult(
        offer,
        patient.id,
        series_id,
        booked,
        [],
        patient_created=patient.created,
        answers_need_review=answers_need_review,
    )


def _planned_from_rows(rows: Sequence[Appointment], offer: Offer) -> list[PlannedSession]:
    ordered = sorted(rows, key=lambda r: r.starts_at)
    return [
        PlannedSession(
            row.position or index + 1, row.practitioner_id, row.starts_at, row.ends_at, None
        )
        for index, row in enumerate(ordered)
    ]


async def _cancel_own_held(
    conn: asyncpg.Connection, rows: Sequence[Appointment], *, now: datetime
) -> None:
    for row in rows:
        if row.status == "held":
            await appointments.transition(
                conn, row.id, "cancelled", actor="system", now=now, reason="hold expired"
            )


async def _new_series(
    conn: asyncpg.Connection, offer: Offer, patient_id: int, planned: int, *, now: datetime
) -> int | None:
    if not offer.treatment.is_course:
        return None
    return await series.insert(
        conn,
        clinic_id=offer.clinic.id,
        patient_id=patient_id,
        treatment_id=offer.treatment.id,
        planned_sessions=planned,
        now=now,
    )


async def _get(conn: asyncpg.Connection, appointment_id: int) -> Appointment:
    found = await appointments.get(conn, appointment_id)
    assert found is not None
    return found


async def _book_held_rows(
    conn: asyncpg.Connection,
    rows: Sequence[Appointment],
    patient: ResolvedPatient,
    series_id: int | None,
    reasons: list[str],
    *,
    now: datetime,
    actor: Actor,
) -> list[Appointment]:
    booked = []
    for row in sorted(rows, key=lambda r: r.starts_at):
        await appointments.assign_patient(
            conn,
            row.id,
            patient_id=patient.id,
            series_id=series_id,
            needs_review=bool(reasons),
            review_reasons=reasons,
        )
        moved = await appointments.transition(
            conn, row.id, "booked", actor=actor.label, now=now, reason="booked"
        )
        assert moved is not None
        booked.append(moved)
    return booked


async def _audit_booking(
    conn: asyncpg.Connection,
    offer: Offer,
    patient_id: int,
    series_id: int | None,
    booked: Sequence[Appointment],
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    await audit.insert(
        conn,
        at=now,
        actor=actor,
        action="booking.create",
        entity="series" if series_id is not None else "appointment",
        entity_id=series_id if series_id is not None else booked[0].id,
        patient_id=patient_id,
        reason=reason,
        details={
            "treatment_id": offer.treatment.id,
            "appointment_ids": [a.id for a in booked],
            **(details or {}),
        },
        request_id=request_id,
    )


@dataclass(frozen=True)
class StaffBooking:
    """What staff asked for: one start (a single visit, a whole proposed course, or the next
    session of `series_id`), or an explicit list of sessions."""

    patient_id: int
    first: SessionRequest | None
    sessions: list[SessionRequest] | None
    session_count: int | None
    series_id: int | None
    override_reason: str | None
    # A clinician's (or admin's) reason to book a course without a consultation on file; the
    # caller checked the role.
    consultation_override_reason: str | None = None
    # The patient's screening answers by question code (staff bookings); None: not asked.
    screening: dict[str, Given] | None = None


async def book_for_patient(
    conn: asyncpg.Connection,
    offer: Offer,
    request: StaffBooking,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
    strict: bool = False,
    source: str = "staff",
) -> BookingResult:
    """Book directly (no hold) for a known patient, every session or none.

    strict (the patient booking their own next session, next_session.py): gaps outside the
    window [hard minimum, soft maximum] are refused instead of warned about."""
    patient = await patients.get(conn, request.patient_id)
    if patient is None or patient.clinic_id != offer.clinic.id or patient.erased_at is not None:
        raise InvalidField("patient_id", f"no patient {request.patient_id} at this clinic")
    if request.series_id is not None:
        # The series first (the store's lock order): bookings of the next session run one at a
        # time per course, and the scheduler's proposal sweep re-reads the course under it.
        await series.lock(conn, request.series_id)
        # A time proposed to the patient and held for their answer gives way to staff booking
        # the next session themselves (else the course would get both).
        await proposals.withdraw_for_series(conn, request.series_id, Change(actor, now, request_id))
    existing, previous = await _series_so_far(conn, offer, request)
    requests, planned_total = await _staff_requests(conn, offer, request, existing, now)
    first_position = 1 if previous is None else 1 + (previous.position or 0)
    # A delay an adverse-event hold caused, once a clinician cleared it, is approved.
    approved = (
        None
        if previous is None
        else await adverse_events.delay_approval(conn, patient.id, previous.starts_at)
    )
    plan = plan_sessions(
        offer,
        requests,
        first_position=first_position,
        previous=previous,
        strict=strict,
        override_reason=request.override_reason,
        approved_delay=approved,
    )
    if offer.treatment.is_course and plan.sessions[-1].position > offer.treatment.sessions_max:
        raise InvalidField(
            "sessions" if request.sessions else "start",
            f"{offer.treatment.name} has at most {offer.treatment.sessions_max} sessions",
        )
    if request.screening and source == "staff":
        await screening_checks.check_staff_answers(
            conn, offer.clinic.id, offer.treatment.code, request.screening
        )
    gate = None
    if existing is None:
        # The first session of a course (a later one passed the gate with the first).
        gate = await consultation_gate.check(
            conn,
            offer.treatment,
            clinic_id=offer.clinic.id,
            patient_id=patient.id,
            first_start=min(s.start for s in plan.sessions),
            override_reason=request.consultation_override_reason,
        )
    conflicts = await find_conflicts(conn, offer, plan.sessions, now)
    if conflicts:
        raise SlotsTaken(offer, conflicts, now)
    series_id = existing.id if existing is not None else None
    if series_id is None:
        series_id = await _new_series(conn, offer, patient.id, planned_total, now=now)
    ids = await insert_sessions(
        conn,
        offer,
        plan.sessions,
        status="booked",
        patient_id=patient.id,
        series_id=series_id,
        hold_id=None,
        needs_review=bool(plan.review_reasons),
        review_reasons=plan.review_reasons,
        source=source,
        actor=actor,
        now=now,
        request_id=request_id,
    )
    booked = [await _get(conn, i) for i in ids]
    if source == "staff":
        booked = await screening_checks.after_staff_booking(
            conn,
            booked,
            request.screening,
            patient_id=patient.id,
            treatment_code=offer.treatment.code,
            change=Change(actor, now, request_id),
            adds_to_course=existing is not None,
        )
    details: dict[str, Any] = {"warnings": plan.warnings} if plan.warnings else {}
    if gate is not None and gate.basis != "not_needed":
        details["consultation"] = gate.audit_details()
    await _audit_booking(
        conn,
        offer,
        patient.id,
        series_id,
        booked,
        now=now,
        actor=actor,
        request_id=request_id,
        reason=request.override_reason or "",
        details=details or None,
    )
    if gate is not None and gate.basis == "override":
        await consultation_gate.record_override(
            conn,
            gate,
            patient_id=patient.id,
            series_id=series_id,
            booked=booked,
            now=now,
            actor=actor,
            request_id=request_id,
        )
    # The confirmation and reminders commit with the booking or not at all.
    await outbox_plan.plan_booking(
        conn,
        appointment_ids=[a.id for a in booked],
        patient_id=patient.id,
        clinic_id=offer.clinic.id,
        now=now,
    )
    return BookingResult(offer, patient.id, series_id, booked, plan.warnings)


async def _series_so_far(
    conn: asyncpg.Connection, offer: Offer, request: StaffBooking
) -> tuple[series.Series | None, Appointment | None]:
    """The series to add to (if any) and its last session that still counts."""
    if request.series_id is None:
        return None, None
    found = await series.get(conn, request.series_id)
    if (
        found is None
        or found.patient_id != request.patient_id
        or found.treatment_id != offer.treatment.id
    ):
        raise InvalidField("series_id", "no such course of this treatment for this patient")
    if found.status != "active":
        raise InvalidField("series_id", f"the course is {found.status}")
    counted = [
        a
        for a in await appointments.for_series(conn, found.id)
        if (a.status in ACTIVE or a.status == "completed") and a.position is not None
    ]
    previous = max(counted, key=lambda a: a.position or 0, default=None)
    return found, previous


async def _staff_requests(
    conn: asyncpg.Connection,
    offer: Offer,
    request: StaffBooking,
    existing: series.Series | None,
    now: datetime,
) -> tuple[list[SessionRequest], int]:
    """The sessions to book and the course's planned number of sessions."""
    treatment = offer.treatment
    count = request.session_count
    if count is not None and treatment.is_course:
        check_session_count(treatment, count, "session_count")
    elif count is not None and count != 1:
        raise InvalidField("session_count", f"{treatment.name} is a single visit")
    if request.sessions is not None:
        wanted = request.sessions
    elif request.first is None:
        raise InvalidField("start", "give a start (with practitioner_id) or a list of sessions")
    elif treatment.is_course and existing is None:
        wanted = await _proposed(conn, offer, request.first, count, now)
    else:
        wanted = [request.first]
    if not treatment.is_course and len(wanted) != 1:
        raise InvalidField("sessions", f"{treatment.name} is a single visit: give one session")
    planned = count or max(treatment.sessions_min, len(wanted))
    if treatment.is_course and existing is None and len(wanted) > planned:
        raise InvalidField("sessions", f"{len(wanted)} sessions, more than the {planned} planned")
    return wanted, planned


async def _proposed(
    conn: asyncpg.Connection,
    offer: Offer,
    first: SessionRequest,
    count: int | None,
    now: datetime,
) -> list[SessionRequest]:
    proposal = await propose(
        conn,
        offer,
        first_start=first.start,
        practitioner_id=first.practitioner_id,
        sessions=count or offer.treatment.sessions_min,
        now=now,
        count_path="session_count",
    )
    if not proposal.complete:
        raise CourseNotPlaceable(offer, proposal, first.practitioner_id, first.start, now)
    return [SessionRequest(s.practitioner_id, s.start) for s in proposal.sessions]
