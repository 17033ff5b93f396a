"""Practitioners and their weekly working hours. Their time off and one-off day overrides are in
`admin_time_off`.

Roles:
* every staff role reads practitioners and their schedules (the front desk books against them,
  clinicians check their own week);
* only `admin` adds, edits, deactivates or removes a practitioner (it changes who can be booked);
* `admin` and `front_desk` manage working hours, time off and day overrides: that is the front
  desk's daily job ("Dr Hart is off on Friday", "she works until 20:00 next Tuesday").

Shapes:
* `PUT .../hours` replaces the whole week at once (a list of {weekday, starts, ends}; several
  ranges a day make breaks). The week is guarded by the practitioner's `version`: read it with
  `GET .../hours` and send its ETag as If-Match.
* every write is audited under entity `practitioner` and the practitioner's id, so one audit
  search shows everything done to a practitioner and their schedule; schedule actions are
  `hours.replace`, `time_off.create`/`.delete`, `override.create`/`.replace`/`.delete`.
* removing a practitioner who has had appointments deactivates them instead, so their history
  keeps its practitioner; both are refused while they have upcoming appointments.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import time, timedelta
from itertools import pairwise
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, StringConstraints, field_validator

from services.booking.api import API
from services.booking.api.common import (
    ADMIN,
    ALL_STAFF,
    DESK,
    as_dict,
    check_version,
    delete_or_deactivate,
    fields_of,
    later_than,
    or_not_found,
    record,
    record_item,
    require_clinic,
    update_versioned,
    write,
)
from services.booking.api.fields import Body, Id, LocalTime, Name, Phone, StoredName, optional
from services.booking.api.framework import ApiError, Ctx, invalid
from services.booking.api.pagination import Page, PageQuery
from shared.store import appointments, practitioners, working_hours
from shared.store.practitioners import PractitionerFields

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$"),
    Field(examples=["amelia.hart@example.com"]),
]

# -- Practitioners ---------------------------------------------------------------------------------


class Practitioner(BaseModel):
    id: int
    clinic_id: int
    name: StoredName
    email: Email | None
    phone: Phone | None
    active: bool = Field(description="inactive practitioners are kept for history, not booked")
    version: int


class PractitionerCreate(Body):
    clinic_id: Id
    name: Name
    email: Email | None = None
    phone: Phone | None = None
    active: bool = True


class PractitionerPatch(Body):
    """Only the fields sent change; `active: false` takes them off the booking list."""

    name: Name = optional()
    email: Email | None = optional()
    phone: Phone | None = optional()
    active: bool = optional()


class PractitionerQuery(PageQuery):
    clinic_id: Id = optional()
    active: bool = optional()


def _practitioner_out(row: practitioners.Practitioner) -> Practitioner:
    return Practitioner.model_validate(as_dict(row))


async def locked_practitioner(
    conn: asyncpg.Connection, practitioner_id: int
) -> practitioners.Practitioner:
    # Schedule writes lock the practitioner too, so a concurrent removal waits for them instead
    # of failing their foreign key.
    row = await practitioners.lock(conn, practitioner_id)
    return or_not_found(row, "practitioner", practitioner_id)


async def require_practitioner(
    db: asyncpg.Connection | asyncpg.Pool, practitioner_id: int
) -> practitioners.Practitioner:
    return or_not_found(
        await practitioners.get(db, practitioner_id), "practitioner", practitioner_id
    )


async def _refuse_if_booked(conn: asyncpg.Connection, ctx: Ctx, practitioner_id: int) -> None:
    """Taking a practitioner off the books would strand their patients' upcoming sessions."""
    # The caller holds the practitioner's row lock, which a new appointment's foreign key check
    # waits for, so nothing can be booked with them between this check and the commit.
    busy = await appointments.busy_by_practitioner(
        conn, [practitioner_id], ctx.now, ctx.now + timedelta(days=36500), now=ctx.now
    )
    upcoming = len(busy.get(practitioner_id, []))
    if upcoming:
        raise ApiError(
            409,
            "Conflict",
            f"practitioner {practitioner_id} has {upcoming} upcoming appointment(s); move or "
            "cancel them first",
            type_="practitioner-has-appointments",
            upcoming_appointments=upcoming,
        )


