"""Messages in the admin API: a patient's and an appointment's messages, one message with its
status history and delivery attempts, resending and cancelling.

Roles, by what each job needs:

| endpoint                                          | admin | front_desk | clinician |
| ------------------------------------------------- | ----- | ---------- | --------- |
| a patient's messages, an appointment's messages   | yes   | yes        | yes       |
| one message with its history and attempts         | yes   | yes        | yes       |
| resend (a new message, due now)                   | yes   | yes        | no        |
| cancel a scheduled message                        | yes   | yes        | no        |

What staff see: kind, channel, status and why, times, attempts, provider codes and segments;
never the message text (it is rendered at send time and not kept) nor the template context. The
recipient is masked (`+44 **** ***456`, `a***@example.com`) and so are phone numbers and email
addresses inside provider error texts, which sometimes quote them. The recipient shown is where
the last attempt went; before any attempt it is the patient's current address for the channel
(addresses are read at send time, so a corrected mobile number applies to the next send and to
a resend).

Resend: a new row copying the original's kind, channel, template, context, patient and
appointment, due now (quiet hours and the daily limit still apply: it is not urgent), carrying the
appointment's current version so that the send-time checks and the content use today's data. Only
a message whose outcome is settled (sent, delivered, failed, undelivered, cancelled, suppressed,
expired) may be resent: a scheduled one will still go out, and a sending or unknown one may
already have reached the patient. Staff alerts are re-sent by their escalation rules, not here; a
message past its expiry is not resent. With an Idempotency-Key a retried request returns the first
answer instead of a second copy.

Cancel: only a scheduled message (409 with `current_status` otherwise, e.g. when a notifier
worker claimed it a moment earlier).

Audit: every read that shows a patient's messages writes `messages.read` in the read's own
transaction (also when the list is empty: that is a fact about the patient too); resend and cancel
write `message.resend` and `message.cancel` with the reason, in the change's transaction. The
staff member is named in the audit log, not in the message's status history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import asyncpg
import phonenumbers
from aiohttp import web
from pydantic import BaseModel, Field

from services.booking.api import API, idempotency
from services.booking.api.common import ALL_STAFF, DESK
from services.booking.api.fields import Body, Reason
from services.booking.api.framework import ApiError, Ctx, not_found
from services.booking.api.pagination import Page, PageQuery
from shared.db.transactions import in_transaction
from shared.store import appointments, audit, notifications, patients
from shared.store.notifications.rows import AttemptView, Channel, EventView, NotificationStatus
from shared.store.notifications.views import MessageStateConflict, MessageView

TAG = "messages"

AttemptOutcome = Literal["sent", "temporary", "permanent", "ambiguous"]

# -- masking ---------------------------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# E.164 numbers, and long bare digit runs (national numbers); short numbers such as ids, codes
# and the parts of a timestamp stay readable.
_PHONE = re.compile(r"\+\d{7,15}\b|\b\d{9,15}\b")


def mask_phone(number: str) -> str:
    """'+447700900456' → '+44 **** ***456': the country and the last three digits."""
    digits = re.sub(r"\D", "", number)
    country = ""
    if number.startswith("+"):
        try:
            country = str(phonenumbers.parse(number).country_code)
        except phonenumbers.NumberParseException:
            country = ""
    national = digits[len(country) :]
    # Too short to be a real number: showing three digits would show most of it.
    shown = national[-3:] if len(national) >= 6 else ""
    hidden = "*" * (len(national) - len(shown)) + shown
    grouped = f"{hidden[:4]} {hidden[4:]}" if len(hidden) >= 8 else hidden
    if country:
        return f"+{country} {grouped}"
    return f"+{grouped}" if number.startswith("+") else grouped


def mask_email(address: str) -> str:
    """'ada@example.com' → 'a***@example.com': enough to tell a typo in the domain."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


