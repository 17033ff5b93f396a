"""Everything a message is rendered from, read at send time so that the current data (a moved
appointment, a new mobile number, an erased patient) is what goes out, not what was true when the
row was planned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from shared.config import Settings
from shared.links import (
    AFTERCARE_LIFETIME,
    aftercare_link_token,
    aftercare_link_url,
    patient_link_token,
    patient_link_url,
)
from shared.scheduling.loader import ClinicInfo, load_clinics
from shared.store import appointments, patients
from shared.store import consents as consent_store
from shared.store.appointments import Appointment
from shared.store.consents import Consent, ConsentKind
from shared.store.patients import Patient

Executor = asyncpg.Connection | asyncpg.Pool

# Kinds addressed to staff: their recipient is the row's own, never a patient's contact.
STAFF_KINDS = frozenset({"staff_alert"})
# Kinds addressed to a contact the patient no longer uses (told that it was replaced): the row's
# recipient, never the current contact, and never the private link (the old number may be
# someone else's by now).
FORMER_CONTACT_KINDS = frozenset({"contact_changed"})
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
    # The patient's own signed link, minted for this message (empty for staff messages).
    self_service_url: str = ""
    # E.164 number or email address for the row's channel; None when there is none to use.
    recipient: str | None = None
    patient_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    # id → version of every appointment the row names (its own and those listed), as read:
    # what the message was composed from, checked again under lock before it is sent.
    appointment_versions: dict[int, int] = field(default_factory=dict)
    # An aftercare message's link to the session's aftercare page (empty for other kinds).
    aftercare_url: str = ""
    # When the message is composed (None when read without a clock): "today's session".
    composed_at: datetime | None = None

    @property
    def sessions(self) -> list[Appointment]:
        """The main appointment and the others, in start order."""
        main = [self.appointment] if self.appointment is not None else []
        return sorted(main + self.other_appointments, key=lambda a: (a.starts_at, a.id))


async def load_context(
    conn: Executor,
    notification: NotificationRow,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> MessageContext:
    """Read the patient, consents, clinic and appointments a notification is about.

    With `settings` and `now`, a patient's message gets the patient's own signed link, minted
    now with their current link version (so a link revoked since the row was planned is never
    sent); without them the link is left empty.
    """
    loaded = (await load_contexts(conn, [notification], settings=settings, now=now))[
        notification.id
    ]
    if isinstance(loaded, ContextError):
        raise loaded
    return loaded


async def load_contexts(
    conn: Executor,
    rows: Sequence[NotificationRow],
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> dict[int, MessageContext | ContextError]:
    """load_context for many rows at once: one query per table, whatever the number of rows
    (a dispatcher composes a whole claimed batch from these)."""
    clinics = await load_clinics(conn, [n.clinic_id for n in rows])
    patient_ids = [n.patient_id for n in rows if n.patient_id is not None]
    found_patients = await patients.get_many(conn, patient_ids) if patient_ids else {}
    consents = await consent_store.current_many(conn, patient_ids) if patient_ids else {}
    wanted = {i for n in rows for i in _named_ids(n)}
    found = await appointments.get_many(conn, sorted(wanted)) if wanted else {}
    loaded: dict[int, MessageContext | ContextError] = {}
    for n in rows:
        clinic = clinics.get(n.clinic_id)
        if clinic is None:
            loaded[n.id] = ContextError(f"notification {n.id}: clinic {n.clinic_id}")
            continue
        patient = None if n.patient_id is None else found_patients.get(n.patient_id)
        appointment = None if n.appointment_id is None else found.get(n.appointment_id)
        loaded[n.id] = MessageContext(
            clinic=clinic,
            patient=patient,
            consents={} if n.patient_id is None else consents.get(n.patient_id, {}),
            appointment=appointment,
            other_appointments=await _other_appointments(conn, n, appointment, found),
            self_service_url=self_service_url(n, patient, settings, now),
            recipient=resolve_recipient(n, patient),
            patient_zone=patient_zone(patient, clinic),
            appointment_versions={i: found[i].version for i in _named_ids(n) if i in found},
            aftercare_url=aftercare_url(n, patient, settings),
            composed_at=now,
        )
    return loaded


def resolve_recipient(notification: NotificationRow, patient: Patient | None) -> str | None:
    """Where the message goes: staff kinds use the row's recipient; a patient's message uses
    the patient's current contact for the channel (an erased or changed one applies at once),
    except a notice to a former contact, which uses the row's; a row without a patient (a reply
    to an unknown number) uses its own recipient."""
    if notification.kind in STAFF_KINDS or patient is None:
        return notification.recipient or None
    if patient.erased_at is not None:
        return None
    if notification.kind in FORMER_CONTACT_KINDS:
        return notification.recipient or None
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


def self_service_url(
    notification: NotificationRow,
    patient: Patient | None,
    settings: Settings | None,
    now: datetime | None,
) -> str:
    """The patient's private link for this message; empty for staff, for a former contact, for
    a message without a patient, for an erased patient (nothing is sent to them) and without a
    key to sign with."""
    if (
        settings is None
        or now is None
        or not settings.secret_key
        or notification.kind in STAFF_KINDS
        or notification.kind in FORMER_CONTACT_KINDS
        or patient is None
        or patient.erased_at is not None
    ):
        return ""
    token = patient_link_token(
        settings.secret_key,
        patient.id,
        patient.link_version,
        now=now,
        lifetime=settings.link_lifetime,
    )
    return patient_link_url(settings.public_url, token)


AFTERCARE_KINDS = frozenset({"aftercare"})


def aftercare_url(
    notification: NotificationRow, patient: Patient | None, settings: Settings | None
) -> str:
    """The aftercare page of the row's appointment, valid AFTERCARE_LIFETIME from the
    completion (`completed_at` in the row's context), so each message about one session carries
    the same link; it is tied to the patient's current link version (revoked with their other
    links). Empty for other kinds, an erased patient, or without a key."""
    completed = (notification.context or {}).get("completed_at")
    if (
        notification.kind not in AFTERCARE_KINDS
        or settings is None
        or not settings.secret_key
        or patient is None
        or patient.erased_at is not None
        or notification.appointment_id is None
        or not isinstance(completed, str)
    ):
        return ""
    try:
        completed_at = datetime.fromisoformat(completed)
    except ValueError:
        return ""
    token = aftercare_link_token(
        settings.secret_key,
        notification.appointment_id,
        patient.link_version,
        expires_at=completed_at + AFTERCARE_LIFETIME,
    )
    return aftercare_link_url(settings.public_url, token)


def _named_ids(notification: NotificationRow) -> list[int]:
    own = [] if notification.appointment_id is None else [notification.appointment_id]
    return own + _listed_ids(notification)


def _listed_ids(notification: NotificationRow) -> list[int]:
    context = notification.context or {}
    ids: list[int] = []
    for key in ("appointment_ids", "merged_appointment_ids"):
        values = context.get(key) or []
        if isinstance(values, list):
            ids.extend(int(v) for v in values if isinstance(v, int) and not isinstance(v, bool))
    return ids


async def _other_appointments(
    conn: Executor,
    notification: NotificationRow,
    appointment: Appointment | None,
    loaded: Mapping[int, Appointment],
) -> list[Appointment]:
    """The further sessions a message covers: those listed in the row's context
    (`appointment_ids` for a booking, `merged_appointment_ids` for merged reminders), or for a
    booking confirmation written without a list, every session its hold created. `loaded`
    holds the listed ones already read."""
    if notification.patient_id is None:
        return []
    main_id = appointment.id if appointment is not None else None
    found: dict[int, Appointment] = {}
    for appointment_id in _listed_ids(notification):
        other = loaded.get(appointment_id)
        if appointment_id != main_id and other is not None:
            found[other.id] = other
    if (
        "appointment_ids" not in (notification.context or {})
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
