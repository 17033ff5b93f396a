"""A practitioner's time off and one-off day overrides: the exceptions to the weekly working
hours of `admin_practitioners` (whose docstring has the roles: every staff role reads, `admin`
and `front_desk` write).

Shapes:
* time off is a list of absolute ranges [starts_at, ends_at); created with POST, removed with
  DELETE by id.
* a day override is keyed by its local date: `PUT .../overrides` with {day, ranges, reason}
  creates or replaces that day (no ranges means closed all day), `DELETE .../overrides?day=`
  removes it. Dates stay out of the path because path parameters are resource ids.
* every write is audited under entity `practitioner` and the practitioner's id, as
  `time_off.create`/`.delete` and `override.create`/`.replace`/`.delete`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field, field_validator

from services.booking.api import API
from services.booking.api.admin_practitioners import (
    check_no_overlap,
    locked_practitioner,
    require_practitioner,
)
from services.booking.api.common import (
    ALL_STAFF,
    DESK,
    as_dict,
    check_span,
    later_than,
    or_not_found,
    record,
    record_item,
    write,
)
from services.booking.api.fields import Body, Day, Instant, LocalTime, Query, ShortText, optional
from services.booking.api.framework import ApiError, Ctx
from services.booking.api.pagination import Page, PageQuery
from shared.db.transactions import in_transaction
from shared.store import schedule_overrides, time_off

# -- Time off --------------------------------------------------------------------------------------


class TimeOff(BaseModel):
    id: int
    practitioner_id: int
    starts_at: datetime
    ends_at: datetime = Field(description="exclusive")
    reason: ShortText
    created_at: datetime


class TimeOffCreate(Body):
    starts_at: Instant
    ends_at: Instant = Field(description="exclusive; after starts_at")
    reason: ShortText = ""

    _ends_after_start = field_validator("ends_at")(later_than("starts_at"))


class TimeOffQuery(PageQuery):
    since: Instant = optional()
    until: Instant = optional()


def _time_off_out(row: time_off.TimeOff) -> TimeOff:
    return TimeOff.model_validate(as_dict(row))


@API.route(
    "GET",
    "/api/v1/practitioners/{practitioner_id}/time-off",
    summary="A practitioner's time off, by start",
    tag="schedules",
    roles=ALL_STAFF,
    query=TimeOffQuery,
    response=Page[TimeOff],
    errors=(404,),
)
async def list_time_off(ctx: Ctx) -> Page[TimeOff]:
    """With `since`/`until`, only time off overlapping [since, until)."""
    practitioner_id = ctx.path["practitioner_id"]
    query: TimeOffQuery = ctx.query
    check_span(query.since, query.until)
    after = query.after(datetime, int)
    await require_practitioner(ctx.pool, practitioner_id)
    rows = await time_off.list_page(
        ctx.pool,
        practitioner_id,
        since=query.since,
        until=query.until,
        after=(after[0], after[1]) if after else None,
        limit=query.fetch,
    )
    return Page[TimeOff].of(rows, query.limit, _time_off_out, _time_off_key)


def _time_off_key(row: time_off.TimeOff) -> tuple[datetime, int]:
    return row.starts_at, row.id


@API.route(
    "POST",
    "/api/v1/practitioners/{practitioner_id}/time-off",
    summary="Record time off",
    tag="schedules",
    roles=DESK,
    body=TimeOffCreate,
    response=TimeOff,
    status=201,
    errors=(404,),
)
async def create_time_off(ctx: Ctx) -> TimeOff:
    """Appointments already booked in the range stay booked: move them separately."""
    practitioner_id = ctx.path["practitioner_id"]
    body: TimeOffCreate = ctx.body

    async def work(conn: asyncpg.Connection) -> Any:
        await locked_practitioner(conn, practitioner_id)
        row = await time_off.insert(
            conn,
            practitioner_id,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            reason=body.reason,
            now=ctx.now,
        )
        created = _time_off_out(row)
        await record_item(
            conn, ctx, "time_off.create", "practitioner", practitioner_id, created, key="time_off"
        )
        return created

    created = await write(ctx, work)
    return created


@API.route(
    "DELETE",
    "/api/v1/practitioners/{practitioner_id}/time-off/{time_off_id}",
    summary="Remove time off",
    tag="schedules",
    roles=DESK,
    status=204,
    errors=(404,),
)
async def delete_time_off(ctx: Ctx) -> None:
    practitioner_id, time_off_id = ctx.path["practitioner_id"], ctx.path["time_off_id"]

    async def work(conn: asyncpg.Connection) -> Any:
        row = await time_off.delete(conn, practitioner_id, time_off_id)
        removed = _time_off_out(or_not_found(row, "time off", time_off_id))
        await record_item(
            conn, ctx, "time_off.delete", "practitioner", practitioner_id, removed, key="time_off"
        )

    await in_transaction(ctx.pool, work)


# -- One-off day overrides -------------------------------------------------------------------------


class DayRange(Body):
    starts: LocalTime = Field(description="local time in the clinic's zone")
    ends: LocalTime

    _ends_after_start = field_validator("ends")(later_than("starts"))


class OverridePut(Body):
    day: Day = Field(description="the local date whose hours this replaces")
    ranges: list[DayRange] = Field(
        default_factory=list, max_length=24, description="the hours worked; none means closed"
    )
    reason: ShortText = ""


class Override(BaseModel):
    practitioner_id: int
    day: date
    ranges: list[DayRange]
    closed: bool = Field(description="true when no ranges: not working that day")
    reason: ShortText


class OverrideQuery(PageQuery):
    first_day: Day = optional()
    last_day: Day = optional()


class OverrideDay(Query):
    day: Day


def _override(row: schedule_overrides.ScheduleOverride) -> Override:
    ranges = [DayRange(starts=s, ends=e) for s, e in row.ranges]
    return Override(
        practitioner_id=row.practitioner_id,
        day=row.day,
        ranges=ranges,
        closed=not ranges,
        reason=row.reason,
    )


@API.route(
    "GET",
    "/api/v1/practitioners/{practitioner_id}/overrides",
    summary="A practitioner's day overrides, by day",
    tag="schedules",
    roles=ALL_STAFF,
    query=OverrideQuery,
    response=Page[Override],
    errors=(404,),
)
async def list_overrides(ctx: Ctx) -> Page[Override]:
    """With `first_day`/`last_day` (inclusive), only overrides of those days."""
    practitioner_id = ctx.path["practitioner_id"]
    query: OverrideQuery = ctx.query
    (after_day,) = query.after(date) or [None]
    await require_practitioner(ctx.pool, practitioner_id)
    rows = await schedule_overrides.list_page(
        ctx.pool,
        practitioner_id,
        first_day=query.first_day,
        last_day=query.last_day,
        after_day=after_day,
        limit=query.fetch,
    )
    return Page[Override].of(rows, query.limit, _override, lambda row: (row.day,))


@API.route(
    "PUT",
    "/api/v1/practitioners/{practitioner_id}/overrides",
    summary="Set one day's hours (create or replace that day's override)",
    tag="schedules",
    roles=DESK,
    body=OverridePut,
    response=Override,
    errors=(404,),
)
async def put_override(ctx: Ctx) -> Override:
    """The body states the whole day, so replacing needs no If-Match: there is nothing of the
    old override the caller could unknowingly keep or lose. Overlapping ranges are a 422."""
    practitioner_id = ctx.path["practitioner_id"]
    body: OverridePut = ctx.body
    ranges = [(r.starts, r.ends) for r in body.ranges]
    check_no_overlap([(0, s, e) for s, e in ranges], "ranges")

    async def work(conn: asyncpg.Connection) -> Any:
        await locked_practitioner(conn, practitioner_id)
        previous = await schedule_overrides.lock(conn, practitioner_id, body.day)
        row = await schedule_overrides.upsert(
            conn, practitioner_id, body.day, ranges=ranges, reason=body.reason
        )
        result = _override(row)
        await record(
            conn,
            ctx,
            action="override.replace" if previous else "override.create",
            entity="practitioner",
            entity_id=practitioner_id,
            details={
                "from": _override(previous).model_dump(mode="json") if previous else None,
                "to": result.model_dump(mode="json"),
            },
        )
        return result

    result = await write(ctx, work)
    return result


@API.route(
    "DELETE",
    "/api/v1/practitioners/{practitioner_id}/overrides",
    summary="Remove one day's override (the weekly hours apply again)",
    tag="schedules",
    roles=DESK,
    query=OverrideDay,
    status=204,
    errors=(404,),
)
async def delete_override(ctx: Ctx) -> None:
    practitioner_id = ctx.path["practitioner_id"]
    day: date = ctx.query.day

    async def work(conn: asyncpg.Connection) -> Any:
        await require_practitioner(conn, practitioner_id)
        row = await schedule_overrides.delete(conn, practitioner_id, day)
        if row is None:
            raise ApiError(
                404,
                "Not Found",
                f"no override on {day} for practitioner {practitioner_id}",
                type_="not-found",
            )
        await record(
            conn,
            ctx,
            action="override.delete",
            entity="practitioner",
            entity_id=practitioner_id,
            details={"from": _override(row).model_dump(mode="json")},
        )

    await in_transaction(ctx.pool, work)
