"""The public booking API the booking form uses: no token, rate-limited per client address.

Flow: clinic and treatments → availability → (for a course) a proposal of every session → a hold
on those times (token shown once) → the booking with the patient's details and consents. Every
time is given in UTC (`start`) and in the clinic's zone (`start_local`, `local_date`,
`local_time`), and each answer names the zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

import asyncpg
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.booking.api import API, idempotency, ratelimit
from services.booking.api.common import or_not_found
from services.booking.api.fields import (
    BirthDate,
    Body,
    Contact,
    Day,
    Id,
    Instant,
    PersonName,
    Query,
    text,
)
from services.booking.api.framework import ApiError, Ctx, invalid
from services.booking.api.pagination import Page, PageQuery
from services.booking.clients import client_key
from services.booking.domain import bookings, holds, intake, offers
from services.booking.domain.offers import Offer
from services.booking.domain.sessions import SessionRequest
from shared.db.transactions import in_transaction
from shared.scheduling.course import CourseProposal, ProposedSession
from shared.scheduling.loader import ClinicInfo, load_clinic
from shared.store import appointments, practitioners, treatments
from shared.store.appointments import Appointment
from shared.web import SETTINGS

TAG = "public booking"
MAX_DAYS = 42  # availability: at most six weeks per request

# -- input types -------------------------------------------------------------------------------

FreeText = text(2000)
HoldToken = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,128}$")]
ScreeningKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
ScreeningText = text(500)


class SessionChoice(Body):
    practitioner_id: Id
    start: Instant = Field(description="the session's start, with its UTC offset")


# -- output models -------------------------------------------------------------------------------


class PublicSlot(BaseModel):
    start: datetime = Field(description="UTC")
    start_local: str = Field(description="ISO 8601 in the clinic's zone, with the offset")
    local_date: date
    local_time: str = Field(description="HH:MM in the clinic's zone")
    practitioner_id: int


class PublicDay(BaseModel):
    day: date = Field(description="a local date in the clinic's zone")
    weekday: str
    slots: list[PublicSlot]


class PublicAvailability(BaseModel):
    treatment_id: int
    practitioner_id: int | None = Field(description="null: any practitioner")
    time_zone: str = Field(description="the clinic's IANA zone every local time is in")
    first_day: date
    last_day: date
    days: list[PublicDay]


class PublicProposedSession(PublicSlot):
    position: int
    end: datetime
    gap_days: int | None = Field(description="local calendar days after the previous session")
    flags: list[str] = Field(description="different_practitioner, different_time, gap_not_target")
    reasons: list[str]


class PublicProposal(BaseModel):
    treatment_id: int
    time_zone: str
    complete: bool
    sessions: list[PublicProposedSession] = Field(description="those placed, in order")
    failed_position: int | None = Field(description="the session that could not be placed")
    failure: str | None


class PublicSession(PublicSlot):
    position: int
    end: datetime
    status: str


class PublicHold(BaseModel):
    hold_id: int
    token: str = Field(description="shown once: keep it to see, release or book the hold")
    expires_at: datetime
    seconds_left: int
    time_zone: str
    treatment_id: int
    sessions: list[PublicSession]


class PublicHoldStatus(BaseModel):
    state: Literal["active", "expired", "released", "booked"]
    expires_at: datetime
    seconds_left: int
    time_zone: str
    treatment_id: int
    sessions: list[PublicSession]


class BookedSession(PublicSession):
    id: int
    needs_review: bool


class PublicBooking(BaseModel):
    series_id: int | None
    treatment_id: int
    time_zone: str
    needs_review: bool = Field(description="a clinician reviews the answers before the visit")
    appointments: list[BookedSession]


class PublicPractitioner(BaseModel):
    id: int
    name: str


class PublicClinic(BaseModel):
    id: int
    name: str
    time_zone: str
    phone: str
    address: str
    hold_minutes: int
    min_notice_minutes: int
    horizon_days: int
    sms_countries: list[str] = Field(
        description="the countries (ISO 3166) whose mobiles the clinic texts; others are refused"
    )
    practitioners: list[PublicPractitioner]


class PublicGap(BaseModel):
    position: int
    target_days: int
    min_days: int
    max_days: int


class PublicTreatment(BaseModel):
    id: int
    code: str
    name: str
    description: str
    duration_minutes: int
    needs_consultation: bool
    is_course: bool
    sessions_min: int
    sessions_max: int
    gaps: list[PublicGap] = Field(description="the gap before each session from the second on")


# -- conversions ---------------------------------------------------------------------------------


def _local_fields(start: datetime, offer: Offer) -> dict[str, Any]:
    local = start.astimezone(offer.clinic.zone)
    return {
        "start": start,
        "start_local": local.isoformat(),
        "local_date": local.date(),
        "local_time": f"{local:%H:%M}",
    }


def session_out(row: Appointment, offer: Offer, position: int) -> PublicSession:
    return PublicSession(
        position=row.position or position,
        practitioner_id=row.practitioner_id,
        end=row.ends_at,
        status=row.status,
        **_local_fields(row.starts_at, offer),
    )


def booked_out(row: Appointment, offer: Offer, position: int) -> BookedSession:
    return BookedSession(
        id=row.id,
        needs_review=row.needs_review,
        **session_out(row, offer, position).model_dump(),
    )


def proposed_out(session: ProposedSession, offer: Offer) -> PublicProposedSession:
    return PublicProposedSession(
        position=session.position,
        practitioner_id=session.practitioner_id,
        end=session.end,
        gap_days=session.gap_days,
        flags=list(session.flags),
        reasons=list(session.reasons),
        **_local_fields(session.start, offer),
    )


def proposal_out(proposal: CourseProposal, offer: Offer) -> PublicProposal:
    return PublicProposal(
        treatment_id=offer.treatment.id,
        time_zone=offer.clinic.time_zone,
        complete=proposal.complete,
        sessions=[proposed_out(s, offer) for s in proposal.sessions],
        failed_position=proposal.failed_position,
        failure=proposal.failure,
    )


class _Session(Protocol):
    practitioner_id: int
    start: datetime


def session_requests(sessions: Sequence[_Session]) -> list[SessionRequest]:
    """A body's `sessions` list for the booking core, each named by its path for a refusal."""
    return [
        SessionRequest(s.practitioner_id, s.start, f"sessions.{i}") for i, s in enumerate(sessions)
    ]