def mask_address(address: str | None, channel: Channel) -> str | None:
    if address is None:
        return None
    if "@" in address:
        return mask_email(address)
    return mask_phone(address) if channel == "sms" or address.startswith("+") else "***"


def scrub(text: str) -> str:
    """Provider texts may quote the recipient ("The 'To' number +44... is not valid")."""
    text = _EMAIL.sub(lambda m: mask_email(m.group()), text)
    return _PHONE.sub(lambda m: mask_phone(m.group()), text)


# -- models ----------------------------------------------------------------------------------------


class MessageEventOut(BaseModel):
    at: datetime
    from_status: NotificationStatus | None
    to_status: NotificationStatus
    reason: str


class MessageAttemptOut(BaseModel):
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome | None = Field(description="null while the call is in flight")
    error_code: int | None = Field(description="Twilio error code or SMTP reply code")
    detail: str = Field(description="the provider's explanation, addresses masked")
    provider_id: str | None = Field(description="Twilio message SID or email Message-ID")
    worker: str


class MessageOut(BaseModel):
    id: int
    patient_id: int | None
    appointment_id: int | None
    kind: str = Field(description="e.g. booking_confirmation, reminder_24h, staff_alert")
    channel: Channel
    recipient: str | None = Field(
        description="masked; where the last attempt went, else the patient's current address"
    )
    status: NotificationStatus
    status_reason: str | None
    urgent: bool = Field(description="exempt from quiet hours")
    due_at: datetime
    expires_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    attempts: int = Field(description="provider calls so far")
    error_code: int | None
    segments: int | None = Field(description="SMS segments billed")
    resend_of: int | None = Field(description="the message this one re-sends")
    created_at: datetime


class MessageDetail(MessageOut):
    template: str
    template_version: int
    language: str
    provider_id: str | None
    updated_at: datetime
    history: list[MessageEventOut] = Field(description="status changes, oldest first")
    attempt_log: list[MessageAttemptOut] = Field(description="provider calls, oldest first")


class ResendBody(Body):
    reason: Reason = Field(description="why, for the audit log (e.g. 'patient deleted it')")


class CancelMessageBody(Body):
    reason: Reason = Field(description="kept as the message's status reason and in the audit log")


# -- conversions -----------------------------------------------------------------------------------


def _optional_scrub(text: str | None) -> str | None:
    return None if text is None else scrub(text)


def message_out(view: MessageView) -> MessageOut:
    return MessageOut(
        id=view.id,
        patient_id=view.patient_id,
        appointment_id=view.appointment_id,
        kind=view.kind,
        channel=view.channel,
        recipient=mask_address(view.address, view.channel),
        status=view.status,
        status_reason=_optional_scrub(view.status_reason),
        urgent=view.urgent,
        due_at=view.due_at,
        expires_at=view.expires_at,
        sent_at=view.sent_at,
        delivered_at=view.delivered_at,
        attempts=view.attempts,
        error_code=view.error_code,
        segments=view.segments,
        resend_of=view.resend_of,
        created_at=view.created_at,
    )


def _event_out(event: EventView) -> MessageEventOut:
    return MessageEventOut(
        at=event.at,
        from_status=event.from_status,
        to_status=event.to_status,
        reason=scrub(event.reason),
    )


def _attempt_out(attempt: AttemptView) -> MessageAttemptOut:
    return MessageAttemptOut(
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        outcome=attempt.outcome,
        error_code=attempt.error_code,
        detail=scrub(attempt.detail),
        provider_id=attempt.provider_id,
        worker=attempt.worker,
    )


async def _detail(conn: asyncpg.Connection, notification_id: int) -> MessageDetail:
    view = await notifications.views.get(conn, notification_id)
    if view is None:
        raise not_found("message", notification_id)
    history = await notifications.views.status_history(conn, notification_id)
    attempts = await notifications.views.attempt_history(conn, notification_id)
    return MessageDetail(
        **message_out(view).model_dump(),
        template=view.template,
        template_version=view.template_version,
        language=view.language,
        provider_id=view.provider_id,
        updated_at=view.updated_at,
        history=[_event_out(e) for e in history],
        attempt_log=[_attempt_out(a) for a in attempts],
    )


