"""The patient's overview (their courses and sessions, contact details and consents), and
confirming or cancelling one session. Changes go through the same domain functions staff use,
audited as done by the patient, who may never cancel inside the clinic's notice; forms carry the
version the patient last saw, so a change made meanwhile is reported instead of overwritten."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

from services.booking.domain import actions, next_session
from services.booking.domain.errors import NotActive
from services.booking.domain.next_session import NextSession
from services.booking.web.self_picker import Choice, free_choices
from services.booking.web.self_visit import (
    MAX_APPOINTMENTS,
    Allowed,
    Visit,
    allowed,
    back_to_overview,
    field_int,
    field_text,
    link_page,
    own_appointment,
    render_private,
)
from shared import outbox_plan
from shared.db.transactions import in_transaction
from shared.domain import cancellations
from shared.domain.appointment_states import IllegalTransition
from shared.domain.errors import Conflict
from shared.logging import request_id_var
from shared.scheduling.loader import ClinicInfo, TreatmentInfo, load_treatment
from shared.store import appointments, audit, practitioners
from shared.store import consents as consent_store
from shared.store import series as series_store
from shared.store.appointments import Appointment, VersionConflict
from shared.store.patients import Patient
from shared.web import POOL

CANCEL_REASON = "cancelled by the patient (self-service link)"
SOONEST = 4  # free times offered for a course's next session on the overview itself

# -- the overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionView:
    id: int
    version: int
    status: str
    position: int | None
    planned: int | None
    treatment: str
    practitioner: str
    starts: datetime  # clinic time
    ends: datetime
    past: bool
    allowed: Allowed


@dataclass(frozen=True)
class NextView:
    """What the overview and the picker say about the session a course waits for."""

    series_id: int
    position: int
    planned: int
    after_position: int | None
    after: datetime  # clinic time of the last completed session
    practitioner: str  # of the last completed session
    min_days: int
    max_days: int
    target_days: int
    first_day: date
    last_day: date
    review_from: date | None  # from this day on, a clinician reviews the session first
    passed: bool  # the window is over: only the clinic can book it now
    # the first free times of the window (the last practitioner's, else anyone's)
    soonest: tuple[Choice, ...] = ()


@dataclass(frozen=True)
class CourseView:
    id: int
    treatment: str
    status: str
    planned: int
    sessions: list[SessionView]
    next: NextView | None  # the session the course waits for, which the patient may book


@dataclass(frozen=True)
class Names:
    """Display names of the clinic's practitioners and of the patient's treatments."""

    practitioners: dict[int, str]
    treatments: dict[int, TreatmentInfo]

    def practitioner(self, practitioner_id: int) -> str:
        return self.practitioners.get(practitioner_id, "")

    def treatment(self, treatment_id: int) -> str:
        found = self.treatments.get(treatment_id)
        return found.name if found else ""


async def names_of(request: web.Request, clinic: ClinicInfo, treatment_ids: set[int]) -> Names:
    pool = request.app[POOL]
    rows = await practitioners.list_page(
        pool, clinic_id=clinic.id, active=None, after_id=None, limit=1000
    )
    treatments = {}
    for treatment_id in sorted(treatment_ids):
        found = await load_treatment(pool, treatment_id)
        if found is not None:
            treatments[treatment_id] = found
    return Names({row.id: row.name for row in rows}, treatments)


def view_of_session(
    visit: Visit, appointment: Appointment, names: Names, planned: int | None
) -> SessionView:
    return SessionView(
        id=appointment.id,
        version=appointment.version,
        status=appointment.status,
        position=appointment.position,
        planned=planned,
        treatment=names.treatment(appointment.treatment_id),
        practitioner=names.practitioner(appointment.practitioner_id),
        starts=visit.local(appointment.starts_at),
        ends=visit.local(appointment.ends_at),
        past=appointment.starts_at <= visit.now,
        allowed=allowed(appointment, visit.clinic, visit.now),
    )


def view_of_next(visit: Visit, wanted: NextSession, names: Names) -> NextView:
    today = visit.local(visit.now).date()
    return NextView(
        wanted.series_id,
        wanted.position,
        wanted.planned,
        wanted.after.position,
        visit.local(wanted.after.starts_at),
        names.practitioner(wanted.after.practitioner_id),
        wanted.rule.min_days,
        wanted.rule.max_days,
        wanted.rule.target_days,
        wanted.first_day,
        wanted.last_day,
        wanted.review_from(),
        today > wanted.last_day,
    )


async def _next_with_times(
    request: web.Request, visit: Visit, wanted: NextSession, names: Names
) -> NextView:
    """The course's next session with its first few free times, to book from the overview."""
    view = view_of_next(visit, wanted, names)
    treatment = names.treatments.get(wanted.after.treatment_id)
    today = visit.local(visit.now).date()
    opens = max(wanted.first_day, today)
    closes = min(wanted.last_day, visit.local(visit.now + visit.clinic.rules.horizon).date())
    if view.passed or treatment is None or closes < opens:
        return view
    prefer = wanted.after.practitioner_id
    for who in ("same", "any"):
        days = await free_choices(request, visit, treatment, names, who, prefer, opens, closes)
        soonest = tuple(c for day in days.values() for c in day)[:SOONEST]
        if soonest:
            return replace(view, soonest=soonest)
    return view


