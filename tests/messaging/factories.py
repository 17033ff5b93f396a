"""Realistic worst-case data for rendering without a database: the dataclasses the stores
return, filled in by hand."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.messaging.context import MessageContext
from shared.scheduling.availability import ClinicRules
from shared.scheduling.loader import ClinicInfo
from shared.store.appointments import Appointment
from shared.store.consents import Consent
from shared.store.patients import Patient

LONG_CLINIC = "St Mary-Anne's Advanced Hair Restoration & Scalp Clinic Ltd"  # 60 characters
LONG_FIRST_NAME = "Maximiliano-Alessandro"
# A real link's token is about 24 characters; 28 covers ids past 250 million and versions past
# 16,000 (shared/links.py).
LONG_LINK = "https://appointments.regimen-demo-clinic.co.uk/s/Kx9fQ2mZ7pLwR4tYb3Nc8VdHs0Qe"
# The aftercare page's link: the same token length, under /aftercare/.
LONG_AFTERCARE_LINK = (
    "https://appointments.regimen-demo-clinic.co.uk/aftercare/Kx9fQ2mZ7pLwR4tYb3Nc8VdHs0Qe"
)
TREATMENT_NAME = "Hair mesotherapy course"
TREATMENT_CODE = "hair-mesotherapy"
PLANNED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    """A notification row with the table's columns (what the store's Notification carries)."""

    id: int = 1
    clinic_id: int = 1
    patient_id: int | None = 7
    appointment_id: int | None = 100
    kind: str = "reminder_72h"
    channel: str = "sms"
    recipient: str | None = None
    template: str = ""
    template_version: int = 1
    language: str = "en"
    context: dict[str, Any] = field(default_factory=dict)
    appointment_version: int | None = 1
    due_at: datetime = PLANNED
    expires_at: datetime | None = None
    dedupe_key: str = "k"
    status: str = "sending"
    urgent: bool = False
    attempts: int = 1
    created_at: datetime = PLANNED
    updated_at: datetime = PLANNED

    def __post_init__(self) -> None:
        if not self.template:
            object.__setattr__(self, "template", self.kind)


def clinic(
    name: str = LONG_CLINIC,
    zone: str = "Europe/London",
    phone: str = "+442079460000",
    region: str = "GB",
    address: str = "Unit 14, 250 Great Portland Street, London W1W 5QZ",
) -> ClinicInfo:
    return ClinicInfo(
        id=1,
        name=name,
        time_zone=zone,
        phone=phone,
        address=address,
        region=region,
        brand_colour="#1f5f8b",
        rules=ClinicRules(
            time_zone=zone, min_notice=timedelta(hours=2), horizon=timedelta(days=180)
        ),
        cancellation_notice=timedelta(hours=24),
        hold_time=timedelta(minutes=10),
        no_show_grace=timedelta(minutes=30),
        slot_step=timedelta(minutes=15),
    )


def patient(
    first_name: str = LONG_FIRST_NAME,
    mobile: str | None = "+447911123456",
    email: str | None = "max@example.com",
    time_zone: str | None = None,
    language: str = "en",
) -> Patient:
    return Patient(
        id=7,
        clinic_id=1,
        first_name=first_name,
        last_name="Worthington-Smythe",
        mobile=mobile,
        email=email,
        date_of_birth=date(1985, 12, 10),
        allergies="lidocaine",
        medications="finasteride",
        screening={},
        notes="",
        language=language,
        time_zone=time_zone,
        sms_opted_out_at=None,
        erased_at=None,
        version=1,
        created_at=PLANNED,
        updated_at=PLANNED,
    )


def appointment(
    appointment_id: int, starts_at: datetime, *, minutes: int = 30, version: int = 1, **kw: Any
) -> Appointment:
    values: dict[str, Any] = {
        "id": appointment_id,
        "clinic_id": 1,
        "practitioner_id": 1,
        "treatment_id": 2,
        "patient_id": 7,
        "series_id": 3,
        "position": 1,
        "hold_id": None,
        "status": "booked",
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(minutes=minutes),
        "blocked_from": starts_at,
        "blocked_until": starts_at + timedelta(minutes=minutes + 10),
        "needs_review": False,
        "review_reasons": [],
        "source": "public",
        "cancelled_reason": None,
        "cancelled_by": None,
        "status_changed_at": PLANNED,
        "version": version,
        "created_at": PLANNED,
    }
    values.update(kw)
    return Appointment(**values)


def course(first: datetime, count: int = 8) -> list[Appointment]:
    """A mesotherapy course: four weekly sessions, then fortnightly, same local time."""
    zone = ZoneInfo("Europe/London")
    local = first.astimezone(zone)
    out = []
    day = local
    for position in range(1, count + 1):
        out.append(appointment(100 + position, day.astimezone(UTC), position=position))
        gap = 7 if position < 4 else 14
        day = (day.replace(tzinfo=None) + timedelta(days=gap)).replace(tzinfo=zone)
    return out


def consents(sms: bool = True, email: bool = True) -> dict[str, Consent]:
    return {
        "care_sms": Consent("care_sms", sms, "booking_form", "v1", PLANNED),
        "care_email": Consent("care_email", email, "booking_form", "v1", PLANNED),
    }


def context(
    row: Row,
    sessions: list[Appointment],
    *,
    the_clinic: ClinicInfo | None = None,
    the_patient: Patient | None = None,
    link: str = LONG_LINK,
    composed_at: datetime | None = None,
) -> MessageContext:
    the_clinic = the_clinic or clinic()
    the_patient = the_patient or patient()
    main, others = (sessions[0], sessions[1:]) if sessions else (None, [])
    zone = ZoneInfo(the_patient.time_zone) if the_patient.time_zone else the_clinic.zone
    if row.kind == "staff_alert":
        recipient = row.recipient
    else:
        recipient = the_patient.mobile if row.channel == "sms" else the_patient.email
    return MessageContext(
        clinic=the_clinic,
        patient=the_patient,
        consents=consents(),  # type: ignore[arg-type]
        appointment=main,
        other_appointments=list(others),
        self_service_url=link,
        recipient=recipient,
        patient_zone=zone,
        aftercare_url=LONG_AFTERCARE_LINK if row.kind == "aftercare" else "",
        composed_at=composed_at,
    )


def with_kind(row: Row, kind: str, **changes: Any) -> Row:
    return replace(row, kind=kind, template=kind, **changes)
