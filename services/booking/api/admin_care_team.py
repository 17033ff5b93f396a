"""The care team in the admin API: the staff who receive alerts (name, role, mobile, email), the
on-call rota, and each clinic's escalation list and alert timings (shared/domain/alerts.py says
who is alerted when).

Roles: every staff role reads them (the desk needs to know who is on call); only `admin`
changes them. Every change is audited under entity `care_team_member`, `on_call_shift` or
`escalation_list`.

Shapes:
* a member's `mobile` is E.164 and must be a valid number; `email` an address; each may be null
  (a member with neither is never alerted, and the list skips them);
* a member who has been alerted cannot be deleted (409 `member-has-alerts`): the alert history
  names them; set `active: false` instead;
* `PUT /api/v1/clinics/{clinic_id}/escalation` replaces the whole list at once: ordered steps,
  each `{"member_id": n}` or `{"on_call": true}` (whoever is on call when the step is reached),
  with the clinic's `escalate_after_minutes` (default 15) and `callback_target_minutes` (60).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
import phonenumbers
from pydantic import BaseModel, Field, field_validator, model_validator

from services.booking.api import API
from services.booking.api.admin_practitioners import Email
from services.booking.api.common import (
    ADMIN,
    ALL_STAFF,
    as_dict,
    later_than,
    or_not_found,
    record,
    record_item,
    require_clinic,
    unknown_reference,
    write,
)
from services.booking.api.fields import Body, Id, Instant, Name, Phone, Query, StoredName
from services.booking.api.framework import ApiError, Ctx
from services.booking.api.pagination import Page, PageQuery
from shared.store import care_team

TAG = "care-team"

Role = Literal["clinician", "front_desk", "admin"]


def _valid_mobile(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        number = phonenumbers.parse(value)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    # Possible rather than valid: a staff phone may be on a range phonenumbers does not know
    # yet (or Ofcom's drama range the demo team uses); a wrong length is still refused.
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:  # local-only numbers too
        raise ValueError("not a possible phone number (E.164, e.g. +447911123456)")
    return value


class Member(BaseModel):
    id: int
    clinic_id: int
    name: StoredName
    role: Role
    mobile: Phone | None
    email: Email | None
    active: bool
    created_at: datetime
    updated_at: datetime


class MemberBody(Body):
    name: Name
    role: Role = Field(
        description="clinician, front_desk or admin (admins hear of alerts nobody acknowledged)"
    )
    mobile: Phone | None = Field(None, description="E.164; alerts are texted here")
    email: Email | None = Field(None, description="alerts are emailed here")
    active: bool = True

    _mobile = field_validator("mobile")(_valid_mobile)


class ShiftOut(BaseModel):
    id: int
    clinic_id: int
    member_id: int
    starts_at: datetime
    ends_at: datetime


class ShiftBody(Body):
    member_id: Id
    starts_at: Instant
    ends_at: Instant = Field(description="exclusive; after starts_at")

    _ends = field_validator("ends_at")(later_than("starts_at"))


class ShiftQuery(PageQuery):
    ending_after: Instant | None = Field(
        None, description="shifts ending after this instant (default: now)"
    )


class OnCallQuery(Query):
    at: Instant | None = Field(None, description="default: now")


class OnCallOut(BaseModel):
    at: datetime
    member: Member | None = Field(description="null: nobody is on call then")


class StepBody(Body):
    member_id: Id | None = None
    on_call: bool = Field(False, description="whoever is on call when this step is reached")

    @model_validator(mode="after")
    def _one(self) -> StepBody:
        if (self.member_id is None) != self.on_call:
            raise ValueError("give either member_id or on_call: true")
        return self


class EscalationBody(Body):
    steps: list[StepBody] = Field(max_length=20)
    escalate_after_minutes: int = Field(15, ge=1, le=1440)
    callback_target_minutes: int = Field(60, ge=1, le=1440)


class StepOut(BaseModel):
    position: int
    member_id: int | None
    on_call: bool


class EscalationOut(BaseModel):
    clinic_id: int
    steps: list[StepOut]
    escalate_after_minutes: int
    callback_target_minutes: int


def _member_out(row: care_team.Member) -> Member:
    return Member.model_validate(as_dict(row))


def _shift_out(row: care_team.Shift) -> ShiftOut:
    return ShiftOut.model_validate(as_dict(row))


async def _member_of_clinic(
    conn: asyncpg.Connection, member_id: int, clinic_id: int, path: str
) -> care_team.Member:
    member = await care_team.get_member(conn, member_id)
    if member is None or member.clinic_id != clinic_id:
        raise unknown_reference(path, "care team member", member_id)
    return member


async def _escalation_out(db: Any, clinic_id: int) -> EscalationOut:
    steps = await care_team.escalation_of(db, clinic_id)
    timing = await care_team.settings_of(db, clinic_id)
    return EscalationOut(
        clinic_id=clinic_id,
        steps=[StepOut.model_validate(as_dict(s)) for s in steps],
        escalate_after_minutes=timing.escalate_after_minutes,
        callback_target_minutes=timing.callback_target_minutes,
    )


# -- members --------------------------------------------------------------------------------------


@API.route(
    "GET",
    "/api/v1/clinics/{clinic_id}/care-team",
    summary="The clinic's care team: who receives alerts",
    tag=TAG,
    roles=ALL_STAFF,
    query=PageQuery,
    response=Page[Member],
    errors=(404,),
)
async def list_members(ctx: Ctx) -> Page[Member]:
    query: PageQuery = ctx.query
    clinic_id = ctx.path["clinic_id"]
    async with ctx.pool.acquire() as conn:
        await require_clinic(conn, clinic_id)
        rows = await care_team.members_of(
            conn, clinic_id, after_id=query.after_id(), limit=query.fetch
        )
    return Page[Member].of(rows, query.limit, _member_out)


@API.route(
    "POST",
    "/api/v1/clinics/{clinic_id}/care-team",
    summary="Add a member to the care team",
    tag=TAG,
    roles=ADMIN,
    body=MemberBody,
    response=Member,
    status=201,
    errors=(404,),
    location="/api/v1/care-team/{id}",
)
async def create_member(ctx: Ctx) -> Member:
    body: MemberBody = ctx.body
    clinic_id = ctx.path["clinic_id"]

    async def work(conn: asyncpg.Connection) -> Member:
        await require_clinic(conn, clinic_id)
        row = await care_team.insert_member(
            conn, clinic_id, care_team.MemberFields(**body.model_dump()), now=ctx.now
        )
        created = _member_out(row)
        await record_item(conn, ctx, "create", "care_team_member", created.id, created)
        return created

    return await write(ctx, work)


@API.route(
    "GET",
    "/api/v1/care-team/{member_id}",
    summary="One care team member",
    tag=TAG,
    roles=ALL_STAFF,
    response=Member,
    errors=(404,),
)
async def get_member(ctx: Ctx) -> Member:
    member_id = ctx.path["member_id"]
    row = await care_team.get_member(ctx.pool, member_id)
    return _member_out(or_not_found(row, "care team member", member_id))


@API.route(
    "PUT",
    "/api/v1/care-team/{member_id}",
    summary="Replace a care team member's details",
    tag=TAG,
    roles=ADMIN,
    body=MemberBody,
    response=Member,
    errors=(404,),
)
async def replace_member(ctx: Ctx) -> Member:
    body: MemberBody = ctx.body
    member_id = ctx.path["member_id"]

    async def work(conn: asyncpg.Connection) -> Member:
        before = or_not_found(
            await care_team.get_member(conn, member_id), "care team member", member_id
        )
        row = await care_team.update_member(
            conn, member_id, care_team.MemberFields(**body.model_dump()), now=ctx.now
        )
        assert row is not None
        after = _member_out(row)
        await record(
            conn,
            ctx,
            action="update",
            entity="care_team_member",
            entity_id=member_id,
            details={
                "before": _member_out(before).model_dump(mode="json"),
                "after": after.model_dump(mode="json"),
            },
        )
        return after

    return await write(ctx, work)


@API.route(
    "DELETE",
    "/api/v1/care-team/{member_id}",
    summary="Remove a care team member who was never alerted",
    tag=TAG,
    roles=ADMIN,
    status=204,
    errors=(404, 409),
)
async def delete_member(ctx: Ctx) -> None:
    """409 `member-has-alerts` when alerts went to them: deactivate them instead."""
    member_id = ctx.path["member_id"]

    async def work(conn: asyncpg.Connection) -> None:
        member = or_not_found(
            await care_team.get_member(conn, member_id), "care team member", member_id
        )
        if not await care_team.delete_member(conn, member_id):
            raise ApiError(
                409,
                "Conflict",
                f"care team member {member_id} has been alerted; set active to false instead",
                type_="member-has-alerts",
            )
        await record_item(conn, ctx, "delete", "care_team_member", member_id, _member_out(member))

    await write(ctx, work)


# -- the on-call rota -----------------------------------------------------------------------------


@API.route(
    "GET",
    "/api/v1/clinics/{clinic_id}/on-call",
    summary="The on-call rota: shifts ending after an instant",
    tag=TAG,
    roles=ALL_STAFF,
    query=ShiftQuery,
    response=Page[ShiftOut],
    errors=(404,),
)
async def list_shifts(ctx: Ctx) -> Page[ShiftOut]:
    query: ShiftQuery = ctx.query
    clinic_id = ctx.path["clinic_id"]
    async with ctx.pool.acquire() as conn:
        await require_clinic(conn, clinic_id)
        rows = await care_team.shifts_of(
            conn,
            clinic_id,
            ending_after=query.ending_after or ctx.now,
            after_id=query.after_id(),
            limit=query.fetch,
        )
    return Page[ShiftOut].of(rows, query.limit, _shift_out)


@API.route(
    "GET",
    "/api/v1/clinics/{clinic_id}/on-call-now",
    summary="Who is on call at an instant",
    tag=TAG,
    roles=ALL_STAFF,
    query=OnCallQuery,
    response=OnCallOut,
    errors=(404,),
)
async def who_is_on_call(ctx: Ctx) -> OnCallOut:
    query: OnCallQuery = ctx.query
    clinic_id = ctx.path["clinic_id"]
    at = query.at or ctx.now
    async with ctx.pool.acquire() as conn:
        await require_clinic(conn, clinic_id)
        member = await care_team.on_call_at(conn, clinic_id, at)
    return OnCallOut(at=at, member=None if member is None else _member_out(member))


@API.route(
    "POST",
    "/api/v1/clinics/{clinic_id}/on-call",
    summary="Put a member on call for a span",
    tag=TAG,
    roles=ADMIN,
    body=ShiftBody,
    response=ShiftOut,
    status=201,
    errors=(404,),
)
async def create_shift(ctx: Ctx) -> ShiftOut:
    body: ShiftBody = ctx.body
    clinic_id = ctx.path["clinic_id"]

    async def work(conn: asyncpg.Connection) -> ShiftOut:
        await require_clinic(conn, clinic_id)
        await _member_of_clinic(conn, body.member_id, clinic_id, "member_id")
        row = await care_team.insert_shift(
            conn,
            clinic_id,
            member_id=body.member_id,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            now=ctx.now,
        )
        created = _shift_out(row)
        await record_item(conn, ctx, "create", "on_call_shift", created.id, created)
        return created

    return await write(ctx, work)


@API.route(
    "DELETE",
    "/api/v1/clinics/{clinic_id}/on-call/{shift_id}",
    summary="Remove an on-call shift",
    tag=TAG,
    roles=ADMIN,
    status=204,
    errors=(404,),
)
async def delete_shift(ctx: Ctx) -> None:
    clinic_id, shift_id = ctx.path["clinic_id"], ctx.path["shift_id"]

    async def work(conn: asyncpg.Connection) -> None:
        if not await care_team.delete_shift(conn, clinic_id, shift_id):
            raise ApiError(
                404, "Not Found", f"on-call shift {shift_id} does not exist", type_="not-found"
            )
        await record(conn, ctx, action="delete", entity="on_call_shift", entity_id=shift_id)

    await write(ctx, work)


# -- the escalation list --------------------------------------------------------------------------


@API.route(
    "GET",
    "/api/v1/clinics/{clinic_id}/escalation",
    summary="The clinic's escalation list and alert timings",
    tag=TAG,
    roles=ALL_STAFF,
    response=EscalationOut,
    errors=(404,),
)
async def get_escalation(ctx: Ctx) -> EscalationOut:
    clinic_id = ctx.path["clinic_id"]
    async with ctx.pool.acquire() as conn:
        await require_clinic(conn, clinic_id)
        return await _escalation_out(conn, clinic_id)


@API.route(
    "PUT",
    "/api/v1/clinics/{clinic_id}/escalation",
    summary="Replace the clinic's escalation list and alert timings",
    tag=TAG,
    roles=ADMIN,
    body=EscalationBody,
    response=EscalationOut,
    errors=(404,),
)
async def replace_escalation(ctx: Ctx) -> EscalationOut:
    body: EscalationBody = ctx.body
    clinic_id = ctx.path["clinic_id"]

    async def work(conn: asyncpg.Connection) -> EscalationOut:
        await require_clinic(conn, clinic_id)
        for i, step in enumerate(body.steps):
            if step.member_id is not None:
                await _member_of_clinic(conn, step.member_id, clinic_id, f"steps.{i}.member_id")
        before = await _escalation_out(conn, clinic_id)
        await care_team.replace_escalation(
            conn,
            clinic_id,
            [care_team.Step(i, s.member_id, s.on_call) for i, s in enumerate(body.steps)],
        )
        await care_team.save_settings(
            conn,
            care_team.AlertSettings(
                clinic_id, body.escalate_after_minutes, body.callback_target_minutes
            ),
        )
        after = await _escalation_out(conn, clinic_id)
        await record(
            conn,
            ctx,
            action="replace",
            entity="escalation_list",
            entity_id=clinic_id,
            details={
                "before": before.model_dump(mode="json"),
                "after": after.model_dump(mode="json"),
            },
        )
        return after

    return await write(ctx, work)
