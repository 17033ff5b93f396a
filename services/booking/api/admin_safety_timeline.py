"""A patient's safety timeline: everything that bears on their safety, newest first, as one
list of typed entries (clinicians and admins).

Each entry has a `type` naming its shape and `at`, the moment it is about; `TimelineEntry` is
the discriminated union of the shapes, and `SOURCES` the functions that read each kind. Adding
a kind (check-ins and their answers, adverse events, staff alerts) is: its entry model with its
own `type` literal, added to `TimelineEntry`, and its reader added to `SOURCES`; nothing else
changes.

Kinds so far:
* `session`: each of the patient's sessions that happened or will (completed, checked in,
  booked, confirmed; not cancelled, no-shows or holds), with its session record if it has one;
  `at` is the session's start.
* `record_correction`: a correction of a session record (version 2 on): who, when, why, and the
  values before and after; `at` is when it was made.
* `adverse_event`: an adverse event as it stands (tier, grade, seriousness, status, the lot,
  what was reported); `at` is when it was opened. Its history is at /api/v1/adverse-events/{id}.
* `check_in`: a check-in after a session: its question, how it was asked, and the answer with
  its tier once given; `at` is when it was (or is) due.
* `staff_alert`: an alert raised about the patient, who it reached and whether anyone
  acknowledged it; `at` is when it was raised.

Audited as `patient.read` (`details.view: safety_timeline`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_patients import TAG, audit_patient, existing_patient
from services.booking.api.common import CLINICAL
from services.booking.api.framework import Ctx
from services.booking.api.session_record_views import SessionRecordOut, record_out
from shared.db.transactions import in_transaction
from shared.domain.appointment_changes import clinic_of, treatment_of
from shared.domain.appointment_states import Status
from shared.store import adverse_events, appointments, check_ins, session_records, staff_alerts

SHOWN_STATUSES: frozenset[Status] = frozenset({"completed", "checked_in", "booked", "confirmed"})


class SessionEntry(BaseModel):
    type: Literal["session"] = "session"
    at: datetime = Field(description="the session's start, UTC")
    appointment_id: int
    status: Status
    clinic_id: int
    local_date: date
    treatment_id: int
    treatment_name: str
    practitioner_id: int
    series_id: int | None
    position: int | None
    session_record: SessionRecordOut | None


class RecordCorrectionEntry(BaseModel):
    type: Literal["record_correction"] = "record_correction"
    at: datetime = Field(description="when the correction was made")
    appointment_id: int
    version: int = Field(description="the record's version the correction made")
    by: str
    reason: str
    before: dict[str, Any] = Field(description="the corrected fields' earlier values")
    after: dict[str, Any]


class AdverseEventEntry(BaseModel):
    type: Literal["adverse_event"] = "adverse_event"
    at: datetime = Field(description="when the event was opened")
    adverse_event_id: int
    appointment_id: int | None
    check_in_id: int | None
    source: str
    tier: str
    grade: int | None
    seriousness: str
    status: str
    lot_number: str | None
    symptoms: str
    holds_next_session: bool
    resolved_at: datetime | None
    cleared_at: datetime | None


class CheckInEntry(BaseModel):
    type: Literal["check_in"] = "check_in"
    at: datetime = Field(description="when the check-in was (or is) due")
    check_in_id: int
    appointment_id: int
    position: int
    question: str
    channel: str
    status: str
    answer_text: str | None
    tier: str | None
    answered_at: datetime | None
    answered_via: str | None


class StaffAlertEntry(BaseModel):
    type: Literal["staff_alert"] = "staff_alert"
    at: datetime = Field(description="when the alert was raised")
    alert_id: int
    tier: str
    adverse_event_id: int | None
    inbox_item_id: int | None
    status: str
    step: int = Field(description="how many times it has been escalated (0: the first person)")
    acknowledged_at: datetime | None
    acknowledged_by: str | None


# Every kind of entry.
TimelineEntry = Annotated[
    SessionEntry | RecordCorrectionEntry | CheckInEntry | AdverseEventEntry | StaffAlertEntry,
    Field(discriminator="type"),
]


class SafetyTimeline(BaseModel):
    patient_id: int
    entries: list[TimelineEntry] = Field(description="newest first")


Source = Callable[[asyncpg.Connection, int], Awaitable[list[Any]]]


async def session_entries(conn: asyncpg.Connection, patient_id: int) -> list[SessionEntry]:
    shown = [
        a for a in await appointments.for_patient(conn, patient_id) if a.status in SHOWN_STATUSES
    ]
    records = await session_records.for_appointments(conn, [a.id for a in shown])
    entries = []
    for a in shown:
        clinic = await clinic_of(conn, a.clinic_id)
        treatment = await treatment_of(conn, a.treatment_id)
        saved = records.get(a.id)
        entries.append(
            SessionEntry(
                at=a.starts_at,
                appointment_id=a.id,
                status=a.status,
                clinic_id=a.clinic_id,
                local_date=a.starts_at.astimezone(clinic.zone).date(),
                treatment_id=a.treatment_id,
                treatment_name=treatment.name,
                practitioner_id=a.practitioner_id,
                series_id=a.series_id,
                position=a.position,
                session_record=record_out(saved) if saved is not None else None,
            )
        )
    return entries


async def correction_entries(
    conn: asyncpg.Connection, patient_id: int
) -> list[RecordCorrectionEntry]:
    entries = []
    previous: dict[int, dict[str, Any]] = {}
    for appointment_id, version in await session_records.history_of_patient(conn, patient_id):
        before = previous.get(appointment_id)
        previous[appointment_id] = version.record
        if before is None:
            continue
        changed = sorted(k for k, v in version.record.items() if before.get(k) != v)
        entries.append(
            RecordCorrectionEntry(
                at=version.at,
                appointment_id=appointment_id,
                version=version.version,
                by=version.actor,
                reason=version.reason,
                before={k: before.get(k) for k in changed},
                after={k: version.record[k] for k in changed},
            )
        )
    return entries


# The entries below are their rows as stored, renamed where the timeline says `at` and `<kind>_id`
# (each model keeps only its own fields).


async def adverse_event_entries(
    conn: asyncpg.Connection, patient_id: int
) -> list[AdverseEventEntry]:
    return [
        AdverseEventEntry.model_validate(
            {
                **asdict(e),
                "at": e.created_at,
                "adverse_event_id": e.id,
                "holds_next_session": e.holds_next_session,
            }
        )
        for e in await adverse_events.for_patient(conn, patient_id)
    ]


async def check_in_entries(conn: asyncpg.Connection, patient_id: int) -> list[CheckInEntry]:
    return [
        CheckInEntry.model_validate({**asdict(c), "at": c.due_at, "check_in_id": c.id})
        for c in await check_ins.for_patient(conn, patient_id)
    ]


async def alert_entries(conn: asyncpg.Connection, patient_id: int) -> list[StaffAlertEntry]:
    return [
        StaffAlertEntry.model_validate({**asdict(a), "at": a.raised_at, "alert_id": a.id})
        for a in await staff_alerts.for_patient(conn, patient_id)
    ]


SOURCES: tuple[Source, ...] = (
    session_entries,
    correction_entries,
    check_in_entries,
    adverse_event_entries,
    alert_entries,
)


async def assemble(conn: asyncpg.Connection, patient_id: int) -> list[Any]:
    """Every source's entries, newest first (ties: the order of SOURCES)."""
    entries: list[Any] = []
    for source in SOURCES:
        entries.extend(await source(conn, patient_id))
    return sorted(entries, key=lambda entry: entry.at, reverse=True)


@API.route(
    "GET",
    "/api/v1/patients/{patient_id}/safety-timeline",
    summary="A patient's safety timeline: sessions and records, check-ins, adverse events, alerts",
    tag=TAG,
    roles=CLINICAL,
    response=SafetyTimeline,
)
async def get_safety_timeline(ctx: Ctx) -> SafetyTimeline:
    """Typed entries, newest first, each with `type` and `at`: `session` (completed and
    upcoming sessions, each with its session record), `record_correction` (who corrected a
    record, when, why, before and after), `check_in`, `adverse_event` and `staff_alert`. Audited as
    `patient.read`."""
    patient_id = ctx.path["patient_id"]

    async def work(conn: asyncpg.Connection) -> SafetyTimeline:
        await existing_patient(conn, patient_id)
        entries = await assemble(conn, patient_id)
        await audit_patient(
            conn, ctx, "patient.read", patient_id, details={"view": "safety_timeline"}
        )
        return SafetyTimeline(patient_id=patient_id, entries=entries)

    return await in_transaction(ctx.pool, work)
