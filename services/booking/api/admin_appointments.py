"""Appointments in the admin API, read: lists, a practitioner's day or week, one appointment
with its history; and how an appointment is shown to each role, which the actions
(`admin_appointment_actions`), courses (`admin_series`) and the export answer with too.

Every staff role reads (admin, front_desk, clinician); who may change what is in
`admin_appointment_actions`.

Reads by role: the front desk gets each appointment without `review_reasons` (they quote
screening answers and what a booking form said) or its session record (clinical), and its
history without clinical details (review notes, review reasons, form differences, gap
overrides); `needs_review` tells it a review is pending. Clinicians and admins get everything. A
check-in refused for a pending review tells the desk only that.

Every read that returns a patient's appointment is written to the audit log
(`appointment.read`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.booking.api import API
from services.booking.api.common import ALL_STAFF, Read, or_not_found, record_reads
from services.booking.api.fields import Day, Id, Query
from services.booking.api.framework import Ctx, invalid
from services.booking.api.pagination import Page, PageQuery, next_cursor
from services.booking.api.session_record_views import SessionRecordOut, record_out
from shared.domain.appointment_changes import Change
from shared.domain.appointment_states import Status
from shared.scheduling.loader import load_clinic
from shared.store import appointments, practitioners, session_records
from shared.store.appointments import Appointment, ScheduleEntry
from shared.store.staff_tokens import Role

TAG = "appointments"


# -- output models ---------------------------------------------------------------------------------


class HistoryEvent(BaseModel):
    at: datetime
    from_status: Status | None
    to_status: Status
    actor: str
    reason: str
    details: dict[str, Any]


# History details the front desk may see: how and when a session moved or was cancelled. Anything
# else (review reasons, what a booking form said, a clinician's gap override) stays out, and so do
# keys added later until someone decides they are not clinical.
DESK_EVENT_DETAILS = frozenset(
    {"scope", "notice_override", "moved", "review", "on_behalf_of", "shift_later", "shift"}
)
WITHHELD_NOTE = "clinician review note (shown to clinicians and admins)"


class DeskHistoryEvent(HistoryEvent):
    """A history event as the front desk sees it: details limited to DESK_EVENT_DETAILS, and the
    note of a review flag being raised or cleared (clinical) withheld."""

    @model_validator(mode="before")
    @classmethod
    def _withhold_clinical(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        details = data.get("details") or {}
        shown = {key: value for key, value in details.items() if key in DESK_EVENT_DETAILS}
        reason = data.get("reason", "")
        # A review note, or a clinician's reason to book without a consultation: clinical.
        if ("review" in details or "consultation" in details) and reason:
            reason = WITHHELD_NOTE
        return {**data, "details": shown, "reason": reason}


class AppointmentDeskOut(BaseModel):
    """An appointment as the front desk sees it: everything but `review_reasons`, which quote
    screening answers and booking-form differences; `needs_review` says a review is pending."""

    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})

    id: int
    clinic_id: int
    practitioner_id: int
    treatment_id: int
    patient_id: int | None
    series_id: int | None
    position: int | None
    status: Status
    starts_at: datetime = Field(description="UTC")
    ends_at: datetime = Field(description="UTC")
    time_zone: str = Field(description="the clinic's IANA zone")
    starts_local: datetime = Field(description="the start in the clinic's zone, with its offset")
    ends_local: datetime
    local_date: date
    local_time: str = Field(pattern=r"^\d{2}:\d{2}$", description="HH:MM in the clinic's zone")
    needs_review: bool
    source: str
    cancelled_reason: str | None
    cancelled_by: str | None
    status_changed_at: datetime
    version: int
    created_at: datetime


class AppointmentOut(AppointmentDeskOut):
    """An appointment as clinicians and admins see it."""

    review_reasons: list[str] = Field(description="why a clinician must review it (clinical)")


class AppointmentDeskDetail(AppointmentDeskOut):
    history: list[DeskHistoryEvent]


class AppointmentDetail(AppointmentOut):
    history: list[HistoryEvent]
    session_record: SessionRecordOut | None = Field(
        description="what was done at the session (completed sessions; clinical)"
    )


class ScheduleItem(BaseModel):
    id: int
    status: Status
    starts_at: datetime
    ends_at: datetime
    starts_local: datetime
    ends_local: datetime
    local_time: str = Field(pattern=r"^\d{2}:\d{2}$")
    patient_id: int | None
    patient_name: str | None
    treatment_id: int
    treatment_name: str
    series_id: int | None
    position: int | None
    needs_review: bool
    version: int


class ScheduleDay(BaseModel):
    local_date: date
    appointments: list[ScheduleItem]


class Schedule(BaseModel):
    practitioner_id: int
    time_zone: str
    view: Literal["day", "week"]
    first_day: date
    last_day: date
    days: list[ScheduleDay]


# What the front desk gets instead of each full answer.
DESK_DETAIL: dict[Role, type[BaseModel]] = {"front_desk": AppointmentDeskDetail}


# -- input models ----------------------------------------------------------------------------------


class AppointmentQuery(PageQuery):
    practitioner_id: Id | None = None
    patient_id: Id | None = None
    series_id: Id | None = None
    status: list[Status] | None = Field(None, max_length=7, description="repeatable")
    from_: Day | None = Field(None, alias="from", description="first local date")
    to: Day | None = Field(None, description="last local date (inclusive)")


class ScheduleQuery(Query):
    day: Day = Field(alias="date", description="a local date (the week containing it)")
    view: Literal["day", "week"] = "day"
    include_cancelled: bool = Field(False, description="also cancelled and no-show appointments")


# -- conversions -----------------------------------------------------------------------------------


class Zones:
    """Clinic zones by clinic id, loaded once per request."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.known: dict[int, ZoneInfo] = {}

    async def of(self, clinic_id: int) -> ZoneInfo:
        if clinic_id not in self.known:
            clinic = await load_clinic(self.ctx.pool, clinic_id)
            self.known[clinic_id] = clinic.zone if clinic is not None else ZoneInfo("UTC")
        return self.known[clinic_id]


