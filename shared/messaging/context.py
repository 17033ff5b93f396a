"""Everything a message is rendered from, read at send time so that the current data (a moved
appointment, a new mobile number, an erased patient) is what goes out, not what was true when the
row was planned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from shared.config import Settings
from shared.scheduling.loader import ClinicInfo, load_clinic
from shared.store import appointments, patients
from shared.store.appointments import Appointment
from shared.store.patients import Consent, ConsentKind, Patient

Executor = asyncpg.Connection | asyncpg.Pool

# Kinds addressed to staff: their recipient is the row's own, never a patient's contact.
STAFF_KINDS = frozenset({"staff_alert"})
# Sessions a message may still talk about as upcoming.
_UPCOMING = frozenset({"held", "booked", "confirmed", "checked_in"})


class NotificationRow(Protocol):
    """The columns of `notification` this package reads (the store's Notification fits)."""

    id: int
    clinic_id: int
    patient_id: int | None
    appointment_id: int | None
    kind: str
    channel: str
    recipient: str | None
    template: str
    language: str
    context: Mapping[str, Any]
    created_at: datetime


class ContextError(LookupError):
    """The row points at data that does not exist (a clinic deleted under it)."""


@dataclass(frozen=True)
class MessageContext:
    clinic: ClinicInfo
    patient: Patient | None
    consents: dict[ConsentKind, Consent]
    appointment: Appointment | None
    # Further sessions the message covers: the rest of a booking, or reminders merged into this
    # one. Only the same patient's, in start order, without the main appointment.
    other_appointments: list[Appointment] = field(default_factory=list)
    self_service_url: str = ""
    # E.164 number or email address for the row's channel; None when there is none to use.
    recipient: str | None = None
    patient_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    @property
    def sessions(self) -> list[Appointment]:
        """The main appointment and the others, in start order."""
        main = [self.appointment] if self.appointment is not None else []
        return sorted(main + self.other_appointments, key=lambda a: (a.starts_at, a.id))


async def load_context(
    conn: Executor, notification: NotificationRow, *, settings: Settings | None = None
) -> MessageContext:
    """Read the patient, consents, clinic and appointments a notification is about.

    `settings` gives the self-service link; without it the link is left empty and `render`
    falls back to settings.public_url.
    """
    clinic = await load_clinic(conn, notification.clinic_id)
    if clinic is None:
        raise ContextError(f"notification {notification.id}: clinic {notification.clinic_id}")
    patient = None
    consents: dict[ConsentKind, Consent] = {}
    if notification.patient_id is not None:
        patient = await patients.get(conn, notification.patient_id)
        consents = await patients.current_consents(conn, notification.patient_id)
    appointment = None
    if notification.appointment_id is not None:
        appointment = await appointments.get(conn, notification.appointment_id)
    others = await _other_appointments(conn, notification, appointment)
    return MessageContext(
        clinic=clinic,
        patient=patient,
        consents=consents,
        appointment=appointment,
        other_appointments=others,
        self_service_url=_self_service_url(settings),
        recipient=resolve_recipient(notification, patient),
        patient_zone=patient_zone(patient, clinic),
    )


def resolve_recipient(notification: NotificationRow, patient: Patient | None) -> str | None:
    """Where the message goes: staff kinds use the row's recipient; a patient's message uses
    the patient's current contact for the channel (an erased or changed one applies at once);
    a row without a patient (a reply to an unknown number) uses its own recipient."""
    if notification.kind in STAFF_KINDS or patient is None:
        return notification.recipient or None
    if patient.erased_at is not None:
        return None
    address = patient.mobile if notification.channel == "sms" else patient.email
    return address or None


def patient_zone(patient: Patient | None, clinic: ClinicInfo) -> ZoneInfo:
    if patient is not None and patient.time_zone:
        try:
            return ZoneInfo(patient.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            # A bad stored zone must not stop the message; the clinic's is the best guess.
            pass
    return clinic.zone


def _self_service_url(settings: Settings | None) -> str:
    # Signed per-patient links come with the self-service pages; until then, the site itself.
    return "" if settings is None else settings.public_url + "/"


def _listed_ids(notification: NotificationRow) -> list[int]:
    context = notification.context or {}
    ids: list[int] = []
    for key in ("appointment_ids", "merged_appointment_ids"):
        values = context.get(key) or []
        if isinstance(values, list):
            ids.extend(int(v) for v in values if isinstance(v, int) and not isinstance(v, bool))
    return ids


async def _other_appointments(
    conn: Executor, notification: NotificationRow, appointment: Appointment | None
) -> list[Appointment]:
    """The further sessions a message covers: those listed in the row's context
    (`appointment_ids` for a booking, `merged_appointment_ids` for merged reminders), or for a
    booking confirmation without a list, every session its hold created."""
    if notification.patient_id is None:
        return []
    main_id = appointment.id if appointment is not None else None
    found: dict[int, Appointment] = {}
    for appointment_id in _listed_ids(notification):
        if appointment_id != main_id and appointment_id not in found:
            other = await appointments.get(conn, appointment_id)
            if other is not None:
                found[other.id] = other
    if (
        not found
        and notification.kind == "booking_confirmation"
        and appointment is not None
        and appointment.hold_id is not None
    ):
        for other in await appointments.for_hold(conn, appointment.hold_id):
            if other.id != main_id:
                found[other.id] = other
    wanted = {"cancelled"} if notification.kind == "cancellation_notice" else _UPCOMING
    return sorted(
        (
            a
            for a in found.values()
            # Never let another patient's times into this patient's message.
            if a.patient_id == notification.patient_id and a.status in wanted
        ),
        key=lambda a: (a.starts_at, a.id),
    )
