"""The patient booking pages at `/`: server-rendered, working without JavaScript.

Flow: treatment (a course that needs a consultation offers one first) → practitioner or any →
a week-by-week picker of free start times → for a course, every proposed session, with a way to
move the first one → the chosen times are HELD → the patient's details, screening answers and
consents → review → booked (a GET page behind the patient's signed link, after a redirect, so a
refresh never books twice).

State travels in the query string while nothing is personal (treatment, practitioner, times),
then in POSTed hidden fields together with the hold token, which is a secret and so never goes
in a URL. No server-side session. The pages call the booking domain (services/booking/domain)
directly, in their own transactions, exactly as the public JSON API does.

Every text a patient reads lives in the templates (book/*.html), ready for translation; this
module hands them codes (`errors["mobile"] == "landline"`) and data, never sentences.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

import asyncpg
import phonenumbers
from aiohttp import web
from jinja2 import Environment

from services.booking.clients import client_key, hit_client
from services.booking.domain import bookings, holds, intake, offers
from services.booking.domain.errors import HoldFinished, HoldNotFound, SlotsTaken
from services.booking.domain.holds import HoldCreated, HoldView
from services.booking.domain.offers import Offer
from services.booking.domain.sessions import SessionRequest
from services.booking.web import csrf
from services.booking.web.page_headers import PAGE_SECURITY_HEADERS
from shared.db.transactions import in_transaction
from shared.domain.contact import (
    ContactError,
    CountryNotTexted,
    describe_countries,
    normalise_email,
    normalise_mobile,
)
from shared.domain.errors import InvalidField, TooMany
from shared.domain.names import unsafe_name_character
from shared.links import (
    LinkError,
    open_patient_link,
    patient_link_token,
    patient_link_url,
    read_patient_link,
)
from shared.logging import request_id_var
from shared.messaging.ics import ics_attachment
from shared.outbox_plan import reach_of
from shared.scheduling.course import CourseProposal
from shared.scheduling.loader import ClinicInfo, load_clinic, load_treatment
from shared.store import appointments, audit, clinics, patients
from shared.store.appointments import Appointment
from shared.store.audit import Actor
from shared.web import CLOCK, POOL, SETTINGS, route_pattern

log = logging.getLogger("regimen.booking.pages")

ACTOR = Actor("patient", None, "booking form")
WEEK = 7  # days per page of the slot picker
LOOK_AHEAD_DAYS = 63  # with no week asked for, the picker opens on the first week with a time
MAX_ID = 2**63 - 1
HOLD_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# Review reason (staff-facing, stored on the appointments) when the patient skips the offered
# consultation because they say they already had one.
CONSULTATION_CLAIMED = (
    "patient says they already had the consultation this course needs: check before session 1"
)
TEXT_FIELDS = (
    "first_name",
    "last_name",
    "mobile",
    "email",
    "dob_day",
    "dob_month",
    "dob_year",
    "allergies",
    "medications",
    "notes",
)
YES_NO_FIELDS = ("pregnant", "scalp", "keloid")
CONSENT_FIELDS = ("care_sms", "care_email", "marketing_sms", "marketing_email")
# Screening keys stored with the patient for each yes/no question of the form.
SCREENING_KEYS = {
    "pregnant": "pregnant_or_breastfeeding",
    "scalp": "scalp_infection_or_fever",
    "keloid": "keloid_history",
}
HONEYPOT = "website"
NAME_MAX, MOBILE_MAX, EMAIL_MAX, TEXT_MAX, NOTES_MAX = 100, 40, 254, 2000, 500
# Where the domain's InvalidField paths appear on the details form.
DOMAIN_FIELDS = {
    "patient.mobile": ("mobile", "invalid"),
    "patient.email": ("email", "invalid"),
    "patient.date_of_birth": ("dob", "future"),
}

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageError(Exception):
    """Answer with the friendly error page for `status` (`kind` picks a more precise text)."""

    def __init__(self, status: int, kind: str = "", *, retry_after: int | None = None) -> None:
        super().__init__(f"{status} {kind}")
        self.status = status
        self.kind = kind
        self.retry_after = retry_after


# -- plumbing ------------------------------------------------------------------------------------


def _templates(app: web.Application) -> Environment:
    from services.booking.app import TEMPLATES  # app.py imports this module

    return app[TEMPLATES]


def _secret(request: web.Request) -> str:
    secret = request.app[SETTINGS].secret_key
    assert secret, "create_app refuses to start without REGIMEN_SECRET_KEY"
    return secret


def _now(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


def _security_headers(response: web.StreamResponse, *, private: bool) -> None:
    # Booked pages carry the patient's link token in their address: never send it onwards.
    response.headers.update(PAGE_SECURITY_HEADERS)
    if private:
        response.headers["Cache-Control"] = "no-store"


def render(
    request: web.Request,
    name: str,
    *,
    status: int = 200,
    private: bool = False,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """A page from book/*.html with a CSRF token for its forms (the cookie is set if missing)."""
    token, cookie = csrf.token_for(request, _secret(request))
    page = _templates(request.app).get_template(name).render(csrf_token=token, **context)
    response = web.Response(text=page, status=status, content_type="text/html", headers=headers)
    csrf.set_cookie(request, response, cookie)
    _security_headers(response, private=private)
    return response


async def _clinic_for_errors(request: web.Request) -> ClinicInfo | None:
    try:
        row = await clinics.first_clinic(request.app[POOL])
        return None if row is None else await load_clinic(request.app[POOL], row["id"])
    except Exception:  # the error page must render even when the database is the problem
        return None


async def error_page(request: web.Request, error: PageError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return render(
        request,
        "book/error.html",
        status=error.status,
        headers=headers,
        clinic=await _clinic_for_errors(request),
        status_code=error.status,
        kind=error.kind,
        retry_after=error.retry_after,
        request_id=request_id_var.get(),
    )


def html_page(handler: Handler) -> Handler:
    """Friendly HTML error pages instead of problem+json or a stack trace."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PageError as error:
            return await error_page(request, error)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return await error_page(request, PageError(error.status))
        except Exception:
            # The traceback names code, not the patient's answers; the route pattern stands for
            # the path, which may carry a link or hold token.
            log.exception("booking page failed", extra={"path": route_pattern(request)})
            return await error_page(request, PageError(500))

    return wrapper


async def _limit(request: web.Request, kind: Literal["reads", "writes"]) -> None:
    """Per client address and minute, counted apart from the JSON API's buckets."""
    verdict = await hit_client(request.app[POOL], request, "pages", kind, _now(request))
    if verdict is not None and not verdict.allowed:
        raise PageError(429, retry_after=verdict.retry_after)


async def _posted(request: web.Request) -> Mapping[str, Any]:
    """The POSTed form, once the rate limit and the CSRF token allow it."""
    await _limit(request, "writes")
    form = await request.post()
    if not csrf.valid(request, _text(form, csrf.FIELD), _secret(request)):
        raise PageError(403, "csrf")
    return form


def _text(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    return value if isinstance(value, str) else ""


def _all(params: Mapping[str, Any], name: str) -> list[str]:
    getall = getattr(params, "getall", None)
    values = getall(name, []) if getall is not None else [params.get(name)]
    return [v for v in values if isinstance(v, str)]


def _int(text: str, *, low: int = 1, high: int = MAX_ID) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if low <= number <= high else None


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
    treatment_id = _int(_text(params, "treatment"))
    if treatment_id is None:
        raise PageError(400)
    offer = await offers.load_offer(request.app[POOL], treatment_id, public=True)
    if offer is None:
        raise PageError(404)
    return offer


async def _choice(
    request: web.Request, params: Mapping[str, Any], offer: Offer | None = None
) -> tuple[Offer, Choice]:
    offer = offer or await _offer(request, params)
    treatment = offer.treatment
    wanted = _text(params, "practitioner").strip() or "any"
    practitioner_id = None
    if wanted != "any":
        practitioner_id = _int(wanted)
        if practitioner_id is None or not await offers.works_here(
            request.app[POOL], offer, practitioner_id
        ):
            raise PageError(404)
    count_text = _text(params, "sessions")
    sessions = treatment.sessions_min
    if count_text:
        parsed = _int(count_text, low=treatment.sessions_min, high=treatment.sessions_max)
        if parsed is None:
            raise PageError(400)
        sessions = parsed
    consulted = _text(params, "consulted") == "1"
    return offer, Choice(treatment.id, practitioner_id, sessions, consulted)


def _needs_consultation_answer(offer: Offer, choice: Choice) -> bool:
    return offer.treatment.needs_consultation and not choice.consulted


def slot_value(practitioner_id: int, start: datetime) -> str:
    """A start time as form value: practitioner and epoch seconds (no '+' to escape in URLs)."""
    return f"{practitioner_id}-{int(start.timestamp())}"


def parse_slot(text: str) -> SessionRequest | None:
    left, sep, right = text.strip().partition("-")
    practitioner_id = _int(left)
    seconds = _int(right, low=946684800, high=32503680000)  # years 2000 to 2999
    if not sep or practitioner_id is None or seconds is None:
        return None
    return SessionRequest(practitioner_id, datetime.fromtimestamp(seconds, UTC))


async def _practitioner_names(
    request: web.Request, clinic_id: int, *, active: bool | None = None
) -> dict[int, str]:
    rows = await clinics.list_practitioners(
        request.app[POOL], clinic_id=clinic_id, active=active, after_id=None, limit=500
    )
    return {row["id"]: row["name"] for row in rows}


@dataclass(frozen=True)
class ShownSession:
    """One session as the pages show it: local time in the clinic's zone."""

    position: int
    local: datetime
    practitioner: str
    gap_days: int | None = None
    flags: tuple[str, ...] = ()
    value: str = ""  # the slot's form value


def _shown_rows(rows: list[Appointment], offer: Offer, names: dict[int, str]) -> list[ShownSession]:
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
    for row in await clinics.list_treatments(request.app[POOL], clinic_id):
        offer = await offers.load_offer(request.app[POOL], row["id"], public=True)
        if offer is not None:
            shown.append(offer)
    return shown


async def render_start(request: web.Request, *, error: str = "") -> web.Response:
    row = await clinics.first_clinic(request.app[POOL])
    if row is None:
        return render(request, "book/start.html", clinic=None, treatments=[])
    clinic = await load_clinic(request.app[POOL], row["id"])
    on_offer = await _public_offers(request, row["id"])
    treatments = [
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
        treatments=treatments,
        error=error,
        chosen=_text(request.query, "treatment"),
    )


def _consultation_for(on_offer: list[Offer], course: Offer) -> Offer | None:
    """The clinic's consultation: a single visit that needs none itself, by code if possible."""
    singles = [
        o
        for o in on_offer
        if not o.treatment.is_course
        and not o.treatment.needs_consultation
        and o.treatment.id != course.treatment.id
    ]
    named = [o for o in singles if "consult" in o.treatment.code.casefold()]
    return (named or singles or [None])[0]


# -- 2. practitioner (or the consultation offer first) --------------------------------------------


@html_page
async def practitioner_page(request: web.Request) -> web.StreamResponse:
    await _limit(request, "reads")
    if not _text(request.query, "treatment"):
        return await render_start(request, error="choose_treatment")
    offer, choice = await _choice(request, request.query)
    clinic = offer.clinic
    if _needs_consultation_answer(offer, choice):
        on_offer = await _public_offers(request, clinic.id)
        return render(
            request,
            "book/consultation.html",
            clinic=clinic,
            treatment=offer.treatment,
            consultation=_consultation_for(on_offer, offer),
            continue_url=choice.url("/book/practitioner", consulted="1"),
        )
    active = await _practitioner_names(request, clinic.id, active=True)
    return render(
        request,
        "book/practitioner.html",
        clinic=clinic,
        treatment=offer.treatment,
        choice=choice,
        practitioners=active.items(),
        session_counts=list(range(offer.treatment.sessions_min, offer.treatment.sessions_max + 1)),
        back_url="/?" + urlencode({"treatment": str(offer.treatment.id)}),
    )


def see_other(location: str) -> web.Response:
    # Returned rather than raised: a raised redirect passes the request middleware as an error.
    return web.Response(status=303, headers={"Location": location})


def _consultation_redirect(choice: Choice) -> web.Response:
    """Back to the consultation offer: a course that needs one is not booked without an answer."""
    params = choice.params()
    params.pop("consulted", None)
    return see_other("/book/practitioner?" + urlencode(params))


# -- 3. free times, week by week ---------------------------------------------------------------


@dataclass
class DaySlots:
    day: date
    slots: list[ShownSession] = field(default_factory=list)


def _parse_day(text: str) -> date | None:
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        return None
    return day if 2000 <= day.year <= 2999 else None


async def _week(
    request: web.Request, offer: Offer, choice: Choice, first: date, names: dict[int, str]
) -> list[DaySlots]:
    now, zone = _now(request), offer.clinic.zone
    last = first + timedelta(days=WEEK - 1)
    slots = await offers.free_slots(
        request.app[POOL], offer, choice.practitioner_id, first, last, now
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
        _now(request),
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
    clinic, now = offer.clinic, _now(request)
    today = now.astimezone(clinic.zone).date()
    bookable = offers.bookable_days(offer, today, today + clinic.rules.horizon, now)
    low, high = bookable or (today, today)
    if first is None:
        first = await _first_day_with_time(request, offer, choice, low, high)
    first = min(max(first, low), high)
    names = await _practitioner_names(request, clinic.id)
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
    await _limit(request, "reads")
    offer, choice = await _choice(request, request.query)
    if _needs_consultation_answer(offer, choice):
        return _consultation_redirect(choice)
    first = _parse_day(_text(request.query, "from"))
    return await render_times(
        request, offer, choice, first=first, chosen=_text(request.query, "chosen")
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
    now = _now(request)
    try:
        proposal = await offers.propose(
            request.app[POOL],
            offer,
            first_start=first.start,
            practitioner_id=first.practitioner_id,
            sessions=choice.sessions,
            now=now,
        )
    except InvalidField:
        raise PageError(400) from None
    names = await _practitioner_names(request, offer.clinic.id)
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
    await _limit(request, "reads")
    offer, choice = await _choice(request, request.query)
    if _needs_consultation_answer(offer, choice):
        return _consultation_redirect(choice)
    first = parse_slot(_text(request.query, "first"))
    if first is None:
        return await render_times(
            request,
            offer,
            choice,
            first=_parse_day(_text(request.query, "from")),
            error="choose_time",
            status=400,
        )
    if not offer.treatment.is_course:
        raise PageError(400)
    return await render_schedule(request, offer, choice, first)


# -- 4. hold the times ---------------------------------------------------------------------------


def _token_for(request: web.Request) -> Callable[[int], str]:
    secret = _secret(request)
    return lambda hold_id: holds.hold_token(secret, hold_id)


def _client(request: web.Request) -> bytes:
    return client_key(request, _secret(request))


def _too_many_holds(refused: TooMany) -> PageError:
    """One hold too many from this address, as the friendly page."""
    return PageError(429, "holds", retry_after=refused.retry_after)


async def _create_hold(
    request: web.Request, offer: Offer, requests: list[SessionRequest]
) -> HoldCreated:
    now = _now(request)

    async def work(conn: asyncpg.Connection) -> HoldCreated:
        return await holds.create_hold(
            conn,
            offer,
            requests,
            token_for=_token_for(request),
            now=now,
            actor=ACTOR,
            request_id=request_id_var.get(),
            client=_client(request),
        )

    try:
        return await in_transaction(request.app[POOL], work)
    except TooMany as refused:  # holds per client address
        raise _too_many_holds(refused) from None


@html_page
async def hold_post(request: web.Request) -> web.Response:
    form = await _posted(request)
    offer, choice = await _choice(request, form)
    if _needs_consultation_answer(offer, choice):
        return _consultation_redirect(choice)
    requests = [parse_slot(v) for v in _all(form, "s")]
    if not requests and _text(form, "first"):
        requests = [parse_slot(_text(form, "first"))]
    chosen = [r for r in requests if r is not None]
    if not chosen:
        return await render_times(
            request,
            offer,
            choice,
            first=_parse_day(_text(form, "from")),
            error="choose_time",
            status=400,
        )
    if len(chosen) != len(requests) or len(chosen) != choice.sessions:
        raise PageError(400)
    try:
        created = await _create_hold(request, offer, chosen)
    except SlotsTaken:
        return await _after_taken_at_hold(request, offer, choice, chosen[0])
    except InvalidField:
        raise PageError(400) from None
    return await render_details(request, created.token, values={}, errors={})


async def _after_taken_at_hold(
    request: web.Request, offer: Offer, choice: Choice, first: SessionRequest
) -> web.Response:
    """Someone took a time between showing and holding it: show the picker (or, when only a
    later session of a course went, the course re-planned from the same first session)."""
    day = first.start.astimezone(offer.clinic.zone).date()
    if offer.treatment.is_course:
        free = await offers.free_slots(
            request.app[POOL], offer, first.practitioner_id, day, day, _now(request)
        )
        if any(s.start == first.start for s in free):
            return await render_schedule(request, offer, choice, first, notice="replanned")
    return await render_times(request, offer, choice, first=day, notice="taken", status=409)


# -- 5. the patient's details --------------------------------------------------------------------


def _values(form: Mapping[str, Any]) -> dict[str, Any]:
    """What the patient typed, as typed (shown again whatever happens)."""
    values: dict[str, Any] = {name: _text(form, name) for name in TEXT_FIELDS}
    values.update({name: _text(form, name) for name in YES_NO_FIELDS})
    values.update({name: _text(form, name) == "yes" for name in CONSENT_FIELDS})
    return values


def _storable(text: str) -> bool:
    return "\x00" not in text


def _one_line(text: str) -> bool:
    return not any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _check_name(values: dict[str, Any], name: str, errors: dict[str, str]) -> str:
    text = values[name].strip()
    if not text:
        errors[name] = "required"
    elif len(text) > NAME_MAX:
        errors[name] = "too_long"
    elif not _one_line(text):
        errors[name] = "invalid"
    elif unsafe_name_character(text) is not None:
        errors[name] = "hidden_characters"
    return text


def _check_mobile(values: dict[str, Any], clinic: ClinicInfo, errors: dict[str, str]) -> str:
    text = values["mobile"].strip()
    if not text:
        errors["mobile"] = "required"
        return text
    if len(text) > MOBILE_MAX or not _one_line(text):
        errors["mobile"] = "invalid"
        return text
    region = clinic.region
    try:
        normalise_mobile(text, region, countries=clinic.texts_to)
    except CountryNotTexted:
        errors["mobile"] = "country"  # the page names the countries the clinic texts
    except ContactError:
        errors["mobile"] = "landline" if _valid_number(text, region) else "invalid"
    return text


def _valid_number(text: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, region))
    except phonenumbers.NumberParseException:
        return False


def _check_email(values: dict[str, Any], errors: dict[str, str]) -> str | None:
    text = values["email"].strip()
    if not text:
        return None
    if len(text) > EMAIL_MAX or not _one_line(text):
        errors["email"] = "invalid"
        return None
    try:
        normalise_email(text)
    except ContactError:
        errors["email"] = "invalid"
    return text


def _check_birthday(values: dict[str, Any], today: date, errors: dict[str, str]) -> date | None:
    parts = [values[name].strip() for name in ("dob_day", "dob_month", "dob_year")]
    if not any(parts):
        errors["dob"] = "required"
        return None
    numbers = [_int(p, low=1, high=9999) for p in parts]
    if any(n is None for n in numbers) or len(parts[2]) != 4:
        errors["dob"] = "invalid"
        return None
    day, month, year = (int(n or 0) for n in numbers)
    try:
        born = date(year, month, day)
    except ValueError:
        errors["dob"] = "invalid"
        return None
    if born >= today:
        errors["dob"] = "future"
    elif born.year < 1900:
        errors["dob"] = "too_old"
    return born


def _check_text(values: dict[str, Any], name: str, limit: int, errors: dict[str, str]) -> str:
    text = values[name].strip()
    if len(text) > limit:
        errors[name] = "too_long"
    elif not _storable(text):
        errors[name] = "invalid"
    return text


def check_details(
    values: dict[str, Any], clinic: ClinicInfo, today: date
) -> tuple[intake.PatientForm | None, intake.ConsentAnswers, dict[str, str]]:
    """The domain's form and consents, or error codes by field (every field checked at once)."""
    errors: dict[str, str] = {}
    first_name = _check_name(values, "first_name", errors)
    last_name = _check_name(values, "last_name", errors)
    mobile = _check_mobile(values, clinic, errors)
    email = _check_email(values, errors)
    born = _check_birthday(values, today, errors)
    allergies = _check_text(values, "allergies", TEXT_MAX, errors)
    medications = _check_text(values, "medications", TEXT_MAX, errors)
    notes = _check_text(values, "notes", NOTES_MAX, errors)
    for name in YES_NO_FIELDS:
        if values[name] not in ("yes", "no"):
            errors[name] = "required"
    consents = intake.ConsentAnswers(**{name: bool(values[name]) for name in CONSENT_FIELDS})
    if errors or born is None:
        return None, consents, errors
    # Positive answers never stop the booking: the domain flags the sessions for review.
    screening: dict[str, bool | str] = {
        key: values[name] == "yes" for name, key in SCREENING_KEYS.items()
    }
    if notes:
        screening["notes"] = notes
    form = intake.PatientForm(
        first_name=first_name,
        last_name=last_name,
        mobile=mobile,
        email=email,
        date_of_birth=born,
        allergies=allergies,
        medications=medications,
        screening=screening,
    )
    return form, consents, errors


def _hold_token(form: Mapping[str, Any]) -> str:
    token = _text(form, "hold")
    if not 16 <= len(token) <= 128 or not set(token) <= HOLD_TOKEN_CHARS:
        raise PageError(400, "hold")
    return token


async def render_details(
    request: web.Request,
    token: str,
    *,
    values: dict[str, Any],
    errors: dict[str, str],
    taken: str = "",
    chosen: str = "",
    status: int = 200,
) -> web.Response:
    """The details form under the held times (or, `taken`, with alternatives to pick from)."""
    now = _now(request)
    view = await holds.hold_view(request.app[POOL], token, now)
    if view is None or view.offer is None:
        raise PageError(400, "hold")
    offer = view.offer
    names = await _practitioner_names(request, offer.clinic.id)
    alternatives: list[ShownSession] = []
    if taken:
        alternatives = await _alternatives(request, offer, view.sessions, names)
    return render(
        request,
        "book/details.html",
        status=status,
        private=True,
        clinic=offer.clinic,
        treatment=offer.treatment,
        sessions=_shown_rows(view.sessions, offer, names),
        hold=token,
        hold_state=view.state,
        expires_local=view.hold.expires_at.astimezone(offer.clinic.zone),
        seconds_left=max(0, int((view.hold.expires_at - now).total_seconds())),
        values=values,
        errors=errors,
        taken=taken,
        alternatives=alternatives,
        chosen=chosen,
        today=now.astimezone(offer.clinic.zone).date(),
        sms_countries=describe_countries(offer.clinic.texts_to),
    )


async def _alternatives(
    request: web.Request, offer: Offer, rows: list[Appointment], names: dict[int, str]
) -> list[ShownSession]:
    """The nearest free first starts from the lost first session on (the same practitioner
    first); for a course the rest is planned again from whichever is picked."""
    if not rows:
        return []
    first = min(rows, key=lambda r: r.starts_at)
    found = await offers.alternatives(
        request.app[POOL], offer, first.practitioner_id, first.starts_at, _now(request)
    )
    zone = offer.clinic.zone
    shown = [
        ShownSession(
            0,
            s.start.astimezone(zone),
            names.get(s.practitioner_id, ""),
            value=slot_value(s.practitioner_id, s.start),
        )
        for s in found
    ]
    return sorted(shown, key=lambda s: s.local)


@html_page
async def details_post(request: web.Request) -> web.Response:
    """Back from the review page to change something: the form again, as typed."""
    form = await _posted(request)
    return await render_details(
        request,
        _hold_token(form),
        values=_values(form),
        errors={},
    )


def _honeypot(form: Mapping[str, Any]) -> None:
    if _text(form, HONEYPOT):
        # Nothing about the submission is logged: it may hold a real person's data.
        log.info("booking form refused: honeypot field filled")
        raise PageError(400, "refused")


# -- 6. review -----------------------------------------------------------------------------------


async def _hold_alternative(
    request: web.Request, token: str, chosen: SessionRequest
) -> tuple[str | None, str]:
    """A new hold on the picked alternative (for a course: the whole course re-planned from
    it), the old hold released. (new token, "") or (None, why not)."""
    now, pool = _now(request), request.app[POOL]
    view = await holds.hold_view(pool, token, now)
    if view is None or view.offer is None:
        raise PageError(400, "hold")
    offer = view.offer
    requests = [chosen]
    if offer.treatment.is_course:
        count = len({row.starts_at for row in view.sessions}) or offer.treatment.sessions_min
        proposal = await offers.propose(
            pool,
            offer,
            first_start=chosen.start,
            practitioner_id=chosen.practitioner_id,
            sessions=count,
            now=now,
        )
        if not proposal.complete:
            return None, "not_placeable"
        requests = [SessionRequest(s.practitioner_id, s.start) for s in proposal.sessions]

    # A booked hold cannot be released (release_hold refuses it); only the new hold is taken.
    new_token = await _replace_hold(
        request, token, offer, requests, now=now, release=view.state != "booked"
    )
    return (new_token, "") if new_token is not None else (None, "taken_again")


async def _replace_hold(
    request: web.Request,
    token: str,
    offer: Offer,
    requests: Sequence[SessionRequest],
    *,
    now: datetime,
    release: bool,
) -> str | None:
    """The old hold released (when `release`) and a new one taken on `requests`, in one
    transaction so the times are never free in between; None if a time is taken."""

    async def work(conn: asyncpg.Connection) -> str:
        if release:
            await holds.release_hold(
                conn, token, now=now, actor=ACTOR, request_id=request_id_var.get()
            )
        # Released first, so the hold replaced frees its place under the cap per address.
        created = await holds.create_hold(
            conn,
            offer,
            requests,
            token_for=_token_for(request),
            now=now,
            actor=ACTOR,
            request_id=request_id_var.get(),
            client=_client(request),
        )
        return created.token

    try:
        return await in_transaction(request.app[POOL], work)
    except (SlotsTaken, InvalidField):
        return None
    except TooMany as refused:  # holds per client address
        raise _too_many_holds(refused) from None


async def _renew_lapsed(request: web.Request, token: str, view: HoldView) -> str | None:
    """A lapsed hold whose times are still free is taken again under a new token (with a full
    hold time for the review); None if a time has gone."""
    assert view.offer is not None
    offer, now = view.offer, _now(request)
    starts: dict[datetime, int] = {}
    for row in sorted(view.sessions, key=lambda r: r.starts_at):
        starts.setdefault(row.starts_at, row.practitioner_id)
    requests = [SessionRequest(pid, start) for start, pid in starts.items()]
    return await _replace_hold(request, token, offer, requests, now=now, release=True)


@html_page
async def review_post(request: web.Request) -> web.StreamResponse:
    form = await _posted(request)
    _honeypot(form)
    token = _hold_token(form)
    values = _values(form)
    taken = _text(form, "taken")
    alternative = _text(form, "alternative")
    now = _now(request)
    view = await holds.hold_view(request.app[POOL], token, now)
    if view is None or view.offer is None:
        raise PageError(400, "hold")
    clinic = view.offer.clinic
    patient, _, errors = check_details(values, clinic, now.astimezone(clinic.zone).date())
    picked = parse_slot(alternative) if alternative else None
    if taken and picked is None:
        errors["alternative"] = "required"
    if errors:
        return await render_details(
            request,
            token,
            values=values,
            errors=errors,
            taken=taken,
            chosen=alternative,
            status=400,
        )
    notice = ""
    if picked is not None:
        new_token, why = await _hold_alternative(request, token, picked)
        if new_token is None:
            return await render_details(
                request,
                token,
                values=values,
                errors={},
                taken=why,
                status=409,
            )
        token, notice = new_token, "new_times"
    elif view.state == "booked":
        return _to_sent(view.hold.clinic_id)  # a hold token never mints a link once booked
    elif view.state in ("expired", "released"):
        renewed = await _renew_lapsed(request, token, view) if view.state == "expired" else None
        if renewed is None:
            return await render_details(
                request,
                token,
                values=values,
                errors={},
                taken="taken" if view.state == "expired" else "released",
                status=409,
            )
        token = renewed
    return await render_review(request, token, values=values, notice=notice)


async def render_review(
    request: web.Request, token: str, *, values: dict[str, Any], notice: str
) -> web.Response:
    now = _now(request)
    view = await holds.hold_view(request.app[POOL], token, now)
    if view is None or view.offer is None:
        raise PageError(400, "hold")
    offer = view.offer
    names = await _practitioner_names(request, offer.clinic.id)
    return render(
        request,
        "book/review.html",
        private=True,
        clinic=offer.clinic,
        treatment=offer.treatment,
        sessions=_shown_rows(view.sessions, offer, names),
        hold=token,
        expires_local=view.hold.expires_at.astimezone(offer.clinic.zone),
        seconds_left=max(0, int((view.hold.expires_at - now).total_seconds())),
        values=values,
        notice=notice,
        text_fields=TEXT_FIELDS,
        yes_no_fields=YES_NO_FIELDS,
        consent_fields=CONSENT_FIELDS,
    )


# -- 7. book -------------------------------------------------------------------------------------


async def _to_booked(request: web.Request, result: bookings.BookingResult) -> web.Response:
    """The booked page with the private link for a patient this booking created; for a patient
    matched by mobile or email (who may not be whoever filled in the form) the page that says
    the details went to the contacts on file, naming nobody."""
    if not result.patient_created:
        return _to_sent(result.offer.clinic.id)
    patient = await patients.get(request.app[POOL], result.patient_id)
    assert patient is not None  # created in the booking's transaction, never deleted
    settings = request.app[SETTINGS]
    token = patient_link_token(
        _secret(request),
        patient.id,
        patient.link_version,
        now=_now(request),
        lifetime=settings.link_lifetime,
    )
    # The link token is made for URLs (signed, expiring, nothing personal); logs drop the query.
    return see_other("/book/booked?" + urlencode({"link": token}))


def _to_sent(clinic_id: int) -> web.Response:
    return see_other("/book/sent?" + urlencode({"clinic": str(clinic_id)}))


async def _book(
    request: web.Request,
    token: str,
    patient: intake.PatientForm,
    consents: intake.ConsentAnswers,
) -> bookings.BookingResult:
    now = _now(request)

    async def work(conn: asyncpg.Connection) -> bookings.BookingResult:
        result = await bookings.book_hold(
            conn,
            token,
            patient,
            consents,
            now=now,
            actor=ACTOR,
            request_id=request_id_var.get(),
        )
        # Only a patient who said they already had the consultation gets this far with a
        # treatment that needs one (the form offers the consultation first).
        if result.offer.treatment.needs_consultation:
            for row in result.appointments:
                await appointments.set_review(
                    conn,
                    row.id,
                    needs_review=True,
                    reasons=[*row.review_reasons, CONSULTATION_CLAIMED],
                    actor=ACTOR.label,
                    now=now,
                    note="consultation not booked through the form",
                )
        return result

    return await in_transaction(request.app[POOL], work)


@html_page
async def confirm_post(request: web.Request) -> web.StreamResponse:
    form = await _posted(request)
    _honeypot(form)
    token = _hold_token(form)
    values = _values(form)
    now = _now(request)
    view = await holds.hold_view(request.app[POOL], token, now)
    if view is None or view.offer is None:
        raise PageError(400, "hold")
    clinic = view.offer.clinic
    patient, consents, errors = check_details(values, clinic, now.astimezone(clinic.zone).date())
    if patient is None:
        return await render_details(request, token, values=values, errors=errors, status=400)

    def again(**kw: Any) -> Awaitable[web.Response]:
        return render_details(request, token, values=values, **kw)

    try:
        result = await _book(request, token, patient, consents)
    except HoldNotFound:
        raise PageError(400, "hold") from None
    except HoldFinished as finished:
        if finished.state == "booked":
            # Submitted again (a double click, or Back then submit): the first answer showed
            # whatever it could; a hold token never mints a link once its booking exists.
            return _to_sent(finished.hold.clinic_id)
        if finished.offer is None:
            raise PageError(404) from None
        return await again(errors={}, taken="released", status=409)
    except SlotsTaken:  # HoldLapsed too: the hold ran out and a time was taken
        return await again(errors={}, taken="taken", status=409)
    except InvalidField as invalid:
        name, code = DOMAIN_FIELDS.get(invalid.path, ("form", "invalid"))
        return await again(errors={name: code}, status=400)
    except TooMany as refused:  # bookings per mobile number and hour
        raise PageError(429, "mobile", retry_after=refused.retry_after) from None
    return await _to_booked(request, result)


@html_page
async def release_post(request: web.Request) -> web.StreamResponse:
    """The patient gives the held times back and starts again."""
    form = await _posted(request)
    token = _hold_token(form)

    async def work(conn: asyncpg.Connection) -> None:
        await holds.release_hold(
            conn, token, now=_now(request), actor=ACTOR, request_id=request_id_var.get()
        )

    try:
        await in_transaction(request.app[POOL], work)
    except (HoldNotFound, HoldFinished):
        pass  # gone or booked already: nothing to give back
    return see_other("/")


# -- 8. booked, and the calendar file ------------------------------------------------------------


async def _linked_patient(request: web.Request) -> tuple[patients.Patient, str]:
    """The patient of the `link` in the query, if it opens now (genuine, unexpired, of the
    patient's current link version); otherwise the friendly 404."""
    token = _text(request.query, "link")
    try:
        link = read_patient_link(_secret(request), token)
        patient = await patients.get(request.app[POOL], link.patient_id)
        if patient is None or patient.erased_at is not None:
            raise PageError(404, "link")
        open_patient_link(
            _secret(request), token, now=_now(request), current_version=patient.link_version
        )
    except LinkError:
        raise PageError(404, "link") from None
    return patient, token


async def _audit_read(request: web.Request, patient: patients.Patient, what: str) -> None:
    # A read of the patient's record, like every other (design.md: every read is audited).
    await audit.record(
        request.app[POOL],
        at=_now(request),
        actor=Actor("patient", patient.id, "booked page"),
        action="patient.read",
        entity="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        details={"page": what},
        request_id=request_id_var.get(),
    )


@html_page
async def booked_page(request: web.Request) -> web.Response:
    await _limit(request, "reads")
    patient, token = await _linked_patient(request)
    pool, now = request.app[POOL], _now(request)
    clinic = await load_clinic(pool, patient.clinic_id)
    if clinic is None:
        raise PageError(404, "link")
    rows = await appointments.upcoming_for_patient(pool, patient.id, now)
    names = await _practitioner_names(request, clinic.id)
    treatments = {}
    for treatment_id in {row.treatment_id for row in rows}:
        treatments[treatment_id] = await load_treatment(pool, treatment_id)
    sessions = [
        {
            "local": row.starts_at.astimezone(clinic.zone),
            "position": row.position,
            "treatment": treatments[row.treatment_id],
            "practitioner": names.get(row.practitioner_id, ""),
        }
        for row in rows
    ]
    async with pool.acquire() as conn:
        reach = await reach_of(conn, patient.id)
    await _audit_read(request, patient, "booked")
    return render(
        request,
        "book/booked.html",
        private=True,
        clinic=clinic,
        patient=patient,
        sessions=sessions,
        needs_review=any(row.needs_review for row in rows),
        ics_url="/book/calendar.ics?" + urlencode({"link": token}),
        self_service_url=patient_link_url(request.app[SETTINGS].public_url, token),
        # How the confirmation (and the link in it) goes: what the page may promise.
        sent_by=[] if reach is None else reach.transactional_channels(),
    )


@html_page
async def sent_page(request: web.Request) -> web.Response:
    """After booking for a patient already on file: thanks, and where the details went, with
    nothing about the patient (whoever submitted the form may not be them)."""
    await _limit(request, "reads")
    clinic_id = _int(_text(request.query, "clinic"))
    clinic = None if clinic_id is None else await load_clinic(request.app[POOL], clinic_id)
    if clinic is None:
        raise PageError(404)
    return render(request, "book/sent.html", private=True, clinic=clinic)


@html_page
async def calendar_file(request: web.Request) -> web.Response:
    await _limit(request, "reads")
    patient, _ = await _linked_patient(request)
    pool, now, settings = request.app[POOL], _now(request), request.app[SETTINGS]
    clinic = await load_clinic(pool, patient.clinic_id)
    rows = await appointments.upcoming_for_patient(pool, patient.id, now)
    if clinic is None or not rows:
        raise PageError(404, "calendar")
    attachment = ics_attachment(
        rows,
        clinic=clinic,
        public_url=settings.public_url,
        email_from=settings.email_from,
        attendee=patient.email,
        method="REQUEST",
        stamp=now,
    )
    await _audit_read(request, patient, "calendar")
    response = web.Response(
        body=attachment.content,
        content_type="text/calendar",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{attachment.filename}"'},
    )
    _security_headers(response, private=True)
    return response


# -- routes --------------------------------------------------------------------------------------


async def _back_to_start(request: web.Request) -> web.StreamResponse:
    # A POST-only step opened by address (or a reload after a redirect): start again.
    return see_other("/")


@html_page
async def not_found(request: web.Request) -> web.StreamResponse:
    raise PageError(404)


@html_page
async def start_page(request: web.Request) -> web.StreamResponse:
    return await render_start(request)


def install_booking_pages(app: web.Application) -> None:
    router = app.router
    router.add_get("/", start_page)
    router.add_get("/book/practitioner", practitioner_page)
    router.add_get("/book/times", times_page)
    router.add_get("/book/schedule", schedule_page)
    for path, handler in (
        ("/book/hold", hold_post),
        ("/book/details", details_post),
        ("/book/review", review_post),
        ("/book/confirm", confirm_post),
        ("/book/release", release_post),
    ):
        router.add_post(path, handler)
        router.add_get(path, _back_to_start)
    router.add_get("/book/booked", booked_page)
    router.add_get("/book/sent", sent_page)
    router.add_get("/book/calendar.ics", calendar_file)
    router.add_route("*", "/book/{tail:.*}", not_found)