async def _courses(
    request: web.Request, visit: Visit
) -> tuple[list[CourseView], list[SessionView]]:
    """The patient's courses with their sessions, and the appointments outside any course."""
    pool = request.app[POOL]
    rows = await appointments.list_page(
        pool,
        practitioner_id=None,
        patient_id=visit.patient.id,
        series_id=None,
        statuses=None,
        first_day=None,
        last_day=None,
        after=None,
        limit=MAX_APPOINTMENTS,
    )
    courses = await series_store.for_patient(pool, visit.patient.id)
    names = await names_of(
        request, visit.clinic, {a.treatment_id for a in rows} | {c.treatment_id for c in courses}
    )
    # Whether a course waits for its next session counts held times too (a proposal).
    waiting: dict[int, NextSession | None] = {
        c.id: next_session.waiting(
            c, [a for a in rows if a.series_id == c.id], treatment, visit.clinic.zone
        )
        for c in courses
        if (treatment := names.treatments.get(c.treatment_id)) is not None
    }
    rows = [a for a in rows if a.status != "held"]  # a hold is a form still being filled in
    views = []
    for course in courses:
        own = sorted(
            (a for a in rows if a.series_id == course.id),
            key=lambda a: (a.position or 0, a.starts_at),
        )
        sessions = [view_of_session(visit, a, names, course.planned_sessions) for a in own]
        views.append(
            CourseView(
                course.id,
                names.treatment(course.treatment_id),
                course.status,
                course.planned_sessions,
                sessions,
                next=(
                    None
                    if (wanted := waiting.get(course.id)) is None
                    else await _next_with_times(request, visit, wanted, names)
                ),
            )
        )
    others = [view_of_session(visit, a, names, None) for a in rows if a.series_id is None]
    return views, others


@dataclass(frozen=True)
class ContactForm:
    """What the contact form shows: the values in the boxes, the stored values they started
    from (sent back hidden, to tell which boxes the patient edited) and the record's version."""

    mobile: str
    email: str
    version: str
    seen_mobile: str
    seen_email: str

    @classmethod
    def stored(cls, patient: Patient) -> ContactForm:
        mobile, email = patient.mobile or "", patient.email or ""
        return cls(mobile, email, str(patient.version), mobile, email)

    @classmethod
    def read(cls, form: Mapping[str, Any]) -> ContactForm:
        return cls(*(field_text(form, field.name) for field in fields(cls)))

    def rebased(self, fresh: Patient) -> ContactForm:
        """Against a record changed meanwhile: the patient's edits, the new stored values in
        the boxes they did not touch, and the new version."""
        stored = ContactForm.stored(fresh)
        return replace(
            stored,
            mobile=self.mobile if self.mobile != self.seen_mobile else stored.mobile,
            email=self.email if self.email != self.seen_email else stored.email,
        )


async def render_overview(
    request: web.Request,
    visit: Visit,
    *,
    status: int = 200,
    contact: ContactForm | None = None,
    errors: Mapping[str, str] | None = None,
    contact_stale: bool = False,
) -> web.Response:
    pool = request.app[POOL]
    patient = visit.patient
    courses, others = await _courses(request, visit)
    consents = await consent_store.current(pool, patient.id)
    reach = outbox_plan.reach_from(patient, consents)
    await audit_read(request, visit, "self_service")
    return render_private(
        request,
        "self/overview.html",
        clinic=visit.clinic,
        status=status,
        home=visit.home,
        patient=patient,
        courses=courses,
        others=others,
        consents={kind: c.granted for kind, c in consents.items()},
        # Where reminders go with these choices (one channel, texts first), or None.
        reminders_by=reach.reminder_channel() if reach else None,
        contact=contact or ContactForm.stored(patient),
        errors=errors or {},
        contact_stale=contact_stale,
        done=request.query.get("done", ""),
        note=request.query.get("note", ""),
        at=_message_place(request.query.get("at", ""), courses, others),
        notice_hours=hours_of(visit.clinic.cancellation_notice),
    )


