"""The whole-clinic day view in the admin API: every practitioner's appointments for one local
day, for the front desk.

Roles: admin and front_desk.

The day is the clinic's local date (its IANA zone, so a day of 23 or 25 hours at a clock change
is the whole day). Every active practitioner of the clinic is listed, with or without
appointments, and any other practitioner who has one that day. Each appointment shows the
patient's name, the treatment, the status, its confirmation state, whether a clinician review is
pending (not why: that is clinical) and how many open call-list tasks and inbox items the
patient has. Holds (a form being filled in) are not shown; cancelled and no-show appointments
are (the desk undoes a wrong no-show from here).

Confirmation state: `confirmed` once the appointment was confirmed (by the patient's reply or
by the desk on their behalf), whatever happened after; `asked` when the confirmation request
(the 72 h reminder) has gone and no confirmation came; `not_asked` otherwise.

Audited as `appointment.read` (via `clinic_day`, one row per patient).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_appointments import _local_day_bounds, _times, audit_reads
from services.booking.api.common import DESK
from services.booking.api.fields import Day, Query
from services.booking.api.framework import Ctx, not_found
from shared.domain.appointment_states import Status
from shared.scheduling.loader import load_clinic
from shared.store import appointments, call_tasks, inbox, notifications, practitioners
from shared.store.appointments import DayEntry

TAG = "appointments"

Confirmation = Literal["confirmed", "asked", "not_asked"]


class DayAppointment(BaseModel):
    id: int
    status: Status
    starts_at: datetime = Field(description="UTC")
    ends_at: datetime
    starts_local: datetime = Field(description="in the clinic's zone, with its offset")
    ends_local: datetime
    local_time: str = Field(pattern=r"^\d{2}:\d{2}$")
    patient_id: int | None
    patient_name: str | None
    treatment_id: int
    treatment_name: str
    series_id: int | None
    position: int | None
    confirmation: Confirmation
    needs_review: bool = Field(description="a clinician review is pending (not why)")
    open_call_tasks: int = Field(description="the patient's open call-list tasks")
    open_inbox_items: int = Field(description="the patient's open inbox items")
    version: int


class PractitionerDay(BaseModel):
    id: int
    name: str
    appointments: list[DayAppointment]


class ClinicDay(BaseModel):
    clinic_id: int
    time_zone: str
    local_date: date
    starts_at: datetime = Field(description="the local day's first instant (UTC)")
    ends_at: datetime = Field(description="the next local day's first instant (UTC)")
    practitioners: list[PractitionerDay]


class ClinicDayQuery(Query):
    day: Day = Field(alias="date", description="the clinic's local date, YYYY-MM-DD")


def _confirmation(entry: DayEntry, confirmed: set[int], asked: set[int]) -> Confirmation:
    if entry.appointment.id in confirmed:
        return "confirmed"
    return "asked" if entry.appointment.id in asked else "not_asked"


def _day_appointment(
    entry: DayEntry,
    zone: ZoneInfo,
    confirmation: Confirmation,
    calls: dict[int, int],
    items: dict[int, int],
) -> DayAppointment:
    a = entry.appointment
    patient_id = a.patient_id
    return DayAppointment(
        id=a.id,
        status=a.status,
        **_times(a, zone),
        patient_id=patient_id,
        patient_name=entry.patient_name,
        treatment_id=a.treatment_id,
        treatment_name=entry.treatment_name,
        series_id=a.series_id,
        position=a.position,
        confirmation=confirmation,
        needs_review=a.needs_review,
        open_call_tasks=calls.get(patient_id, 0) if patient_id is not None else 0,
        open_inbox_items=items.get(patient_id, 0) if patient_id is not None else 0,
        version=a.version,
    )


@API.route(
    "GET",
    "/api/v1/clinics/{clinic_id}/day",
    summary="Every practitioner's appointments for one local day",
    tag=TAG,
    roles=DESK,
    query=ClinicDayQuery,
    response=ClinicDay,
)
async def get_clinic_day(ctx: Ctx) -> ClinicDay:
    """The front desk's whole-clinic view of the local date `date`, practitioner by
    practitioner, with each patient's open call tasks and inbox items. Audited as
    `appointment.read`."""
    query: ClinicDayQuery = ctx.query
    clinic_id = ctx.path["clinic_id"]
    clinic = await load_clinic(ctx.pool, clinic_id)
    if clinic is None:
        raise not_found("clinic", clinic_id)
    zone = clinic.zone
    start, end = _local_day_bounds(query.day, query.day, zone)
    async with ctx.pool.acquire() as conn:
        entries = await appointments.clinic_day(conn, clinic_id, start, end)
        ids = [e.appointment.id for e in entries]
        histories = await appointments.history_many(conn, ids)
        asked = await notifications.views.confirmation_asked(conn, ids)
        patient_ids = sorted({e.appointment.patient_id for e in entries} - {None})
        calls = await call_tasks.open_counts(conn, patient_ids)
        items = await inbox.open_counts(conn, patient_ids)
        staff = await practitioners.list_page(
            conn, clinic_id=clinic_id, active=True, after_id=None, limit=10_000
        )
    confirmed = {
        i for i, events in histories.items() if any(e.to_status == "confirmed" for e in events)
    }
    days: dict[int, PractitionerDay] = {
        p.id: PractitionerDay(id=p.id, name=p.name, appointments=[]) for p in staff
    }
    for entry in entries:
        a = entry.appointment
        day = days.setdefault(
            a.practitioner_id,
            PractitionerDay(id=a.practitioner_id, name=entry.practitioner_name, appointments=[]),
        )
        day.appointments.append(
            _day_appointment(entry, zone, _confirmation(entry, confirmed, asked), calls, items)
        )
    await audit_reads(ctx, (e.appointment for e in entries), via="clinic_day")
    return ClinicDay(
        clinic_id=clinic_id,
        time_zone=zone.key,
        local_date=query.day,
        starts_at=start,
        ends_at=end,
        practitioners=sorted(days.values(), key=lambda d: d.id),
    )
