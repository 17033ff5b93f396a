"""The booking form's first steps, all plain GET pages whose state travels in the query string
(nothing personal yet): 1. the treatment (a course that needs a consultation offers one first),
2. the practitioner or anyone, 3. a week-by-week picker of free start times in the clinic's time
zone, 3b. for a course, every proposed session, with a way to move the first one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from services.booking.domain import consultation_gate, holds, offers
from services.booking.domain.offers import Offer
from services.booking.domain.sessions import SessionRequest
from services.booking.web import (
    PageError,
    clock_now,
    csrf,
    form_text,
    html_page,
    limit_page,
    parse_int,
    render,
    secret_of,
)
from shared.domain.errors import InvalidField
from shared.scheduling.course import CourseProposal
from shared.scheduling.loader import clinic_info
from shared.store import clinics, practitioners, treatments
from shared.store.appointments import Appointment
from shared.web import POOL

WEEK = 7  # days per page of the slot picker
LOOK_AHEAD_DAYS = 63  # with no week asked for, the picker opens on the first week with a time

# -- what the patient chose so far ---------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Treatment, practitioner (None: any), number of sessions, and whether the patient said
    they already had the consultation the course needs. Safe in URLs: nothing personal."""

    treatment_id: int
    practitioner_id: int | None
    sessions: int
    consulted: bool

    def params(self, **extra: str) -> dict[str, str]:
        out = {
            "treatment": str(self.treatment_id),
            "practitioner": "any" if self.practitioner_id is None else str(self.practitioner_id),
            "sessions": str(self.sessions),
        }
        if self.consulted:
            out["consulted"] = "1"
        out.update(extra)
        return out

    def url(self, path: str, **extra: str) -> str:
        return f"{path}?{urlencode(self.params(**extra))}"


async def _offer(request: web.Request, params: Mapping[str, Any]) -> Offer:
    treatment_id = parse_int(form_text(params, "treatment"))
    if treatment_id is None:
        raise PageError(400)
    offer = await offers.load_offer(request.app[POOL], treatment_id, public=True)
    if offer is None:
        raise PageError(404)
    return offer


async def read_choice(
    request: web.Request, params: Mapping[str, Any], offer: Offer | None = None
) -> tuple[Offer, Choice]:
    offer = offer or await _offer(request, params)
    treatment = offer.treatment
    wanted = form_text(params, "practitioner").strip() or "any"
    practitioner_id = None
    if wanted != "any":
        practitioner_id = parse_int(wanted)
        if practitioner_id is None or not await offers.works_here(
            request.app[POOL], offer, practitioner_id
        ):
            raise PageError(404)
    count_text = form_text(params, "sessions")
    sessions = treatment.sessions_min
    if count_text:
        # A course may be booked one session at a time: 1 is its first session alone.
        low = 1 if treatment.is_course else treatment.sessions_min
        parsed = parse_int(count_text, low=low, high=treatment.sessions_max)
        if parsed is None or (treatment.is_course and 1 < parsed < treatment.sessions_min):
            raise PageError(400)
        sessions = parsed
    consulted = form_text(params, "consulted") == "1"
    return offer, Choice(treatment.id, practitioner_id, sessions, consulted)


def needs_consultation_answer(offer: Offer, choice: Choice) -> bool:
    return offer.treatment.needs_consultation and not choice.consulted


def slot_value(practitioner_id: int, start: datetime) -> str:
    """A start time as form value: practitioner and epoch seconds (no '+' to escape in URLs)."""
    return f"{practitioner_id}-{int(start.timestamp())}"


def parse_slot(text: str) -> SessionRequest | None:
    left, sep, right = text.strip().partition("-")
    practitioner_id = parse_int(left)
    seconds = parse_int(right, low=946684800, high=32503680000)  # years 2000 to 2999
    if not sep or practitioner_id is None or seconds is None:
        return None
    return SessionRequest(practitioner_id, datetime.fromtimestamp(seconds, UTC))


async def practitioner_names(
    request: web.Request, clinic_id: int, *, active: bool | None = None
) -> dict[int, str]:
    rows = await practitioners.list_page(
        request.app[POOL], clinic_id=clinic_id, active=active, after_id=None, limit=500
    )
    return {row.id: row.name for row in rows}


@dataclass(frozen=True)
class ShownSession:
    """One session as the pages show it: local time in the clinic's zone."""

    position: int
    local: datetime
    practitioner: str
    gap_days: int | None = None
    flags: tuple[str, ...] = ()
    value: str = ""  # the slot's form value


def shown_rows(rows: list[Appointment], offer: Offer, names: dict[int, str]) -> list[ShownSession]:
    ordered = sorted(rows, key=lambda r: r.starts_at)
    zone = offer.clinic.zone
    return [
        ShownSession(
            position=row.position or n,
            local=row.starts_at.astimezone(zone),
            practitioner=names.get(row.practitioner_id, ""),
            value=slot_value(row.practitioner_id, row.starts_at),
        )
        for n, row in enumerate(ordered, start=1)
    ]


