"""The texts the reply handler answers with (TwiML, in the webhook's own response), rendered from
the `answer_*` SMS templates (and `opt_in_confirmation`) in shared/messaging/templates.

An answer is a reply to the patient's own message: it goes whatever the hour and needs no
consent beyond the message itself. It carries the minimum: the clinic, the date and time of the
session concerned, the clinic's phone, the emergency number, and the patient's private link
where the answer offers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.config import Settings
from shared.domain.emergency import emergency_number
from shared.links import patient_link_token, patient_link_url
from shared.messaging.context import patient_zone
from shared.messaging.formats import date_style, display_phone, local_view
from shared.messaging.render import find_templates, render_sms
from shared.scheduling.loader import ClinicInfo
from shared.store.appointments import Appointment
from shared.store.patients import Patient


@dataclass(frozen=True)
class AnswerContext:
    """Who is answered, by which clinic, from which number."""

    clinic: ClinicInfo
    number: str  # the patient's number (the clinic's phone is written as they dial it)
    patient: Patient | None
    settings: Settings
    now: datetime

    @property
    def language(self) -> str:
        return self.patient.language if self.patient is not None else "en"


def when_text(sessions: Sequence[Appointment], ctx: AnswerContext) -> str:
    """'Tue 3 Mar 10:00', or 'Tue 3 Mar 10:00 and Tue 10 Mar 10:00'."""
    style = date_style(ctx.language, ctx.clinic.region)
    # In the patient's zone when they have one, named when it is not the clinic's (as in every
    # message we send).
    zone = patient_zone(ctx.patient, ctx.clinic)
    show_zone = zone.key != ctx.clinic.zone.key
    views = [local_view(a.id, a.starts_at, None, zone, style, show_zone).short for a in sessions]
    if len(views) <= 1:
        return "".join(views)
    return ", ".join(views[:-1]) + " and " + views[-1]


def private_link(ctx: AnswerContext) -> str:
    """The patient's own signed link, minted now (empty without a patient or a signing key)."""
    if ctx.patient is None or not ctx.settings.secret_key:
        return ""
    token = patient_link_token(
        ctx.settings.secret_key,
        ctx.patient.id,
        ctx.patient.link_version,
        now=ctx.now,
        lifetime=ctx.settings.link_lifetime,
    )
    return patient_link_url(ctx.settings.public_url, token)


def compose(template: str, ctx: AnswerContext, **variables: Any) -> str:
    """One answer, fitted to the SMS length limit like every message we send."""
    _, (body,) = find_templates(template, "sms", ctx.language)
    values: dict[str, Any] = {
        "clinic_name": ctx.clinic.name,
        "clinic_phone": display_phone(ctx.clinic.phone, ctx.clinic.region, ctx.number),
        "emergency_number": emergency_number(ctx.clinic.region),
        **variables,
    }
    return render_sms(body, values, kind=template)
