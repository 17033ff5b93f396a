"""The public booking API the booking form uses: no token, rate-limited per client address.

Flow: clinic and treatments → availability → (for a course) a proposal of every session → a hold
on those times (token shown once) → the booking with the patient's details and consents. Every
time is given in UTC (`start`) and in the clinic's zone (`start_local`, `local_date`,
`local_time`), and each answer names the zone.

This module has the reads before a hold (clinic, treatments, availability, course proposal) and
how a session is shown; the holds are in `public_holds`, the booking in `public_booking`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from services.booking.api import API, ratelimit
from services.booking.api.common import or_not_found
from services.booking.api.fields import Day, Id, Instant, Query
from services.booking.api.framework import Ctx, invalid
from services.booking.api.pagination import Page, PageQuery
from services.booking.domain import offers
from services.booking.domain.offers import Offer
from shared.scheduling.course import CourseProposal, ProposedSession
from shared.scheduling.loader import ClinicInfo, load_clinic
from shared.store import practitioners, treatments
from shared.store.appointments import Appointment

TAG = "public booking"
MAX_DAYS = 42  # availability: at most six weeks per request

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


async def _clinic(ctx: Ctx) -> ClinicInfo:
    clinic_id = ctx.path["clinic_id"]
    return or_not_found(await load_clinic(ctx.pool, clinic_id), "clinic", clinic_id)


async def public_offer(
    ctx: Ctx, treatment_id: int, where: str, db: offers.Executor | None = None
) -> Offer:
    offer = await offers.load_offer(ctx.pool if db is None else db, treatment_id, public=True)
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
    practitioner_id = None if query.practitioner == "any" else int(query.practitioner)
    # One connection for the request's handful of reads: each pool.fetch would otherwise pay
    # an acquire and the connection reset on release, a round trip each.
    async with ctx.pool.acquire() as conn:
        offer = await public_offer(ctx, query.treatment_id, "query", conn)
        if practitioner_id is not None and not await offers.works_here(
            conn, offer, practitioner_id
        ):
            raise invalid("practitioner", f"no practitioner {practitioner_id} here", where="query")
        slots = await offers.free_slots(
            conn, offer, practitioner_id, query.from_, query.to, ctx.now
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
    async with ctx.pool.acquire() as conn:  # one connection: see public_availability
        offer = await public_offer(ctx, query.treatment_id, "query", conn)
        proposal = await offers.propose(
            conn,
            offer,
            first_start=query.first_start,
            practitioner_id=query.practitioner_id,
            sessions=query.sessions or offer.treatment.sessions_min,
            now=ctx.now,
        )
    return proposal_out(proposal, offer)
