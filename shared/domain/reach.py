"""How a patient can be reached right now: what their consents, contact details and SMS opt-out
allow, read once per planning. The rule every planner shares (shared/outbox_plan.py for
reminders and notices, shared/domain/check_ins.py for aftercare check-ins), so planning and
sending never disagree about a channel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from shared.store import consents as consent_store
from shared.store import patients
from shared.store.consents import Consent, ConsentKind
from shared.store.notifications.rows import Channel
from shared.store.patients import Patient


@dataclass(frozen=True)
class Reach:
    """What the patient allows right now, read once per planning."""

    patient: Patient
    sms: bool  # care SMS consent, a mobile, not opted out
    care_email: bool  # care email consent and an address

    @property
    def has_email(self) -> bool:
        return bool(self.patient.email)

    def reminder_channel(self) -> Channel | None:
        if self.sms:
            return "sms"
        if self.care_email:
            return "email"
        return None

    def transactional_channels(self) -> list[Channel]:
        channels: list[Channel] = ["email"] if self.has_email else []
        if self.sms:
            channels.append("sms")
        return channels


async def reach_of(conn: asyncpg.Connection, patient_id: int) -> Reach | None:
    """None for an unknown or erased patient (nobody to write to)."""
    patient = await patients.get(conn, patient_id)
    if patient is None or patient.erased_at is not None:
        return None
    return reach_from(patient, await consent_store.current(conn, patient_id))


def reach_from(patient: Patient, consents: Mapping[ConsentKind, Consent]) -> Reach | None:
    """`reach_of` for a patient and current consents already read (a page showing them)."""
    if patient.erased_at is not None:
        return None

    def granted(kind: ConsentKind) -> bool:
        consent = consents.get(kind)
        return consent is not None and consent.granted

    sms = granted("care_sms") and bool(patient.mobile) and patient.sms_opted_out_at is None
    return Reach(patient, sms, granted("care_email") and bool(patient.email))
