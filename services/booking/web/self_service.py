"""The patient's self-service pages behind the private link `/s/{token}`: their courses and
sessions; confirm, reschedule or cancel one session; change mobile, email and consents.

The link (shared.links) is the only credential: it names the patient and expires. Every action
loads the appointment and checks that it belongs to the link's patient, so another id shows
nothing and changes nothing. Changes go through the same domain functions staff use
(services/booking/appointment_changes), audited as done by the patient, who may never override
the hard minimum gap or the cancellation notice. Forms carry the version the patient last saw, so
a change made meanwhile (by the clinic, or in another tab) is reported instead of overwritten.

Plain HTML forms (JavaScript is never needed), each with a CSRF token. After a change the browser
is sent (303) back to the overview with a message code in the query string, never personal data.
Every wording shown to the patient lives in templates/self/; this module passes data.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn

from aiohttp import web

from services.booking.clients import hit_client
from services.booking.domain import actions, cancellations, reschedule
from services.booking.domain.changes import Change
from services.booking.domain.errors import GapRefused, NotActive, SlotUnavailable
from services.booking.domain.offers import Offer, free_slots
from services.booking.web import TEMPLATES, PageError, csrf, error_page
from shared import links, outbox_plan
from shared.db.transactions import in_transaction
from shared.domain.appointment_states import IllegalTransition
from shared.domain.contact import ContactError, normalise_email, normalise_mobile
from shared.domain.errors import Conflict, InvalidField
from shared.logging import request_id_var
from shared.scheduling import gaps
from shared.scheduling.availability import FreeStart
from shared.scheduling.course import GapRule
from shared.scheduling.loader import ClinicInfo, TreatmentInfo, load_clinic, load_treatment
from shared.store import appointments, audit, clinics, patients
from shared.store import series as series_store
from shared.store.appointments import Appointment, VersionConflict
from shared.store.audit import Actor
from shared.store.patients import Patient
from shared.web import CLOCK, POOL, SETTINGS

ACTOR_NAME = "patient self-service"
CONSENT_SOURCE = "self_service"
# The version of the consent wording in templates/self/overview.html: change both together.
CONSENT_WORDING_VERSION = "self-service-2026-03"
MOVE_REASON = "moved by the patient (self-service link)"
CANCEL_REASON = "cancelled by the patient (self-service link)"
PICKER_DAYS = 14  # days of free times offered at once
PICKER_LEAD = timedelta(days=7)  # the picker opens this long before the session's own day
MAX_APPOINTMENTS = 500  # far more than any patient has; bounds the page
MAX_FIELD = 320  # longest text accepted from a form field (an email address may be 254)
MAX_ID = 2**63 - 1
# The link is a credential: keep the pages out of caches, search engines and Referer headers.
PRIVATE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}


# -- who is visiting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """A request that came with a valid link: the patient, their clinic and the time."""

    token: str
    patient: Patient
    clinic: ClinicInfo
    now: datetime

    @property
    def home(self) -> str:
        return f"/s/{self.token}"

    @property
    def actor(self) -> Actor:
        return Actor("patient", self.patient.id, ACTOR_NAME)

    def change(self) -> Change:
        return Change(self.actor, self.now, request_id_var.get())

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.clinic.zone)


class _Stop(Exception):
    """Ends a handler early with a ready response (a refused link, a foreign appointment)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("stop")
        self.response = response


Handler = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]


def _page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Resolve the link, check the CSRF token on every POST, then run the handler."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            visit = await _visit(request)
            if request.method == "POST":
                try:
                    form: Mapping[str, Any] = await request.post()
                except ValueError:  # a malformed body: no token in it either
                    form = {}
                if not csrf.valid(request, _text(form, csrf.FIELD), _secret(request)):
                    return _render(
                        request, "self/csrf.html", clinic=visit.clinic, status=403, home=visit.home
                    )
            return await handler(request, visit)
        except _Stop as stop:
            return stop.response

    return wrapped


