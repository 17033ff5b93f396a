"""Calendar attachments (RFC 5545/5546) for appointment emails.

Each appointment keeps one UID for life, so a calendar that imported the booking updates the
event in place when it is moved (a higher SEQUENCE) and removes it when it is cancelled
(METHOD:CANCEL). The summary names the clinic, never the treatment: calendars are shared and
shown on lock screens.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Literal
from urllib.parse import urlsplit

from icalendar import Calendar, Event, vCalAddress, vText

from shared.providers.email import Attachment
from shared.scheduling.loader import ClinicInfo
from shared.store.appointments import Appointment

Method = Literal["REQUEST", "CANCEL"]
PRODID = "-//Regimen//Appointments//EN"


def uid_domain(public_url: str) -> str:
    """The right-hand side of UIDs: this installation's host, so two Regimen sites never
    produce the same UID for their appointment 42 in one patient's calendar."""
    return urlsplit(public_url).hostname or "regimen"


def appointment_uid(appointment_id: int, domain: str) -> str:
    return f"appointment-{appointment_id}@{domain}"


def _address(value: str, name: str | None = None) -> vCalAddress:
    address = vCalAddress(f"mailto:{value}")
    if name:
        address.params["cn"] = vText(name)
    return address


def _event(
    appointment: Appointment,
    *,
    clinic: ClinicInfo,
    domain: str,
    method: Method,
    stamp: datetime,
    description: str,
    organizer: str | None,
    attendee: str | None,
) -> Event:
    event = Event()
    event.add("uid", appointment_uid(appointment.id, domain))
    event.add("dtstamp", stamp.astimezone(UTC))
    event.add("dtstart", appointment.starts_at.astimezone(UTC))
    event.add("dtend", appointment.ends_at.astimezone(UTC))
    # Every change bumps the appointment's version, which is exactly what SEQUENCE must do.
    event.add("sequence", appointment.version)
    event.add("summary", f"Appointment at {clinic.name}")
    event.add("location", clinic.address or clinic.name)
    if description:
        event.add("description", description)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("transp", "OPAQUE")
    if organizer:
        event.add("organizer", _address(organizer, clinic.name))
    if attendee:
        who = _address(attendee)
        who.params["role"] = vText("REQ-PARTICIPANT")
        who.params["partstat"] = vText("ACCEPTED")
        who.params["rsvp"] = vText("FALSE")
        event.add("attendee", who)
    return event


def build_ics(
    sessions: Sequence[Appointment],
    *,
    clinic: ClinicInfo,
    domain: str,
    method: Method,
    stamp: datetime,
    description: str = "",
    organizer: str | None = None,
    attendee: str | None = None,
) -> bytes:
    """One VCALENDAR with a VEVENT per appointment, times in UTC."""
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    for appointment in sessions:
        calendar.add_component(
            _event(
                appointment,
                clinic=clinic,
                domain=domain,
                method=method,
                stamp=stamp,
                description=description,
                organizer=organizer,
                attendee=attendee,
            )
        )
    return bytes(calendar.to_ical())


def ics_attachment(
    sessions: Sequence[Appointment],
    *,
    clinic: ClinicInfo,
    public_url: str,
    email_from: str | None,
    attendee: str | None,
    method: Method,
    stamp: datetime,
    description: str = "",
) -> Attachment:
    organizer = parseaddr(email_from)[1] if email_from else ""
    content = build_ics(
        sessions,
        clinic=clinic,
        domain=uid_domain(public_url),
        method=method,
        stamp=stamp,
        description=description,
        organizer=organizer or None,
        attendee=attendee,
    )
    return Attachment(
        filename="appointments.ics" if len(sessions) > 1 else "appointment.ics",
        content=content,
        maintype="text",
        subtype="calendar",
        params={"method": method},
    )