def _seconds_left(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))


def _secret(ctx: Ctx) -> str:
    secret = ctx.request.app[SETTINGS].secret_key
    assert secret, "create_app refuses to start without REGIMEN_SECRET_KEY"
    return secret


async def _clinic(ctx: Ctx) -> ClinicInfo:
    clinic_id = ctx.path["clinic_id"]
    return or_not_found(await load_clinic(ctx.pool, clinic_id), "clinic", clinic_id)


async def _offer(ctx: Ctx, treatment_id: int, where: str) -> Offer:
    offer = await offers.load_offer(ctx.pool, treatment_id, public=True)
    if offer is None:
        raise invalid("treatment_id", f"no treatment {treatment_id} is offered", where=where)
    return offer


# -- clinic and treatments -----------------------------------------------------------------------


@API.route(
    "GET",
    "/api/v1/public/clinics/{clinic_id}",
    summary="The clinic: name, zone, phone, address, booking policy, practitioners",
    tag=TAG,
    roles=None,
    response=PublicClinic,
    rate_limit=ratelimit.public_reads,
)
async def public_clinic(ctx: Ctx) -> PublicClinic:
    clinic = await _clinic(ctx)
    staff = await practitioners.list_page(
        ctx.pool, clinic_id=clinic.id, active=True, after_id=None, limit=200
    )
    return PublicClinic(
        id=clinic.id,
        name=clinic.name,
        time_zone=clinic.time_zone,
        phone=clinic.phone,
        address=clinic.address,
        hold_minutes=int(clinic.hold_time / timedelta(minutes=1)),
        min_notice_minutes=int(clinic.rules.min_notice / timedelta(minutes=1)),
        horizon_days=clinic.rules.horizon.days,
        sms_countries=list(clinic.texts_to),
        practitioners=[PublicPractitioner(id=p.id, name=p.name) for p in staff],
    )


@API.route(
    "GET",
    "/api/v1/public/clinics/{clinic_id}/treatments",
    summary="Treatments on offer (public and active), with each course's sessions and gaps",
    tag=TAG,
    roles=None,
    query=PageQuery,
    response=Page[PublicTreatment],
    rate_limit=ratelimit.public_reads,
)
async def public_treatments(ctx: Ctx) -> Page[PublicTreatment]:
    """By id, paged like every list (a clinic offers a few dozen treatments at most, so the
    page is chosen from all of them)."""
    query: PageQuery = ctx.query
    after = query.after_id() or 0
    clinic = await _clinic(ctx)
    offered: list[PublicTreatment] = []
    for treatment_id in await treatments.active_ids(ctx.pool, clinic.id):
        if treatment_id <= after:
            continue
        offer = await offers.load_offer(ctx.pool, treatment_id, public=True)
        if offer is not None:
            offered.append(_treatment_out(offer))
        if len(offered) == query.fetch:
            break
    return Page[PublicTreatment].of(offered, query.limit)