def _times(appointment: Appointment, zone: ZoneInfo) -> dict[str, Any]:
    """Start and end in UTC and in the clinic's zone, the same in every view of an appointment."""
    starts_local = appointment.starts_at.astimezone(zone)
    return {
        "starts_at": appointment.starts_at.astimezone(UTC),
        "ends_at": appointment.ends_at.astimezone(UTC),
        "starts_local": starts_local,
        "ends_local": appointment.ends_at.astimezone(zone),
        "local_time": f"{starts_local:%H:%M}",
    }


def appointment_out(appointment: Appointment, zone: ZoneInfo) -> AppointmentOut:
    times = _times(appointment, zone)
    return AppointmentOut(
        id=appointment.id,
        clinic_id=appointment.clinic_id,
        practitioner_id=appointment.practitioner_id,
        treatment_id=appointment.treatment_id,
        patient_id=appointment.patient_id,
        series_id=appointment.series_id,
        position=appointment.position,
        status=appointment.status,
        time_zone=zone.key,
        local_date=times["starts_local"].date(),
        **times,
        needs_review=appointment.needs_review,
        review_reasons=appointment.review_reasons,
        source=appointment.source,
        cancelled_reason=appointment.cancelled_reason,
        cancelled_by=appointment.cancelled_by,
        status_changed_at=appointment.status_changed_at,
        version=appointment.version,
        created_at=appointment.created_at,
    )


async def appointment_detail(ctx: Ctx, appointment: Appointment) -> AppointmentDetail:
    zone = await Zones(ctx).of(appointment.clinic_id)
    events = await appointments.history(ctx.pool, appointment.id)
    saved = await session_records.for_appointment(ctx.pool, appointment.id)
    return AppointmentDetail(
        **appointment_out(appointment, zone).model_dump(),
        history=[HistoryEvent(**asdict(event)) for event in events],
        session_record=record_out(saved) if saved is not None else None,
    )


# -- who acts ------------------------------------------------------------------------------------


def change_of(ctx: Ctx) -> Change:
    """Who changes what, when, on which request: the domain's record of the caller."""
    return Change(ctx.actor, ctx.now, ctx.request_id)


# -- audit of reads --------------------------------------------------------------------------------


async def audit_reads(
    ctx: Ctx, shown: Iterable[Appointment], *, via: str, action: str = "appointment.read"
) -> None:
    """One audit row per patient whose appointments this answer shows."""
    by_patient: dict[int, list[int]] = {}
    for appointment in shown:
        if appointment.patient_id is not None:
            by_patient.setdefault(appointment.patient_id, []).append(appointment.id)
    reads = [
        Read(ids[0] if len(ids) == 1 else None, patient_id, {"via": via, "appointment_ids": ids})
        for patient_id, ids in by_patient.items()
    ]
    await record_reads(ctx, action=action, entity="appointment", reads=reads)


# -- reads -----------------------------------------------------------------------------------------


