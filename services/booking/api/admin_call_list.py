"""The staff call list in the admin API: patients the front desk should phone, and why (an
appointment not confirmed 48 h before, a reply asking to reschedule, a cancellation asked for
inside the notice), and closing a task with what came of the call.

Roles: admin and front_desk (the desk makes the calls); clinicians do not use it.

Each entry shows the patient's name and mobile (masked: the desk dials from the patient's
record, and a list is not the place for every patient's number), the appointment's time in the
clinic's zone, the reason and its detail. Open tasks come first, oldest first; `status=done` or
`all` lists closed ones too.

Audit: a list writes `call_list.read` (one row per patient shown); closing a task writes
`call_task.done` with the outcome, in the change's transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_appointments import Zones, change_of
from services.booking.api.admin_inbox import PatientRef
from services.booking.api.admin_messages import mask_phone
from services.booking.api.common import DESK, Read, record_reads
from services.booking.api.fields import Body, Id, text
from services.booking.api.framework import Ctx
from services.booking.api.pagination import Page, PageQuery, next_cursor
from services.booking.domain import queues
from shared.db.transactions import in_transaction
from shared.domain.appointment_states import Status
from shared.store import appointments, call_tasks, patients
from shared.store.call_tasks import CallReason, CallTask

TAG = "call-list"

CallStatus = Literal["open", "done", "all"]
Outcome = text(1000, min_length=1, description="what came of the call, for the record")


class CallAppointment(BaseModel):
    id: int
    status: Status
    starts_at: datetime = Field(description="UTC")
    starts_local: datetime = Field(description="in the clinic's zone, with its offset")
    local_date: date
    local_time: str = Field(pattern=r"^\d{2}:\d{2}$", description="HH:MM in the clinic's zone")
    time_zone: str


class CallTaskOut(BaseModel):
    id: int
    clinic_id: int
    patient: PatientRef
    mobile: str | None = Field(description="masked; null when none is on file")
    appointment: CallAppointment | None
    reason: CallReason = Field(
        description="not_confirmed (asked, not confirmed in time), reschedule_requested (replied "
        "R, or R to a proposal), cancel_inside_notice (replied X too late), gap_overdue (a "
        "course's next session is overdue; the appointment is the last completed session) or "
        "proposal_unanswered (a proposed next session was released unanswered), "
        "check_in_unanswered (an aftercare check-in was asked and nudged, no answer) or "
        "check_in_no_channel (a check-in is due and the patient can be neither texted nor "
        "emailed)"
    )
    detail: str
    inbound_message_id: int | None = Field(description="the SMS that asked for the call")
    created_at: datetime
    done_at: datetime | None
    done_by: str | None
    outcome: str | None


class CallListQuery(PageQuery):
    clinic_id: Id | None = None
    status: CallStatus = Field("open", description="open (default), done or all")


class DoneBody(Body):
    outcome: Outcome


async def _tasks_out(
    ctx: Ctx, conn: asyncpg.Connection, tasks: list[CallTask]
) -> list[CallTaskOut]:
    found = await patients.get_many(conn, [t.patient_id for t in tasks])
    named = [t.appointment_id for t in tasks if t.appointment_id is not None]
    booked = await appointments.get_many(conn, named)
    zones = Zones(ctx)
    out = []
    for task in tasks:
        patient = found[task.patient_id]
        appointment = booked.get(task.appointment_id) if task.appointment_id else None
        when = None
        if appointment is not None:
            zone = await zones.of(appointment.clinic_id)
            local = appointment.starts_at.astimezone(zone)
            when = CallAppointment(
                id=appointment.id,
                status=appointment.status,
                starts_at=appointment.starts_at,
                starts_local=local,
                local_date=local.date(),
                local_time=f"{local:%H:%M}",
                time_zone=zone.key,
            )
        out.append(
            CallTaskOut(
                id=task.id,
                clinic_id=task.clinic_id,
                patient=PatientRef(
                    id=patient.id, first_name=patient.first_name, last_name=patient.last_name
                ),
                mobile=mask_phone(patient.mobile) if patient.mobile else None,
                appointment=when,
                reason=task.reason,
                detail=task.detail,
                inbound_message_id=task.inbound_message_id,
                created_at=task.created_at,
                done_at=task.done_at,
                done_by=task.done_by,
                outcome=task.outcome,
            )
        )
    return out


def _by_created(task: CallTask) -> tuple[datetime, int]:
    return task.created_at, task.id


@API.route(
    "GET",
    "/api/v1/call-list",
    summary="The call list: open tasks, oldest first",
    tag=TAG,
    roles=DESK,
    query=CallListQuery,
    response=Page[CallTaskOut],
)
async def list_call_tasks(ctx: Ctx) -> Page[CallTaskOut]:
    """Whom to phone and why, with the appointment's local time. Audited as `call_list.read`."""
    query: CallListQuery = ctx.query
    after = query.after(datetime, int)
    found = await call_tasks.list_page(
        ctx.pool,
        clinic_id=query.clinic_id,
        open_only=query.status == "open",
        done_only=query.status == "done",
        after=(after[0], after[1]) if after else None,
        limit=query.fetch,
    )
    shown = found[: query.limit]
    by_patient: dict[int, list[int]] = {}
    for task in shown:
        by_patient.setdefault(task.patient_id, []).append(task.id)
    reads = [
        Read(ids[0] if len(ids) == 1 else None, patient_id, {"call_task_ids": ids})
        for patient_id, ids in by_patient.items()
    ]
    await record_reads(ctx, action="call_list.read", entity="call_task", reads=reads)
    async with ctx.pool.acquire() as conn:
        items = await _tasks_out(ctx, conn, shown)
    return Page[CallTaskOut](items=items, next_cursor=next_cursor(found, query.limit, _by_created))


@API.route(
    "POST",
    "/api/v1/call-list/{task_id}/done",
    summary="Close a call-list task with the call's outcome",
    tag=TAG,
    roles=DESK,
    body=DoneBody,
    response=CallTaskOut,
    errors=(409,),
)
async def mark_call_task_done(ctx: Ctx) -> CallTaskOut:
    """409 `already-done` when someone closed it first. Audited as `call_task.done`."""
    body: DoneBody = ctx.body
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> CallTaskOut:
        task_id = ctx.path["task_id"]
        done = await queues.call_done(conn, task_id, outcome=body.outcome, change=change)
        (out,) = await _tasks_out(ctx, conn, [done])
        return out

    return await in_transaction(ctx.pool, work)
