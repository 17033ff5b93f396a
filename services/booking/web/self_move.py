"""Moving one session from the self-service page: a picker of free times under the course's
gap rules (explained), then the move itself, which may shift later sessions when the patient
agrees; the patient may never go below the hard minimum gap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from aiohttp import web

from services.booking.domain import reschedule
from services.booking.domain.errors import GapRefused, NotActive, SlotUnavailable
from services.booking.web.self_overview import Names, audit_read, names_of, view_of_session
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
    allowed,
    back_to_overview,
    field_int,
    field_text,
    link_page,
    own_appointment,
    render_private,
)
from shared.db.transactions import in_transaction
from shared.domain.appointment_states import IllegalTransition
from shared.domain.errors import Conflict, InvalidField
from shared.scheduling import gaps
from shared.scheduling.course import GapRule
from shared.scheduling.loader import TreatmentInfo
from shared.store import appointments
from shared.store.appointments import Appointment, VersionConflict
from shared.web import POOL

MOVE_REASON = "moved by the patient (self-service link)"

PICKER_LEAD = timedelta(days=7)  # the picker opens this long before the session's own day

# -- reschedule: the time picker --------------------------------------------------------------


@dataclass(frozen=True)
class Neighbour:
    position: int | None
    starts: datetime  # clinic time


@dataclass(frozen=True)
class CourseContext:
    """The sessions either side of the one being moved and the gaps the course allows."""

    previous: Neighbour | None
    next: Neighbour | None
    rule_before: GapRule | None
    rule_after: GapRule | None


@dataclass(frozen=True)
class ShiftView:
    appointment_id: int
    position: int | None
    was: datetime  # clinic time
    becomes: datetime
    practitioner: str


@dataclass(frozen=True)
class MoveProblem:
    """Why a move did not happen, as data for self/move.html (which words it)."""

    kind: str  # choose, gap-before, gap-after, taken, changed, same-time, unavailable, no-shift
    min_days: int | None = None
    other: Neighbour | None = None
    earliest: date | None = None  # gap-before: the first local day the session may move to
    shifts: Sequence[ShiftView] = ()  # gap-after: moving the later sessions too would work
    offered: Sequence[Choice] = ()  # taken: the next free times


async def _context(
    request: web.Request, visit: Visit, appointment: Appointment, treatment: TreatmentInfo | None
) -> CourseContext | None:
    if appointment.series_id is None or treatment is None:
        return None
    rows = await appointments.for_series(request.app[POOL], appointment.series_id)
    ordered = gaps.timeline([reschedule.session_of(a) for a in rows])
    ids = [s.appointment_id for s in ordered]
    if appointment.id not in ids:
        return None
    index = ids.index(appointment.id)
    before = ordered[index - 1] if index > 0 else None
    after = ordered[index + 1] if index + 1 < len(ordered) else None
    return CourseContext(
        previous=Neighbour(before.position, visit.local(before.start)) if before else None,
        next=Neighbour(after.position, visit.local(after.start)) if after else None,
        rule_before=treatment.gaps.get(appointment.position or 0) if before else None,
        rule_after=treatment.gaps.get(after.position or 0) if after else None,
    )


async def _picker(
    request: web.Request,
    visit: Visit,
    appointment: Appointment,
    where: PickerQuery,
    *,
    chosen: Slot | None = None,
    problem: MoveProblem | None = None,
    status: int = 200,
) -> web.Response:
    """The day-by-day picker of free times around the session (same practitioner or any)."""
    names = await names_of(request, visit.clinic, {appointment.treatment_id})
    treatment = names.treatments.get(appointment.treatment_id)
    today = visit.local(visit.now).date()
    own_day = visit.local(appointment.starts_at).date()
    horizon = visit.local(visit.now + visit.clinic.rules.horizon).date()
    # Between today and the booking horizon, whatever the query string says.
    first = min(max(where.first or own_day - PICKER_LEAD, today), horizon)
    last = first + timedelta(days=PICKER_DAYS - 1)
    days: dict[date, list[Choice]] = {}
    if treatment is not None:
        days = await free_choices(
            request, visit, treatment, names, where.who, appointment.practitioner_id, first, last
        )
    day = pick_day(days, where.day, visit.local(chosen.start).date() if chosen else None, own_day)
    return render_private(
        request,
        "self/move.html",
        clinic=visit.clinic,
        status=status,
        home=visit.home,
        session=view_of_session(visit, appointment, names, None),
        context=await _context(request, visit, appointment, treatment),
        who=where.who,
        first=first,
        last=last,
        earlier=max(first - timedelta(days=PICKER_DAYS), today) if first > today else None,
        later=last + timedelta(days=1) if last < horizon else None,
        days=days,
        day=day,
        chosen=chosen.value if chosen else "",
        problem=problem,
    )


@link_page
async def move_form(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await own_appointment(request, visit)
    if not allowed(appointment, visit.clinic, visit.now).move:
        back_to_overview(visit, note="not-allowed", anchor=f"s{appointment.id}")
    await audit_read(request, visit, "self_service_move")
    return await _picker(request, visit, appointment, PickerQuery.read(request.query))


# -- reschedule: doing it ----------------------------------------------------------------------


async def _starts_by_id(request: web.Request, series_id: int | None) -> dict[int, Appointment]:
    if series_id is None:
        return {}
    rows = await appointments.for_series(request.app[POOL], series_id)
    return {a.id: a for a in rows}


def _shift_views(visit: Visit, shifts: Sequence[gaps.Shift], names: Names) -> list[ShiftView]:
    return [
        ShiftView(
            s.appointment_id,
            s.position,
            visit.local(s.from_start),
            visit.local(s.to_start),
            names.practitioner(s.to_practitioner_id),
        )
        for s in shifts
    ]


async def _gap_problem(
    request: web.Request,
    visit: Visit,
    appointment: Appointment,
    refused: GapRefused,
) -> MoveProblem:
    """The refusal in the patient's terms: which neighbour is too close and the minimum gap;
    when only the later sessions are in the way and they can all move, offer to move them."""
    rows = await _starts_by_id(request, appointment.series_id)
    before, after = refused.check.before, refused.check.after
    if before is not None and before.below_minimum and before.rule is not None:
        earlier = rows.get(before.earlier_id)
        starts = visit.local(earlier.starts_at) if earlier else None
        return MoveProblem(
            "gap-before",
            min_days=before.rule.min_days,
            other=Neighbour(before.earlier_position, starts) if starts else None,
            earliest=starts.date() + timedelta(days=before.rule.min_days) if starts else None,
        )
    if after is None or after.rule is None:  # not a refusal this page knows how to explain
        return MoveProblem("unavailable")
    later = rows.get(after.later_id)
    shifts: list[ShiftView] = []
    if refused.plan.complete and refused.plan.shifts:
        names = await names_of(request, visit.clinic, set())
        shifts = _shift_views(visit, refused.plan.shifts, names)
    return MoveProblem(
        "gap-after",
        min_days=after.rule.min_days,
        other=Neighbour(after.later_position, visit.local(later.starts_at)) if later else None,
        shifts=shifts,
    )


@dataclass(frozen=True)
class GapNote:
    """A gap now past the course's soft maximum (allowed, but the patient should know)."""

    earlier_position: int | None
    later_position: int | None
    earlier: datetime | None
    later: datetime | None
    days: int
    max_days: int