@API.route(
    "GET",
    "/api/v1/practitioners",
    summary="List practitioners",
    tag="practitioners",
    roles=ALL_STAFF,
    query=PractitionerQuery,
    response=Page[Practitioner],
)
async def list_practitioners(ctx: Ctx) -> Page[Practitioner]:
    query: PractitionerQuery = ctx.query
    rows = await practitioners.list_page(
        ctx.pool,
        clinic_id=query.clinic_id,
        active=query.active,
        after_id=query.after_id(),
        limit=query.fetch,
    )
    return Page[Practitioner].of(rows, query.limit, _practitioner_out)


@API.route(
    "POST",
    "/api/v1/practitioners",
    summary="Add a practitioner to a clinic",
    tag="practitioners",
    roles=ADMIN,
    body=PractitionerCreate,
    response=Practitioner,
    status=201,
    errors=(404,),
    location="/api/v1/practitioners/{id}",
)
async def create_practitioner(ctx: Ctx) -> Practitioner:
    body: PractitionerCreate = ctx.body
    fields = fields_of(PractitionerFields, body.model_dump())

    async def work(conn: asyncpg.Connection) -> Any:
        await require_clinic(conn, body.clinic_id)
        row = await practitioners.insert(conn, clinic_id=body.clinic_id, fields=fields)
        created = _practitioner_out(row)
        await record_item(conn, ctx, "create", "practitioner", created.id, created)
        return created

    created = await write(ctx, work)
    return created


@API.route(
    "GET",
    "/api/v1/practitioners/{practitioner_id}",
    summary="One practitioner",
    tag="practitioners",
    roles=ALL_STAFF,
    response=Practitioner,
    errors=(404,),
)
async def get_practitioner(ctx: Ctx) -> Practitioner:
    practitioner_id = ctx.path["practitioner_id"]
    row = await practitioners.get(ctx.pool, practitioner_id)
    return _practitioner_out(or_not_found(row, "practitioner", practitioner_id))


@API.route(
    "PATCH",
    "/api/v1/practitioners/{practitioner_id}",
    summary="Change a practitioner's details, or (de)activate them",
    tag="practitioners",
    roles=ADMIN,
    body=PractitionerPatch,
    response=Practitioner,
    errors=(404, 409, 412, 428),
)
async def update_practitioner(ctx: Ctx) -> Practitioner:
    """Send If-Match with the ETag last read. Deactivating someone with upcoming appointments
    is a 409."""
    practitioner_id = ctx.path["practitioner_id"]
    sent = ctx.body.model_dump(exclude_unset=True)

    async def write(
        conn: asyncpg.Connection, row: practitioners.Practitioner
    ) -> practitioners.Practitioner | None:
        merged = {**as_dict(row), **sent}
        if row.active and not merged["active"]:
            await _refuse_if_booked(conn, ctx, practitioner_id)
        fields = fields_of(PractitionerFields, merged)
        return await practitioners.update(
            conn, practitioner_id, expected_version=row.version, fields=fields
        )

    return await update_versioned(
        ctx,
        entity="practitioner",
        ident=practitioner_id,
        changed=bool(sent),
        lock=locked_practitioner,
        view=_practitioner_out,
        store=write,
    )


@API.route(
    "DELETE",
    "/api/v1/practitioners/{practitioner_id}",
    summary="Remove a practitioner (deactivated instead if they have appointment history)",
    tag="practitioners",
    roles=ADMIN,
    status=204,
    errors=(404, 409),
)
async def delete_practitioner(ctx: Ctx) -> None:
    """A practitioner nobody was ever booked with is deleted with their schedule. One with past
    appointments is deactivated instead (`active: false`), so the history keeps its
    practitioner. Refused with 409 while they have upcoming appointments."""
    practitioner_id = ctx.path["practitioner_id"]

    async def check(conn: asyncpg.Connection) -> None:
        await _refuse_if_booked(conn, ctx, practitioner_id)

    await delete_or_deactivate(
        ctx,
        entity="practitioner",
        ident=practitioner_id,
        lock=locked_practitioner,
        view=_practitioner_out,
        delete=practitioners.delete,
        check=check,
    )


# -- Weekly working hours --------------------------------------------------------------------------


