"""Treatment courses (series) in the admin API: list, one course with every session and the
health of its gaps, and changes to its plan notes and status.

Roles:

| endpoint                         | admin | front_desk        | clinician |
| -------------------------------- | ----- | ----------------- | --------- |
| list, one series (reads)         | yes   | yes               | yes       |
| PATCH status                     | yes   | yes               | yes       |
| PATCH plan_notes (clinical text) | yes   | no (403)          | yes       |

Reads are audited (`series.read`, one row per patient shown); PATCH needs If-Match. The front
desk reads courses without `plan_notes` and their sessions as the desk sees appointments (no
review reasons); clinicians and admins read everything.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from services.booking.api import API
from services.booking.api.admin_appointments import (
    AppointmentDeskOut,
    AppointmentOut,
    Zones,
    appointment_out,
    change_of,
)
from services.booking.api.common import ALL_STAFF, CLINICAL, Read, or_not_found, record_reads
from services.booking.api.fields import Body, Id, text
from services.booking.api.framework import ApiError, Ctx, invalid
from services.booking.api.move_views import GapOut, gap_out
from services.booking.api.pagination import Page, PageQuery
from services.booking.domain import courses, reschedule
from shared.db.transactions import in_transaction
from shared.scheduling import gaps
from shared.scheduling.loader import load_treatment
from shared.store import appointments
from shared.store import series as series_store
from shared.store.series import Series, SeriesStatus
from shared.store.staff_tokens import Role

TAG = "series"


class SeriesDeskOut(BaseModel):
    """A course as the front desk sees it: no `plan_notes` (clinical text)."""

    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})

    id: int
    clinic_id: int
    patient_id: int
    treatment_id: int
    planned_sessions: int
    status: SeriesStatus
    version: int
    created_at: datetime
    updated_at: datetime


class SeriesOut(SeriesDeskOut):
    plan_notes: str = Field(description="clinical text: clinicians and admins only")


GAP_BEFORE = Field(
    description="the gap from the previous counted session (None for the first, and for "
    "cancelled or missed sessions, which do not count)"
)


class SessionDeskOut(AppointmentDeskOut):
    gap_before: GapOut | None = GAP_BEFORE


class SessionOut(AppointmentOut):
    gap_before: GapOut | None = GAP_BEFORE


class _CourseFacts(BaseModel):
    treatment_name: str
    time_zone: str
    gaps: list[GapOut]
    below_minimum: list[str] = Field(description="gaps below the hard minimum (overridden)")
    warnings: list[str] = Field(description="gaps past the soft maximum")
    review_notes: list[str] = Field(description="gaps beyond twice the target")


class SeriesDeskDetail(_CourseFacts, SeriesDeskOut):
    sessions: list[SessionDeskOut] = Field(description="every appointment, in course order")


class SeriesDetail(_CourseFacts, SeriesOut):
    sessions: list[SessionOut] = Field(description="every appointment, in course order")


# What the front desk gets instead of the full detail.
DESK_DETAIL: dict[Role, type[BaseModel]] = {"front_desk": SeriesDeskDetail}


class SeriesQuery(PageQuery):
    patient_id: Id | None = None
    status: list[SeriesStatus] | None = Field(None, max_length=4, description="repeatable")


PlanNotes = text(5000)


class SeriesPatch(Body):
    plan_notes: PlanNotes | None = None
    status: SeriesStatus | None = None


def series_out(series: Series) -> SeriesOut:
    return SeriesOut.model_validate(series, from_attributes=True)


async def _audit_series_reads(ctx: Ctx, shown: list[Series], via: str) -> None:
    reads = [Read(s.id, s.patient_id, {"via": via}) for s in shown]
    await record_reads(ctx, action="series.read", entity="series", reads=reads)


@API.route(
    "GET",
    "/api/v1/series",
    summary="Treatment courses, filtered and paginated",
    tag=TAG,
    roles=ALL_STAFF,
    query=SeriesQuery,
    response=Page[SeriesOut],
    views={"front_desk": Page[SeriesDeskOut]},
)
async def list_series(ctx: Ctx) -> Page[SeriesOut]:
    """Filter by patient and status (repeat `status` for several); ordered by id."""
    query: SeriesQuery = ctx.query
    found = await series_store.list_page(
        ctx.pool,
        patient_id=query.patient_id,
        statuses=list(query.status) if query.status else None,
        after_id=query.after_id(),
        limit=query.fetch,
    )
    await _audit_series_reads(ctx, found[: query.limit], "list")
    return Page[SeriesOut].of(found, query.limit, series_out)


async def series_detail(ctx: Ctx, series: Series) -> SeriesDetail:
    treatment = await load_treatment(ctx.pool, series.treatment_id)
    assert treatment is not None  # a foreign key
    zone = await Zones(ctx).of(series.clinic_id)
    rows = await appointments.for_series(ctx.pool, series.id)
    sessions = [reschedule.session_of(a) for a in rows]
    all_gaps = gaps.course_gaps(sessions, treatment.gaps, zone)
    gap_before = {gap.later_id: gap_out(gap) for gap in all_gaps}
    return SeriesDetail(
        **series_out(series).model_dump(),
        treatment_name=treatment.name,
        time_zone=zone.key,
        sessions=[
            SessionOut(**appointment_out(a, zone).model_dump(), gap_before=gap_before.get(a.id))
            for a in rows
        ],
        gaps=[gap_out(g) for g in all_gaps],
        below_minimum=gaps.messages(all_gaps, gaps.BELOW_MINIMUM),
        warnings=gaps.messages(all_gaps, gaps.PAST_SOFT_MAXIMUM),
        review_notes=gaps.messages(all_gaps, gaps.NEEDS_CLINICIAN_REVIEW),
    )


@API.route(
    "GET",
    "/api/v1/series/{series_id}",
    summary="One course with every session, its gaps and warnings",
    tag=TAG,
    roles=ALL_STAFF,
    response=SeriesDetail,
    views=DESK_DETAIL,
)
async def get_series(ctx: Ctx) -> SeriesDetail:
    """Sessions in course order with local times; each counted session's gap to the one before,
    checked against the treatment's rules. The ETag is the series' version."""
    series_id = ctx.path["series_id"]
    series = or_not_found(await series_store.get(ctx.pool, series_id), "series", series_id)
    await _audit_series_reads(ctx, [series], "detail")
    return await series_detail(ctx, series)


@API.route(
    "PATCH",
    "/api/v1/series/{series_id}",
    summary="Change a course's plan notes or status",
    tag=TAG,
    roles=ALL_STAFF,
    body=SeriesPatch,
    response=SeriesDetail,
    views=DESK_DETAIL,
    errors=(409, 412, 428),
)
async def patch_series(ctx: Ctx) -> SeriesDetail:
    """Status moves between active and paused freely; completed and cancelled are final, and
    need every session off the books first (409 sessions-still-booked). Plan notes are clinical
    text: clinicians and admins only."""
    body: SeriesPatch = ctx.body
    assert ctx.staff is not None
    if body.plan_notes is None and body.status is None:
        raise invalid("(root)", "send plan_notes, status or both")
    if body.plan_notes is not None and ctx.staff.role not in CLINICAL:
        raise ApiError(403, "Forbidden", f"the {ctx.staff.role} role may not change plan notes")
    version = ctx.if_match()
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> Series:
        return await courses.update_series(
            conn,
            ctx.path["series_id"],
            plan_notes=body.plan_notes,
            status=body.status,
            expected_version=version,
            change=change,
        )

    updated = await in_transaction(ctx.pool, work)
    return await series_detail(ctx, updated)
