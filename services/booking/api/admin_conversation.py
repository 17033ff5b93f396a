"""A patient's conversation in the admin API: what we sent and what they sent back, in one
time order.

Roles: every staff role reads it (admin, front_desk, clinician).

Outbound entries are the patient's messages as `GET /api/v1/patients/{id}/messages` shows them
(kind, channel, status, times, the recipient masked), never their text: it is rendered at send
time and not kept (see admin_messages). A message stands at the time it went, or, until it
goes, at the time it is due (which quiet hours may still move). Inbound entries are the
patient's SMS: the text as written, what the reply handler made of it (`handled_as`) and the
answer it gave. They are the messages linked to the patient, and those from the patient's
mobile that nobody's record claims (as an access request finds them).

Oldest first; keyset-paginated like every list. Audited as `messages.read` (via
`conversation`), also when the conversation is empty.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_messages import MessageOut, message_out
from services.booking.api.common import ALL_STAFF, record
from services.booking.api.framework import Ctx, not_found
from services.booking.api.pagination import Page, PageQuery, next_cursor
from shared.db.transactions import in_transaction
from shared.store import inbound_messages, notifications, patients
from shared.store.inbound_messages import ConversationReply
from shared.store.notifications.views import MessageView, conversation_time

TAG = "messages"

Direction = Literal["outbound", "inbound"]
# Within one instant, what we sent comes before what came back.
_RANK: dict[Direction, int] = {"outbound": 0, "inbound": 1}


class InboundOut(BaseModel):
    id: int
    text: str = Field(description="the SMS as the patient wrote it")
    received_at: datetime
    handled_as: str | None = Field(
        description="what the reply handler made of it: confirmed, cancelled, opted_out, "
        "inbox..., null before it was handled"
    )
    answer: str | None = Field(description="the answer sent back in the same exchange")


class ConversationEntry(BaseModel):
    direction: Direction
    at: datetime = Field(description="sent (or due, until sent) / received")
    message: MessageOut | None = Field(description="outbound: the message, never its text")
    reply: InboundOut | None = Field(description="inbound: the patient's SMS")


Entry = tuple[datetime, int, int, MessageView | ConversationReply]


def _key(entry: Entry) -> tuple[datetime, int, int]:
    return entry[0], entry[1], entry[2]


def _entry_out(entry: Entry) -> ConversationEntry:
    at, _, _, row = entry
    if isinstance(row, MessageView):
        return ConversationEntry(direction="outbound", at=at, message=message_out(row), reply=None)
    reply = InboundOut(
        id=row.id,
        text=row.body,
        received_at=row.received_at,
        handled_as=row.handled_as,
        answer=row.answer,
    )
    return ConversationEntry(direction="inbound", at=at, message=None, reply=reply)


def _after_for(rank: int, after: list[int | datetime] | None) -> tuple[datetime, int] | None:
    """The (time, id) keyset one source continues after, from the merged cursor (time, rank,
    id): a source ranked after the cursor's takes the cursor's instant again from its first id,
    one ranked before it starts after that instant."""
    if after is None:
        return None
    at, cursor_rank, ident = after
    assert isinstance(at, datetime) and isinstance(cursor_rank, int) and isinstance(ident, int)
    if rank == cursor_rank:
        return at, ident
    return (at, 0) if rank > cursor_rank else (at, 2**63 - 1)


@API.route(
    "GET",
    "/api/v1/patients/{patient_id}/conversation",
    summary="A patient's messages and SMS replies, in time order",
    tag=TAG,
    roles=ALL_STAFF,
    query=PageQuery,
    response=Page[ConversationEntry],
)
async def get_conversation(ctx: Ctx) -> Page[ConversationEntry]:
    """What we sent (never the text) and what the patient sent back (their words, what was
    made of them, the answer given), oldest first. Audited as `messages.read`."""
    query: PageQuery = ctx.query
    patient_id = ctx.path["patient_id"]
    after = query.after(datetime, int, int)

    async def work(conn: asyncpg.Connection) -> Page[ConversationEntry]:
        patient = await patients.get(conn, patient_id)
        if patient is None:
            raise not_found("patient", patient_id)
        sent = await notifications.views.conversation_page(
            conn, patient_id, after=_after_for(_RANK["outbound"], after), limit=query.fetch
        )
        received = await inbound_messages.conversation_page(
            conn,
            patient_id,
            patient.mobile,
            after=_after_for(_RANK["inbound"], after),
            limit=query.fetch,
        )
        entries: list[Entry] = [(conversation_time(m), 0, m.id, m) for m in sent]
        entries += [(r.received_at, 1, r.id, r) for r in received]
        entries.sort(key=_key)
        entries = entries[: query.fetch]
        shown = entries[: query.limit]
        await record(
            conn,
            ctx,
            action="messages.read",
            entity="patient",
            entity_id=patient_id,
            patient_id=patient_id,
            details={
                "via": "conversation",
                "notification_ids": [e[2] for e in shown if e[1] == 0],
                "inbound_message_ids": [e[2] for e in shown if e[1] == 1],
            },
        )
        return Page[ConversationEntry](
            items=[_entry_out(e) for e in shown],
            next_cursor=next_cursor(entries, query.limit, _key),
        )

    return await in_transaction(ctx.pool, work)