class HoursRange(Body):
    weekday: int = Field(ge=1, le=7, description="ISO weekday: 1 = Monday ... 7 = Sunday")
    starts: LocalTime = Field(description="local time in the clinic's zone")
    ends: LocalTime

    _ends_after_start = field_validator("ends")(later_than("starts"))


class WeeklyHoursPut(Body):
    hours: list[HoursRange] = Field(
        max_length=7 * 24, description="the whole week; days not listed are not worked"
    )


class WeeklyHours(BaseModel):
    practitioner_id: int
    hours: list[HoursRange]
    version: int = Field(description="the practitioner's version, which also guards the week")


def check_no_overlap(ranges: list[tuple[int, time, time]], path: str) -> None:
    """Name the later of two overlapping ranges by its index in the body; touching is fine.
    Each range is (weekday, starts, ends); day overrides pass weekday 0."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i])
    for earlier, later in pairwise(order):
        day, starts, ends = ranges[earlier]
        if ranges[later][0] == day and ranges[later][1] < ends:
            span = f"{starts:%H:%M}-{ends:%H:%M}"
            when = f"{WEEKDAYS[day - 1]} {span}" if day else span
            raise invalid(f"{path}.{later}.starts", f"overlaps {path}.{earlier} ({when})")


def _week(
    practitioner_id: int, hours: Sequence[working_hours.HoursRange], version: int
) -> WeeklyHours:
    ranges = [HoursRange(weekday=d, starts=s, ends=e) for d, s, e in sorted(hours)]
    return WeeklyHours(practitioner_id=practitioner_id, hours=ranges, version=version)


async def _hours_of(
    conn: asyncpg.Connection, practitioner_id: int
) -> list[working_hours.HoursRange]:
    rows = await working_hours.for_practitioner(conn, practitioner_id)
    return [(h.weekday, h.starts, h.ends) for h in rows]


@API.route(
    "GET",
    "/api/v1/practitioners/{practitioner_id}/hours",
    summary="A practitioner's weekly working hours",
    tag="schedules",
    roles=ALL_STAFF,
    response=WeeklyHours,
    errors=(404,),
)
async def get_hours(ctx: Ctx) -> WeeklyHours:
    practitioner_id = ctx.path["practitioner_id"]
    async with (
        ctx.pool.acquire() as conn,
        conn.transaction(readonly=True, isolation="repeatable_read"),
    ):
        row = await require_practitioner(conn, practitioner_id)
        hours = await _hours_of(conn, practitioner_id)
    return _week(practitioner_id, hours, row.version)


@API.route(
    "PUT",
    "/api/v1/practitioners/{practitioner_id}/hours",
    summary="Replace a practitioner's weekly working hours",
    tag="schedules",
    roles=DESK,
    body=WeeklyHoursPut,
    response=WeeklyHours,
    errors=(404, 409, 412, 428),
)
async def put_hours(ctx: Ctx) -> WeeklyHours:
    """Send the whole week and If-Match with the ETag of `GET .../hours`. Overlapping ranges on
    one day are a 422 naming the later one, e.g. `hours.3.starts`."""
    practitioner_id = ctx.path["practitioner_id"]
    expected = ctx.if_match()
    body: WeeklyHoursPut = ctx.body
    hours = [(r.weekday, r.starts, r.ends) for r in body.hours]
    check_no_overlap(hours, "hours")
    conflicts = {"working_hours_practitioner_id_weekday_tsrange_excl": "ranges overlap"}

    async def work(conn: asyncpg.Connection) -> Any:
        row = await locked_practitioner(conn, practitioner_id)
        check_version("practitioner", practitioner_id, row, expected)
        before = _week(practitioner_id, await _hours_of(conn, practitioner_id), expected)
        await working_hours.replace(conn, practitioner_id, hours)
        version = await practitioners.bump_version(conn, practitioner_id, expected_version=expected)
        assert version is not None  # locked and version-checked above
        after = _week(practitioner_id, hours, version)
        await record(
            conn,
            ctx,
            action="hours.replace",
            entity="practitioner",
            entity_id=practitioner_id,
            details={
                "from": before.model_dump(mode="json")["hours"],
                "to": after.model_dump(mode="json")["hours"],
            },
        )
        return after

    after = await write(ctx, work, conflicts)
    return after
