"""Erasing a patient in the admin API: the answer to an EU erasure request.

Admin only, in one transaction: names become 'Erased', mobile and email are cleared and every
private link stops working; the patient's future sessions and active courses are cancelled through
the usual cancellation (history and audit rows, their reminders end, no notice is planned); every
queued message is cancelled; the addresses and texts their messages hold and the addresses
providers quoted in error texts are removed; their inbound SMS lose text and number; what public
booking forms said about them is deleted; marketing consents are withdrawn. Medical fields, date of
birth, appointments as history, consent history, message history and the audit log stay for the
legal period. The audit entry lists what was removed and kept, and why. Afterwards contact fields
cannot be set again and no consent can be granted (409), while clinicians can still correct
clinical fields.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from services.booking.api import API, idempotency
from services.booking.api.admin_patients import (
    BASE,
    TAG,
    PatientOut,
    audit_patient,
    erased_conflict,
    patient_record,
)
from services.booking.api.common import ADMIN
from services.booking.api.fields import Body, Reason
from services.booking.api.framework import Ctx, not_found
from shared.domain import cancellations
from shared.domain.appointment_changes import Change
from shared.store import (
    call_tasks,
    form_differences,
    inbound_messages,
    inbox,
    notifications,
    patients,
)
from shared.store import consents as consent_store


class Erasure(Body):
    reason: Reason = Field(description="why the request was granted, e.g. the request reference")


ERASURE_WORDING = "erasure"
ERASURE_REASON = "patient erased"
# What an erasure keeps, and why: the audit entry of each erasure says so.
ERASURE_KEEPS = {
    "medical_record": "allergies, medications, screening answers, clinical notes and date of "
    "birth: medical records are kept for their legal retention period",
    "appointments": "past and cancelled appointments with their history and course plans: the "
    "record of the care given and booked",
    "consents": "the consent history, with the withdrawals of this erasure: proof of what the "
    "patient agreed to and when",
    "message_history": "each message's kind, channel, times, status history and provider ids: "
    "the record of what was sent",
    "audit_log": "who read and changed the record, including this erasure: accountability",
    "adverse_events": "reported reactions with their grades, outcomes and append-only history: "
    "medical records kept at least 6 years, for safety reviews and product recalls",
}


@API.route(
    "POST",
    BASE + "/{patient_id}/erase",
    summary="Erase a patient's contact data and end everything planned for them (EU erasure)",
    tag=TAG,
    roles=ADMIN,
    body=Erasure,
    response=PatientOut,
    errors=(409,),
)
async def erase_patient(ctx: Ctx) -> BaseModel | web.Response:
    """In one transaction: clears names, mobile and email and revokes every private link;
    cancels the patient's future sessions and active courses (no cancellation notice: there is
    nobody to write to) and every queued message; removes the addresses and texts their messages
    hold and the addresses providers quoted; blanks the text and number of their inbound SMS
    (keeping when they came and any STOP); deletes what booking forms said about them; closes
    their staff inbox items and call-list tasks and blanks the staff notes on them; withdraws
    marketing consents. Medical fields, date of birth, appointments as history, consents,
    message history and the audit log stay. Audited as `patient.erase` with the reason, what was
    removed and what was kept and why. Once only: a second request is 409, unless it repeats the
    first one's Idempotency-Key."""
    body: Erasure = ctx.body
    patient_id = ctx.path["patient_id"]

    async def work(conn: asyncpg.Connection) -> PatientOut:
        before = await patients.lock(conn, patient_id)
        if before is None:
            raise not_found("patient", patient_id)
        erased = await patients.erase(conn, patient_id, now=ctx.now)
        if erased is None:
            raise erased_conflict(before, "the patient was already erased")
        # Erased first: whatever is planned from here on finds nobody to write to.
        messages = await notifications.outbox.cancel_pending_for_patient(
            conn, patient_id, reason=ERASURE_REASON, now=ctx.now
        )
        change = Change(ctx.actor, ctx.now, ctx.request_id)
        cancelled = await cancellations.cancel_for_erasure(conn, patient_id, change)
        scrubbed = await notifications.erasure.scrub_for_patient(conn, patient_id, now=ctx.now)
        inbound = await inbound_messages.scrub_for_patient(
            conn, patient_id, before.mobile, clinic_id=before.clinic_id
        )
        differences = await form_differences.delete_for_patient(conn, patient_id)
        inbox_items = await inbox.scrub_for_patient(conn, patient_id, now=ctx.now)
        calls = await call_tasks.scrub_for_patient(conn, patient_id, now=ctx.now)
        for kind in consent_store.MARKETING_KINDS:
            await consent_store.insert(
                conn,
                patient_id,
                kind=kind,
                granted=False,
                source="erasure",
                wording_version=ERASURE_WORDING,
                now=ctx.now,
            )
        kept: dict[str, Any] = dict(ERASURE_KEEPS)
        if scrubbed.unsettled_ids:
            kept["messages_being_reconciled"] = {
                "ids": scrubbed.unsettled_ids,
                "why": "the provider's answer was lost; the notifier checks with the provider "
                "where they went and forgets the address when it has settled them",
            }
        if inbound.shared_number_kept:
            kept["inbound_sms_from_a_shared_number"] = {
                "count": inbound.shared_number_kept,
                "why": "another patient has the same mobile number: the messages may be theirs",
            }
        details = {
            "removed": {
                "contact": list(patients.ERASED_FIELDS),
                "private_links": "revoked",
                "marketing_consents_withdrawn": list(consent_store.MARKETING_KINDS),
                "future_appointments_cancelled": cancelled.appointment_ids,
                "courses_cancelled": cancelled.series_ids,
                "queued_messages_cancelled": messages,
                "messages_scrubbed": len(scrubbed.scrubbed_ids),
                "inbound_sms_scrubbed": inbound.scrubbed,
                "form_differences_deleted": differences,
                "inbox_items_closed_and_notes_blanked": inbox_items,
                "call_tasks_closed_and_notes_blanked": calls,
            },
            "kept": kept,
        }
        await audit_patient(
            conn, ctx, "patient.erase", patient_id, reason=body.reason, details=details
        )
        return await patient_record(conn, erased)

    return await idempotency.run(ctx, work, status=200)