def _course_weeks(offer: Offer, sessions: int) -> int:
    days = sum(offer.treatment.gaps[k].target_days for k in range(2, sessions + 1))
    return max(1, round(days / 7))


# -- 1. treatment ----------------------------------------------------------------------------------


async def _public_offers(request: web.Request, clinic_id: int) -> list[Offer]:
    shown = []
    for treatment_id in await treatments.active_ids(request.app[POOL], clinic_id):
        offer = await offers.load_offer(request.app[POOL], treatment_id, public=True)
        if offer is not None:
            shown.append(offer)
    return shown


async def render_start(request: web.Request, *, error: str = "") -> web.Response:
    row = await clinics.first(request.app[POOL])
    if row is None:
        return render(request, "book/start.html", clinic=None, treatments=[])
    clinic = clinic_info(row)
    on_offer = await _public_offers(request, row.id)
    offered = [
        {
            "offer": offer,
            "minutes": int(offer.treatment.spec.duration / timedelta(minutes=1)),
            "weeks": _course_weeks(offer, offer.treatment.sessions_min)
            if offer.treatment.is_course
            else 0,
        }
        for offer in on_offer
    ]
    return render(
        request,
        "book/start.html",
        status=400 if error else 200,
        clinic=clinic,
        treatments=offered,
        error=error,
        chosen=form_text(request.query, "treatment"),
    )


def _consultation_for(on_offer: list[Offer]) -> Offer | None:
    """The clinic's consultation, as the consultation gate counts one (so that booking it
    satisfies the gate for the course)."""
    found = [o for o in on_offer if consultation_gate.is_consultation(o.treatment)]
    return (found or [None])[0]


# -- 2. practitioner (or the consultation offer first) --------------------------------------------


@html_page
async def practitioner_page(request: web.Request) -> web.StreamResponse:
    await limit_page(request, "reads")
    if not form_text(request.query, "treatment"):
        return await render_start(request, error="choose_treatment")
    offer, choice = await read_choice(request, request.query)
    clinic = offer.clinic
    if needs_consultation_answer(offer, choice):
        on_offer = await _public_offers(request, clinic.id)
        return render(
            request,
            "book/consultation.html",
            clinic=clinic,
            treatment=offer.treatment,
            consultation=_consultation_for(on_offer),
            continue_url=choice.url("/book/practitioner", consulted="1"),
        )
    active = await practitioner_names(request, clinic.id, active=True)
    return render(
        request,
        "book/practitioner.html",
        clinic=clinic,
        treatment=offer.treatment,
        choice=choice,
        practitioners=active.items(),
        session_counts=_session_counts(offer),
        back_url="/?" + urlencode({"treatment": str(offer.treatment.id)}),
    )


def _session_counts(offer: Offer) -> list[int]:
    """What the form offers: the course's numbers of sessions, then its first session alone."""
    treatment = offer.treatment
    counts = list(range(treatment.sessions_min, treatment.sessions_max + 1))
    return [*counts, 1] if treatment.is_course else counts


def see_other(location: str) -> web.Response:
    # Returned rather than raised: a raised redirect passes the request middleware as an error.
    return web.Response(status=303, headers={"Location": location})


def consultation_redirect(choice: Choice) -> web.Response:
    """Back to the consultation offer: a course that needs one is not booked without an answer."""
    params = choice.params()
    params.pop("consulted", None)
    return see_other("/book/practitioner?" + urlencode(params))


# -- 3. free times, week by week ---------------------------------------------------------------


@dataclass
class DaySlots:
    day: date
    slots: list[ShownSession] = field(default_factory=list)


def parse_day(text: str) -> date | None:
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        return None
    return day if 2000 <= day.year <= 2999 else None


HOLDS_PURPOSE = "holds"  # the browser session's key for its holds (booking_details too)


async def own_held(request: web.Request, offer: Offer) -> list[int]:
    """What this browser holds for the treatment, shown free to it (see holds.held_by_session)."""
    session = csrf.session_key(request, secret_of(request), HOLDS_PURPOSE)
    return await holds.held_by_session(request.app[POOL], offer, session, now=clock_now(request))


async def _week(
    request: web.Request, offer: Offer, choice: Choice, first: date, names: dict[int, str]
) -> list[DaySlots]:
    now, zone = clock_now(request), offer.clinic.zone
    last = first + timedelta(days=WEEK - 1)
    slots = await offers.free_slots(
        request.app[POOL],
        offer,
        choice.practitioner_id,
        first,
        last,
        now,
        exclude_appointment_ids=await own_held(request, offer),
    )
    days = {first + timedelta(days=n): DaySlots(first + timedelta(days=n)) for n in range(WEEK)}
    seen: set[datetime] = set()
    for slot in slots:  # in start order, then practitioner order: the first one offers a time
        if slot.start in seen:
            continue
        seen.add(slot.start)
        local = slot.start.astimezone(zone)
        if local.date() in days:
            days[local.date()].slots.append(
                ShownSession(
                    0,
                    local,
                    names.get(slot.practitioner_id, ""),
                    value=slot_value(slot.practitioner_id, slot.start),
                )
            )
    return list(days.values())


