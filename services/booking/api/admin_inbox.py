"""The staff inbox in the admin API: patients' SMS replies a person must read (free text,
replies from unknown numbers, replies from a number several patients share), marking one
handled, and replying to the patient from the clinic's number.

Roles, by what each job needs:

| endpoint                         | admin | front_desk | clinician |
| -------------------------------- | ----- | ---------- | --------- |
| the inbox, one item (reads)      | yes   | yes        | yes       |
| mark handled, reply              | yes   | yes        | no        |

What staff see: the message text, the number it came from masked (`+44 **** ***456`), the
patient it was matched to (none for an unknown number or a shared one), whether it is urgent and
which danger words made it so. Open items come first by default: urgent ones, then the oldest.
With `clinic_id`, the clinic's items and those from numbers no clinic has on file (each clinic
may be the one they wrote to).

A reply is an SMS through the outbox (kind and template `reply`, shown in the patient's messages
and conversation like any other): urgent, because an answer to the patient's own message ignores
quiet hours; to the patient's current mobile, or to the number the message came from when
nobody's record has it. It is refused (409) when the patient cannot be texted: no mobile, opted
out of SMS, an erased record, a number outside the clinic's SMS countries. It closes the item
unless `keep_open: true`. With an Idempotency-Key a retried request answers the first reply
instead of sending a second.

Audit: every read writes `messages.read` (via `inbox`, one row per patient shown, and one for
the messages of unknown numbers) in the read's transaction; marking handled writes
`inbox.handled` with the note, a reply `inbox.reply` (and `inbox.handled` when it closes the
item), in the change's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field, StrictBool

from services.booking.api import API, idempotency
from services.booking.api.admin_appointments import change_of
from services.booking.api.admin_messages import MessageDetail, _detail, mask_phone
from services.booking.api.common import ALL_STAFF, DESK, record
from services.booking.api.fields import Body, Id, text
from services.booking.api.framework import Ctx, not_found
from services.booking.api.pagination import Page, PageQuery, next_cursor
from services.booking.domain import queues
from shared.db.transactions import in_transaction
from shared.store import inbound_messages, inbox, patients
from shared.store.inbox import InboxItem, InboxReason

TAG = "inbox"

InboxStatus = Literal["open", "handled", "all"]
HandledNote = text(1000, min_length=1, description="what was done about it")
ReplyText = text(
    640,
    min_length=1,
    description="the SMS text, sent as written after the clinic's name (at most 640 "
    "characters: about four SMS segments)",
)


class PatientRef(BaseModel):
    id: int
    first_name: str
    last_name: str


class InboxItemOut(BaseModel):
    id: int
    clinic_id: int | None = Field(description="null: no clinic has the number on file")
    patient: PatientRef | None = Field(description="the patient the message was matched to")
    reason: InboxReason = Field(
        description="free_text, unknown_number, several_patients (a shared number) or "
        "nothing_asked (a reply with no question open)"
    )
    urgent: bool = Field(description="the message has words that signal danger")
    danger_words: list[str]
    from_number: str = Field(description="masked")
    text: str = Field(description="the message as the patient wrote it")
    received_at: datetime
    created_at: datetime
    handled_at: datetime | None
    handled_by: str | None
    note: str | None


class ReplyResult(BaseModel):
    item: InboxItemOut
    message: MessageDetail = Field(description="the reply, as GET /api/v1/messages/{id} shows it")


class InboxQuery(PageQuery):
    clinic_id: Id | None = Field(None, description="this clinic's items and unknown numbers'")
    status: InboxStatus = Field("open", description="open (default), handled or all")
    urgent: bool = Field(False, description="true: urgent items only")


class HandledBody(Body):
    note: HandledNote


class ReplyBody(Body):
    text: ReplyText
    keep_open: StrictBool = Field(False, description="true: the item stays open after replying")
    clinic_id: Id | None = Field(
        None, description="which clinic answers, for a number no clinic has on file"
    )


# -- conversions -----------------------------------------------------------------------------------


def _masked(number: str) -> str:
    return number if number == inbound_messages.ERASED_NUMBER else mask_phone(number)


async def _items_out(conn: asyncpg.Connection, items: list[InboxItem]) -> list[InboxItemOut]:
    found = await patients.get_many(conn, [i.patient_id for i in items if i.patient_id])
    out = []
    for item in items:
        patient = found.get(item.patient_id) if item.patient_id is not None else None
        out.append(
            InboxItemOut(
                id=item.id,
                clinic_id=item.clinic_id,
                patient=PatientRef(
                    id=patient.id, first_name=patient.first_name, last_name=patient.last_name
                )
                if patient is not None
                else None,
                reason=item.reason,
                urgent=item.urgent,
                danger_words=item.danger_words,
                from_number=_masked(item.from_number),
                text=item.body,
                received_at=item.received_at,
                created_at=item.created_at,
                handled_at=item.handled_at,
                handled_by=item.handled_by,
                note=item.note,
            )
        )
    return out


async def _audit_reads(conn: asyncpg.Connection, ctx: Ctx, items: list[InboxItem]) -> None:
    """One `messages.read` per patient (and one for unknown numbers) whose messages are shown."""
    by_patient: dict[int | None, list[InboxItem]] = {}
    for item in items:
        by_patient.setdefault(item.patient_id, []).append(item)
    for patient_id, shown in by_patient.items():
        await record(
            conn,
            ctx,
            action="messages.read",
            entity="inbox_item",
            entity_id=shown[0].id if len(shown) == 1 else None,
            patient_id=patient_id,
            details={
                "via": "inbox",
                "inbox_item_ids": [i.id for i in shown],
                "inbound_message_ids": [i.inbound_message_id for i in shown],
            },
        )


def _by_order(item: InboxItem) -> tuple[int, datetime, int]:
    """The inbox's keyset: urgent first (as 1), then created_at, then id."""
    return int(item.urgent), item.created_at, item.id


