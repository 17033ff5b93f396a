"""A patient's data as one JSON document: the answer to a GDPR access request (article 15).

Admin only, like erasure: it holds everything, clinical and contact data alike. One consistent
snapshot (a repeatable-read transaction), audited as `patient.export` in that transaction with
how many items of each kind it held. Erased patients can be exported too: the document then shows
what erasure kept.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_appointments import (
    AppointmentDetail,
    HistoryEvent,
    Zones,
    appointment_out,
)
from services.booking.api.admin_audit import AuditEntry
from services.booking.api.admin_patients import BASE, TAG, ConsentOut, PatientOut
from services.booking.api.admin_series import SeriesOut, series_out
from services.booking.api.common import ADMIN, or_not_found, record
from services.booking.api.framework import Ctx
from services.booking.api.session_record_views import record_out
from shared.store import (
    adverse_events,
    appointments,
    audit,
    call_tasks,
    check_ins,
    form_differences,
    inbound_messages,
    inbox,
    notifications,
    patients,
    screening,
    session_records,
    staff_alerts,
)
from shared.store import consents as consent_store
from shared.store import series as series_store
from shared.store.notifications.rows import Channel, NotificationStatus

# Said in every export, so that whoever answers the request can tell the patient what is not
# in it and why.
NOT_INCLUDED = [
    "Message texts: SMS and emails are written from the record at the moment they are sent and "
    "are not stored. Each message lists what it was planned with (`context`), where its last "
    "attempt went (`context.attempt_to`, until erasure), its status history and provider "
    "attempts.",
    "Copies kept by the providers: the SMS provider (Twilio) and the email server keep their own "
    "copies of messages sent and received, under their own retention.",
    "Short-lived records: per-mobile booking rate counters (up to 3 hours) and the stored answers "
    "of retried API requests (up to 25 hours) may hold the mobile, name or email; they are "
    "deleted automatically.",
]


class ExportedMessageEvent(BaseModel):
    at: datetime
    from_status: NotificationStatus | None
    to_status: NotificationStatus
    reason: str


class ExportedAttempt(BaseModel):
    started_at: datetime
    finished_at: datetime | None
    outcome: Literal["sent", "temporary", "permanent", "ambiguous"] | None
    error_code: int | None
    detail: str = Field(description="the provider's answer")
    provider_id: str | None


class ExportedMessage(BaseModel):
    id: int
    appointment_id: int | None
    kind: str
    channel: Channel
    recipient: str | None = Field(description="a fixed recipient (patients' messages have none)")
    template: str
    template_version: int
    language: str
    context: dict[str, Any] = Field(
        description="what the message was planned with: the start it was about, the sessions "
        "it covered, where its last attempt went (`attempt_to`), a reply's text"
    )
    status: NotificationStatus
    status_reason: str | None
    due_at: datetime
    expires_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    attempts: int
    segments: int | None
    provider_id: str | None
    error_code: int | None
    created_at: datetime
    updated_at: datetime
    history: list[ExportedMessageEvent]
    attempt_log: list[ExportedAttempt]


class ExportedInboundMessage(BaseModel):
    id: int
    message_sid: str
    from_number: str
    to_number: str
    body: str
    opt_out_type: str | None
    received_at: datetime


class ExportedFormDifference(BaseModel):
    id: int
    hold_id: int | None
    appointment_ids: list[int]
    submitted: dict[str, Any] = Field(
        description="what a booking form said that the record did not"
    )
    created_at: datetime
    reviewed_at: datetime | None
    reviewed_by: str | None
    review_note: str


class ExportedInboxItem(BaseModel):
    id: int
    inbound_message_id: int
    reason: str
    urgent: bool
    danger_words: list[str]
    created_at: datetime
    handled_at: datetime | None
    handled_by: str | None
    note: str | None = Field(description="what staff wrote when they handled it")


class ExportedCallTask(BaseModel):
    id: int
    appointment_id: int | None
    reason: str
    detail: str
    created_at: datetime
    done_at: datetime | None
    done_by: str | None
    outcome: str | None = Field(description="what staff wrote when they made the call")


class ExportedAdverseEventChange(BaseModel):
    at: datetime
    actor: str
    action: str
    changes: list[dict[str, Any]]
    reason: str


class ExportedAdverseEvent(BaseModel):
    id: int
    appointment_id: int | None
    lot_number: str | None
    symptoms: str
    source: str
    tier: str
    grade: int | None
    seriousness: str
    status: str
    resolution_notes: str | None
    cleared_at: datetime | None
    clearance_reason: str | None
    created_at: datetime
    history: list[ExportedAdverseEventChange] = Field(description="every change, oldest first")


class ExportedCheckIn(BaseModel):
    id: int
    appointment_id: int
    position: int
    question: str
    due_at: datetime
    channel: str
    status: str
    sent_at: datetime | None
    nudged_at: datetime | None
    answer_text: str | None
    answer_digit: int | None
    tier: str | None
    answered_at: datetime | None
    answered_via: str | None


class ExportedScreeningAnswer(BaseModel):
    appointment_id: int | None
    question_code: str
    answer: bool
    details: str
    answered_at: datetime
    source: str
    actor: str


class ExportedStaffAlert(BaseModel):
    id: int
    tier: str
    adverse_event_id: int | None
    inbox_item_id: int | None
    summary: str
    raised_at: datetime
    status: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None


class PatientExport(BaseModel):
    exported_at: datetime
    patient: PatientOut
    consent_history: list[ConsentOut] = Field(description="every change, oldest first")
    courses: list[SeriesOut]
    appointments: list[AppointmentDetail] = Field(description="every status, in start order")
    messages: list[ExportedMessage] = Field(description="to or about the patient, oldest first")
    inbound_messages: list[ExportedInboundMessage] = Field(description="SMS the patient sent")
    form_differences: list[ExportedFormDifference]
    inbox_items: list[ExportedInboxItem] = Field(description="their SMS filed for staff")
    call_tasks: list[ExportedCallTask] = Field(description="the staff call list about them")
    adverse_events: list[ExportedAdverseEvent] = Field(
        description="reactions reported after their sessions, with every change"
    )
    check_ins: list[ExportedCheckIn] = Field(description="asked after their sessions, answers")
    screening_answers: list[ExportedScreeningAnswer] = Field(
        description="every answer, newest first"
    )
    staff_alerts: list[ExportedStaffAlert] = Field(description="alerts staff got about them")
    audit_entries: list[AuditEntry] = Field(description="every entry about the patient")
    not_included: list[str] = Field(description="what is held elsewhere or not at all, and why")


@API.route(
    "GET",
    BASE + "/{patient_id}/export",
    summary="Everything held about a patient, as JSON (GDPR access request)",
    tag=TAG,
    roles=ADMIN,
    response=PatientExport,
)
async def export_patient(ctx: Ctx) -> PatientExport:
    """The record with its clinical fields, consent history, courses, appointments with their
    state history, messages with their status history and provider attempts, inbound SMS, what
    booking forms said, their SMS filed in the staff inbox and the call list about them (with
    what staff noted), adverse events with their history, the check-ins asked and answered,
    every screening answer, the staff alerts about them, and the audit entries about the
    patient; `not_included` says what is not in it and why. Audited as `patient.export`."""
    patient_id = ctx.path["patient_id"]
    zones = Zones(ctx)
    async with ctx.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        patient = or_not_found(await patients.get(conn, patient_id), "patient", patient_id)
        current = await consent_store.current(conn, patient_id)
        consents = await consent_store.history(conn, patient_id)
        courses = await series_store.for_patient(conn, patient_id)
        booked = await appointments.for_patient(conn, patient_id)
        histories = await appointments.history_many(conn, [a.id for a in booked])
        records = await session_records.for_appointments(conn, [a.id for a in booked])
        messages = await notifications.views.held_for_patient(conn, patient_id)
        inbound = await inbound_messages.for_patient(conn, patient_id, patient.mobile)
        differences = await form_differences.for_patient(conn, patient_id)
        filed = await inbox.for_patient(conn, patient_id)
        calls = await call_tasks.for_patient(conn, patient_id)
        events = await adverse_events.for_patient(conn, patient_id)
        event_history = await adverse_events.history_many(conn, [e.id for e in events])
        asked = await check_ins.for_patient(conn, patient_id)
        answered = await screening.for_patient(conn, patient_id, limit=100_000)
        alerted = await staff_alerts.for_patient(conn, patient_id)
        entries = await audit.for_patient(conn, patient_id)
        document = PatientExport(
            exported_at=ctx.now,
            patient=PatientOut.model_validate(
                {**asdict(patient), "consents": [asdict(current[k]) for k in sorted(current)]}
            ),
            consent_history=[ConsentOut.model_validate(asdict(c)) for c in consents],
            courses=[series_out(s) for s in courses],
            appointments=[
                AppointmentDetail(
                    **appointment_out(a, await zones.of(a.clinic_id)).model_dump(),
                    history=[HistoryEvent(**asdict(event)) for event in histories[a.id]],
                    session_record=record_out(records[a.id]) if a.id in records else None,
                )
                for a in booked
            ],
            messages=[ExportedMessage.model_validate(asdict(m)) for m in messages],
            inbound_messages=[ExportedInboundMessage.model_validate(asdict(m)) for m in inbound],
            form_differences=[
                ExportedFormDifference.model_validate(asdict(d)) for d in differences
            ],
            inbox_items=[ExportedInboxItem.model_validate(asdict(i)) for i in filed],
            call_tasks=[ExportedCallTask.model_validate(asdict(t)) for t in calls],
            adverse_events=[
                ExportedAdverseEvent.model_validate(
                    {
                        **asdict(e),
                        "history": [asdict(h) for h in event_history.get(e.id, [])],
                    }
                )
                for e in events
            ],
            check_ins=[ExportedCheckIn.model_validate(asdict(c)) for c in asked],
            screening_answers=[ExportedScreeningAnswer.model_validate(asdict(a)) for a in answered],
            staff_alerts=[ExportedStaffAlert.model_validate(asdict(a)) for a in alerted],
            audit_entries=[AuditEntry.model_validate(asdict(entry)) for entry in entries],
            not_included=NOT_INCLUDED,
        )
        counts = {
            "consent_history": len(consents),
            "courses": len(courses),
            "appointments": len(booked),
            "messages": len(messages),
            "inbound_messages": len(inbound),
            "form_differences": len(differences),
            "inbox_items": len(filed),
            "call_tasks": len(calls),
            "adverse_events": len(events),
            "check_ins": len(asked),
            "screening_answers": len(answered),
            "staff_alerts": len(alerted),
            "audit_entries": len(entries),
        }
        await record(
            conn,
            ctx,
            action="patient.export",
            entity="patient",
            entity_id=patient_id,
            patient_id=patient_id,
            details={"held": counts},
        )
    return document