# -- audit -----------------------------------------------------------------------------------------


async def _audit_reads(
    conn: asyncpg.Connection,
    ctx: Ctx,
    *,
    via: str,
    entity: str,
    entity_id: int,
    shown: Iterable[MessageView],
    patient_ids: Iterable[int | None] = (),
) -> None:
    """One `messages.read` row per patient whose messages this answer shows (and per patient
    named by the request, even when nothing is shown)."""
    by_patient: dict[int | None, list[int]] = {pid: [] for pid in patient_ids}
    for view in shown:
        by_patient.setdefault(view.patient_id, []).append(view.id)
    for patient_id, ids in by_patient.items():
        await audit.insert(
            conn,
            at=ctx.now,
            actor=ctx.actor,
            action="messages.read",
            entity=entity,
            entity_id=entity_id,
            patient_id=patient_id,
            details={"via": via, "notification_ids": ids},
            request_id=ctx.request_id,
        )


async def _audit_change(
    conn: asyncpg.Connection,
    ctx: Ctx,
    action: str,
    message: MessageDetail,
    *,
    reason: str,
    details: dict[str, Any],
) -> None:
    await audit.insert(
        conn,
        at=ctx.now,
        actor=ctx.actor,
        action=action,
        entity="notification",
        entity_id=message.id,
        patient_id=message.patient_id,
        reason=reason,
        details=details,
        request_id=ctx.request_id,
    )


def _conflict(error: MessageStateConflict) -> ApiError:
    return ApiError(
        409, "Conflict", error.message, type_=error.code, current_status=error.current_status
    )


# -- reads -----------------------------------------------------------------------------------------


@API.route(
    "GET",
    "/api/v1/patients/{patient_id}/messages",
    summary="A patient's messages, newest first",
    tag=TAG,
    roles=ALL_STAFF,
    query=PageQuery,
    response=Page[MessageOut],
)
async def list_patient_messages(ctx: Ctx) -> Page[MessageOut]:
    """Status, times, attempts and provider codes of every message to the patient, never the
    text; the recipient is masked. Keyset-paginated: pass `next_cursor` back as `cursor`.
    Audited as `messages.read`."""
    query: PageQuery = ctx.query
    patient_id = ctx.path["patient_id"]
    before_id = query.after_id()

    async def work(conn: asyncpg.Connection) -> Any:
        if await patients.get(conn, patient_id) is None:
            raise not_found("patient", patient_id)
        found = await notifications.views.list_page(
            conn, patient_id=patient_id, before_id=before_id, limit=query.fetch
        )
        page = Page[MessageOut].of(found, query.limit, message_out)
        await _audit_reads(
            conn,
            ctx,
            via="patient",
            entity="patient",
            entity_id=patient_id,
            shown=found[: query.limit],
            patient_ids=[patient_id],
        )
        return page

    page = await in_transaction(ctx.pool, work)
    return page


@API.route(
    "GET",
    "/api/v1/appointments/{appointment_id}/messages",
    summary="An appointment's messages, newest first",
    tag=TAG,
    roles=ALL_STAFF,
    query=PageQuery,
    response=Page[MessageOut],
)
async def list_appointment_messages(ctx: Ctx) -> Page[MessageOut]:
    """Confirmations, reminders and notices about one appointment, as for a patient's list.
    Audited as `messages.read`."""
    query: PageQuery = ctx.query
    appointment_id = ctx.path["appointment_id"]
    before_id = query.after_id()

    async def work(conn: asyncpg.Connection) -> Any:
        appointment = await appointments.get(conn, appointment_id)
        if appointment is None:
            raise not_found("appointment", appointment_id)
        found = await notifications.views.list_page(
            conn, appointment_id=appointment_id, before_id=before_id, limit=query.fetch
        )
        page = Page[MessageOut].of(found, query.limit, message_out)
        await _audit_reads(
            conn,
            ctx,
            via="appointment",
            entity="appointment",
            entity_id=appointment_id,
            shown=found[: query.limit],
            patient_ids=[appointment.patient_id] if appointment.patient_id is not None else [],
        )
        return page

    page = await in_transaction(ctx.pool, work)
    return page


