"""The patient's own contact details and consents on the self-service page. A new mobile or
email revokes the links sent so far (the page carries on at a new one) and is told to the old
contact; each consent changed is recorded with its source and wording version."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
from aiohttp import web

from services.booking.domain import patient_contact
from services.booking.web import csrf
from services.booking.web.self_overview import ContactForm, render_overview
from services.booking.web.self_visit import (
    HANDOVER_PURPOSE,
    Visit,
    back_to_overview,
    field_int,
    handed_over,
    link_page,
    link_secret,
)
from shared import links
from shared.db.transactions import in_transaction
from shared.domain.contact import ContactError, normalise_email, normalise_mobile
from shared.domain.errors import Stale
from shared.logging import request_id_var
from shared.scheduling.loader import ClinicInfo
from shared.store import consents as consent_store
from shared.store import link_handovers
from shared.store.patients import Patient
from shared.web import POOL, SETTINGS

CONSENT_SOURCE = "self_service"
# The version of the consent wording in templates/self/overview.html: change both together.
CONSENT_WORDING_VERSION = "self-service-2026-03"

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


@link_page
async def contact(request: web.Request, visit: Visit) -> web.StreamResponse:
    form = await request.post()
    typed = ContactForm.read(form)
    errors, mobile, email = _contact_errors(typed, visit.clinic)
    if errors:
        return await render_overview(request, visit, status=422, contact=typed, errors=errors)
    patient = visit.patient
    wanted = {"mobile": mobile, "email": email}
    changed = {k: v for k, v in wanted.items() if getattr(patient, k) != v}
    if not changed:
        # From the link this browser's own change replaced: the form sent twice, saved once.
        done = "contact" if visit.handed_over else "contact-same"
        back_to_overview(visit, done=done, anchor="contact")
    pool = request.app[POOL]
    version = field_int(typed.version) or 0
    session = csrf.session_key(request, link_secret(request), HANDOVER_PURPOSE)

    async def work(conn: asyncpg.Connection) -> Patient:
        updated = await patient_contact.change_contact(
            conn,
            patient,
            changed,
            expected_version=version,
            actor=visit.actor,
            now=visit.now,
            request_id=request_id_var.get(),
        )
        if session is not None and updated.link_version != patient.link_version:
            # This browser is given the new link below; the same form sent again from the
            # replaced link (a double click) is carried on to it too (self_visit.handed_over).
            await link_handovers.record(
                conn,
                patient.id,
                from_version=patient.link_version,
                session_hash=session,
                now=visit.now,
            )
        return updated

    try:
        updated = await in_transaction(pool, work)
    except Stale as stale:
        fresh = stale.current
        same = all(getattr(fresh, name) == value for name, value in wanted.items())
        if not (same and await handed_over(request, fresh, patient.link_version, visit.now)):
            return await render_overview(
                request,
                replace(visit, patient=fresh),
                status=409,
                contact=typed.rebased(fresh),
                contact_stale=True,
            )
        updated = fresh  # the same form, sent at once, saved by the first of the two
    # The change revoked every link sent so far, this one included: carry on with a new one
    # (the messages from now on bring it too).
    token = links.patient_link_token(
        link_secret(request),
        updated.id,
        updated.link_version,
        now=visit.now,
        lifetime=request.app[SETTINGS].link_lifetime,
    )
    back_to_overview(replace(visit, token=token, patient=updated), done="contact", anchor="contact")


@link_page
async def consents(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Each box is one consent; only the ones whose state changed are recorded (append-only),
    with the source and the version of the wording the patient saw."""
    form = await request.post()
    wanted = {kind: kind in form for kind in consent_store.CONSENT_KINDS}
    changed = await in_transaction(
        request.app[POOL],
        lambda conn: patient_contact.set_consents(
            conn,
            visit.patient.id,
            wanted,
            source=CONSENT_SOURCE,
            wording_version=CONSENT_WORDING_VERSION,
            actor=visit.actor,
            now=visit.now,
            request_id=request_id_var.get(),
        ),
    )
    back_to_overview(visit, done="consents" if changed else "consents-same", anchor="consents")
