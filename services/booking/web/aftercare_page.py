"""The aftercare page behind the link in a completed session's aftercare message:
`/aftercare/{token}`.

The token (shared.links, purpose `aftercare`, its own derived key) names one completed
appointment and the patient's link version; it opens this page and nothing else, for
AFTERCARE_LIFETIME after the completion, until the patient's links are renewed (a changed contact,
erasure, a new link from staff). The page shows the treatment's current aftercare template: the
instructions, what is normal and for how long, when to call the clinic (its phone) and what is an
emergency (the emergency number of the clinic's country). No patient data beyond the first name,
no other appointment, no treatment name in the page title.

A forged, garbled, expired or replaced link gets a friendly page with the clinic's phone and the
emergency number, never a 500. Requests count against the pages' per-address read limit.
"""

from __future__ import annotations

from aiohttp import web

from services.booking.web import PageError, clock_now, html_page, limit_page, secret_of
from services.booking.web.self_visit import render_private
from shared import links
from shared.domain.emergency import emergency_number
from shared.messaging.formats import display_phone
from shared.scheduling.loader import ClinicInfo, clinic_info, load_clinic
from shared.store import aftercare_templates, appointments, clinics, patients
from shared.web import POOL


async def _refused(
    request: web.Request, clinic: ClinicInfo | None, *, status: int, why: str
) -> web.Response:
    """The friendly refusal: the clinic's phone and the emergency number still shown (a
    patient opening an old link may be worried)."""
    if clinic is None:
        row = await clinics.first(request.app[POOL])
        clinic = None if row is None else clinic_info(row)
    return render_private(
        request,
        "aftercare/refused.html",
        clinic=clinic,
        status=status,
        why=why,
        phone=None if clinic is None else display_phone(clinic.phone, clinic.region, None),
        emergency_number=emergency_number(clinic.region if clinic else ""),
    )


@html_page
async def aftercare_page(request: web.Request) -> web.StreamResponse:
    await limit_page(request, "reads")
    pool = request.app[POOL]
    now = clock_now(request)
    try:
        link = links.read_aftercare_link(secret_of(request), request.match_info["token"])
    except links.LinkInvalid:
        return await _refused(request, None, status=404, why="invalid")
    appointment = await appointments.get(pool, link.appointment_id)
    if appointment is None or appointment.patient_id is None:
        return await _refused(request, None, status=404, why="invalid")
    clinic = await load_clinic(pool, appointment.clinic_id)
    patient = await patients.get(pool, appointment.patient_id)
    if clinic is None:
        raise PageError(404)
    if patient is None or patient.erased_at is not None or appointment.status != "completed":
        return await _refused(request, clinic, status=404, why="invalid")
    if link.version != patient.link_version:
        return await _refused(request, clinic, status=410, why="replaced")
    if now >= link.expires_at:
        return await _refused(request, clinic, status=410, why="expired")
    template = await aftercare_templates.get(pool, appointment.treatment_id)
    return render_private(
        request,
        "aftercare/page.html",
        clinic=clinic,
        first_name=patient.first_name.strip(),
        session_day=appointment.starts_at.astimezone(clinic.zone).date(),
        aftercare=None if template is None else template.content,
        phone=display_phone(clinic.phone, clinic.region, None),
        emergency_number=emergency_number(clinic.region),
    )


def install_aftercare_page(app: web.Application) -> None:
    app.router.add_get("/aftercare/{token}", aftercare_page)