async def _after_move(
    request: web.Request,
    visit: Visit,
    appointment: Appointment,
    outcome: reschedule.RescheduleOutcome,
) -> web.StreamResponse:
    """Straight back to the overview, unless there is something to tell: gaps past the soft
    maximum, later sessions that should follow (with an offer to move them), a clinician review."""
    notes = [g for g in outcome.gaps if g.past_soft_maximum and g.rule is not None]
    if not (notes or outcome.proposed_shifts or outcome.flagged_for_review):
        back_to_overview(visit, done="moved", anchor=f"s{appointment.id}")
    rows = await _starts_by_id(request, appointment.series_id)
    names = await names_of(request, visit.clinic, {appointment.treatment_id})

    def local_start(appointment_id: int) -> datetime | None:
        found = rows.get(appointment_id)
        return visit.local(found.starts_at) if found else None

    gap_notes = [
        GapNote(
            g.earlier_position,
            g.later_position,
            local_start(g.earlier_id),
            local_start(g.later_id),
            g.days,
            g.rule.max_days,
        )
        for g in notes
        if g.rule is not None
    ]
    shifts = _shift_views(visit, outcome.proposed_shifts, names)
    # Moving the first of them with shift_later set re-plans and moves the rest the same way.
    first = outcome.proposed_shifts[0] if outcome.proposed_shifts else None
    first_row = rows.get(first.appointment_id) if first else None
    flagged = [rows[i].position for i in outcome.flagged_for_review if i in rows]
    return render_private(
        request,
        "self/moved.html",
        clinic=visit.clinic,
        home=visit.home,
        session=view_of_session(visit, outcome.appointment, names, None),
        notes=gap_notes,
        shifts=shifts,
        shift_target=first.appointment_id if first else None,
        shift_slot=Slot(first.to_start, first.to_practitioner_id).value if first else "",
        shift_version=first_row.version if first_row else None,
        flagged=flagged,
    )