async def _first_day_with_time(
    request: web.Request, offer: Offer, choice: Choice, low: date, high: date
) -> date:
    slots = await offers.free_slots(
        request.app[POOL],
        offer,
        choice.practitioner_id,
        low,
        min(high, low + timedelta(days=LOOK_AHEAD_DAYS)),
        clock_now(request),
    )
    return slots[0].start.astimezone(offer.clinic.zone).date() if slots else low


def _open_day(days: list[DaySlots], chosen: str) -> date | None:
    """The day shown open: the one with the chosen time, else the first with any time."""
    for day in days:
        if any(slot.value == chosen for slot in day.slots):
            return day.day
    return next((day.day for day in days if day.slots), None)


async def render_times(
    request: web.Request,
    offer: Offer,
    choice: Choice,
    *,
    first: date | None,
    chosen: str = "",
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> web.Response:
    clinic, now = offer.clinic, clock_now(request)
    today = now.astimezone(clinic.zone).date()
    bookable = offers.bookable_days(offer, today, today + clinic.rules.horizon, now)
    low, high = bookable or (today, today)
    if first is None:
        first = await _first_day_with_time(request, offer, choice, low, high)
    first = min(max(first, low), high)
    names = await practitioner_names(request, clinic.id)
    days = await _week(request, offer, choice, first, names)
    earlier = max(low, first - timedelta(days=WEEK))
    later = first + timedelta(days=WEEK)
    return render(
        request,
        "book/times.html",
        status=status,
        clinic=clinic,
        treatment=offer.treatment,
        choice=choice,
        days=days,
        open_day=_open_day(days, chosen),
        first_day=first,
        last_day=first + timedelta(days=WEEK - 1),
        earlier_url=choice.url("/book/times", **{"from": earlier.isoformat()})
        if first > low
        else None,
        later_url=choice.url("/book/times", **{"from": later.isoformat()})
        if later <= high
        else None,
        practitioner=names.get(choice.practitioner_id or 0, ""),
        chosen=chosen,
        error=error,
        notice=notice,
        back_url=choice.url("/book/practitioner"),
    )


@html_page
async def times_page(request: web.Request) -> web.Response:
    await limit_page(request, "reads")
    offer, choice = await read_choice(request, request.query)
    if needs_consultation_answer(offer, choice):
        return consultation_redirect(choice)
    first = parse_day(form_text(request.query, "from"))
    return await render_times(
        request, offer, choice, first=first, chosen=form_text(request.query, "chosen")
    )


# -- 3b. a course's whole schedule --------------------------------------------------------------


def _proposed(proposal: CourseProposal, offer: Offer, names: dict[int, str]) -> list[ShownSession]:
    zone = offer.clinic.zone
    return [
        ShownSession(
            s.position,
            s.start.astimezone(zone),
            names.get(s.practitioner_id, ""),
            s.gap_days,
            tuple(s.flags),
            slot_value(s.practitioner_id, s.start),
        )
        for s in proposal.sessions
    ]


async def render_schedule(
    request: web.Request,
    offer: Offer,
    choice: Choice,
    first: SessionRequest,
    *,
    notice: str = "",
) -> web.Response:
    now = clock_now(request)
    try:
        proposal = await offers.propose(
            request.app[POOL],
            offer,
            first_start=first.start,
            practitioner_id=first.practitioner_id,
            sessions=choice.sessions,
            now=now,
            exclude_appointment_ids=await own_held(request, offer),
        )
    except InvalidField:
        raise PageError(400) from None
    names = await practitioner_names(request, offer.clinic.id)
    first_value = slot_value(first.practitioner_id, first.start)
    first_day = first.start.astimezone(offer.clinic.zone).date()
    return render(
        request,
        "book/schedule.html",
        clinic=offer.clinic,
        treatment=offer.treatment,
        choice=choice,
        proposal=proposal,
        sessions=_proposed(proposal, offer, names),
        first_local=first.start.astimezone(offer.clinic.zone),
        notice=notice,
        # Moving the first session: back to the picker at its week, the current one marked.
        change_url=choice.url(
            "/book/times", **{"from": first_day.isoformat(), "chosen": first_value}
        ),
        later_url=choice.url(
            "/book/times", **{"from": (first_day + timedelta(days=1)).isoformat()}
        ),
    )


@html_page
async def schedule_page(request: web.Request) -> web.Response:
    await limit_page(request, "reads")
    offer, choice = await read_choice(request, request.query)
    if needs_consultation_answer(offer, choice):
        return consultation_redirect(choice)
    first = parse_slot(form_text(request.query, "first"))
    if first is None:
        return await render_times(
            request,
            offer,
            choice,
            first=parse_day(form_text(request.query, "from")),
            error="choose_time",
            status=400,
        )
    if not offer.treatment.is_course:
        raise PageError(400)
    return await render_schedule(request, offer, choice, first)
