"""Turn an outbox row and its current context into the text that goes out.

Templates live in `templates/`, one family per kind (the row's `template`, which is the kind
unless noted), channel and language:

    {template}.sms.{lang}.j2
    {template}.email.{lang}.subject.j2 / .txt.j2 / .html.j2
    _layout.email.{lang}.txt.j2 / .html.j2      (the email frame, clinic footer)

A language without its own template falls back to its primary subtag, then to English. Only
`.html.j2` templates are autoescaped. Patient templates never receive the treatment at all, so
they cannot name it: minimum necessary content by construction.

SMS bodies are made to fit two GSM-7 segments: typographic characters in names are replaced by
their GSM-7 look-alikes when that makes the whole body GSM-7, and the template is rendered in
shorter variants (`compact` 0, 1, 2; then without the greeting) until one fits. Dates, times,
phone numbers and the GSM-7 look-alikes are written by `shared.messaging.formats`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound

from shared.config import Settings
from shared.domain.emergency import emergency_number
from shared.messaging.check_in_variables import check_in_variables
from shared.messaging.context import (
    FORMER_CONTACT_KINDS,
    STAFF_KINDS,
    MessageContext,
    NotificationRow,
)
from shared.messaging.formats import (
    DEFAULT_LANGUAGE,
    DateStyle,
    SessionView,
    clock_text,
    date_style,
    day_text,
    display_phone,
    grouped_dates,
    gsm7_fallback,
    local_view,
    session_view,
)
from shared.messaging.ics import Method, ics_attachment
from shared.providers.email import Attachment
from shared.sms_segments import segment_count
from shared.store.appointments import Appointment

Channel = Literal["sms", "email"]
MAX_SMS_SEGMENTS = 2
REMINDER_KINDS = frozenset({"reminder_72h", "reminder_24h", "reminder_2h"})
MERGED_TEMPLATE = "reminder_merged"
# Kinds that talk about an appointment: they cannot be rendered without one.
APPOINTMENT_KINDS = REMINDER_KINDS | {
    "booking_confirmation",
    "cancellation_notice",
    "reschedule_notice",
    "session_proposal",
    "proposal_released",
    "aftercare",
}
# Messages that change what the patient's calendar should hold carry an .ics; reminders do not
# (a METHOD:REQUEST in every reminder would ask some mail clients to accept the event again).
CALENDAR_KINDS = frozenset({"booking_confirmation", "reschedule_notice", "cancellation_notice"})
# Free text that may be shortened to fit (staff see the whole alert by email and in the admin API).
# A reply to a patient is never cut: it may carry emergency instructions.
_SHORTENABLE = frozenset({"staff_alert"})
_DEFAULT_COLOUR = "#1f5f8b"
_NAME_RE = re.compile(r"^[a-z0-9_]{1,60}$")
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_COLOUR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")

TEMPLATES_DIR = Path(__file__).with_name("templates")


class RenderError(Exception):
    """The row cannot be turned into a message (permanent: sending it again will not help)."""


class TemplateMissing(RenderError):
    """No template for this kind and channel, in any language."""


@dataclass(frozen=True)
class Composed:
    channel: Channel
    to: str | None
    # SMS text, or the plain-text part of an email
    body: str
    subject: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    # SMS only: segments the body costs
    segments: int | None = None
    # what was used after fallbacks, for the record
    language: str = DEFAULT_LANGUAGE
    template: str = ""


def _environment(*, trim: bool) -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        # Only HTML is escaped; SMS and plain text must keep '&' and '<' as typed.
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        undefined=StrictUndefined,
        trim_blocks=trim,
        lstrip_blocks=trim,
        keep_trailing_newline=False,
        # Templates ship with the code: no stat() of every template file on every message.
        auto_reload=False,
    )


# Emails keep their layout, so block tags must not leave blank lines behind; SMS bodies are
# folded into one paragraph, so a line break after a tag must stay a space between words.
_EMAIL_ENV = _environment(trim=True)
_SMS_ENV = _environment(trim=False)


def compile_templates() -> int:
    """Compile every message template now (a sender calls this before it starts, so that the
    first messages after a start do not wait while templates compile); the count."""
    count = 0
    for name in _EMAIL_ENV.list_templates(extensions=["j2"]):
        environment = _SMS_ENV if ".sms." in name else _EMAIL_ENV
        environment.get_template(name)
        count += 1
    return count


# -- template lookup -------------------------------------------------------------------------------


def language_candidates(language: str | None) -> list[str]:
    """'pt-BR' -> ['pt-BR', 'pt', 'en']; anything malformed -> ['en']."""
    out: list[str] = []
    if language and _LANGUAGE_RE.match(language):
        out.append(language)
        primary = language.split("-", 1)[0].lower()
        if primary not in out:
            out.append(primary)
    if DEFAULT_LANGUAGE not in out:
        out.append(DEFAULT_LANGUAGE)
    return out


def _parts(template: str, channel: Channel, language: str) -> list[str]:
    if channel == "sms":
        return [f"{template}.sms.{language}.j2"]
    stem = f"{template}.email.{language}"
    return [f"{stem}.subject.j2", f"{stem}.txt.j2", f"{stem}.html.j2"]


def find_templates(template: str, channel: Channel, language: str) -> tuple[str, list[Template]]:
    """The first language in the fallback chain that has every part of the family."""
    if not _NAME_RE.match(template):
        raise TemplateMissing(f"bad template name {template!r}")
    environment = _SMS_ENV if channel == "sms" else _EMAIL_ENV
    for candidate in language_candidates(language):
        try:
            names = _parts(template, channel, candidate)
            return candidate, [environment.get_template(n) for n in names]
        except TemplateNotFound:
            continue
    raise TemplateMissing(f"no {channel} template {template!r}")


def _layout(kind: str, language: str) -> str:
    name = f"_layout.email.{language}.{kind}.j2"
    try:
        _EMAIL_ENV.get_template(name)
    except TemplateNotFound:
        return f"_layout.email.{DEFAULT_LANGUAGE}.{kind}.j2"
    return name


# -- the variables templates see -------------------------------------------------------------------


def _template_family(notification: NotificationRow, ctx: MessageContext) -> str:
    if notification.kind in REMINDER_KINDS and ctx.other_appointments:
        return MERGED_TEMPLATE
    return notification.template or notification.kind


def _text(notification: NotificationRow, key: str) -> str:
    value = (notification.context or {}).get(key)
    return value.strip() if isinstance(value, str) else ""


def _previous(
    notification: NotificationRow,
    appointment: Appointment | None,
    zone: ZoneInfo,
    style: DateStyle,
    show_zone: bool,
) -> SessionView | None:
    """Where a moved appointment was: `previous_starts_at` in the row's context, either one ISO
    instant or a map from appointment id to one (a notice covering several moves)."""
    raw = (notification.context or {}).get("previous_starts_at")
    if isinstance(raw, dict) and appointment is not None:
        raw = raw.get(str(appointment.id))
    if not isinstance(raw, str):
        return None
    try:
        starts = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if starts.tzinfo is None:
        return None
    view_id = appointment.id if appointment is not None else 0
    return local_view(view_id, starts, None, zone, style, show_zone)


def _moment(
    notification: NotificationRow, key: str, zone: ZoneInfo, style: DateStyle, show_zone: bool
) -> SessionView | None:
    """An instant named in the row's context (`answer_by` of a proposal), as the reader reads
    times; None when absent or malformed."""
    raw = (notification.context or {}).get(key)
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return local_view(0, moment, None, zone, style, show_zone)


def _asks_confirmation(notification: NotificationRow) -> bool:
    merged_kinds = (notification.context or {}).get("merged_kinds") or []
    return notification.kind == "reminder_72h" or (
        isinstance(merged_kinds, list) and "reminder_72h" in merged_kinds
    )


def _has_email(ctx: MessageContext) -> bool:
    # Booking emails are transactional: they go to any address, care email consent or not.
    return bool(ctx.patient and ctx.patient.email and ctx.patient.erased_at is None)


_CHANGED_WHAT = {
    ("email",): "email address",
    ("mobile",): "mobile number",
    ("email", "mobile"): "mobile number and email address",
}


def _changed(notification: NotificationRow, zone: ZoneInfo, style: DateStyle) -> tuple[str, str]:
    """(what changed, when) for a contact-change notice: "email address", "on Mon 2 Mar at
    09:00"; empty for other kinds."""
    context = notification.context or {}
    fields = context.get("fields")
    what = _CHANGED_WHAT.get(tuple(sorted(fields)) if isinstance(fields, list) else (), "")
    at = context.get("changed_at")
    when = ""
    if isinstance(at, str):
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            local = moment.astimezone(zone)
            when = f"on {day_text(local, style)} at {clock_text(local, style)}"
    return what, when