# -- reads -----------------------------------------------------------------------------------------


@API.route(
    "GET",
    "/api/v1/inbox",
    summary="The staff inbox: urgent first, then oldest",
    tag=TAG,
    roles=ALL_STAFF,
    query=InboxQuery,
    response=Page[InboxItemOut],
)
async def list_inbox(ctx: Ctx) -> Page[InboxItemOut]:
    """Open items by default (`status=handled` or `all` for the others), urgent first, then the
    oldest: the order to read them in. `urgent=true` lists urgent items only. Audited as
    `messages.read`."""
    query: InboxQuery = ctx.query
    after = query.after(int, datetime, int)

    async def work(conn: asyncpg.Connection) -> Page[InboxItemOut]:
        found = await inbox.list_page(
            conn,
            clinic_id=query.clinic_id,
            open_only=query.status == "open",
            handled_only=query.status == "handled",
            urgent_only=query.urgent,
            after=(bool(after[0]), after[1], after[2]) if after else None,
            limit=query.fetch,
        )
        shown = found[: query.limit]
        await _audit_reads(conn, ctx, shown)
        return Page[InboxItemOut](
            items=await _items_out(conn, shown),
            next_cursor=next_cursor(found, query.limit, _by_order),
        )

    return await in_transaction(ctx.pool, work)


@API.route(
    "GET",
    "/api/v1/inbox/{item_id}",
    summary="One inbox item with the message's text",
    tag=TAG,
    roles=ALL_STAFF,
    response=InboxItemOut,
)
async def get_inbox_item(ctx: Ctx) -> InboxItemOut:
    """The message as the patient wrote it, the number masked, the patient if matched. Audited
    as `messages.read`."""
    item_id = ctx.path["item_id"]

    async def work(conn: asyncpg.Connection) -> InboxItemOut:
        item = await inbox.get(conn, item_id)
        if item is None:
            raise not_found("inbox item", item_id)
        await _audit_reads(conn, ctx, [item])
        (out,) = await _items_out(conn, [item])
        return out

    return await in_transaction(ctx.pool, work)


# -- actions ---------------------------------------------------------------------------------------


@API.route(
    "POST",
    "/api/v1/inbox/{item_id}/handled",
    summary="Mark an inbox item handled, with a note",
    tag=TAG,
    roles=DESK,
    body=HandledBody,
    response=InboxItemOut,
    errors=(409,),
)
async def mark_inbox_item_handled(ctx: Ctx) -> InboxItemOut:
    """409 `already-handled` (with who and when) when someone handled it first. Audited as
    `inbox.handled` with the note."""
    body: HandledBody = ctx.body
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> InboxItemOut:
        item = await queues.mark_handled(conn, ctx.path["item_id"], note=body.note, change=change)
        (out,) = await _items_out(conn, [item])
        return out

    return await in_transaction(ctx.pool, work)


def _reply_location(body: Any) -> str:
    return f"/api/v1/messages/{body['message']['id']}"


@API.route(
    "POST",
    "/api/v1/inbox/{item_id}/reply",
    summary="Reply to the patient by SMS from the clinic's number",
    tag=TAG,
    roles=DESK,
    body=ReplyBody,
    response=ReplyResult,
    status=201,
    errors=(409,),
    idempotent=True,
    location=_reply_location,
)
async def reply_to_inbox_item(ctx: Ctx) -> BaseModel | web.Response:
    """Sends at once, whatever the hour (an answer to the patient's own message). 409 when the
    patient cannot be texted (`no-mobile`, `sms-opted-out`, `patient-erased`, `sms-country`);
    422 on `clinic_id` for a number no clinic has on file when it is not given. Closes the item
    unless `keep_open: true`. Audited as `inbox.reply`."""
    body: ReplyBody = ctx.body
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> ReplyResult:
        replied = await queues.reply(
            conn,
            ctx.path["item_id"],
            text=body.text,
            keep_open=body.keep_open,
            clinic_id=body.clinic_id,
            change=change,
        )
        (item,) = await _items_out(conn, [replied.item])
        return ReplyResult(item=item, message=await _detail(conn, replied.notification_id))

    return await idempotency.run(ctx, work, status=201)