def _treatment_out(offer: Offer) -> PublicTreatment:
    t = offer.treatment
    return PublicTreatment(
        id=t.id,
        code=t.code,
        name=t.name,
        description=t.description,
        duration_minutes=int(t.spec.duration / timedelta(minutes=1)),
        needs_consultation=t.needs_consultation,
        is_course=t.is_course,
        sessions_min=t.sessions_min,
        sessions_max=t.sessions_max,
        gaps=[
            PublicGap(
                position=k, target_days=g.target_days, min_days=g.min_days, max_days=g.max_days
            )
            for k, g in sorted(t.gaps.items())
        ],
    )


# -- availability and proposals ------------------------------------------------------------------


class AvailabilityQuery(Query):
    treatment_id: Id
    practitioner: str = Field(
        "any", pattern=r"^(any|[1-9][0-9]{0,17})$", description="a practitioner id, or 'any'"
    )
    from_: Day = Field(alias="from", description="first local date (clinic's zone)")
    to: Day = Field(description=f"last local date, at most {MAX_DAYS} days from 'from'")

    @field_validator("to")
    @classmethod
    def _span(cls, to: date, info: ValidationInfo) -> date:
        first = info.data.get("from_")
        if first is not None and to < first:
            raise ValueError("must not be before 'from'")
        if first is not None and (to - first).days + 1 > MAX_DAYS:
            raise ValueError(f"at most {MAX_DAYS} days (six weeks) per request")
        return to


@API.route(
    "GET",
    "/api/v1/public/availability",
    summary="Free start times by local day, for one practitioner or any",
    tag=TAG,
    roles=None,
    query=AvailabilityQuery,
    response=PublicAvailability,
    rate_limit=ratelimit.public_reads,
)
async def public_availability(ctx: Ctx) -> dict[str, Any]:
    query: AvailabilityQuery = ctx.query
    offer = await _offer(ctx, query.treatment_id, "query")
    practitioner_id = None if query.practitioner == "any" else int(query.practitioner)
    if practitioner_id is not None and not await offers.works_here(
        ctx.pool, offer, practitioner_id
    ):
        raise invalid("practitioner", f"no practitioner {practitioner_id} here", where="query")
    slots = await offers.free_slots(
        ctx.pool, offer, practitioner_id, query.from_, query.to, ctx.now
    )
    # Built as plain JSON rather than PublicAvailability instances: four weeks of "any" can be
    # a couple of thousand slots, and validating each one again would double the request time.
    # The shape is PublicAvailability's; tests validate responses against the OpenAPI schema.
    by_day: dict[str, list[dict[str, Any]]] = {}
    for out in offers.slots_json(slots, offer):
        by_day.setdefault(out["local_date"], []).append(out)
    days = [
        {"day": day.isoformat(), "weekday": f"{day:%A}", "slots": by_day.get(day.isoformat(), [])}
        for day in (
            query.from_ + timedelta(days=n) for n in range((query.to - query.from_).days + 1)
        )
    ]
    return {
        "treatment_id": offer.treatment.id,
        "practitioner_id": practitioner_id,
        "time_zone": offer.clinic.time_zone,
        "first_day": query.from_.isoformat(),
        "last_day": query.to.isoformat(),
        "days": days,
    }


class ProposalQuery(Query):
    treatment_id: Id
    practitioner_id: Id = Field(description="the practitioner preferred for every session")
    first_start: Instant = Field(description="the first session's start, with its UTC offset")
    sessions: int | None = Field(
        None, ge=1, le=50, description="for a course of variable length; default its minimum"
    )


@API.route(
    "GET",
    "/api/v1/public/course-proposal",
    summary="Every session of a course from its first start (or which session cannot be placed)",
    tag=TAG,
    roles=None,
    query=ProposalQuery,
    response=PublicProposal,
    rate_limit=ratelimit.public_reads,
)
async def public_course_proposal(ctx: Ctx) -> PublicProposal:
    """When the course cannot be fully placed the answer is still 200, with `complete: false`,
    the sessions placed so far, `failed_position` and a sentence saying why."""
    query: ProposalQuery = ctx.query
    offer = await _offer(ctx, query.treatment_id, "query")
    proposal = await offers.propose(
        ctx.pool,
        offer,
        first_start=query.first_start,
        practitioner_id=query.practitioner_id,
        sessions=query.sessions or offer.treatment.sessions_min,
        now=ctx.now,
    )
    return proposal_out(proposal, offer)