async def audit_read(request: web.Request, visit: Visit, view: str) -> None:
    # A read of the patient's record, like every other (design.md: every read is audited).
    await audit.insert(
        request.app[POOL],
        at=visit.now,
        actor=visit.actor,
        action="patient.read",
        entity="patient",
        entity_id=visit.patient.id,
        patient_id=visit.patient.id,
        details={"view": view},
        request_id=request_id_var.get(),
    )


def _message_place(at: str, courses: Sequence[CourseView], others: Sequence[SessionView]) -> str:
    """Where the page shows the message: beside the card or form it is about, if that is on the
    page; at the top otherwise."""
    places = {"contact", "consents", *(f"s{s.id}" for s in others)}
    places.update(f"course-{course.id}" for course in courses)
    places.update(f"s{s.id}" for course in courses for s in course.sessions)
    return at if at in places else ""


def hours_of(span: timedelta) -> int:
    return int(span.total_seconds() // 3600)


@link_page
async def overview(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await render_overview(request, visit)


# -- confirm -----------------------------------------------------------------------------------


@link_page
async def confirm(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await own_appointment(request, visit)
    anchor = f"s{appointment.id}"
    if appointment.status == "confirmed":
        # Submitted again (a double click, Back then submit): the first one confirmed it.
        back_to_overview(visit, done="confirmed", anchor=anchor)
    if not allowed(appointment, visit.clinic, visit.now).confirm:
        back_to_overview(visit, note="not-allowed", anchor=anchor)
    version = field_int(field_text(await request.post(), "version"))
    if version is None:
        back_to_overview(visit, note="changed", anchor=anchor)
    try:
        await in_transaction(
            request.app[POOL],
            lambda conn: actions.act(
                conn,
                appointment.id,
                state=actions.CONFIRM,
                expected_version=version,
                change=visit.change(),
            ),
        )
    except VersionConflict as conflict:
        # A second click, or another tab, got there first: that is still a confirmation.
        if conflict.current.status == "confirmed":
            back_to_overview(visit, done="confirmed", anchor=anchor)
        back_to_overview(visit, note="changed", anchor=anchor)
    except Conflict:  # not confirmable any more (an illegal transition among them)
        back_to_overview(visit, note="not-allowed", anchor=anchor)
    back_to_overview(visit, done="confirmed", anchor=anchor)


# -- cancel ------------------------------------------------------------------------------------


def _cancel_page(
    request: web.Request,
    visit: Visit,
    appointment: Appointment,
    names: Names,
    *,
    late: bool,
    stale: bool = False,
    status: int = 200,
) -> web.Response:
    return render_private(
        request,
        "self/cancel.html",
        clinic=visit.clinic,
        status=status,
        home=visit.home,
        session=view_of_session(visit, appointment, names, None),
        late=late,
        stale=stale,
        notice_hours=hours_of(visit.clinic.cancellation_notice),
    )


@link_page
async def cancel_form(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await own_appointment(request, visit)
    may = allowed(appointment, visit.clinic, visit.now)
    if not may.move:  # neither cancellable nor inside the notice: past, or already over
        back_to_overview(visit, note="not-allowed", anchor=f"s{appointment.id}")
    names = await names_of(request, visit.clinic, {appointment.treatment_id})
    await audit_read(request, visit, "self_service_cancel")
    return _cancel_page(request, visit, appointment, names, late=may.call_to_cancel)


@link_page
async def cancel(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await own_appointment(request, visit)
    anchor = f"s{appointment.id}"
    if appointment.status == "cancelled" and appointment.cancelled_by == visit.actor.label:
        # Submitted again (a double click, Back then submit): the patient's first one did it.
        back_to_overview(visit, done="cancelled", anchor=anchor)
    if not allowed(appointment, visit.clinic, visit.now).move:
        back_to_overview(visit, note="not-allowed", anchor=anchor)
    version = field_int(field_text(await request.post(), "version")) or 0
    pool = request.app[POOL]
    names = await names_of(request, visit.clinic, {appointment.treatment_id})
    try:
        await in_transaction(
            pool,
            lambda conn: cancellations.cancel(
                conn,
                appointment.id,
                reason=CANCEL_REASON,
                scope="this",
                override_reason=None,  # only staff may cancel inside the notice
                expected_version=version,
                change=visit.change(),
            ),
        )
    except VersionConflict as conflict:
        if conflict.current.status == "cancelled":
            back_to_overview(visit, done="cancelled", anchor=anchor)
        return _cancel_page(
            request, visit, conflict.current, names, late=False, stale=True, status=409
        )
    except (NotActive, IllegalTransition):
        back_to_overview(visit, note="not-allowed", anchor=anchor)
    except Conflict as refused:
        if refused.code != "inside-cancellation-notice":
            back_to_overview(visit, note="not-allowed", anchor=anchor)
        return _cancel_page(request, visit, appointment, names, late=True, status=409)
    back_to_overview(visit, done="cancelled", anchor=anchor)
