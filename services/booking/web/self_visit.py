"""Who is visiting a self-service page: the private link checked (genuine, unexpired, of the
patient's current link version), the pages refused kindly otherwise (with a way to get a new link
sent to the contacts on file), and what every self-service page shares: rendering as a private
page, the way back to the overview with a message code, reading form fields, and what may be
done with a session now.

The link (shared.links) is the only credential: it names the patient and expires. Every action
loads the appointment and checks that it belongs to the link's patient, so another id shows
nothing and changes nothing."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn

from aiohttp import web

from services.booking.domain import patient_contact
from services.booking.web import TEMPLATES, csrf
from shared import links
from shared.db.transactions import in_transaction
from shared.domain.appointment_changes import Change
from shared.logging import request_id_var
from shared.scheduling import gaps
from shared.scheduling.loader import ClinicInfo, load_clinic
from shared.store import appointments, clinics, link_handovers, patients
from shared.store.appointments import Appointment
from shared.store.audit import Actor
from shared.store.patients import Patient
from shared.web import CLOCK, POOL, SETTINGS

ACTOR_NAME = "patient self-service"

# How long after its own contact change a browser is carried on from the replaced link.
HANDOVER_WINDOW = timedelta(minutes=10)
HANDOVER_PURPOSE = "link-handover"
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
    # Came on a link this browser's own contact change replaced a moment ago (`handed_over`).
    handed_over: bool = False

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


class StopPage(Exception):
    """Ends a handler early with a ready response (a refused link, a foreign appointment)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("stop")
        self.response = response


Handler = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]


def link_page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
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
                if not csrf.valid(request, field_text(form, csrf.FIELD), link_secret(request)):
                    return render_private(
                        request, "self/csrf.html", clinic=visit.clinic, status=403, home=visit.home
                    )
            return await handler(request, visit)
        except StopPage as stop:
            return stop.response

    return wrapped


def link_secret(request: web.Request) -> str:
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
    secret = link_secret(request)
    try:
        link = links.read_patient_link(secret, token)
    except links.LinkInvalid:
        raise StopPage(await _refused_link(request, None)) from None
    patient = await patients.get(pool, link.patient_id)
    clinic = None if patient is None else await load_clinic(pool, patient.clinic_id)
    if patient is None or clinic is None or patient.erased_at is not None:
        raise StopPage(await _refused_link(request, None))
    try:
        links.open_patient_link(secret, token, now=now, current_version=patient.link_version)
    except links.LinkError as refused:
        replaced = isinstance(refused, links.LinkRevoked)
        if replaced and await handed_over(request, patient, link.version, now):
            token = links.patient_link_token(
                secret,
                patient.id,
                patient.link_version,
                now=now,
                lifetime=request.app[SETTINGS].link_lifetime,
            )
            return Visit(token, patient, clinic, now, handed_over=True)
        raise StopPage(
            await _refused_link(request, clinic, token=token, replaced=replaced)
        ) from None
    return Visit(token, patient, clinic, now)


async def handed_over(request: web.Request, patient: Patient, version: int, now: datetime) -> bool:
    """Whether this POST comes from the browser whose own contact change replaced link
    `version` a moment ago: the form sent again from the replaced link's page (a double click,
    Back then submit) carries on at the current link, which that browser was given by its first
    submit anyway. Nobody else (not the link alone, not another browser) gets past the refusal."""
    if request.method != "POST":
        return False
    session = csrf.session_key(request, link_secret(request), HANDOVER_PURPOSE)
    if session is None:
        return False
    return await link_handovers.handed_over(
        request.app[POOL],
        patient.id,
        from_version=version,
        session_hash=session,
        since=now - HANDOVER_WINDOW,
    )


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
        shown = await clinics.first(request.app[POOL])
    if token is None:
        return render_private(request, "self/link_invalid.html", clinic=shown, status=404)
    return render_private(
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
    secret = link_secret(request)
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
    if not csrf.valid(request, field_text(form, csrf.FIELD), secret):
        return await _refused_link(request, clinic, token=token)
    try:
        links.open_patient_link(secret, token, now=now, current_version=patient.link_version)
    except links.LinkError:
        actor = Actor("patient", patient.id, ACTOR_NAME)
        await in_transaction(
            pool,
            lambda conn: patient_contact.request_new_link(
                conn, patient.id, actor=actor, now=now, request_id=request_id_var.get()
            ),
        )
        return render_private(request, "self/link_sent.html", clinic=clinic)
    raise web.HTTPSeeOther(f"/s/{token}", headers=dict(PRIVATE))  # it still works: go there


# -- responses ---------------------------------------------------------------------------------


def render_private(
    request: web.Request, template: str, *, clinic: Any, status: int = 200, **context: Any
) -> web.Response:
    token, new_cookie = csrf.token_for(request, link_secret(request))
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


def back_to_overview(
    visit: Visit, *, done: str | None = None, note: str | None = None, anchor: str = ""
) -> NoReturn:
    """303 to the overview; `done`/`note` are message codes the template turns into words,
    shown beside `anchor` (a session card or a form), which the browser scrolls to."""
    query = f"?done={done}" if done else f"?note={note}" if note else ""
    if query and anchor:
        query += f"&at={anchor}"
    fragment = f"#{anchor}" if anchor else ""
    raise web.HTTPSeeOther(f"{visit.home}{query}{fragment}", headers=dict(PRIVATE))


def not_found_page(request: web.Request, visit: Visit) -> StopPage:
    return StopPage(
        render_private(
            request, "self/not_found.html", clinic=visit.clinic, status=404, home=visit.home
        )
    )


# -- reading forms -----------------------------------------------------------------------------


def field_text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def field_int(text: str) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


def field_day(text: str | None) -> date | None:
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
        practitioner_id = field_int(practitioner_text)
        try:
            start = datetime.fromisoformat(start_text)
            # Years 2000 to 2999, as every other way in takes them: later dates overflow the
            # schedule arithmetic.
            if start.tzinfo is None or practitioner_id is None or not 2000 <= start.year <= 2999:
                return None
            return cls(start.astimezone(UTC), practitioner_id)
        except (ValueError, OverflowError):  # not a time, or one at the edge of the calendar
            return None


async def own_appointment(request: web.Request, visit: Visit) -> Appointment:
    """The appointment named in the path, if it is this patient's; the not-found page otherwise
    (the same page whether it exists or not, so ids cannot be probed)."""
    ident = field_int(request.match_info["appointment_id"])
    found = None if ident is None else await appointments.get(request.app[POOL], ident)
    if found is None or found.patient_id != visit.patient.id or found.status == "held":
        raise not_found_page(request, visit)
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