def _secret(request: web.Request) -> str:
    secret = request.app[SETTINGS].secret_key
    assert secret, "create_app refuses to start without REGIMEN_SECRET_KEY"
    return secret


async def _visit(request: web.Request) -> Visit:
    """The visit of a link that opens now. A link we never issued, or of an erased patient, gets
    the "not valid" page; a genuine one that expired or was replaced by a newer link gets the
    page that offers a new link (sent to the contacts on file, never shown here)."""
    pool = request.app[POOL]
    now = request.app[CLOCK].now()
    token = request.match_info["token"]
    secret = _secret(request)
    try:
        link = links.read_patient_link(secret, token)
    except links.LinkInvalid:
        raise _Stop(await _refused_link(request, None)) from None
    patient = await patients.get(pool, link.patient_id)
    clinic = None if patient is None else await load_clinic(pool, patient.clinic_id)
    if patient is None or clinic is None or patient.erased_at is not None:
        raise _Stop(await _refused_link(request, None))
    try:
        links.open_patient_link(secret, token, now=now, current_version=patient.link_version)
    except links.LinkError as refused:
        replaced = isinstance(refused, links.LinkRevoked)
        raise _Stop(await _refused_link(request, clinic, token=token, replaced=replaced)) from None
    return Visit(token, patient, clinic, now)


async def _refused_link(
    request: web.Request,
    clinic: ClinicInfo | None,
    *,
    token: str | None = None,
    replaced: bool = False,
) -> web.Response:
    """410 for a genuine link that expired or was replaced, with a button that sends a new one
    to the contacts on file; 404 for one we never issued (or of an erased patient). No patient
    data either way, only the clinic's name and phone."""
    shown: Any = clinic
    if shown is None:
        shown = await clinics.first_clinic(request.app[POOL])
    if token is None:
        return _render(request, "self/link_invalid.html", clinic=shown, status=404)
    return _render(
        request,
        "self/link_expired.html",
        clinic=shown,
        status=410,
        replaced=replaced,
        renew_url=f"/s/{token}/renew",
    )


async def renew(request: web.Request) -> web.StreamResponse:
    """ "Send me a new link" from an expired or replaced link's page: the current link goes to the
    contacts on file (at most once an hour). The answer is the same whatever happened, so the
    page tells nothing about the patient's details."""
    pool = request.app[POOL]
    now = request.app[CLOCK].now()
    token = request.match_info["token"]
    secret = _secret(request)
    try:
        form: Mapping[str, Any] = await request.post()
    except ValueError:
        form = {}
    try:
        link = links.read_patient_link(secret, token)
    except links.LinkInvalid:
        return await _refused_link(request, None)
    patient = await patients.get(pool, link.patient_id)
    clinic = None if patient is None else await load_clinic(pool, patient.clinic_id)
    if patient is None or clinic is None or patient.erased_at is not None:
        return await _refused_link(request, None)
    if not csrf.valid(request, _text(form, csrf.FIELD), secret):
        return await _refused_link(request, clinic, token=token)
    try:
        links.open_patient_link(secret, token, now=now, current_version=patient.link_version)
    except links.LinkError:
        async with pool.acquire() as conn, conn.transaction():
            planned = await outbox_plan.plan_new_link(
                conn, patient.id, now=now, asked_by_patient=True
            )
            if planned:
                await audit.record(
                    conn,
                    at=now,
                    actor=Actor("patient", patient.id, ACTOR_NAME),
                    action="patient.link_request",
                    entity="patient",
                    entity_id=patient.id,
                    patient_id=patient.id,
                    details={"notifications": planned},
                    request_id=request_id_var.get(),
                )
        return _render(request, "self/link_sent.html", clinic=clinic)
    raise web.HTTPSeeOther(f"/s/{token}", headers=dict(PRIVATE))  # it still works: go there


# -- responses ---------------------------------------------------------------------------------


