"""The staff's work queues: closing an inbox item, replying to the patient from the clinic's
number, closing a call-list task, and a clinician clearing the review flag of a whole course.

Every function works inside the caller's transaction and writes its audit rows there, so a
change and its record commit together; refusals are the plain exceptions of
shared/domain/errors.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from shared.domain.appointment_changes import Change, audit_appointment
from shared.domain.contact import may_text
from shared.domain.errors import Conflict, InvalidField, NotFound
from shared.scheduling.loader import load_clinic
from shared.store import appointments, audit, call_tasks, inbound_messages, inbox, patients
from shared.store import series as series_store
from shared.store.appointments import Appointment
from shared.store.call_tasks import CallTask
from shared.store.inbox import InboxItem
from shared.store.notifications import outbox
from shared.store.notifications.outbox import NewNotification

REPLY = "reply"
# A reply that could not go within a day answers nothing any more: staff should phone.
REPLY_LIFETIME = timedelta(days=1)


# -- the inbox -------------------------------------------------------------------------------------


async def _locked_item(conn: asyncpg.Connection, item_id: int) -> InboxItem:
    item = await inbox.lock(conn, item_id)
    if item is None:
        raise NotFound("inbox item", item_id)
    return item


async def _close_item(
    conn: asyncpg.Connection, item: InboxItem, note: str, change: Change, **details: object
) -> InboxItem:
    handled = await inbox.mark_handled(
        conn, item.id, by=change.actor.name, note=note, now=change.now
    )
    assert handled is not None  # locked and open
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action="inbox.handled",
        entity="inbox_item",
        entity_id=item.id,
        patient_id=item.patient_id,
        reason=note,
        details=dict(details),
        request_id=change.request_id,
    )
    return handled


def _already_handled(item: InboxItem) -> Conflict:
    return Conflict(
        f"inbox item {item.id} was already handled by {item.handled_by}",
        code="already-handled",
        handled_at=item.handled_at.isoformat() if item.handled_at else None,
        handled_by=item.handled_by,
    )


async def mark_handled(
    conn: asyncpg.Connection, item_id: int, *, note: str, change: Change
) -> InboxItem:
    """Close an open item with a note saying what was done; an item already handled is a
    conflict (two people must not both think they answered it)."""
    item = await _locked_item(conn, item_id)
    if item.handled_at is not None:
        raise _already_handled(item)
    return await _close_item(conn, item, note, change)


@dataclass(frozen=True)
class Replied:
    item: InboxItem
    notification_id: int


async def reply(
    conn: asyncpg.Connection,
    item_id: int,
    *,
    text: str,
    keep_open: bool,
    clinic_id: int | None,
    change: Change,
) -> Replied:
    """Answer the patient by SMS from the clinic's number: an outbox row of kind `reply`, urgent
    (an answer to the patient's own message ignores quiet hours), which the notifier sends to
    the patient's current mobile, or to the number the message came from when nobody's record
    has it. The item is closed unless `keep_open`; a handled item may still be replied to.

    Refused when the patient cannot be texted: erased, no mobile, opted out of SMS, or a number
    outside the clinic's SMS countries (the notifier would suppress the row)."""
    item = await _locked_item(conn, item_id)
    context = await inbox.inbound_context(conn, item_id)
    assert context is not None  # the item is locked
    clinic = item.clinic_id or context.clinic_id or clinic_id
    if clinic is None:
        raise InvalidField(
            "clinic_id",
            "the message came from a number no clinic has on file: say which clinic answers",
        )
    if clinic_id is not None and clinic_id != clinic:
        raise InvalidField("clinic_id", f"the message is clinic {clinic}'s, not {clinic_id}'s")
    info = await load_clinic(conn, clinic)
    if info is None:
        raise InvalidField("clinic_id", f"no clinic with id {clinic}")
    recipient: str | None = None
    language = "en"
    if item.patient_id is not None:
        patient = await patients.get(conn, item.patient_id)
        assert patient is not None  # a foreign key
        if patient.erased_at is not None:
            raise Conflict("the patient's record was erased", code="patient-erased")
        if not patient.mobile:
            raise Conflict("the patient has no mobile number on file", code="no-mobile")
        if patient.sms_opted_out_at is not None:
            raise Conflict(
                "the patient opted out of SMS: phone or email them instead",
                code="sms-opted-out",
                opted_out_at=patient.sms_opted_out_at.isoformat(),
            )
        number = patient.mobile
        language = patient.language
    elif item.from_number == inbound_messages.ERASED_NUMBER:
        raise Conflict("the number was erased with its patient's record", code="patient-erased")
    else:
        number = recipient = item.from_number
    if not may_text(number, info.texts_to):
        raise Conflict(
            "the number is outside the countries this clinic sends SMS to", code="sms-country"
        )
    notification_id = await outbox.insert(
        conn,
        NewNotification(
            clinic_id=clinic,
            kind=REPLY,
            channel="sms",
            template=REPLY,
            due_at=change.now,
            # Every reply is its own message (a retried request is answered by the idempotency
            # key, not by this key).
            dedupe_key=f"reply:inbox{item.id}:{uuid.uuid4().hex}",
            patient_id=item.patient_id,
            recipient=recipient,
            context={"text": text, "inbox_item_id": item.id},
            expires_at=change.now + REPLY_LIFETIME,
            urgent=True,
            language=language,
        ),
        now=change.now,
    )
    assert notification_id is not None  # a fresh key
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action="inbox.reply",
        entity="inbox_item",
        entity_id=item.id,
        patient_id=item.patient_id,
        details={"notification_id": notification_id, "keep_open": keep_open},
        request_id=change.request_id,
    )
    if not keep_open and item.handled_at is None:
        item = await _close_item(
            conn, item, "replied by SMS", change, notification_id=notification_id
        )
    return Replied(item, notification_id)


