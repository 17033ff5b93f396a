"""Patients from the public form: who the booking is for, and what the form said.

Whoever fills in the form may be a stranger who knows a patient's mobile or email, so:
* a patient is matched by mobile, else email (patients.find_by_contact), and the sessions are
  booked for them;
* nothing the form sends changes a matched patient's record: not a blank field filled, not a
  consent. Every submitted value that differs from the record (names, date of birth, contact,
  allergies, medications, screening answers, consents) is kept in `form_difference` for staff
  to compare with the patient, and the sessions are flagged for review;
* only a booking that created the patient may show its private link (`patient_created`); a
  matched patient gets it through the booking confirmation, sent to the contacts on file;
* a new patient's consents are recorded as answered (append-only), with their source and
  wording version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from services.booking.domain import limits, patient_contact
from shared.domain.contact import ContactError, normalise_email, normalise_mobile
from shared.domain.errors import InvalidField
from shared.scheduling.loader import ClinicInfo
from shared.store import audit, patients
from shared.store import consents as consent_store
from shared.store.audit import Actor
from shared.store.patients import NewPatient

# Consents from the public form: source and the version of the wording shown beside the boxes.
CONSENT_SOURCE = "booking_form"
CONSENT_WORDING_VERSION = "booking-form-2026-03"
# Screening answers that mean "no"; any other text (or true) flags the booking for review.
NEGATIVE_ANSWERS = frozenset({"", "-", "0", "n", "n/a", "na", "nil", "no", "none", "nothing"})


@dataclass(frozen=True)
class PatientForm:
    first_name: str
    last_name: str
    mobile: str
    email: str | None
    date_of_birth: date
    allergies: str
    medications: str
    screening: dict[str, bool | str]


@dataclass(frozen=True)
class ConsentAnswers:
    care_sms: bool
    care_email: bool
    marketing_sms: bool
    marketing_email: bool


@dataclass(frozen=True)
class ResolvedPatient:
    id: int
    created: bool
    differs: dict[str, Any]  # submitted values that differ from the stored record


def is_positive(answer: bool | str) -> bool:
    """True, or a text that is not one of the ways of saying no."""
    if isinstance(answer, bool):
        return answer
    return answer.strip().casefold() not in NEGATIVE_ANSWERS


_is_positive = is_positive


def screening_reasons(form: PatientForm) -> list[str]:
    """Why the sessions need a clinician's review before check-in (empty: no reason)."""
    reasons = [
        f"screening: '{key}' answered positive"
        for key, answer in sorted(form.screening.items())
        if _is_positive(answer)
    ]
    if _is_positive(form.allergies):
        reasons.append("allergies reported on the booking form")
    if _is_positive(form.medications):
        reasons.append("medications reported on the booking form")
    return reasons


def _normalised_contact(form: PatientForm, clinic: ClinicInfo) -> tuple[str, str | None]:
    try:
        mobile = normalise_mobile(form.mobile, clinic.region, countries=clinic.texts_to)
    except ContactError as error:
        raise InvalidField("patient.mobile", str(error)) from None
    email = None
    if form.email:
        try:
            email = normalise_email(form.email)
        except ContactError as error:
            raise InvalidField("patient.email", str(error)) from None
    return mobile, email


def _same_text(stored: str | None, given: str | None) -> bool:
    return (stored or "").strip().casefold() == (given or "").strip().casefold()


def _differences(
    stored: patients.Patient, form: PatientForm, mobile: str, email: str | None
) -> dict[str, Any]:
    """The submitted values that differ from the stored record, blanks on the record included
    (the form may not fill them: whoever typed them may not be this patient)."""
    differs: dict[str, Any] = {}
    given: dict[str, Any] = {
        "first_name": form.first_name,
        "last_name": form.last_name,
        "mobile": mobile,
        "email": email,
        "date_of_birth": form.date_of_birth,
        "allergies": form.allergies,
        "medications": form.medications,
    }
    for name, value in given.items():
        current = getattr(stored, name)
        if value in (None, ""):
            continue
        if name in ("allergies", "medications") and not _is_positive(value):
            if not _is_positive(current or ""):
                continue  # "none" where the record is blank says the same
        if isinstance(value, str) and not _same_text(current, value):
            differs[name] = value
        elif not isinstance(value, str) and current != value:
            differs[name] = value.isoformat() if isinstance(value, date) else value
    screening = {
        key: answer
        for key, answer in form.screening.items()
        if stored.screening.get(key) != answer
        # "no" to a question the record has no answer to adds nothing to review
        and (key in stored.screening or _is_positive(answer))
    }
    if screening:
        differs["screening"] = screening
    return differs


async def resolve_patient(
    conn: asyncpg.Connection,
    clinic: ClinicInfo,
    form: PatientForm,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> ResolvedPatient:
    """Find the patient by mobile or email, or create one (see the module doc for the rules)."""
    if form.date_of_birth >= now.astimezone(clinic.zone).date():
        raise InvalidField("patient.date_of_birth", "must be in the past")
    mobile, email = _normalised_contact(form, clinic)
    await limits.limit_mobile(conn, mobile, now=now)
    await patients.lock_contact(conn, clinic.id, [mobile, *([email.casefold()] if email else [])])
    existing = await patients.find_by_contact(conn, clinic_id=clinic.id, mobile=mobile, email=email)
    if existing is None:
        patient_id = await patients.insert(
            conn,
            NewPatient(
                clinic_id=clinic.id,
                first_name=form.first_name,
                last_name=form.last_name,
                mobile=mobile,
                email=email,
                date_of_birth=form.date_of_birth,
                allergies=form.allergies,
                medications=form.medications,
                screening=dict(form.screening),
            ),
            now=now,
        )
        await audit.insert(
            conn,
            at=now,
            actor=actor,
            action="patient.create",
            entity="patient",
            entity_id=patient_id,
            patient_id=patient_id,
            details={"source": CONSENT_SOURCE},
            request_id=request_id,
        )
        return ResolvedPatient(patient_id, True, {})
    return ResolvedPatient(existing.id, False, _differences(existing, form, mobile, email))


async def consents_differing(
    conn: asyncpg.Connection, patient_id: int, consents: ConsentAnswers
) -> dict[str, bool]:
    """The consents the form answered otherwise than the patient's current ones."""
    current = await consent_store.current(conn, patient_id)
    answers = {kind: getattr(consents, kind) for kind in consent_store.CONSENT_KINDS}
    return {
        kind: granted
        for kind, granted in answers.items()
        if granted != (kind in current and current[kind].granted)
    }


async def record_consents(
    conn: asyncpg.Connection,
    patient_id: int,
    consents: ConsentAnswers,
    *,
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> None:
    """A new patient's consents, every one as answered on the form (none pre-ticked)."""
    answers = {kind: getattr(consents, kind) for kind in consent_store.CONSENT_KINDS}
    await patient_contact.record_consents(
        conn,
        patient_id,
        answers,
        source=CONSENT_SOURCE,
        wording_version=CONSENT_WORDING_VERSION,
        actor=actor,
        now=now,
        request_id=request_id,
    )