def _aftercare(notification: NotificationRow) -> dict[str, Any]:
    """The aftercare template's content as the planner copied it into the row (lists of lines,
    texts); empty lists and texts when absent, so a template can test what it has."""
    raw = (notification.context or {}).get("aftercare")
    raw = raw if isinstance(raw, dict) else {}

    def lines(key: str) -> list[str]:
        value = raw.get(key)
        return (
            [v.strip() for v in value if isinstance(v, str) and v.strip()]
            if isinstance(value, list)
            else []
        )

    days = raw.get("normal_days")
    return {
        "instructions": lines("instructions"),
        "normal_course": raw.get("normal_course", "").strip()
        if isinstance(raw.get("normal_course"), str)
        else "",
        "normal_days": days if isinstance(days, int) and not isinstance(days, bool) else None,
        "call_when": lines("call_when"),
        "emergency_signs": lines("emergency_signs"),
    }


def _session_phrase(
    appointment: Appointment | None, composed_at: datetime | None, zone: ZoneInfo, style: DateStyle
) -> str:
    """ "today's session", "yesterday's session" or "your session on Tue 3 Mar", as true when
    the message is composed (an evening completion's aftercare goes the next morning)."""
    if appointment is None:
        return "your session"
    day = appointment.starts_at.astimezone(zone)
    if composed_at is not None:
        lag = (composed_at.astimezone(zone).date() - day.date()).days
        if lag == 0:
            return "today's session"
        if lag == 1:
            return "yesterday's session"
    return f"your session on {day_text(day, style)}"


