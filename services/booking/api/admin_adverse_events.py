"""Adverse events in the admin API: the list (filters: status, tier, clinic, patient, date range,
lot number) and its CSV export for a safety review, one event with its history, opening one
from a phone call, and the clinician's changes: acknowledge, grade and seriousness, resolve with
notes, clear the patient's next session.

Roles (design.md: "front desk never sees clinical fields"):

| endpoint                                | admin | front_desk                  | clinician |
| --------------------------------------- | ----- | --------------------------- | --------- |
| list, one event                         | yes   | no clinical fields, history | yes       |
| open from a phone call                  | yes   | yes, no grade (403)         | yes       |
| acknowledge, grade/seriousness, resolve | yes   | no                          | yes       |
| clear for the next session              | no    | no                          | yes       |
| CSV export                              | yes   | no                          | yes       |

The desk takes the patient's call and opens the event (it needs to know an event exists and
holds the next session, not what it is); grading, resolving and clearing are clinical
judgement; clearing a patient to be treated again is the clinician's alone.

Every change takes `If-Match` with the version last read (428 without, 412 when stale, with
the current ETag), appends a history row (who, when, which fields from what to what, why) and
an audit row (`adverse_event.<action>`) in its own transaction. Reads are audited
(`adverse_event.read`, one row per patient shown).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.admin_appointments import change_of
from services.booking.api.admin_inbox import PatientRef
from services.booking.api.common import (
    ALL_STAFF,
    CLINICAL,
    Read,
    check_span,
    record,
    record_reads,
)
from services.booking.api.fields import (
    Body,
    Id,
    Instant,
    LongText,
    Query,
    Reason,
    optional,
    text,
)
from services.booking.api.framework import ApiError, Ctx
from services.booking.api.pagination import Page, PageQuery, next_cursor
from shared.db.transactions import in_transaction
from shared.domain import adverse_events as domain
from shared.domain.errors import NotFound
from shared.store import adverse_events, patients
from shared.store.adverse_events import (
    AdverseEvent,
    EventFilter,
    EventStatus,
    Seriousness,
    Tier,
)
from shared.store.staff_tokens import Role

TAG = "adverse-events"
BASE = "/api/v1/adverse-events"
ERRORS = (409, 412, 428)
Note = text(2000, min_length=1)
Lot = text(100, min_length=1)
ClinicianOnly: tuple[Role, ...] = ("clinician",)


# -- output models ---------------------------------------------------------------------------------


class HistoryOut(BaseModel):
    at: datetime
    actor: str
    action: str = Field(description="open, hold, acknowledge, assess, resolve, clear")
    changes: list[dict[str, Any]] = Field(description='[{"field", "from", "to"}]')
    reason: str


class EventDeskOut(BaseModel):
    """What the front desk sees: that an event exists, whose, and whether it holds the next
    session; no symptoms, tier, grade or notes."""

    id: int
    clinic_id: int
    patient: PatientRef
    appointment_id: int | None
    source: str
    status: EventStatus
    holds_next_session: bool = Field(description="check-in is refused until a clinician clears it")
    created_at: datetime
    version: int


class EventOut(EventDeskOut):
    check_in_id: int | None
    inbound_message_id: int | None
    lot_number: str | None
    symptoms: str
    tier: Tier
    grade: int | None = Field(description="1 mild .. 5 death; set by a clinician")
    grade_name: str | None
    seriousness: Seriousness
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_notes: str | None
    cleared_at: datetime | None
    cleared_by: str | None
    clearance_reason: str | None
    hold_started_at: datetime | None
    created_by: str
    updated_at: datetime


class EventDeskDetail(EventDeskOut):
    pass


class EventDetail(EventOut):
    history: list[HistoryOut]


DESK_DETAIL: dict[Role, type[BaseModel]] = {"front_desk": EventDeskDetail}


def event_out(event: AdverseEvent, patient: PatientRef) -> EventOut:
    return EventOut(
        id=event.id,
        clinic_id=event.clinic_id,
        patient=patient,
        appointment_id=event.appointment_id,
        source=event.source,
        status=event.status,
        holds_next_session=event.holds_next_session,
        created_at=event.created_at,
        version=event.version,
        check_in_id=event.check_in_id,
        inbound_message_id=event.inbound_message_id,
        lot_number=event.lot_number,
        symptoms=event.symptoms,
        tier=event.tier,
        grade=event.grade,
        grade_name=adverse_events.GRADE_NAMES.get(event.grade) if event.grade else None,
        seriousness=event.seriousness,
        acknowledged_at=event.acknowledged_at,
        acknowledged_by=event.acknowledged_by,
        resolved_at=event.resolved_at,
        resolved_by=event.resolved_by,
        resolution_notes=event.resolution_notes,
        cleared_at=event.cleared_at,
        cleared_by=event.cleared_by,
        clearance_reason=event.clearance_reason,
        hold_started_at=event.hold_started_at,
        created_by=event.created_by,
        updated_at=event.updated_at,
    )


async def _patient_refs(
    db: asyncpg.Pool | asyncpg.Connection, ids: list[int]
) -> dict[int, PatientRef]:
    found = await patients.get_many(db, ids)
    return {
        i: PatientRef(id=p.id, first_name=p.first_name, last_name=p.last_name)
        for i, p in found.items()
    }


async def _detail(ctx: Ctx, event: AdverseEvent) -> EventDetail:
    refs = await _patient_refs(ctx.pool, [event.patient_id])
    history = await adverse_events.history(ctx.pool, event.id)
    out = event_out(event, refs[event.patient_id])
    return EventDetail(
        **out.model_dump(),
        history=[
            HistoryOut(at=h.at, actor=h.actor, action=h.action, changes=h.changes, reason=h.reason)
            for h in history
        ],
    )


def _clinical(ctx: Ctx) -> bool:
    return ctx.staff is not None and ctx.staff.role in CLINICAL


async def _audit_read(ctx: Ctx, events: list[AdverseEvent], via: str) -> None:
    await record_reads(
        ctx,
        action="adverse_event.read",
        entity="adverse_event",
        reads=[Read(e.id, e.patient_id, {"via": via, "clinical": _clinical(ctx)}) for e in events],
    )


# -- queries and bodies ----------------------------------------------------------------------------


class _Filters(BaseModel):
    status: EventStatus | None = optional()
    tier: Tier | None = optional()
    clinic_id: Id | None = optional()
    patient_id: Id | None = optional()
    lot_number: Lot | None = optional()
    since: Instant | None = optional(description="created at or after (ISO 8601 with offset)")
    until: Instant | None = optional(description="created before")

    def where(self) -> EventFilter:
        check_span(self.since, self.until)
        return EventFilter(
            status=self.status,
            tier=self.tier,
            clinic_id=self.clinic_id,
            patient_id=self.patient_id,
            lot_number=self.lot_number,
            since=self.since,
            until=self.until,
        )


class EventListQuery(PageQuery, _Filters):
    pass


class ExportQuery(Query, _Filters):
    pass


class PhoneReportBody(Body):
    clinic_id: Id
    patient_id: Id
    appointment_id: Id | None = Field(None, description="the session it followed")
    symptoms: LongText = Field(min_length=1, description="what the patient reported")
    tier: Tier
    source: str = Field("phone", pattern=r"^(phone|staff|email|sms)$")
    lot_number: Lot | None = None
    grade: int | None = Field(
        None, ge=1, le=5, description="clinician or admin only (403 for the front desk)"
    )
    grade_reason: Reason | None = Field(None, description="why this grade; with grade")


class NoteBody(Body):
    note: Note


class AssessBody(Body):
    grade: int | None = Field(None, ge=1, le=5, description="1 mild .. 5 death")
    seriousness: Seriousness | None = None
    reason: Reason = Field(description="why, for the history")


class ResolveBody(Body):
    notes: Note


class ClearBody(Body):
    reason: Reason = Field(description="why the next session may go ahead; logged")


# -- reads -----------------------------------------------------------------------------------------


@API.route(
    "GET",
    BASE,
    summary="Adverse events, newest first",
    tag=TAG,
    roles=ALL_STAFF,
    query=EventListQuery,
    response=Page[EventOut],
    views={"front_desk": Page[EventDeskOut]},
)
async def list_adverse_events(ctx: Ctx) -> Page[EventOut]:
    """Filter by status, tier, clinic, patient, lot number and creation time (`since`,
    `until`). The front desk sees no clinical fields. Audited as `adverse_event.read`."""
    query: EventListQuery = ctx.query
    after = query.after(datetime, int)
    found = await adverse_events.list_page(
        ctx.pool,
        query.where(),
        after=(after[0], after[1]) if after else None,
        limit=query.fetch,
    )
    shown = found[: query.limit]
    refs = await _patient_refs(ctx.pool, [e.patient_id for e in shown])
    await _audit_read(ctx, shown, "list")
    return Page(
        items=[event_out(e, refs[e.patient_id]) for e in shown],
        next_cursor=next_cursor(found, query.limit, lambda e: (e.created_at, e.id)),
    )


@API.route(
    "GET",
    BASE + "/{event_id}",
    summary="One adverse event with its history",
    tag=TAG,
    roles=ALL_STAFF,
    response=EventDetail,
    views=DESK_DETAIL,
)
async def get_adverse_event(ctx: Ctx) -> EventDetail:
    """The event and every change of it (who, when, what, why). Audited."""
    event_id = ctx.path["event_id"]
    event = await adverse_events.get(ctx.pool, event_id)
    if event is None:
        raise NotFound("adverse event", event_id)
    await _audit_read(ctx, [event], "one")
    return await _detail(ctx, event)


_CSV_COLUMNS = (
    "id",
    "clinic_id",
    "patient_id",
    "appointment_id",
    "lot_number",
    "created_at",
    "source",
    "tier",
    "grade",
    "seriousness",
    "status",
    "symptoms",
    "acknowledged_at",
    "resolved_at",
    "resolution_notes",
    "cleared_at",
    "cleared_by",
    "clearance_reason",
)


def _cell(value: Any) -> str:
    if value is None:
        text_value = ""
    elif isinstance(value, datetime):
        text_value = value.isoformat()
    else:
        text_value = str(value)
    # A spreadsheet runs a cell starting with these as a formula (CSV injection).
    if text_value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text_value
    return text_value


@API.route(
    "GET",
    "/api/v1/adverse-events.csv",
    summary="Adverse events as CSV for a safety review",
    tag=TAG,
    roles=CLINICAL,
    query=ExportQuery,
    response=None,
)
async def export_adverse_events(ctx: Ctx) -> web.Response:
    """text/csv, one row per event (oldest last), with the list's filters; patient ids, not
    names. Audited as `adverse_event.export` with the filters and how many rows."""
    query: ExportQuery = ctx.query
    where = query.where()
    events: list[AdverseEvent] = []
    after: tuple[datetime, int] | None = None
    while True:
        batch = await adverse_events.list_page(ctx.pool, where, after=after, limit=500)
        events.extend(batch)
        if len(batch) < 500:
            break
        after = (batch[-1].created_at, batch[-1].id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(_CSV_COLUMNS)
    for event in events:
        writer.writerow([_cell(getattr(event, c)) for c in _CSV_COLUMNS])

    async def audit(conn: asyncpg.Connection) -> None:
        await record(
            conn,
            ctx,
            action="adverse_event.export",
            entity="adverse_event",
            entity_id=None,
            details={
                "filters": query.model_dump(mode="json", exclude_none=True),
                "rows": len(events),
                "adverse_event_ids": [e.id for e in events],
            },
        )

    await in_transaction(ctx.pool, audit)
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="adverse-events.csv"'},
    )


# -- writes ----------------------------------------------------------------------------------------


@API.route(
    "POST",
    BASE,
    summary="Open an adverse event from a phone call",
    tag=TAG,
    roles=ALL_STAFF,
    body=PhoneReportBody,
    response=EventDetail,
    status=201,
    views=DESK_DETAIL,
    errors=(409,),
    location=BASE + "/{id}",
)
async def open_adverse_event(ctx: Ctx) -> EventDetail:
    """The patient (or someone for them) phoned about a reaction: staff record what was said
    and the tier. A grade may come with it from a clinician or admin (`grade_reason` says why);
    the front desk cannot grade (403). Routine: on the call list for the next business day;
    emergency: the patient's next session is held at once."""
    body: PhoneReportBody = ctx.body
    if body.grade is not None and not _clinical(ctx):
        raise ApiError(
            403, "Forbidden", "grade: only a clinician or admin grades an event", type_="forbidden"
        )
    if body.grade_reason is not None and body.grade is None:
        raise ApiError(
            422,
            "Unprocessable Content",
            "grade_reason: only with a grade",
            type_="validation",
            errors=[{"in": "body", "path": "grade_reason", "message": "only with a grade"}],
        )
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> AdverseEvent:
        event = await domain.report(
            conn,
            clinic_id=body.clinic_id,
            patient_id=body.patient_id,
            appointment_id=body.appointment_id,
            tier=body.tier,
            symptoms=body.symptoms,
            source=body.source,
            change=change,
            lot_number=body.lot_number,
        )
        if body.grade is not None:
            event = await domain.assess(
                conn,
                event.id,
                grade=body.grade,
                seriousness=None,
                reason=body.grade_reason or "graded when the call was taken",
                expected_version=event.version,
                change=change,
            )
        return event

    return await _detail(ctx, await in_transaction(ctx.pool, work))


