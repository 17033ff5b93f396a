"""Aftercare check-ins for staff: a session's check-ins with their answers and tiers, and the
answer a patient gave by phone (a call-list task of reason `check_in_unanswered` or
`check_in_no_channel`), recorded by the same function as an SMS reply or an emailed link
(shared.domain.check_ins.record_answer), so it gets the same tier.

Roles: every staff role (the front desk makes the calls). Reads are audited as
`check_ins.read` with the patient.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_appointments import change_of
from services.booking.api.common import (
    ALL_STAFF,
    CLINICAL,
    Read,
    or_not_found,
    record,
    record_reads,
    write,
)
from services.booking.api.fields import Body, text
from services.booking.api.framework import Ctx
from shared.domain import check_ins as check_in_domain
from shared.domain.errors import Conflict
from shared.store import appointments, check_ins
from shared.store.check_ins import CheckIn

TAG = "check-ins"
TierName = Literal["fine", "routine", "urgent", "emergency"]


class CheckInAnswerOption(BaseModel):
    digit: int
    label: str
    tier: TierName


class CheckInOut(BaseModel):
    id: int
    patient_id: int
    appointment_id: int
    position: int
    question: str
    answers: list[CheckInAnswerOption]
    due_at: datetime
    channel: Literal["sms", "email", "call"] = Field(description="call: nobody may be written to")
    status: Literal["planned", "sent", "nudged", "answered", "called", "cancelled"]
    sent_at: datetime | None
    nudged_at: datetime | None
    answer_text: str | None
    answer_digit: int | None
    tier: TierName | None
    answered_at: datetime | None
    answered_via: Literal["sms", "email", "staff"] | None
    call_task_id: int | None


class SessionCheckIns(BaseModel):
    """Every check-in of one session (four at most by default: not paginated)."""

    appointment_id: int
    check_ins: list[CheckInOut]


AnswerText = text(
    1000,
    min_length=1,
    description="what the patient said: the number of one of the question's answers, or words",
)


class StaffAnswer(Body):
    answer: AnswerText


def _out(row: CheckIn) -> CheckInOut:
    data: dict[str, Any] = {
        k: getattr(row, k) for k in CheckInOut.model_fields if k not in ("answers",)
    }
    data["answers"] = [
        CheckInAnswerOption(digit=a.digit, label=a.label, tier=a.tier) for a in row.answers
    ]
    return CheckInOut(**data)


@API.route(
    "GET",
    "/api/v1/appointments/{appointment_id}/check-ins",
    summary="A completed session's aftercare check-ins, with answers and tiers",
    tag=TAG,
    roles=CLINICAL,
    response=SessionCheckIns,
    errors=(404,),
)
async def list_check_ins(ctx: Ctx) -> SessionCheckIns:
    """Clinicians and admins: what a patient answered about their health after a session is a
    clinical field, which the front desk never reads (it sees the call tasks that follow)."""
    appointment_id = ctx.path["appointment_id"]
    appointment = or_not_found(
        await appointments.get(ctx.pool, appointment_id), "appointment", appointment_id
    )
    rows = await check_ins.for_appointment(ctx.pool, appointment_id)
    await record_reads(
        ctx,
        action="check_ins.read",
        entity="appointment",
        reads=[Read(appointment_id, appointment.patient_id, {"check_ins": [r.id for r in rows]})],
    )
    return SessionCheckIns(appointment_id=appointment_id, check_ins=[_out(r) for r in rows])


@API.route(
    "POST",
    "/api/v1/check-ins/{check_in_id}/answer",
    summary="Record the answer a patient gave by phone",
    tag=TAG,
    roles=ALL_STAFF,
    body=StaffAnswer,
    response=CheckInOut,
    errors=(404, 409),
)
async def answer_check_in(ctx: Ctx) -> CheckInOut:
    """The answer gets its tier as an SMS reply would (a number of the question's answers takes
    that answer's tier; words are read for danger signs; other words are routine). A check-in
    answered already is a 409: the first answer stands."""
    check_in_id = ctx.path["check_in_id"]
    body: StaffAnswer = ctx.body

    async def work(conn: asyncpg.Connection) -> CheckInOut:
        found = or_not_found(await check_ins.lock(conn, check_in_id), "check-in", check_in_id)
        triage = await check_in_domain.record_answer(
            conn, found, body.answer, "staff", change_of(ctx)
        )
        if triage is None:
            raise Conflict(
                "this check-in was answered already (or cancelled)", code="check-in-closed"
            )
        after = await check_ins.get(conn, check_in_id)
        assert after is not None
        await record(
            conn,
            ctx,
            action="check_in.answer",
            entity="check_in",
            entity_id=check_in_id,
            patient_id=found.patient_id,
            details={"tier": triage.tier, "via": "staff"},
        )
        return _out(after)

    answered: CheckInOut = await write(ctx, work)
    return answered