def template_variables(
    notification: NotificationRow, ctx: MessageContext, *, settings: Settings, language: str
) -> dict[str, Any]:
    staff = notification.kind in STAFF_KINDS
    # Staff read times in the clinic's zone, patients in their own.
    zone = ctx.clinic.zone if staff else ctx.patient_zone
    show_zone = zone.key != ctx.clinic.zone.key
    style = date_style(language, ctx.clinic.region)
    views = [session_view(a, zone, style, show_zone=show_zone) for a in ctx.sessions]
    main = ctx.appointment
    session = (
        session_view(main, zone, style, show_zone=show_zone)
        if main is not None
        else (views[0] if views else None)
    )
    patient = ctx.patient
    reader_number = None if staff or patient is None else patient.mobile
    colour = ctx.clinic.brand_colour
    changed_what, changed_on = _changed(notification, zone, style)
    return {
        "kind": notification.kind,
        "language": language,
        "first_name": patient.first_name.strip() if patient else "",
        "patient_name": f"{patient.first_name} {patient.last_name}" if patient else "",
        "patient_id": patient.id if patient else None,
        "clinic_name": ctx.clinic.name,
        "clinic_phone": display_phone(ctx.clinic.phone, ctx.clinic.region, reader_number),
        "clinic_address": ctx.clinic.address,
        "brand_colour": colour if _COLOUR_RE.match(colour or "") else _DEFAULT_COLOUR,
        "link": ctx.self_service_url or settings.public_url + "/",
        # The public booking form: where a new visit or course is booked (the private link
        # shows and changes the patient's sessions and books a course's next session, nothing
        # else: after a completed course, a follow-up is a new visit).
        "book_url": settings.public_url + "/",
        # Staff have no private link; a former contact must not get the patient's.
        "show_link": notification.kind not in STAFF_KINDS | FORMER_CONTACT_KINDS,
        "changed_what": changed_what,
        "changed_on": changed_on,
        "session": session,
        "sessions": views,
        "count": len(views),
        "dates_grouped": grouped_dates(views, style),
        "previous": _previous(notification, main, zone, style, show_zone),
        # until when a proposed session is held for the patient's answer
        "answer_by": _moment(notification, "answer_by", zone, style, show_zone),
        "asks_confirmation": _asks_confirmation(notification),
        "has_email": _has_email(ctx),
        "text": _text(notification, "text"),
        "aftercare": _aftercare(notification),
        # empty without a key: the email then has the full text alone (the SMS is not sent)
        "aftercare_link": ctx.aftercare_url,
        "emergency_number": emergency_number(ctx.clinic.region),
        "session_phrase": _session_phrase(main, ctx.composed_at, zone, style),
        "title": _text(notification, "title"),
        "compact": 0,
        "greet": True,
        **check_in_variables(notification.kind, notification.context, ctx.clinic.region, settings),
    }