# -- the call list ---------------------------------------------------------------------------------


async def call_done(
    conn: asyncpg.Connection, task_id: int, *, outcome: str, change: Change
) -> CallTask:
    """Close an open call-list task with what came of the call; a closed one is a conflict."""
    task = await call_tasks.get(conn, task_id)
    if task is None:
        raise NotFound("call task", task_id)
    done = await call_tasks.mark_done(
        conn, task_id, by=change.actor.name, outcome=outcome, now=change.now
    )
    if done is None:
        current = await call_tasks.get(conn, task_id)
        raise Conflict(
            f"call task {task_id} was already done by {current.done_by if current else '?'}",
            code="already-done",
        )
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action="call_task.done",
        entity="call_task",
        entity_id=task_id,
        patient_id=done.patient_id,
        reason=outcome,
        details={"appointment_id": done.appointment_id, "reason": done.reason},
        request_id=change.request_id,
    )
    return done


# -- the review queue ------------------------------------------------------------------------------

REVIEWABLE = frozenset({"booked", "confirmed", "checked_in"})


async def review_course(
    conn: asyncpg.Connection, series_id: int, *, note: str, change: Change
) -> list[Appointment]:
    """A clinician clears the review flag of every flagged active session of a course at once,
    with one note: one `appointment.review` row per session and one `series.review` for the
    course, all in this transaction. The series is locked before its sessions (the lock order
    of shared/domain/appointment_changes.py). Nothing flagged is a conflict."""
    course = await series_store.lock(conn, series_id)
    if course is None:
        raise NotFound("series", series_id)
    sessions = await appointments.lock_series(conn, series_id)
    flagged = [a for a in sessions if a.needs_review and a.status in REVIEWABLE]
    if not flagged:
        raise Conflict(
            f"no active session of course {series_id} is flagged for review",
            code="nothing-to-review",
        )
    cleared = []
    for current in flagged:
        updated = await appointments.set_review(
            conn,
            current.id,
            needs_review=False,
            reasons=[],
            actor=change.actor.label,
            now=change.now,
            note=note,
        )
        assert updated is not None  # locked above
        await audit_appointment(
            conn,
            change,
            "appointment.review",
            updated,
            reason=note,
            details={"cleared_reasons": current.review_reasons, "series_id": series_id},
        )
        cleared.append(updated)
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action="series.review",
        entity="series",
        entity_id=series_id,
        patient_id=course.patient_id,
        reason=note,
        details={"appointment_ids": [a.id for a in cleared]},
        request_id=change.request_id,
    )
    return cleared