@API.route(
    "GET",
    "/api/v1/appointments",
    summary="Appointments, filtered and paginated",
    tag=TAG,
    roles=ALL_STAFF,
    query=AppointmentQuery,
    response=Page[AppointmentOut],
    views={"front_desk": Page[AppointmentDeskOut]},
)
async def list_appointments(ctx: Ctx) -> Page[AppointmentOut]:
    """Filter by practitioner, patient, series, status (repeat the parameter for several) and
    local dates `from`..`to` (inclusive, in each clinic's zone); ordered by start. Pass
    `next_cursor` back as `cursor` for the next page."""
    query: AppointmentQuery = ctx.query
    if query.from_ and query.to and query.to < query.from_:
        raise invalid("to", "must not be before from", where="query")
    after = query.after(datetime, int)
    found = await appointments.list_page(
        ctx.pool,
        practitioner_id=query.practitioner_id,
        patient_id=query.patient_id,
        series_id=query.series_id,
        statuses=list(query.status) if query.status else None,
        first_day=query.from_,
        last_day=query.to,
        after=(after[0], after[1]) if after else None,
        limit=query.fetch,
    )
    shown = found[: query.limit]
    zones = Zones(ctx)
    items = [appointment_out(a, await zones.of(a.clinic_id)) for a in shown]
    await audit_reads(ctx, shown, via="list")
    return Page[AppointmentOut](items=items, next_cursor=next_cursor(found, query.limit, _by_start))


def _by_start(appointment: Appointment) -> tuple[datetime, int]:
    """The keyset of the appointment list (the store orders by start, then id)."""
    return appointment.starts_at, appointment.id


def _week_of(day: date) -> tuple[date, date]:
    monday = day - timedelta(days=day.isoweekday() - 1)
    return monday, monday + timedelta(days=6)


def _local_day_bounds(first_day: date, last_day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start of first_day, start of the day after last_day) in `zone`, as UTC instants."""
    start = datetime.combine(first_day, time(0), tzinfo=zone)
    end = datetime.combine(last_day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _schedule_item(entry: ScheduleEntry, zone: ZoneInfo) -> ScheduleItem:
    a = entry.appointment
    return ScheduleItem(
        id=a.id,
        status=a.status,
        **_times(a, zone),
        patient_id=a.patient_id,
        patient_name=entry.patient_name,
        treatment_id=a.treatment_id,
        treatment_name=entry.treatment_name,
        series_id=a.series_id,
        position=a.position,
        needs_review=a.needs_review,
        version=a.version,
    )


@API.route(
    "GET",
    "/api/v1/practitioners/{practitioner_id}/schedule",
    summary="A practitioner's day or week, in the clinic's local time",
    tag=TAG,
    roles=ALL_STAFF,
    query=ScheduleQuery,
    response=Schedule,
)
async def get_practitioner_schedule(ctx: Ctx) -> Schedule:
    """The front desk's view: `view=day` for the local date `date`, `view=week` for the Monday
    to Sunday week containing it. Every day of the range is listed, empty or not; holds are not
    shown, cancelled and no-show appointments only with `include_cancelled=true`."""
    query: ScheduleQuery = ctx.query
    practitioner_id = ctx.path["practitioner_id"]
    where = await practitioners.zone(ctx.pool, practitioner_id)
    zone = ZoneInfo(or_not_found(where, "practitioner", practitioner_id)[1])
    first_day, last_day = (query.day, query.day) if query.view == "day" else _week_of(query.day)
    start, end = _local_day_bounds(first_day, last_day, zone)
    entries = await appointments.schedule_for(
        ctx.pool, practitioner_id, start, end, include_cancelled=query.include_cancelled
    )
    await audit_reads(ctx, (e.appointment for e in entries), via="schedule")
    days = [
        ScheduleDay(local_date=first_day + timedelta(days=offset), appointments=[])
        for offset in range((last_day - first_day).days + 1)
    ]
    for entry in entries:
        local_day = entry.appointment.starts_at.astimezone(zone).date()
        days[(local_day - first_day).days].appointments.append(_schedule_item(entry, zone))
    return Schedule(
        practitioner_id=practitioner_id,
        time_zone=zone.key,
        view=query.view,
        first_day=first_day,
        last_day=last_day,
        days=days,
    )


@API.route(
    "GET",
    "/api/v1/appointments/{appointment_id}",
    summary="One appointment with its state history",
    tag=TAG,
    roles=ALL_STAFF,
    response=AppointmentDetail,
    views=DESK_DETAIL,
)
async def get_appointment(ctx: Ctx) -> AppointmentDetail:
    """The ETag is the version: send it back as If-Match with any action."""
    appointment_id = ctx.path["appointment_id"]
    appointment = or_not_found(
        await appointments.get(ctx.pool, appointment_id), "appointment", appointment_id
    )
    await audit_reads(ctx, [appointment], via="detail")
    return await appointment_detail(ctx, appointment)