def _already_there(appointment: Appointment, slot: Slot, version: int) -> bool:
    """Whether the session changed since the form was shown and now stands where the form asks
    to move it: the form was submitted before (a double click, Back then submit) and did it."""
    return (
        appointment.version != version
        and appointment.starts_at == slot.start
        and appointment.practitioner_id == slot.practitioner_id
    )


async def _moved_before(
    request: web.Request, visit: Visit, appointment: Appointment
) -> web.StreamResponse:
    """The answer the first submit of this move got (the gaps as they stand now, the later
    sessions' new times to offer), nothing moved again."""
    outcome = await in_transaction(
        request.app[POOL],
        lambda conn: reschedule.as_it_stands(conn, appointment.id, change=visit.change()),
    )
    return await _after_move(request, visit, appointment, outcome)


@link_page
async def move(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await own_appointment(request, visit)
    if not allowed(appointment, visit.clinic, visit.now).move:
        back_to_overview(visit, note="not-allowed", anchor=f"s{appointment.id}")
    form = await request.post()
    where = PickerQuery.read(form)
    slot = Slot.parse(field_text(form, "slot"))
    if slot is None:
        return await _picker(
            request, visit, appointment, where, problem=MoveProblem("choose"), status=422
        )
    wanted = reschedule.MoveRequest(
        starts_at=slot.start,
        practitioner_id=slot.practitioner_id,
        reason=MOVE_REASON,
        shift_later=field_text(form, "shift_later") == "1",
    )
    version = field_int(field_text(form, "version")) or 0
    if _already_there(appointment, slot, version):
        return await _moved_before(request, visit, appointment)
    try:
        outcome = await in_transaction(
            request.app[POOL],
            lambda conn: reschedule.reschedule(
                conn,
                appointment.id,
                wanted,
                may_override=False,  # a patient never overrides the hard minimum gap
                expected_version=version,
                change=visit.change(),
            ),
        )
    except GapRefused as refused:
        problem = await _gap_problem(request, visit, appointment, refused)
        return await _picker(
            request, visit, appointment, where, chosen=slot, problem=problem, status=409
        )
    except SlotUnavailable as taken:
        names = await names_of(request, visit.clinic, set())
        problem = MoveProblem("taken", offered=choices_of(visit, taken.alternatives, names))
        return await _picker(
            request, visit, appointment, where, chosen=slot, problem=problem, status=409
        )
    except VersionConflict as conflict:
        if _already_there(conflict.current, slot, version):  # the same move, submitted at once
            return await _moved_before(request, visit, conflict.current)
        if conflict.current.status not in gaps.MOVABLE_STATUSES:
            back_to_overview(visit, note="not-allowed", anchor=f"s{appointment.id}")
        return await _picker(
            request, visit, conflict.current, where, problem=MoveProblem("changed"), status=409
        )
    except InvalidField as invalid:
        kind = "same-time" if invalid.path == "starts_at" else "unavailable"
        return await _picker(
            request, visit, appointment, where, chosen=slot, problem=MoveProblem(kind), status=409
        )
    except (NotActive, IllegalTransition):
        back_to_overview(visit, note="not-allowed", anchor=f"s{appointment.id}")
    except Conflict:  # the later sessions could not all be moved after all
        return await _picker(
            request,
            visit,
            appointment,
            where,
            chosen=slot,
            problem=MoveProblem("no-shift"),
            status=409,
        )
    return await _after_move(request, visit, appointment, outcome)