def _render(
    request: web.Request, template: str, *, clinic: Any, status: int = 200, **context: Any
) -> web.Response:
    token, new_cookie = csrf.token_for(request, _secret(request))
    text = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(clinic=clinic, csrf_field=csrf.FIELD, csrf_token=token, **context)
    )
    response = web.Response(
        text=text, status=status, content_type="text/html", headers=dict(PRIVATE)
    )
    csrf.set_cookie(request, response, new_cookie)
    return response


def _back(
    visit: Visit, *, done: str | None = None, note: str | None = None, anchor: str = ""
) -> NoReturn:
    """303 to the overview; `done`/`note` are message codes the template turns into words,
    shown beside `anchor` (a session card or a form), which the browser scrolls to."""
    query = f"?done={done}" if done else f"?note={note}" if note else ""
    if query and anchor:
        query += f"&at={anchor}"
    fragment = f"#{anchor}" if anchor else ""
    raise web.HTTPSeeOther(f"{visit.home}{query}{fragment}", headers=dict(PRIVATE))


def _not_found(request: web.Request, visit: Visit) -> _Stop:
    return _Stop(
        _render(request, "self/not_found.html", clinic=visit.clinic, status=404, home=visit.home)
    )


# -- reading forms -----------------------------------------------------------------------------


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def _int(text: str) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text or "")
    except ValueError:
        return None


@dataclass(frozen=True)
class Slot:
    """A start and practitioner as the time picker sends it: "<ISO start>|<practitioner id>"."""

    start: datetime
    practitioner_id: int

    @property
    def value(self) -> str:
        return f"{self.start.astimezone(UTC).isoformat()}|{self.practitioner_id}"

    @classmethod
    def parse(cls, text: str) -> Slot | None:
        start_text, _, practitioner_text = text.partition("|")
        practitioner_id = _int(practitioner_text)
        try:
            start = datetime.fromisoformat(start_text)
            # Years 2000 to 2999, as every other way in takes them: later dates overflow the
            # schedule arithmetic.
            if start.tzinfo is None or practitioner_id is None or not 2000 <= start.year <= 2999:
                return None
            return cls(start.astimezone(UTC), practitioner_id)
        except (ValueError, OverflowError):  # not a time, or one at the edge of the calendar
            return None


async def _own(request: web.Request, visit: Visit) -> Appointment:
    """The appointment named in the path, if it is this patient's; the not-found page otherwise
    (the same page whether it exists or not, so ids cannot be probed)."""
    ident = _int(request.match_info["appointment_id"])
    found = None if ident is None else await appointments.get(request.app[POOL], ident)
    if found is None or found.patient_id != visit.patient.id or found.status == "held":
        raise _not_found(request, visit)
    return found


# -- what may be done with a session now ------------------------------------------------------


@dataclass(frozen=True)
class Allowed:
    confirm: bool
    move: bool
    cancel: bool
    call_to_cancel: bool  # inside the cancellation notice: the patient must phone the clinic


def allowed(appointment: Appointment, clinic: ClinicInfo, now: datetime) -> Allowed:
    upcoming = appointment.starts_at > now
    movable = upcoming and appointment.status in gaps.MOVABLE_STATUSES
    late = movable and appointment.starts_at - now < clinic.cancellation_notice
    return Allowed(
        confirm=upcoming and appointment.status == "booked",
        move=movable,
        cancel=movable and not late,
        call_to_cancel=late,
    )


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
class CourseView:
    id: int
    treatment: str
    status: str
    planned: int
    sessions: list[SessionView]


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


async def _names(request: web.Request, clinic: ClinicInfo, treatment_ids: set[int]) -> Names:
    pool = request.app[POOL]
    rows = await clinics.list_practitioners(
        pool, clinic_id=clinic.id, active=None, after_id=None, limit=1000
    )
    treatments = {}
    for treatment_id in sorted(treatment_ids):
        found = await load_treatment(pool, treatment_id)
        if found is not None:
            treatments[treatment_id] = found
    return Names({row["id"]: row["name"] for row in rows}, treatments)


