"""Booking a course's next session from the self-service page, when nothing of the course is
booked after its last completed session (the scheduler's proposal was released, declined or
never made): the picker of free times inside the gap window of the next position (the same
picker as moving a session, self_move), then the booking through the same domain function staff
use for the next session (services/booking/domain/next_session.py), audited as done by the
patient, who stays inside the window [hard minimum, soft maximum]."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

from services.booking.domain import next_session
from services.booking.domain.errors import SlotsTaken
from services.booking.domain.next_session import NextSession, NextSessionNotOpen
from services.booking.domain.offers import load_offer
from services.booking.web.self_overview import Names, audit_read, names_of, view_of_next
from services.booking.web.self_picker import (
    PICKER_DAYS,
    Choice,
    PickerQuery,
    choices_of,
    free_choices,
    pick_day,
)
from services.booking.web.self_visit import (
    Slot,
    Visit,
    back_to_overview,
    field_int,
    field_text,
    link_page,
    not_found_page,
    render_private,
)
from shared.db.transactions import in_transaction
from shared.domain.errors import Conflict, InvalidField
from shared.logging import request_id_var
from shared.scheduling.loader import TreatmentInfo
from shared.store import appointments
from shared.store import series as series_store
from shared.web import POOL


@dataclass(frozen=True)
class NextProblem:
    """Why the booking did not happen, as data for self/next.html (which words it)."""

    kind: str  # choose, taken, outside, unavailable
    offered: tuple[Choice, ...] = ()  # taken: the next free times inside the window


async def _waiting(
    request: web.Request, visit: Visit, *, booking: bool = False
) -> tuple[NextSession, TreatmentInfo, Names]:
    """The course named in the path, if it is this patient's (the not-found page otherwise,
    the same whether it exists or not) and waits for its next session (else back to the
    overview, which shows how the course stands). While the scheduler holds a proposed time
    the course waits for the patient's answer by SMS, and the picker is not offered; a booking
    posted meanwhile (the page was open before the proposal) withdraws the proposal, as the
    domain does for staff."""
    ident = field_int(request.match_info["series_id"])
    pool = request.app[POOL]
    course = None if ident is None else await series_store.get(pool, ident)
    if course is None or course.patient_id != visit.patient.id:
        raise not_found_page(request, visit)
    names = await names_of(request, visit.clinic, {course.treatment_id})
    treatment = names.treatments.get(course.treatment_id)
    rows = await appointments.for_series(pool, course.id)
    if booking:
        rows = [a for a in rows if a.status != "held"]
    wanted = (
        None
        if treatment is None
        else next_session.waiting(course, rows, treatment, visit.clinic.zone)
    )
    if treatment is None or wanted is None:
        back_to_overview(visit, note="next-not-open", anchor=f"course-{course.id}")
    return wanted, treatment, names


async def _picker(
    request: web.Request,
    visit: Visit,
    where: PickerQuery,
    *,
    chosen: Slot | None = None,
    problem: NextProblem | None = None,
    status: int = 200,
) -> web.Response:
    """The free times of the gap window, a fortnight at a time, the last practitioner first."""
    wanted, treatment, names = await _waiting(request, visit)
    view = view_of_next(visit, wanted, names)
    today = visit.local(visit.now).date()
    horizon = visit.local(visit.now + visit.clinic.rules.horizon).date()
    opens = max(wanted.first_day, today)
    closes = min(wanted.last_day, horizon)
    first = min(max(where.first or opens, opens), max(closes, opens))
    last = min(first + timedelta(days=PICKER_DAYS - 1), closes)
    prefer = wanted.after.practitioner_id
    days = {}
    if first <= last:
        days = await free_choices(request, visit, treatment, names, where.who, prefer, first, last)
    day = pick_day(days, where.day, visit.local(chosen.start).date() if chosen else None)
    return render_private(
        request,
        "self/next.html",
        clinic=visit.clinic,
        status=status,
        home=visit.home,
        next=view,
        treatment=treatment.name,
        who=where.who,
        first=first,
        last=last,
        earlier=max(first - timedelta(days=PICKER_DAYS), opens) if first > opens else None,
        later=last + timedelta(days=1) if last < closes else None,
        days=days,
        day=day,
        chosen=chosen.value if chosen else "",
        problem=problem,
    )


@link_page
async def next_form(request: web.Request, visit: Visit) -> web.StreamResponse:
    await audit_read(request, visit, "self_service_next_session")
    return await _picker(request, visit, PickerQuery.read(request.query))


async def _booked_before(request: web.Request, visit: Visit, slot: Slot | None) -> None:
    """Back to the overview with the first answer when this course of the patient's already has
    a session booked at exactly the posted time: the form was submitted before (a double click,
    Back then submit) and booked it."""
    ident = field_int(request.match_info["series_id"])
    pool = request.app[POOL]
    course = None if ident is None or slot is None else await series_store.get(pool, ident)
    if slot is None or course is None or course.patient_id != visit.patient.id:
        return
    for row in await appointments.for_series(pool, course.id):
        if (
            row.status in ("booked", "confirmed")
            and row.starts_at == slot.start
            and row.practitioner_id == slot.practitioner_id
        ):
            done = "next-booked-review" if row.needs_review else "next-booked"
            back_to_overview(visit, done=done, anchor=f"s{row.id}")


@link_page
async def book_next(request: web.Request, visit: Visit) -> web.StreamResponse:
    form = await request.post()
    slot = Slot.parse(field_text(form, "slot"))
    await _booked_before(request, visit, slot)
    wanted, treatment, names = await _waiting(request, visit, booking=True)
    where = PickerQuery.read(form)
    if slot is None:
        return await _picker(request, visit, where, problem=NextProblem("choose"), status=422)
    pool = request.app[POOL]
    offer = await load_offer(pool, treatment.id, public=False)
    if offer is None:  # the clinic stopped offering the treatment
        back_to_overview(visit, note="next-not-open", anchor=f"course-{wanted.series_id}")
    bookable = offer
    try:
        result = await in_transaction(
            pool,
            lambda conn: next_session.book_next_session(
                conn,
                bookable,
                patient_id=visit.patient.id,
                series_id=wanted.series_id,
                practitioner_id=slot.practitioner_id,
                start=slot.start,
                now=visit.now,
                actor=visit.actor,
                request_id=request_id_var.get(),
            ),
        )
    except NextSessionNotOpen:  # booked meanwhile (another tab, a double click, the clinic)
        await _booked_before(request, visit, slot)  # by this very form, submitted at once
        back_to_overview(visit, note="next-not-open", anchor=f"course-{wanted.series_id}")
    except SlotsTaken as taken:
        inside = [
            s
            for s in taken.alternatives
            if wanted.first_day <= visit.local(s.start).date() <= wanted.last_day
        ]
        problem = NextProblem("taken", tuple(choices_of(visit, inside, names)))
        return await _picker(request, visit, where, chosen=slot, problem=problem, status=409)
    except InvalidField as invalid:
        # Outside the window (an old page, an edited form), or a practitioner who left.
        kind = "outside" if invalid.path == "start" else "unavailable"
        return await _picker(
            request, visit, where, chosen=slot, problem=NextProblem(kind), status=409
        )
    except Conflict:
        return await _picker(
            request, visit, where, chosen=slot, problem=NextProblem("unavailable"), status=409
        )
    [booked] = result.appointments
    done = "next-booked-review" if booked.needs_review else "next-booked"
    back_to_overview(visit, done=done, anchor=f"s{booked.id}")