@API.route(
    "GET",
    "/api/v1/messages/{notification_id}",
    summary="One message with its status history and delivery attempts",
    tag=TAG,
    roles=ALL_STAFF,
    response=MessageDetail,
)
async def get_message(ctx: Ctx) -> MessageDetail:
    """Every status change with its reason, and every provider call with its outcome and code.
    Audited as `messages.read`."""
    notification_id = ctx.path["notification_id"]

    async def work(conn: asyncpg.Connection) -> Any:
        detail = await _detail(conn, notification_id)
        await audit.insert(
            conn,
            at=ctx.now,
            actor=ctx.actor,
            action="messages.read",
            entity="notification",
            entity_id=notification_id,
            patient_id=detail.patient_id,
            details={"via": "detail", "notification_ids": [notification_id]},
            request_id=ctx.request_id,
        )
        return detail

    detail = await in_transaction(ctx.pool, work)
    return detail


# -- actions ---------------------------------------------------------------------------------------


@API.route(
    "POST",
    "/api/v1/messages/{notification_id}/resend",
    summary="Send a message again, as a new message due now",
    tag=TAG,
    roles=DESK,
    body=ResendBody,
    response=MessageDetail,
    status=201,
    errors=(409,),
    idempotent=True,
    location="/api/v1/messages/{id}",
)
async def resend_message(ctx: Ctx) -> BaseModel | web.Response:
    """Answers with the new message. 409 (`current_status`) for a message still scheduled,
    sending or unknown, a staff alert, one past its expiry, or one re-sent too often. Audited as
    `message.resend`. With an Idempotency-Key a retry gets the first answer, not a second copy."""
    body: ResendBody = ctx.body
    original_id = ctx.path["notification_id"]

    async def work(conn: asyncpg.Connection) -> MessageDetail:
        try:
            new_id = await notifications.views.resend(conn, original_id, now=ctx.now)
        except notifications.views.MessageNotFound:
            raise not_found("message", original_id) from None
        except MessageStateConflict as error:
            raise _conflict(error) from None
        created = await _detail(conn, new_id)
        await _audit_change(
            conn, ctx, "message.resend", created, reason=body.reason, details={"of": original_id}
        )
        return created

    return await idempotency.run(ctx, work, status=201)


@API.route(
    "POST",
    "/api/v1/messages/{notification_id}/cancel",
    summary="Cancel a scheduled message",
    tag=TAG,
    roles=DESK,
    body=CancelMessageBody,
    response=MessageDetail,
    errors=(409,),
)
async def cancel_message(ctx: Ctx) -> MessageDetail:
    """scheduled → cancelled with the reason given. Anything else is 409 with `current_status`
    (a worker may have claimed it a moment earlier). Audited as `message.cancel`."""
    body: CancelMessageBody = ctx.body
    notification_id = ctx.path["notification_id"]

    async def work(conn: asyncpg.Connection) -> Any:
        try:
            await notifications.views.cancel_scheduled(
                conn, notification_id, reason=f"cancelled by staff: {body.reason}", now=ctx.now
            )
        except notifications.views.MessageNotFound:
            raise not_found("message", notification_id) from None
        except MessageStateConflict as error:
            raise _conflict(error) from None
        cancelled = await _detail(conn, notification_id)
        await _audit_change(conn, ctx, "message.cancel", cancelled, reason=body.reason, details={})
        return cancelled

    cancelled = await in_transaction(ctx.pool, work)
    return cancelled
