"""A completed session's record in the admin API: read it with its history, add it after the
completion (PUT), correct it (PUT for every value, PATCH for some). Clinicians and admins only:
the front desk never reads clinical fields. Completing a session with its record is the
complete action (`admin_appointment_actions`); the rules of a record are in
`services/booking/domain/session_records`.

Every write names a `reason` and keeps the earlier version in the record's append-only history
(who, when, what, why); the audit log gets `session_record.create` or `session_record.correct`
with the names of the fields that changed. A correction needs If-Match with the record's
version (its ETag). Every read is audited as a read of the patient's appointment.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, model_validator

from services.booking.api import API
from services.booking.api.admin_appointments import TAG, audit_reads, change_of
from services.booking.api.common import CLINICAL, or_not_found
from services.booking.api.fields import Reason
from services.booking.api.framework import Ctx
from services.booking.api.session_record_views import (
    RecordIn,
    RecordVersionOut,
    SessionRecordOut,
    record_out,
    version_out,
)
from services.booking.domain import session_records as domain
from shared.db.transactions import in_transaction
from shared.store import appointments, session_records
from shared.store.session_records import SessionRecord

PATH = "/api/v1/appointments/{appointment_id}/session-record"


class RecordPut(RecordIn):
    reason: Reason

    model_config = ConfigDict(json_schema_extra={"description": "every value of the record"})


class RecordPatch(RecordIn):
    """Only the fields sent change (null clears one); `reason` is required."""

    reason: Reason

    model_config = ConfigDict(json_schema_extra={"minProperties": 2})

    @model_validator(mode="after")
    def _something(self) -> RecordPatch:
        if not self.model_fields_set - {"reason"}:
            raise ValueError("send at least one field to correct, with the reason")
        return self


class SessionRecordWithHistory(BaseModel):
    record: SessionRecordOut
    history: list[RecordVersionOut]


def _optional_if_match(ctx: Ctx) -> int | None:
    return ctx.if_match() if "If-Match" in ctx.request.headers else None


async def _write(ctx: Ctx, **inputs: Any) -> SessionRecordOut:
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> SessionRecord:
        return await domain.write(conn, ctx.path["appointment_id"], change=change, **inputs)

    return record_out(await in_transaction(ctx.pool, work))


@API.route(
    "GET",
    PATH,
    summary="A session's record with every earlier version",
    tag=TAG,
    roles=CLINICAL,
    response=SessionRecordWithHistory,
)
async def get_session_record(ctx: Ctx) -> SessionRecordWithHistory:
    """404 when the session has no record. `history` lists every version, oldest first, with
    who wrote it, when and why. Audited as `appointment.read`."""
    appointment_id = ctx.path["appointment_id"]
    appointment = or_not_found(
        await appointments.get(ctx.pool, appointment_id), "appointment", appointment_id
    )
    saved = or_not_found(
        await session_records.for_appointment(ctx.pool, appointment_id),
        "session record of appointment",
        appointment_id,
    )
    history = await session_records.history(ctx.pool, appointment_id)
    await audit_reads(ctx, [appointment], via="session_record")
    return SessionRecordWithHistory(
        record=record_out(saved), history=[version_out(entry) for entry in history]
    )


@API.route(
    "PUT",
    PATH,
    summary="Add a completed session's record, or replace every value of it",
    tag=TAG,
    roles=CLINICAL,
    body=RecordPut,
    response=SessionRecordOut,
    errors=(409, 412),
)
async def put_session_record(ctx: Ctx) -> SessionRecordOut:
    """Adds the record of a completed session that has none (no If-Match needed), or replaces
    it: then If-Match must carry the record's version (409 `record-exists` without it, 412 when
    it moved on). 409 `not-completed` for a session that is not completed. The earlier values
    stay in the history."""
    body: RecordPut = ctx.body
    return await _write(
        ctx,
        fields=body.fields(),
        reason=body.reason,
        expected_version=_optional_if_match(ctx),
    )


@API.route(
    "PATCH",
    PATH,
    summary="Correct some values of a session's record",
    tag=TAG,
    roles=CLINICAL,
    body=RecordPatch,
    response=SessionRecordOut,
    errors=(409, 412, 428),
)
async def patch_session_record(ctx: Ctx) -> SessionRecordOut:
    """Needs If-Match with the record's version (428 without it). The corrected record is
    checked as a new one (a lot past its expiry is refused the same way); the earlier values
    stay in the history with the reason."""
    body: RecordPatch = ctx.body
    expected = ctx.if_match()
    sent = body.model_fields_set - {"reason"}
    changes = {name: getattr(body, name) for name in sent}
    return await _write(ctx, changes=changes, reason=body.reason, expected_version=expected)