# -- SMS -------------------------------------------------------------------------------------------

# Tried in order until a body fits: full, grouped dates, summary, then without the greeting.
_SMS_VARIANTS: tuple[tuple[int, bool], ...] = ((0, True), (1, True), (2, True), (2, False))


def _sms_text(template: Template, variables: dict[str, Any]) -> str:
    # One paragraph: templates are laid out for reading, the SMS pays for every character.
    return gsm7_fallback(" ".join(template.render(variables).split()))


def _shorten_to_fit(render_with: Callable[[str], str], text: str) -> str:
    """The longest prefix of `text` (ending in '...') whose message fits; binary search."""
    low, high, best = 0, len(text), render_with("")
    while low <= high:
        middle = (low + high) // 2
        candidate = render_with(text[:middle].rstrip() + "...")
        if segment_count(candidate) <= MAX_SMS_SEGMENTS:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def render_sms(template: Template, variables: dict[str, Any], *, kind: str) -> str:
    body = ""
    for compact, greet in _SMS_VARIANTS:
        body = _sms_text(template, {**variables, "compact": compact, "greet": greet})
        if segment_count(body) <= MAX_SMS_SEGMENTS:
            return body
    if kind in _SHORTENABLE and variables.get("text"):
        last = {**variables, "compact": 2, "greet": False}
        return _shorten_to_fit(
            lambda t: _sms_text(template, {**last, "text": t}), variables["text"]
        )
    return body


# -- email -----------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def _calendar(
    notification: NotificationRow, ctx: MessageContext, settings: Settings, link: str, phone: str
) -> list[Attachment]:
    if notification.kind not in CALENDAR_KINDS or not ctx.sessions:
        return []
    method: Method = "CANCEL" if notification.kind == "cancellation_notice" else "REQUEST"
    description = "" if method == "CANCEL" else f"To change or cancel: {link} or call {phone}"
    return [
        ics_attachment(
            ctx.sessions,
            clinic=ctx.clinic,
            public_url=settings.public_url,
            email_from=settings.email_from,
            attendee=ctx.recipient,
            method=method,
            stamp=notification.created_at,
            description=description,
        )
    ]


# -- entry point -----------------------------------------------------------------------------------


def _check(notification: NotificationRow, ctx: MessageContext) -> None:
    if notification.channel not in ("sms", "email"):
        raise RenderError(f"unknown channel {notification.channel!r}")
    if notification.kind in APPOINTMENT_KINDS and ctx.appointment is None:
        raise RenderError(f"{notification.kind} needs an appointment")
    if notification.kind == "aftercare" and notification.channel == "sms" and not ctx.aftercare_url:
        # The SMS has no instructions of its own: any other link would promise what it lacks.
        raise RenderError("aftercare SMS without its aftercare link (no key or completion time)")
    if notification.kind in STAFF_KINDS and ctx.patient is not None and ctx.recipient:
        # Staff alerts name the patient and quote what they said: never to the patient.
        own = {ctx.patient.mobile, (ctx.patient.email or "").lower()}
        if ctx.recipient in own or ctx.recipient.lower() in own:
            raise RenderError("a staff alert is addressed to the patient")


def render(notification: NotificationRow, ctx: MessageContext, *, settings: Settings) -> Composed:
    """Compose the message for `notification` from current data. Raises RenderError (permanent)
    when it cannot be composed."""
    _check(notification, ctx)
    channel: Channel = "sms" if notification.channel == "sms" else "email"
    family = _template_family(notification, ctx)
    language, templates = find_templates(family, channel, notification.language)
    variables = template_variables(notification, ctx, settings=settings, language=language)
    if channel == "sms":
        body = render_sms(templates[0], variables, kind=notification.kind)
        return Composed(
            channel="sms",
            to=ctx.recipient,
            body=body,
            segments=segment_count(body),
            language=language,
            template=family,
        )
    subject, text, html = templates
    variables["layout_txt"] = _layout("txt", language)
    variables["layout_html"] = _layout("html", language)
    return Composed(
        channel="email",
        to=ctx.recipient,
        body=_tidy_text(text.render(variables)),
        subject=_one_line(subject.render(variables)),
        html=html.render(variables),
        attachments=_calendar(
            notification, ctx, settings, variables["link"], variables["clinic_phone"]
        ),
        language=language,
        template=family,
    )