async def _act(ctx: Ctx, action: Any, **inputs: Any) -> EventDetail:
    version = ctx.if_match()
    change = change_of(ctx)

    async def work(conn: asyncpg.Connection) -> AdverseEvent:
        event: AdverseEvent = await action(
            conn, ctx.path["event_id"], **inputs, expected_version=version, change=change
        )
        return event

    return await _detail(ctx, await in_transaction(ctx.pool, work))


@API.route(
    "POST",
    BASE + "/{event_id}/acknowledge",
    summary="Acknowledge an adverse event",
    tag=TAG,
    roles=CLINICAL,
    body=NoteBody,
    response=EventDetail,
    errors=ERRORS,
)
async def acknowledge_adverse_event(ctx: Ctx) -> EventDetail:
    """open → acknowledged (someone is on it), with a note. 409 `not-open` otherwise."""
    body: NoteBody = ctx.body
    return await _act(ctx, domain.acknowledge, note=body.note)


@API.route(
    "POST",
    BASE + "/{event_id}/assess",
    summary="Set or correct the grade and seriousness",
    tag=TAG,
    roles=CLINICAL,
    body=AssessBody,
    response=EventDetail,
    errors=ERRORS,
)
async def assess_adverse_event(ctx: Ctx) -> EventDetail:
    """Grade 1 mild, 2 moderate, 3 severe, 4 life-threatening, 5 death; seriousness
    not_serious, possibly_serious or serious. Graded 3 or above, the event holds the patient's
    next session (flagged for review, the patient asked to call, check-in refused) until a
    clinician clears it."""
    body: AssessBody = ctx.body
    return await _act(
        ctx, domain.assess, grade=body.grade, seriousness=body.seriousness, reason=body.reason
    )


@API.route(
    "POST",
    BASE + "/{event_id}/resolve",
    summary="Resolve an adverse event with notes",
    tag=TAG,
    roles=CLINICAL,
    body=ResolveBody,
    response=EventDetail,
    errors=ERRORS,
)
async def resolve_adverse_event(ctx: Ctx) -> EventDetail:
    """→ resolved. A graded event stops holding the next session; an emergency holds it until
    it is cleared (`/clear`)."""
    body: ResolveBody = ctx.body
    return await _act(ctx, domain.resolve, notes=body.notes)


@API.route(
    "POST",
    BASE + "/{event_id}/clear",
    summary="Clear the patient's next session to go ahead",
    tag=TAG,
    roles=ClinicianOnly,
    body=ClearBody,
    response=EventDetail,
    errors=ERRORS,
)
async def clear_adverse_event(ctx: Ctx) -> EventDetail:
    """A clinician has assessed the patient and the next session may go ahead despite this
    event: check-in is allowed again, the event's review reason leaves the flagged session,
    and the delay it caused counts as clinician-approved for the course's gap rules. 409
    `nothing-to-clear` when the event holds nothing."""
    body: ClearBody = ctx.body
    return await _act(ctx, domain.clear, reason=body.reason)
