"""The booking form's middle steps: 4. the chosen times are HELD, 5. the patient's details,
screening answers and consents, 6. review. From here on state travels in POSTed hidden fields
with the hold token, a secret that never goes in a URL; a lapsed hold whose times are still free
is taken again, and times taken meanwhile offer the nearest alternatives, keeping all typed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
import phonenumbers
from aiohttp import web

from services.booking.clients import client_key
from services.booking.domain import holds, intake, offers
from services.booking.domain.errors import SlotsTaken
from services.booking.domain.holds import HoldCreated, HoldView
from services.booking.domain.offers import Offer
from services.booking.domain.sessions import SessionRequest
from services.booking.web import (
    PageError,
    clock_now,
    csrf,
    form_text,
    form_values,
    html_page,
    log,
    parse_int,
    posted_form,
    render,
    secret_of,
)
from services.booking.web.booking_choice import (
    HOLDS_PURPOSE,
    Choice,
    ShownSession,
    consultation_redirect,
    needs_consultation_answer,
    parse_day,
    parse_slot,
    practitioner_names,
    read_choice,
    render_schedule,
    render_times,
    see_other,
    shown_rows,
    slot_value,
)
from shared.db.transactions import in_transaction
from shared.domain.contact import (
    ContactError,
    CountryNotTexted,
    describe_countries,
    normalise_email,
    normalise_mobile,
)
from shared.domain.errors import InvalidField, TooMany
from shared.domain.names import one_line_problem, storable_problem, unsafe_name_character
from shared.logging import request_id_var
from shared.scheduling.loader import ClinicInfo
from shared.store.appointments import Appointment
from shared.store.audit import Actor
from shared.web import POOL

ACTOR = Actor("patient", None, "booking form")

HOLD_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

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

# -- 4. hold the times ---------------------------------------------------------------------------


def _token_for(request: web.Request) -> Callable[[int], str]:
    secret = secret_of(request)
    return lambda hold_id: holds.hold_token(secret, hold_id)


def _client(request: web.Request) -> bytes:
    return client_key(request, secret_of(request))


def _session(request: web.Request) -> bytes | None:
    return csrf.session_key(request, secret_of(request), HOLDS_PURPOSE)


def _too_many_holds(refused: TooMany) -> PageError:
    """One hold too many from this address, as the friendly page."""
    return PageError(429, "holds", retry_after=refused.retry_after)


async def _take_hold(
    conn: asyncpg.Connection,
    request: web.Request,
    offer: Offer,
    requests: Sequence[SessionRequest],
    now: datetime,
) -> HoldCreated:
    """A hold on `requests` for this browser (its token, its client address, its session): the
    browser's own running hold on the same times comes back as it is (a double click, Back then
    submit), and its hold on other times of the treatment is given back."""
    return await holds.create_hold(
        conn,
        offer,
        requests,
        token_for=_token_for(request),
        now=now,
        actor=ACTOR,
        request_id=request_id_var.get(),
        client=_client(request),
        session=_session(request),
    )


async def _create_hold(
    request: web.Request, offer: Offer, requests: list[SessionRequest]
) -> HoldCreated:
    now = clock_now(request)

    async def work(conn: asyncpg.Connection) -> HoldCreated:
        return await _take_hold(conn, request, offer, requests, now)

    try:
        return await in_transaction(request.app[POOL], work)
    except TooMany as refused:  # holds per client address
        raise _too_many_holds(refused) from None


@html_page
async def hold_post(request: web.Request) -> web.Response:
    form = await posted_form(request)
    offer, choice = await read_choice(request, form)
    if needs_consultation_answer(offer, choice):
        return consultation_redirect(choice)
    requests = [parse_slot(v) for v in form_values(form, "s")]
    if not requests and form_text(form, "first"):
        requests = [parse_slot(form_text(form, "first"))]
    chosen = [r for r in requests if r is not None]
    if not chosen:
        return await render_times(
            request,
            offer,
            choice,
            first=parse_day(form_text(form, "from")),
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
            request.app[POOL], offer, first.practitioner_id, day, day, clock_now(request)
        )
        if any(s.start == first.start for s in free):
            return await render_schedule(request, offer, choice, first, notice="replanned")
    return await render_times(request, offer, choice, first=day, notice="taken", status=409)


# -- 5. the patient's details --------------------------------------------------------------------


def typed_values(form: Mapping[str, Any]) -> dict[str, Any]:
    """What the patient typed, as typed (shown again whatever happens)."""
    values: dict[str, Any] = {name: form_text(form, name) for name in TEXT_FIELDS}
    values.update({name: form_text(form, name) for name in YES_NO_FIELDS})
    values.update({name: form_text(form, name) == "yes" for name in CONSENT_FIELDS})
    return values


def _check_name(values: dict[str, Any], name: str, errors: dict[str, str]) -> str:
    text = values[name].strip()
    if not text:
        errors[name] = "required"
    elif len(text) > NAME_MAX:
        errors[name] = "too_long"
    elif one_line_problem(text) is not None:
        errors[name] = "invalid"
    elif unsafe_name_character(text) is not None:
        errors[name] = "hidden_characters"
    return text


def _check_mobile(values: dict[str, Any], clinic: ClinicInfo, errors: dict[str, str]) -> str:
    text = values["mobile"].strip()
    if not text:
        errors["mobile"] = "required"
        return text
    if len(text) > MOBILE_MAX or one_line_problem(text) is not None:
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
    if len(text) > EMAIL_MAX or one_line_problem(text) is not None:
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
    numbers = [parse_int(p, low=1, high=9999) for p in parts]
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
    elif storable_problem(text) is not None:
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


def posted_hold_token(form: Mapping[str, Any]) -> str:
    token = form_text(form, "hold")
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
    now = clock_now(request)
    view = await holds.hold_view(request.app[POOL], token, now)
    if view is None or view.offer is None:
        raise PageError(400, "hold")
    offer = view.offer
    names = await practitioner_names(request, offer.clinic.id)
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
        sessions=shown_rows(view.sessions, offer, names),
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
        request.app[POOL], offer, first.practitioner_id, first.starts_at, clock_now(request)
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
    form = await posted_form(request)
    return await render_details(
        request,
        posted_hold_token(form),
        values=typed_values(form),
        errors={},
    )


def check_honeypot(form: Mapping[str, Any]) -> None:
    if form_text(form, HONEYPOT):
        # Nothing about the submission is logged: it may hold a real person's data.
        log.info("booking form refused: honeypot field filled")
        raise PageError(400, "refused")


# -- 6. review -----------------------------------------------------------------------------------


async def _hold_alternative(
    request: web.Request, token: str, chosen: SessionRequest
) -> tuple[str | None, str]:
    """A new hold on the picked alternative (for a course: the whole course re-planned from
    it), the old hold released. (new token, "") or (None, why not)."""
    now, pool = clock_now(request), request.app[POOL]
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
        session = _session(request)
        if session is not None:
            # Before the old hold's row lock, as every hold request of the session takes them.
            await holds.serialise_session(conn, session)
        if release:
            await holds.release_hold(
                conn, token, now=now, actor=ACTOR, request_id=request_id_var.get()
            )
        # Released first, so the hold replaced frees its place under the cap per address.
        created = await _take_hold(conn, request, offer, requests, now)
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
    offer, now = view.offer, clock_now(request)
    starts: dict[datetime, int] = {}
    for row in sorted(view.sessions, key=lambda r: r.starts_at):
        starts.setdefault(row.starts_at, row.practitioner_id)
    requests = [SessionRequest(pid, start) for start, pid in starts.items()]
    return await _replace_hold(request, token, offer, requests, now=now, release=True)


@html_page
async def review_post(request: web.Request) -> web.StreamResponse:
    form = await posted_form(request)
    check_honeypot(form)
    token = posted_hold_token(form)
    values = typed_values(form)
    taken = form_text(form, "taken")
    alternative = form_text(form, "alternative")
    now = clock_now(request)
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
        return to_sent(view.hold.clinic_id)  # a hold token never mints a link once booked
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
    now = clock_now(request)
    view = await holds.hold_view(request.app[POOL], token, now)
    if view is None or view.offer is None:
        raise PageError(400, "hold")
    offer = view.offer
    names = await practitioner_names(request, offer.clinic.id)
    return render(
        request,
        "book/review.html",
        private=True,
        clinic=offer.clinic,
        treatment=offer.treatment,
        sessions=shown_rows(view.sessions, offer, names),
        hold=token,
        expires_local=view.hold.expires_at.astimezone(offer.clinic.zone),
        seconds_left=max(0, int((view.hold.expires_at - now).total_seconds())),
        values=values,
        notice=notice,
        text_fields=TEXT_FIELDS,
        yes_no_fields=YES_NO_FIELDS,
        consent_fields=CONSENT_FIELDS,
    )


def to_sent(clinic_id: int) -> web.Response:
    return see_other("/book/sent?" + urlencode({"clinic": str(clinic_id)}))
