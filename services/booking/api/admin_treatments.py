"""Treatments and their series templates (course protocols).

Roles: every staff role reads treatments; only `admin` creates, edits or removes them, because a
series template (how many sessions, how far apart) is the medical director's protocol.

A course's template says, for each session position 2..sessions_max, the gap after the previous
session in local calendar days: the target, the hard minimum and the soft maximum
(min_days <= target_days <= max_days). Every position must be present, so a course can never be
half-specified. PATCH may change sessions_max only together with a gap list that covers it.

Removing a treatment that appointments, series or holds refer to deactivates it instead
(`active: false`): it is no longer offered, and the history keeps it.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator

from services.booking.api import API
from services.booking.api.admin_clinics import (
    ADMIN,
    ALL_STAFF,
    Body,
    Id,
    LongText,
    Name,
    PageQuery,
    changes,
    database_errors,
    decode_cursor,
    encode_cursor,
    optional,
    record,
    stale,
    unknown_reference,
)
from services.booking.api.framework import Ctx, invalid, not_found
from shared.store import clinics
from shared.store.clinics import GapSpec, TreatmentFields

Code = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9-]{1,50}$"),
    Field(description="unique in the clinic; lower case, digits and dashes"),
]
Minutes = Annotated[int, Field(ge=0, le=240)]
Duration = Annotated[int, Field(ge=5, le=480, description="minutes")]
Sessions = Annotated[int, Field(ge=1, le=52)]
Days = Annotated[int, Field(ge=1, le=3650)]

UNIQUE_CODE = {"treatment_clinic_id_code_key": "the clinic already has a treatment with this code"}


class Gap(Body):
    """The gap before session `position`, in local calendar days."""

    position: int = Field(ge=2, le=52, description="the session this gap leads to (2 = second)")
    min_days: Days = Field(description="hard minimum: earlier is refused")
    target_days: Days
    max_days: Days = Field(description="soft maximum: later is flagged to staff")

    @field_validator("target_days")
    @classmethod
    def _target_not_below_min(cls, target: int, info: ValidationInfo) -> int:
        low = info.data.get("min_days")
        if low is not None and target < low:
            raise ValueError(f"must be at least min_days ({low})")
        return target

    @field_validator("max_days")
    @classmethod
    def _max_not_below_target(cls, high: int, info: ValidationInfo) -> int:
        target = info.data.get("target_days")
        if target is not None and high < target:
            raise ValueError(f"must be at least target_days ({target})")
        return high


class Treatment(BaseModel):
    id: int
    clinic_id: int
    code: Code
    name: Name
    description: LongText
    duration_minutes: Duration
    buffer_before_minutes: Minutes
    buffer_after_minutes: Minutes
    needs_consultation: bool = Field(description="a consultation must come first")
    sessions_min: Sessions
    sessions_max: Sessions
    gaps: list[Gap] = Field(description="one per position 2..sessions_max, in order")
    maintenance_interval_days: Days | None
    public: bool = Field(description="offered on the public booking form")
    active: bool = Field(description="inactive treatments are kept for history, not offered")
    version: int


class TreatmentCreate(Body):
    clinic_id: Id
    code: Code
    name: Name
    description: LongText = ""
    duration_minutes: Duration
    buffer_before_minutes: Minutes = 0
    buffer_after_minutes: Minutes = 0
    needs_consultation: bool = False
    sessions_min: Sessions = 1
    sessions_max: Sessions = 1
    gaps: list[Gap] = Field(default_factory=list, max_length=51)
    maintenance_interval_days: Days | None = None
    public: bool = True

    @field_validator("sessions_max")
    @classmethod
    def _max_not_below_min(cls, high: int, info: ValidationInfo) -> int:
        low = info.data.get("sessions_min")
        if low is not None and high < low:
            raise ValueError(f"must be at least sessions_min ({low})")
        return high


class TreatmentPatch(Body):
    """Only the fields sent change; `gaps`, when sent, replaces the whole template."""

    code: Code = optional()
    name: Name = optional()
    description: LongText = optional()
    duration_minutes: Duration = optional()
    buffer_before_minutes: Minutes = optional()
    buffer_after_minutes: Minutes = optional()
    needs_consultation: bool = optional()
    sessions_min: Sessions = optional()
    sessions_max: Sessions = optional()
    gaps: list[Gap] = optional(max_length=51)
    maintenance_interval_days: Days | None = optional()
    public: bool = optional()
    active: bool = optional()


class TreatmentQuery(PageQuery):
    clinic_id: Id = optional()
    active: bool = optional()


class TreatmentPage(BaseModel):
    items: list[Treatment]
    next_cursor: str | None


def _check_template(values: dict[str, Any], sent: set[str]) -> None:
    """Sessions and gaps must agree: every position 2..sessions_max exactly once."""
    low, high, gaps = values["sessions_min"], values["sessions_max"], values["gaps"]
    if high < low:
        raise invalid(
            "sessions_max" if "sessions_max" in sent else "sessions_min",
            f"sessions_max ({high}) must be at least sessions_min ({low})",
        )
    seen: Counter[int] = Counter()
    for index, gap in enumerate(gaps):
        seen[gap.position] += 1
        if gap.position > high:
            raise invalid(
                f"gaps.{index}.position",
                f"sessions_max is {high}, so gaps run from position 2 to {high}",
            )
        if seen[gap.position] > 1:
            raise invalid(f"gaps.{index}.position", f"position {gap.position} appears twice")
    missing = [p for p in range(2, high + 1) if p not in seen]
    if missing:
        listed = ", ".join(map(str, missing))
        path = "gaps" if "gaps" in sent else "sessions_max"
        raise invalid(path, f"every position 2..{high} needs a gap; missing {listed}")


def _fields(values: dict[str, Any]) -> TreatmentFields:
    return TreatmentFields(
        code=values["code"],
        name=values["name"],
        description=values["description"],
        duration_minutes=values["duration_minutes"],
        buffer_before_minutes=values["buffer_before_minutes"],
        buffer_after_minutes=values["buffer_after_minutes"],
        needs_consultation=values["needs_consultation"],
        sessions_min=values["sessions_min"],
        sessions_max=values["sessions_max"],
        maintenance_interval_days=values["maintenance_interval_days"],
        public=values["public"],
        active=values["active"],
    )


def _gap_specs(gaps: list[Gap]) -> list[GapSpec]:
    ordered = sorted(gaps, key=lambda g: g.position)
    return [GapSpec(g.position, g.target_days, g.min_days, g.max_days) for g in ordered]


def _treatment(row: dict[str, Any]) -> Treatment:
    gaps = [
        Gap(
            position=g.position, min_days=g.min_days, target_days=g.target_days, max_days=g.max_days
        )
        for g in row["gaps"]
    ]
    return Treatment.model_validate({**row, "gaps": gaps})


async def _locked_treatment(conn: asyncpg.Connection, treatment_id: int) -> dict[str, Any]:
    row = await clinics.get_treatment(conn, treatment_id, for_update=True)
    if row is None:
        raise not_found("treatment", treatment_id)
    return row


@API.route(
    "GET",
    "/api/v1/treatments",
    summary="List treatments (inactive ones too, unless filtered)",
    tag="treatments",
    roles=ALL_STAFF,
    query=TreatmentQuery,
    response=TreatmentPage,
)
async def list_treatments(ctx: Ctx) -> TreatmentPage:
    query: TreatmentQuery = ctx.query
    (after_id,) = decode_cursor(query.cursor, int) or [None]
    rows = await clinics.list_treatments_page(
        ctx.pool,
        clinic_id=query.clinic_id,
        active=query.active,
        after_id=after_id,
        limit=query.limit + 1,
    )
    items = [_treatment(r) for r in rows[: query.limit]]
    more = len(rows) > query.limit
    return TreatmentPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


@API.route(
    "POST",
    "/api/v1/treatments",
    summary="Create a treatment (a single visit, or a course with its series template)",
    tag="treatments",
    roles=ADMIN,
    body=TreatmentCreate,
    response=Treatment,
    status=201,
    errors=(404, 409),
)
async def create_treatment(ctx: Ctx) -> Treatment:
    """A duplicate `code` in the clinic is a 409; an unknown `clinic_id` a 404."""
    body: TreatmentCreate = ctx.body
    values = {**body.model_dump(exclude={"gaps"}), "gaps": body.gaps, "active": True}
    _check_template(values, set(body.model_fields_set))
    with database_errors(UNIQUE_CODE):
        async with ctx.pool.acquire() as conn, conn.transaction():
            if not await clinics.clinic_exists(conn, body.clinic_id):
                raise unknown_reference("clinic_id", "clinic", body.clinic_id)
            row = await clinics.create_treatment(
                conn,
                clinic_id=body.clinic_id,
                fields=_fields(values),
                gaps=_gap_specs(body.gaps),
            )
            created = _treatment(row)
            await record(
                conn,
                ctx,
                action="create",
                entity="treatment",
                entity_id=created.id,
                details={"treatment": created.model_dump(mode="json")},
            )
    return created


@API.route(
    "GET",
    "/api/v1/treatments/{treatment_id}",
    summary="One treatment with its series template",
    tag="treatments",
    roles=ALL_STAFF,
    response=Treatment,
    errors=(404,),
)
async def get_treatment(ctx: Ctx) -> Treatment:
    treatment_id = ctx.path["treatment_id"]
    row = await clinics.get_treatment(ctx.pool, treatment_id)
    if row is None:
        raise not_found("treatment", treatment_id)
    return _treatment(row)


@API.route(
    "PATCH",
    "/api/v1/treatments/{treatment_id}",
    summary="Change a treatment or its series template",
    tag="treatments",
    roles=ADMIN,
    body=TreatmentPatch,
    response=Treatment,
    errors=(404, 409, 412, 428),
)
async def update_treatment(ctx: Ctx) -> Treatment:
    """Send If-Match with the ETag last read. Series already booked keep the sessions they
    have; the new template applies to what is proposed from now on."""
    treatment_id = ctx.path["treatment_id"]
    expected = ctx.if_match()
    body: TreatmentPatch = ctx.body
    sent = body.model_dump(exclude_unset=True, exclude={"gaps"})
    if "gaps" in body.model_fields_set:
        sent["gaps"] = body.gaps
    with database_errors(UNIQUE_CODE):
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await _locked_treatment(conn, treatment_id)
            if row["version"] != expected:
                raise stale("treatment", treatment_id, row["version"])
            before = _treatment(row)
            if not sent:
                return before
            merged = {**row, "gaps": before.gaps, **sent}
            _check_template(merged, set(sent))
            updated = await clinics.update_treatment(
                conn,
                treatment_id,
                expected_version=expected,
                fields=_fields(merged),
                gaps=_gap_specs(merged["gaps"]),
            )
            assert updated is not None  # locked and version-checked above
            after = _treatment(updated)
            await record(
                conn,
                ctx,
                action="update",
                entity="treatment",
                entity_id=treatment_id,
                details={"changes": changes(before, after)},
            )
    return after


@API.route(
    "DELETE",
    "/api/v1/treatments/{treatment_id}",
    summary="Remove a treatment (deactivated instead if anything refers to it)",
    tag="treatments",
    roles=ADMIN,
    status=204,
    errors=(404,),
)
async def delete_treatment(ctx: Ctx) -> None:
    """Booked sessions of a deactivated treatment stay booked; it is only no longer offered."""
    treatment_id = ctx.path["treatment_id"]
    with database_errors():
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await _locked_treatment(conn, treatment_id)
            deleted = await clinics.delete_treatment(conn, treatment_id)
            await record(
                conn,
                ctx,
                action="delete" if deleted else "deactivate",
                entity="treatment",
                entity_id=treatment_id,
                details={"treatment": _treatment(row).model_dump(mode="json")},
            )