def _session_view(
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
    rows = [a for a in rows if a.status != "held"]  # a hold is a form still being filled in
    courses = await series_store.for_patient(pool, visit.patient.id)
    names = await _names(
        request, visit.clinic, {a.treatment_id for a in rows} | {c.treatment_id for c in courses}
    )
    views = []
    for course in courses:
        own = sorted(
            (a for a in rows if a.series_id == course.id),
            key=lambda a: (a.position or 0, a.starts_at),
        )
        sessions = [_session_view(visit, a, names, course.planned_sessions) for a in own]
        views.append(
            CourseView(
                course.id,
                names.treatment(course.treatment_id),
                course.status,
                course.planned_sessions,
                sessions,
            )
        )
    others = [_session_view(visit, a, names, None) for a in rows if a.series_id is None]
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
        return cls(*(_text(form, field.name) for field in fields(cls)))

    def rebased(self, fresh: Patient) -> ContactForm:
        """Against a record changed meanwhile: the patient's edits, the new stored values in
        the boxes they did not touch, and the new version."""
        stored = ContactForm.stored(fresh)
        return replace(
            stored,
            mobile=self.mobile if self.mobile != self.seen_mobile else stored.mobile,
            email=self.email if self.email != self.seen_email else stored.email,
        )


async def _overview(
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
    consents = await patients.current_consents(pool, patient.id)
    await _audit_read(request, visit, "self_service")
    return _render(
        request,
        "self/overview.html",
        clinic=visit.clinic,
        status=status,
        home=visit.home,
        patient=patient,
        courses=courses,
        others=others,
        consents={kind: c.granted for kind, c in consents.items()},
        contact=contact or ContactForm.stored(patient),
        errors=errors or {},
        contact_stale=contact_stale,
        done=request.query.get("done", ""),
        note=request.query.get("note", ""),
        at=_message_place(request.query.get("at", ""), courses, others),
        notice_hours=_hours(visit.clinic.cancellation_notice),
    )


async def _audit_read(request: web.Request, visit: Visit, view: str) -> None:
    # A read of the patient's record, like every other (design.md: every read is audited).
    await audit.record(
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
    places.update(f"s{s.id}" for course in courses for s in course.sessions)
    return at if at in places else ""


def _hours(span: timedelta) -> int:
    return int(span.total_seconds() // 3600)


@_page
async def overview(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _overview(request, visit)


# -- confirm -----------------------------------------------------------------------------------


@_page
async def confirm(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await _own(request, visit)
    anchor = f"s{appointment.id}"
    if not allowed(appointment, visit.clinic, visit.now).confirm:
        _back(visit, note="not-allowed", anchor=anchor)
    version = _int(_text(await request.post(), "version"))
    if version is None:
        _back(visit, note="changed", anchor=anchor)
    try:
        await in_transaction(
            request.app[POOL],
            lambda conn: actions.confirm(
                conn, appointment.id, expected_version=version, change=visit.change()
            ),
        )
    except VersionConflict as conflict:
        # A second click, or another tab, got there first: that is still a confirmation.
        if conflict.current.status == "confirmed":
            _back(visit, done="confirmed", anchor=anchor)
        _back(visit, note="changed", anchor=anchor)
    except Conflict:  # not confirmable any more (an illegal transition among them)
        _back(visit, note="not-allowed", anchor=anchor)
    _back(visit, done="confirmed", anchor=anchor)


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
    return _render(
        request,
        "self/cancel.html",
        clinic=visit.clinic,
        status=status,
        home=visit.home,
        session=_session_view(visit, appointment, names, None),
        late=late,
        stale=stale,
        notice_hours=_hours(visit.clinic.cancellation_notice),
    )


@_page
async def cancel_form(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await _own(request, visit)
    may = allowed(appointment, visit.clinic, visit.now)
    if not may.move:  # neither cancellable nor inside the notice: past, or already over
        _back(visit, note="not-allowed", anchor=f"s{appointment.id}")
    names = await _names(request, visit.clinic, {appointment.treatment_id})
    await _audit_read(request, visit, "self_service_cancel")
    return _cancel_page(request, visit, appointment, names, late=may.call_to_cancel)


@_page
async def cancel(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await _own(request, visit)
    anchor = f"s{appointment.id}"
    if not allowed(appointment, visit.clinic, visit.now).move:
        _back(visit, note="not-allowed", anchor=anchor)
    version = _int(_text(await request.post(), "version")) or 0
    pool = request.app[POOL]
    names = await _names(request, visit.clinic, {appointment.treatment_id})
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
            _back(visit, done="cancelled", anchor=anchor)
        return _cancel_page(
            request, visit, conflict.current, names, late=False, stale=True, status=409
        )
    except (NotActive, IllegalTransition):
        _back(visit, note="not-allowed", anchor=anchor)
    except Conflict as refused:
        if refused.code != "inside-cancellation-notice":
            _back(visit, note="not-allowed", anchor=anchor)
        return _cancel_page(request, visit, appointment, names, late=True, status=409)
    _back(visit, done="cancelled", anchor=anchor)


# -- reschedule: the time picker --------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    slot: Slot
    starts: datetime  # clinic time
    practitioner: str


@dataclass(frozen=True)
class PickerQuery:
    """Where the picker is: whose diary ('same' or 'any'), the first day shown, the chosen day."""

    who: str
    first: date | None
    day: date | None

    @classmethod
    def read(cls, values: Mapping[str, Any]) -> PickerQuery:
        who = values.get("who")
        return cls(
            who if who in ("same", "any") else "same",
            _day(values.get("from")),
            _day(values.get("day")),
        )


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


def _choices(
    visit: Visit, slots: Sequence[FreeStart], names: Names, prefer: int
) -> dict[date, list[Choice]]:
    """Free starts by local day, one per time: the session's own practitioner when free."""
    best: dict[datetime, FreeStart] = {}
    for slot in slots:
        kept = best.get(slot.start)
        if kept is None or (slot.practitioner_id == prefer and kept.practitioner_id != prefer):
            best[slot.start] = slot
    days: dict[date, list[Choice]] = {}
    for start in sorted(best):
        slot = best[start]
        local = visit.local(start)
        days.setdefault(local.date(), []).append(
            Choice(
                Slot(start, slot.practitioner_id),
                local,
                names.practitioner(slot.practitioner_id),
            )
        )
    return days


def _to_choices(visit: Visit, slots: Sequence[FreeStart], names: Names) -> list[Choice]:
    return [
        Choice(
            Slot(s.start, s.practitioner_id),
            visit.local(s.start),
            names.practitioner(s.practitioner_id),
        )
        for s in slots
    ]


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
    pool = request.app[POOL]
    names = await _names(request, visit.clinic, {appointment.treatment_id})
    treatment = names.treatments.get(appointment.treatment_id)
    today = visit.local(visit.now).date()
    own_day = visit.local(appointment.starts_at).date()
    horizon = visit.local(visit.now + visit.clinic.rules.horizon).date()
    # Between today and the booking horizon, whatever the query string says.
    first = min(max(where.first or own_day - PICKER_LEAD, today), horizon)
    last = first + timedelta(days=PICKER_DAYS - 1)
    days: dict[date, list[Choice]] = {}
    if treatment is not None:
        offer = Offer(visit.clinic, treatment)
        only = appointment.practitioner_id if where.who == "same" else None
        slots = await free_slots(pool, offer, only, first, last, visit.now)
        days = _choices(visit, slots, names, appointment.practitioner_id)
    day = next(
        (d for d in (where.day, chosen and visit.local(chosen.start).date(), own_day) if d in days),
        next(iter(days), None),
    )
    return _render(
        request,
        "self/move.html",
        clinic=visit.clinic,
        status=status,
        home=visit.home,
        session=_session_view(visit, appointment, names, None),
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


@_page
async def move_form(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await _own(request, visit)
    if not allowed(appointment, visit.clinic, visit.now).move:
        _back(visit, note="not-allowed", anchor=f"s{appointment.id}")
    await _audit_read(request, visit, "self_service_move")
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
        names = await _names(request, visit.clinic, set())
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
        _back(visit, done="moved", anchor=f"s{appointment.id}")
    rows = await _starts_by_id(request, appointment.series_id)
    names = await _names(request, visit.clinic, {appointment.treatment_id})

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
    return _render(
        request,
        "self/moved.html",
        clinic=visit.clinic,
        home=visit.home,
        session=_session_view(visit, outcome.appointment, names, None),
        notes=gap_notes,
        shifts=shifts,
        shift_target=first.appointment_id if first else None,
        shift_slot=Slot(first.to_start, first.to_practitioner_id).value if first else "",
        shift_version=first_row.version if first_row else None,
        flagged=flagged,
    )


@_page
async def move(request: web.Request, visit: Visit) -> web.StreamResponse:
    appointment = await _own(request, visit)
    if not allowed(appointment, visit.clinic, visit.now).move:
        _back(visit, note="not-allowed", anchor=f"s{appointment.id}")
    form = await request.post()
    where = PickerQuery.read(form)
    slot = Slot.parse(_text(form, "slot"))
    if slot is None:
        return await _picker(
            request, visit, appointment, where, problem=MoveProblem("choose"), status=422
        )
    wanted = reschedule.MoveRequest(
        starts_at=slot.start,
        practitioner_id=slot.practitioner_id,
        reason=MOVE_REASON,
        shift_later=_text(form, "shift_later") == "1",
    )
    version = _int(_text(form, "version")) or 0
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
        names = await _names(request, visit.clinic, set())
        problem = MoveProblem("taken", offered=_to_choices(visit, taken.alternatives, names))
        return await _picker(
            request, visit, appointment, where, chosen=slot, problem=problem, status=409
        )
    except VersionConflict as conflict:
        if conflict.current.status not in gaps.MOVABLE_STATUSES:
            _back(visit, note="not-allowed", anchor=f"s{appointment.id}")
        return await _picker(
            request, visit, conflict.current, where, problem=MoveProblem("changed"), status=409
        )
    except InvalidField as invalid:
        kind = "same-time" if invalid.path == "starts_at" else "unavailable"
        return await _picker(
            request, visit, appointment, where, chosen=slot, problem=MoveProblem(kind), status=409
        )
    except (NotActive, IllegalTransition):
        _back(visit, note="not-allowed", anchor=f"s{appointment.id}")
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


# -- contact details and consents --------------------------------------------------------------


def _contact_errors(
    form: ContactForm, clinic: ClinicInfo
) -> tuple[dict[str, str], str | None, str | None]:
    """(errors by field, normalised mobile, normalised email); blank means none. A mobile from
    a country the clinic does not text is refused like on the booking form."""
    errors: dict[str, str] = {}
    mobile = email = None
    if form.mobile.strip():
        try:
            mobile = normalise_mobile(form.mobile, clinic.region, countries=clinic.texts_to)
        except ContactError as error:
            errors["mobile"] = str(error)
    if form.email.strip():
        try:
            email = normalise_email(form.email)
        except ContactError as error:
            errors["email"] = str(error)
    if not errors and mobile is None and email is None:
        errors["mobile"] = "need-one"  # the template words it: the clinic needs one way in
    return errors, mobile, email


@_page
async def contact(request: web.Request, visit: Visit) -> web.StreamResponse:
    form = await request.post()
    typed = ContactForm.read(form)
    errors, mobile, email = _contact_errors(typed, visit.clinic)
    if errors:
        return await _overview(request, visit, status=422, contact=typed, errors=errors)
    patient = visit.patient
    wanted = {"mobile": mobile, "email": email}
    changed = {k: v for k, v in wanted.items() if getattr(patient, k) != v}
    if not changed:
        _back(visit, done="contact-same", anchor="contact")
    pool = request.app[POOL]
    try:
        async with pool.acquire() as conn, conn.transaction():
            updated = await patients.update(
                conn,
                patient.id,
                expected_version=_int(typed.version) or 0,
                changes=changed,
                now=visit.now,
            )
            assert updated is not None  # patients are never deleted
            # The old contact hears of it: if this was not the patient, that is how they learn.
            await outbox_plan.plan_contact_changed(conn, patient, updated, now=visit.now)
            await audit.record(
                conn,
                at=visit.now,
                actor=visit.actor,
                action="patient.update",
                entity="patient",
                entity_id=patient.id,
                patient_id=patient.id,
                details={"fields": sorted(changed)},
                request_id=request_id_var.get(),
            )
    except patients.StaleVersion:
        fresh = await patients.get(pool, patient.id)
        assert fresh is not None  # patients are never deleted
        return await _overview(
            request,
            replace(visit, patient=fresh),
            status=409,
            contact=typed.rebased(fresh),
            contact_stale=True,
        )
    # The change revoked every link sent so far, this one included: carry on with a new one
    # (the messages from now on bring it too).
    token = links.patient_link_token(
        _secret(request),
        updated.id,
        updated.link_version,
        now=visit.now,
        lifetime=request.app[SETTINGS].link_lifetime,
    )
    _back(replace(visit, token=token, patient=updated), done="contact", anchor="contact")


@_page
async def consents(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Each box is one consent; only the ones whose state changed are recorded (append-only),
    with the source and the version of the wording the patient saw."""
    form = await request.post()
    pool = request.app[POOL]
    patient_id = visit.patient.id
    async with pool.acquire() as conn, conn.transaction():
        current = await patients.current_consents(conn, patient_id)
        changed = {
            kind: kind in form
            for kind in patients.CONSENT_KINDS
            if (kind in form) != (kind in current and current[kind].granted)
        }
        for kind, granted in changed.items():
            await patients.record_consent(
                conn,
                patient_id,
                kind=kind,
                granted=granted,
                source=CONSENT_SOURCE,
                wording_version=CONSENT_WORDING_VERSION,
                now=visit.now,
            )
        if changed:
            await audit.record(
                conn,
                at=visit.now,
                actor=visit.actor,
                action="consent.record",
                entity="patient",
                entity_id=patient_id,
                patient_id=patient_id,
                details={
                    "consents": changed,
                    "source": CONSENT_SOURCE,
                    "wording_version": CONSENT_WORDING_VERSION,
                },
                request_id=request_id_var.get(),
            )
    _back(visit, done="consents" if changed else "consents-same", anchor="consents")


# -- rate limit --------------------------------------------------------------------------------


@web.middleware
async def limit_per_address(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every request under /s/ counts against the client address's reads (GET) or writes (any
    other method) a minute, before the link is even looked at, so that a client hammering the
    pages (or trying links) is slowed whatever it sends; over the limit it gets the booking
    pages' friendly 429 page."""
    if not request.path.startswith("/s/"):
        return await handler(request)
    kind = "reads" if request.method in ("GET", "HEAD") else "writes"
    now = request.app[CLOCK].now()
    verdict = await hit_client(request.app[POOL], request, "self-service", kind, now)
    if verdict is not None and not verdict.allowed:
        response = await error_page(request, PageError(429, retry_after=verdict.retry_after))
        response.headers.update(PRIVATE)
        return response
    return await handler(request)


# -- routes ------------------------------------------------------------------------------------


def install_self_service(app: web.Application) -> None:
    app.middlewares.append(limit_per_address)
    session = "/s/{token}/sessions/{appointment_id}"
    app.router.add_get("/s/{token}", overview)
    app.router.add_post(session + "/confirm", confirm)
    app.router.add_get(session + "/move", move_form)
    app.router.add_post(session + "/move", move)
    app.router.add_get(session + "/cancel", cancel_form)
    app.router.add_post(session + "/cancel", cancel)
    app.router.add_post("/s/{token}/contact", contact)
    app.router.add_post("/s/{token}/consents", consents)
    app.router.add_post("/s/{token}/renew", renew)