# -- holds -------------------------------------------------------------------------------------


class HoldRequest(Body):
    treatment_id: Id
    sessions: list[SessionChoice] = Field(
        min_length=1,
        max_length=50,
        description="one slot, or every session of the course in order (e.g. a proposal's)",
    )


class HoldTokenHeader(BaseModel):
    """The hold's token travels in a header, never in the URL: addresses end up in proxy logs,
    browser history and Referer headers, and the token is what books or releases the hold."""

    token: HoldToken = Field(alias="Hold-Token", description="the token the hold was created with")


@API.route(
    "POST",
    "/api/v1/public/holds",
    summary="Hold one slot or a whole course while the patient fills in the form",
    tag=TAG,
    roles=None,
    body=HoldRequest,
    response=PublicHold,
    status=201,
    idempotent=True,
    errors=(409, 422),
    rate_limit=ratelimit.public_writes,
)
async def public_create_hold(ctx: Ctx) -> Any:
    """Every session is checked again here (free, gaps within the course's limits). The token is
    shown once; the hold expires after the clinic's hold time. One client address may have only a
    few holds running at once (429 `too-many-holds` beyond them, with Retry-After)."""
    body: HoldRequest = ctx.body
    offer = await _offer(ctx, body.treatment_id, "body")
    secret = _secret(ctx)
    requests = session_requests(body.sessions)
    client = client_key(ctx.request, secret)

    async def work(conn: asyncpg.Connection) -> PublicHold:
        created = await holds.create_hold(
            conn,
            offer,
            requests,
            token_for=lambda hold_id: holds.hold_token(secret, hold_id),
            now=ctx.now,
            actor=ctx.actor,
            request_id=ctx.request_id,
            client=client,
        )
        found = await appointments.get_many(conn, created.appointment_ids)
        rows = [found[i] for i in created.appointment_ids]
        return PublicHold(
            hold_id=created.hold_id,
            token=created.token,
            expires_at=created.expires_at,
            seconds_left=_seconds_left(created.expires_at, ctx.now),
            time_zone=offer.clinic.time_zone,
            treatment_id=offer.treatment.id,
            sessions=[session_out(r, offer, n) for n, r in enumerate(rows, start=1)],
        )

    def conceal(stored: dict[str, Any]) -> dict[str, Any]:
        return {**stored, "token": ""}  # the database keeps only the token's hash

    def reveal(stored: dict[str, Any]) -> dict[str, Any]:
        return {**stored, "token": holds.hold_token(secret, stored["hold_id"])}

    return await idempotency.run(ctx, work, status=201, conceal=conceal, reveal=reveal)


@API.route(
    "GET",
    "/api/v1/public/hold",
    summary="A hold's state and the time left",
    tag=TAG,
    roles=None,
    header=HoldTokenHeader,
    response=PublicHoldStatus,
    errors=(404,),
    rate_limit=ratelimit.public_reads,
)
async def public_hold_status(ctx: Ctx) -> PublicHoldStatus:
    view = await holds.hold_view(ctx.pool, ctx.header.token, ctx.now)
    if view is None or view.offer is None:
        raise ApiError(404, "Not Found", "no hold with this token", type_="not-found")
    offer = view.offer
    return PublicHoldStatus(
        state=view.state,
        expires_at=view.hold.expires_at,
        seconds_left=_seconds_left(view.hold.expires_at, ctx.now) if view.state == "active" else 0,
        time_zone=offer.clinic.time_zone,
        treatment_id=offer.treatment.id,
        sessions=[session_out(r, offer, n) for n, r in enumerate(view.sessions, start=1)],
    )


@API.route(
    "DELETE",
    "/api/v1/public/hold",
    summary="Release a hold: its times are free again at once",
    tag=TAG,
    roles=None,
    header=HoldTokenHeader,
    errors=(404, 409),
    status=204,
    rate_limit=ratelimit.public_writes,
)
async def public_release_hold(ctx: Ctx) -> None:
    """Releasing twice is fine; a hold already booked cannot be released (409)."""
    token = ctx.header.token

    async def work(conn: asyncpg.Connection) -> None:
        await holds.release_hold(
            conn, token, now=ctx.now, actor=ctx.actor, request_id=ctx.request_id
        )

    await in_transaction(ctx.pool, work)


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
    link goes to the contacts on file with the confirmation. The API never returns a link."""
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
