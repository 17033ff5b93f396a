"""The clinician review queue in the admin API: active appointments flagged for review (by the
screening answers, by what a booking form said, by a long gap in a course), grouped by patient
and course, and clearing the flag for a whole course in one audited action.

Roles: admin and clinician (the reasons quote screening answers: clinical text). The front desk
sees `needs_review` on each appointment, not why.

A group is one patient's flagged sessions of one course (`series_id`), or their flagged
appointments outside any course (`series_id` null); groups come soonest first (by their earliest
flagged session). Only active sessions count (booked, confirmed, checked in): a cancelled or
past one needs no review. Clearing a course (`POST /api/v1/series/{id}/review`) clears every
flagged active session of it with one note, in one transaction: one `appointment.review` audit
row per session and one `series.review` for the course. Reading the queue writes
`appointment.read` (via `review_queue`, one row per patient).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_appointment_actions import ReviewBody
from services.booking.api.admin_appointments import (
    AppointmentOut,
    Zones,
    appointment_out,
    audit_reads,
    change_of,
)
from services.booking.api.admin_inbox import PatientRef
from services.booking.api.common import CLINICAL
from services.booking.api.fields import Id
from services.booking.api.framework import Ctx
from services.booking.api.pagination import Page, PageQuery, next_cursor
from services.booking.domain import queues
from shared.db.transactions import in_transaction
from shared.store import appointments, patients
from shared.store.appointments import Appointment, ReviewGroup

TAG = "review-queue"


class ReviewGroupOut(BaseModel):
    patient: PatientRef
    series_id: int | None = Field(description="the course; null: sessions outside any course")
    first_start: datetime = Field(description="the earliest flagged session's start (UTC)")
    appointments: list[AppointmentOut] = Field(description="the flagged sessions, by start")


class ReviewQueueQuery(PageQuery):
    clinic_id: Id | None = None


class CourseReviewed(BaseModel):
    series_id: int
    cleared: list[AppointmentOut] = Field(description="the sessions whose flag was cleared")


def _by_group(group: ReviewGroup) -> tuple[datetime, int, int]:
    return group.first_start, group.patient_id, group.series_id or 0


@API.route(
    "GET",
    "/api/v1/review-queue",
    summary="Appointments awaiting clinician review, by patient and course",
    tag=TAG,
    roles=CLINICAL,
    query=ReviewQueueQuery,
    response=Page[ReviewGroupOut],
)
async def list_review_queue(ctx: Ctx) -> Page[ReviewGroupOut]:
    """Each group is a patient's flagged active sessions of one course (or outside any), with
    their review reasons; soonest first. Audited as `appointment.read`."""
    query: ReviewQueueQuery = ctx.query
    after = query.after(datetime, int, int)
    async with ctx.pool.acquire() as conn:
        groups = await appointments.review_groups(
            conn,
            clinic_id=query.clinic_id,
            after=(after[0], after[1], after[2]) if after else None,
            limit=query.fetch,
        )
        shown = groups[: query.limit]
        patient_ids = sorted({g.patient_id for g in shown})
        flagged = await appointments.flagged_for_patients(conn, patient_ids)
        found = await patients.get_many(conn, patient_ids)
    sessions: dict[tuple[int, int], list[Appointment]] = {}
    for appointment in flagged:
        assert appointment.patient_id is not None
        sessions.setdefault((appointment.patient_id, appointment.series_id or 0), []).append(
            appointment
        )
    zones = Zones(ctx)
    items = []
    listed: list[Appointment] = []
    for group in shown:
        patient = found[group.patient_id]
        members = sessions.get((group.patient_id, group.series_id or 0), [])
        listed += members
        items.append(
            ReviewGroupOut(
                patient=PatientRef(
                    id=patient.id, first_name=patient.first_name, last_name=patient.last_name
                ),
                series_id=group.series_id,
                first_start=group.first_start,
                appointments=[appointment_out(a, await zones.of(a.clinic_id)) for a in members],
            )
        )
    await audit_reads(ctx, listed, via="review_queue")
    cursor = next_cursor(groups, query.limit, _by_group)
    return Page[ReviewGroupOut](items=items, next_cursor=cursor)


@API.route(
    "POST",
    "/api/v1/series/{series_id}/review",
    summary="Clear the review flag of every flagged session of a course",
    tag=TAG,
    roles=CLINICAL,
    body=ReviewBody,
    response=CourseReviewed,
    errors=(409,),
)
async def review_course(ctx: Ctx) -> CourseReviewed:
    """One note for the whole course; every flagged active session is cleared in one
    transaction (check-in is possible again). 409 `nothing-to-review` when none is flagged.
    Audited as `appointment.review` per session and `series.review` for the course."""
    body: ReviewBody = ctx.body
    series_id = ctx.path["series_id"]
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> list[Appointment]:
        return await queues.review_course(conn, series_id, note=body.note, change=change)

    cleared = await in_transaction(ctx.pool, work)
    zones = Zones(ctx)
    return CourseReviewed(
        series_id=series_id,
        cleared=[appointment_out(a, await zones.of(a.clinic_id)) for a in cleared],
    )
