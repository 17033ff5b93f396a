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

from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from services.booking.domain import bookings, consultation_gate, holds, intake
from services.booking.domain.errors import HoldFinished, HoldNotFound, SlotsTaken
from services.booking.web import (
    PageError,
    add_security_headers,
    clock_now,
    form_text,
    html_page,
    limit_page,
    parse_int,
    posted_form,
    render,
    secret_of,
)
from services.booking.web.booking_choice import (
    practitioner_names,
    practitioner_page,
    render_start,
    schedule_page,
    see_other,
    times_page,
)
from services.booking.web.booking_details import (
    ACTOR,
    DOMAIN_FIELDS,
    check_details,
    check_honeypot,
    details_post,
    hold_post,
    posted_hold_token,
    render_details,
    review_post,
    to_sent,
    typed_values,
)
from shared.db.transactions import in_transaction
from shared.domain.errors import InvalidField, TooMany
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
from shared.scheduling.loader import load_clinic, load_treatment
from shared.store import appointments, audit, patients
from shared.store.audit import Actor
from shared.web import POOL, SETTINGS

# The review reason of a course booked on the patient's word that they had the consultation.
CONSULTATION_CLAIMED = consultation_gate.CONSULTATION_CLAIMED

# -- 7. book -------------------------------------------------------------------------------------


async def _to_booked(request: web.Request, result: bookings.BookingResult) -> web.Response:
    """The booked page with the private link for a patient this booking created; for a patient
    matched by mobile or email (who may not be whoever filled in the form) the page that says
    the details went to the contacts on file, naming nobody."""
    if not result.patient_created:
        return to_sent(result.offer.clinic.id)
    patient = await patients.get(request.app[POOL], result.patient_id)
    assert patient is not None  # created in the booking's transaction, never deleted
    settings = request.app[SETTINGS]
    token = patient_link_token(
        secret_of(request),
        patient.id,
        patient.link_version,
        now=clock_now(request),
        lifetime=settings.link_lifetime,
    )
    # The link token is made for URLs (signed, expiring, nothing personal); logs drop the query.
    return see_other("/book/booked?" + urlencode({"link": token}))


async def _book(
    request: web.Request,
    token: str,
    patient: intake.PatientForm,
    consents: intake.ConsentAnswers,
) -> bookings.BookingResult:
    now = clock_now(request)

    async def work(conn: asyncpg.Connection) -> bookings.BookingResult:
        # The form books a course that needs a consultation only after offering one first: the
        # patient who gets this far said they already had it (consultation_gate: "declared").
        return await bookings.book_hold(
            conn,
            token,
            patient,
            consents,
            now=now,
            actor=ACTOR,
            request_id=request_id_var.get(),
            consultation_declared=True,
            screening_source="public_form",
        )

    return await in_transaction(request.app[POOL], work)


@html_page
async def confirm_post(request: web.Request) -> web.StreamResponse:
    form = await posted_form(request)
    check_honeypot(form)
    token = posted_hold_token(form)
    values = typed_values(form)
    now = clock_now(request)
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
            return to_sent(finished.hold.clinic_id)
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
    form = await posted_form(request)
    token = posted_hold_token(form)

    async def work(conn: asyncpg.Connection) -> None:
        await holds.release_hold(
            conn, token, now=clock_now(request), actor=ACTOR, request_id=request_id_var.get()
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
    token = form_text(request.query, "link")
    try:
        link = read_patient_link(secret_of(request), token)
        patient = await patients.get(request.app[POOL], link.patient_id)
        if patient is None or patient.erased_at is not None:
            raise PageError(404, "link")
        open_patient_link(
            secret_of(request), token, now=clock_now(request), current_version=patient.link_version
        )
    except LinkError:
        raise PageError(404, "link") from None
    return patient, token


async def _audit_read(request: web.Request, patient: patients.Patient, what: str) -> None:
    # A read of the patient's record, like every other (design.md: every read is audited).
    await audit.insert(
        request.app[POOL],
        at=clock_now(request),
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
    await limit_page(request, "reads")
    patient, token = await _linked_patient(request)
    pool, now = request.app[POOL], clock_now(request)
    clinic = await load_clinic(pool, patient.clinic_id)
    if clinic is None:
        raise PageError(404, "link")
    rows = await appointments.upcoming_for_patient(pool, patient.id, now)
    names = await practitioner_names(request, clinic.id)
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
    await limit_page(request, "reads")
    clinic_id = parse_int(form_text(request.query, "clinic"))
    clinic = None if clinic_id is None else await load_clinic(request.app[POOL], clinic_id)
    if clinic is None:
        raise PageError(404)
    return render(request, "book/sent.html", private=True, clinic=clinic)


@html_page
async def calendar_file(request: web.Request) -> web.Response:
    await limit_page(request, "reads")
    patient, _ = await _linked_patient(request)
    pool, now, settings = request.app[POOL], clock_now(request), request.app[SETTINGS]
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
    add_security_headers(response, private=True)
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
