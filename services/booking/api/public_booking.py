"""The booking in the public booking API: the held slot or course booked for the patient with
their details and consents, all sessions or none (the flow is in `public`'s docstring).
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, StrictBool, StringConstraints

from services.booking.api import API, idempotency, ratelimit
from services.booking.api.fields import BirthDate, Body, Contact, PersonName, text
from services.booking.api.framework import Ctx
from services.booking.api.public import TAG, PublicSession, session_out
from services.booking.api.public_holds import HoldToken
from services.booking.domain import bookings, intake
from services.booking.domain.offers import Offer
from shared.store.appointments import Appointment

FreeText = text(2000)
ScreeningKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
ScreeningText = text(500)


class BookedSession(PublicSession):
    id: int
    needs_review: bool


class PublicBooking(BaseModel):
    series_id: int | None
    treatment_id: int
    time_zone: str
    needs_review: bool = Field(description="a clinician reviews the answers before the visit")
    appointments: list[BookedSession]


def booked_out(row: Appointment, offer: Offer, position: int) -> BookedSession:
    return BookedSession(
        id=row.id,
        needs_review=row.needs_review,
        **session_out(row, offer, position).model_dump(),
    )


# -- booking -------------------------------------------------------------------------------------


class PatientDetails(Body):
    first_name: PersonName
    last_name: PersonName
    mobile: Contact = Field(
        description="a mobile number; national format is read in the clinic's country"
    )
    email: Contact | None = None
    date_of_birth: BirthDate
    allergies: FreeText = ""
    medications: FreeText = ""
    screening: dict[ScreeningKey, StrictBool | ScreeningText] = Field(
        default_factory=dict,
        max_length=50,
        description="answers to the screening questions: true or a text is positive",
    )


class ConsentChoices(Body):
    """Each consent answered explicitly; none is required to book."""

    care_sms: StrictBool
    care_email: StrictBool
    marketing_sms: StrictBool
    marketing_email: StrictBool


class PublicBookingRequest(Body):
    hold_token: HoldToken
    patient: PatientDetails
    consents: ConsentChoices


@API.route(
    "POST",
    "/api/v1/public/bookings",
    summary="Book the held slot or course for the patient",
    tag=TAG,
    roles=None,
    body=PublicBookingRequest,
    response=PublicBooking,
    status=201,
    idempotent=True,
    errors=(404, 409, 422),
    rate_limit=ratelimit.public_writes,
)
async def public_book(ctx: Ctx) -> Any:
    """All sessions or none, in one transaction. An expired hold whose times are still free is
    re-taken; otherwise (or for a released hold) 409 with the next free alternatives. A positive
    screening answer flags the sessions for clinician review; it does not stop the booking.
    A patient already on file (same mobile, else same email) is booked without any change to
    their record: what the request says differently waits for staff, and the patient's private
    link goes to the contacts on file with the confirmation. The API never returns a link.
    A course that needs a consultation is refused (409 consultation-required, nothing booked):
    whether the patient has had one is in their record, and this answer never depends on the
    record (whoever calls may only know the mobile). The patient books the consultation here;
    the clinic books the course with them after it, or they book it on the booking page."""
    body: PublicBookingRequest = ctx.body
    p = body.patient
    form = intake.PatientForm(
        first_name=p.first_name,
        last_name=p.last_name,
        mobile=p.mobile,
        email=p.email or None,
        date_of_birth=p.date_of_birth,
        allergies=p.allergies,
        medications=p.medications,
        screening=dict(p.screening),
    )
    consents = intake.ConsentAnswers(**body.consents.model_dump())

    async def work(conn: asyncpg.Connection) -> PublicBooking:
        result = await bookings.book_hold(
            conn,
            body.hold_token,
            form,
            consents,
            now=ctx.now,
            actor=ctx.actor,
            request_id=ctx.request_id,
            record_blind=True,
        )
        return booking_out(result)

    return await idempotency.run(ctx, work, status=201)


def booking_out(result: bookings.BookingResult) -> PublicBooking:
    rows = [booked_out(r, result.offer, n) for n, r in enumerate(result.appointments, start=1)]
    if not result.patient_created:
        # For a patient already on file the answer tells nothing of their record (whoever asked
        # may not be them): review flags that come from comparing it stay out.
        rows = [r.model_copy(update={"needs_review": result.answers_need_review}) for r in rows]
    return PublicBooking(
        series_id=result.series_id,
        treatment_id=result.offer.treatment.id,
        time_zone=result.offer.clinic.time_zone,
        needs_review=any(r.needs_review for r in rows),
        appointments=rows,
    )
