"""Staff booking: book a known patient directly (no hold), one visit or a whole course, all
sessions or none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, StrictBool, StringConstraints

from services.booking.api import API, idempotency
from services.booking.api.common import ALL_STAFF, CLINICAL
from services.booking.api.fields import Body, Id, Instant, OverrideReason, text
from services.booking.api.framework import ApiError, Ctx, invalid
from services.booking.api.public_booking import BookedSession, booked_out
from services.booking.api.public_holds import session_requests
from services.booking.domain import bookings, offers
from services.booking.domain.sessions import SessionRequest
from shared.domain.screening import Given


class StaffSession(Body):
    practitioner_id: Id
    start: Instant


class ConsultationOverride(Body):
    reason: OverrideReason


ScreeningCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
ScreeningAnswers = dict[ScreeningCode, StrictBool]
DetailText = text(2000)
ScreeningDetails = dict[ScreeningCode, DetailText]


def given_answers(
    answers: ScreeningAnswers | None, details: ScreeningDetails | None, path: str
) -> dict[str, Given] | None:
    """The yes/no answers with what the patient said (details only for an answered code)."""
    if answers is None:
        if details:
            raise invalid(path + "_details", "give the answers in " + path)
        return None
    for code in details or {}:
        if code not in answers:
            raise invalid(f"{path}_details.{code}", f"no answer to {code} in {path}")
    return {code: Given(yes, (details or {}).get(code, "")) for code, yes in answers.items()}


class StaffBookingRequest(Body):
    """Either `start` with `practitioner_id` (a single visit; a course proposed from this first
    session; or, with `series_id`, the next session of that course), or an explicit `sessions`
    list (in order; fewer than the course's sessions books it session by session)."""

    patient_id: Id
    treatment_id: Id
    practitioner_id: Id | None = None
    start: Instant | None = None
    sessions: list[StaffSession] | None = Field(None, min_length=1, max_length=50)
    session_count: int | None = Field(
        None, ge=1, le=50, description="sessions planned, for a course of variable length"
    )
    series_id: Id | None = Field(None, description="add the sessions to this course")
    override_reason: OverrideReason | None = Field(
        None,
        description="book under a gap's hard minimum (clinician or admin only); logged",
    )
    consultation_override: ConsultationOverride | None = Field(
        None,
        description="book a course that needs a consultation although the patient has none on "
        "file (clinician or admin only); the reason is logged and shown in each session's history",
    )
    screening: ScreeningAnswers | None = Field(
        None,
        max_length=50,
        description="the patient's yes/no answer to every screening question that applies "
        "(GET /api/v1/clinics/{clinic_id}/screening-questions); without them the sessions are "
        "flagged 'screening not answered' unless complete answers are on file; a new yes flags "
        "them for clinician review",
    )
    screening_details: ScreeningDetails | None = Field(
        None, max_length=50, description="what the patient said about an answer, by code"
    )


class StaffBookingResult(BaseModel):
    patient_id: int
    series_id: int | None
    treatment_id: int
    time_zone: str
    needs_review: bool
    appointments: list[BookedSession]
    warnings: list[str] = Field(description="e.g. a gap beyond the soft maximum")


def _location(booked: Mapping[str, Any]) -> str:
    """One session booked: that appointment; several: the course they belong to."""
    sessions = booked["appointments"]
    if len(sessions) == 1 or booked["series_id"] is None:
        return f"/api/v1/appointments/{sessions[0]['id']}"
    return f"/api/v1/series/{booked['series_id']}"


def _staff_booking(body: StaffBookingRequest) -> bookings.StaffBooking:
    if body.sessions is not None and body.start is not None:
        raise invalid("sessions", "give either start or sessions, not both")
    if body.start is not None and body.practitioner_id is None:
        raise invalid("practitioner_id", "required with start")
    if body.sessions is None and body.start is None:
        raise invalid("start", "give a start (with practitioner_id) or a list of sessions")
    first = None
    if body.start is not None and body.practitioner_id is not None:
        first = SessionRequest(body.practitioner_id, body.start)
    sessions = session_requests(body.sessions) if body.sessions is not None else None
    return bookings.StaffBooking(
        patient_id=body.patient_id,
        first=first,
        sessions=sessions,
        session_count=body.session_count,
        series_id=body.series_id,
        override_reason=body.override_reason,
        screening=given_answers(body.screening, body.screening_details, "screening"),
        consultation_override_reason=(
            body.consultation_override.reason if body.consultation_override is not None else None
        ),
    )


@API.route(
    "POST",
    "/api/v1/bookings",
    summary="Book a patient directly: one visit, a whole course, or the next session of one",
    tag="bookings",
    # Clinicians book follow-up courses straight after a consultation, so they may book too.
    roles=ALL_STAFF,
    body=StaffBookingRequest,
    response=StaffBookingResult,
    status=201,
    idempotent=True,
    errors=(409, 422),
    location=_location,
)
async def create_booking(ctx: Ctx) -> Any:
    """Every session is checked (free, gaps) and booked in one transaction, or none is. A
    conflict answers 409 naming the session(s) and the next free `alternatives` (same
    practitioner first, then any); a course that cannot be placed names the failing position.
    The first session of a course that needs a consultation is refused (409
    consultation-required) unless the patient has one on file (completed, or booked to end
    before the course starts) or a clinician or admin gives `consultation_override`."""
    body: StaffBookingRequest = ctx.body
    assert ctx.staff is not None
    # The hard minimum gap protects the patient: only a clinician (or an admin) may go below it.
    if body.override_reason is not None and ctx.staff.role not in CLINICAL:
        raise ApiError(403, "Forbidden", "only a clinician or an admin may override a minimum gap")
    # So is the consultation a course needs: skipping it is a clinical decision.
    if body.consultation_override is not None and ctx.staff.role not in CLINICAL:
        raise ApiError(
            403,
            "Forbidden",
            "only a clinician or an admin may book a course without a consultation",
        )
    request = _staff_booking(body)
    offer = await offers.load_offer(ctx.pool, body.treatment_id, public=False)
    if offer is None:
        raise invalid("treatment_id", f"no active treatment {body.treatment_id}")

    async def work(conn: asyncpg.Connection) -> StaffBookingResult:
        result = await bookings.book_for_patient(
            conn, offer, request, now=ctx.now, actor=ctx.actor, request_id=ctx.request_id
        )
        rows = [booked_out(r, offer, n) for n, r in enumerate(result.appointments, start=1)]
        return StaffBookingResult(
            patient_id=result.patient_id,
            series_id=result.series_id,
            treatment_id=offer.treatment.id,
            time_zone=offer.clinic.time_zone,
            needs_review=any(r.needs_review for r in rows),
            appointments=rows,
            warnings=result.warnings,
        )

    return await idempotency.run(ctx, work, status=201)
