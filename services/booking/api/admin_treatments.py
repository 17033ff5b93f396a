"""Treatments and their series templates (course protocols).

Roles: every staff role reads treatments; only `admin` creates, edits or removes them, because a
series template (how many sessions, how far apart) is the medical director's protocol.

A course's template says, for each session position 2..sessions_max, the gap after the previous
session in local calendar days: the target, the hard minimum and the soft maximum
(min_days <= target_days <= max_days). Every position must be present, so a course can never be
half-specified. PATCH may change sessions_max only together with a gap list that covers it.

A treatment created with `needs_consultation` (a procedure) starts with the clinical defaults'
aftercare template (shared/domain/aftercare_defaults.py), edited at
/api/v1/treatments/{id}/aftercare; any other starts without one (nothing sent after it).

Removing a treatment that appointments, series or holds refer to deactivates it instead
(`active: false`): it is no longer offered, and the history keeps it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, StringConstraints, field_validator

from services.booking.api import API
from services.booking.api.common import (
    ADMIN,
    ALL_STAFF,
    as_dict,
    at_least,
    delete_or_deactivate,
    fields_of,
    or_not_found,
    record_item,
    require_clinic,
    update_versioned,
    write,
)
from services.booking.api.fields import Body, Id, LongText, Name, StoredName, optional
from services.booking.api.framework import Ctx, invalid
from services.booking.api.pagination import Page, PageQuery
from shared.domain.aftercare_defaults import default_for_new_treatment
from shared.store import aftercare_templates, check_in_plans, treatments
from shared.store.treatments import GapSpec, TreatmentFields

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

    _target_not_below_min = field_validator("target_days")(at_least("min_days"))
    _max_not_below_target = field_validator("max_days")(at_least("target_days"))


class Treatment(BaseModel):
    id: int
    clinic_id: int
    code: Code
    name: StoredName
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

    _max_not_below_min = field_validator("sessions_max")(at_least("sessions_min"))


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


def _gap_specs(gaps: Sequence[Gap | GapSpec]) -> list[GapSpec]:
    ordered = sorted(gaps, key=lambda g: g.position)
    return [GapSpec(g.position, g.target_days, g.min_days, g.max_days) for g in ordered]


def _treatment(row: treatments.Treatment) -> Treatment:
    gaps = [
        Gap(
            position=g.position, min_days=g.min_days, target_days=g.target_days, max_days=g.max_days
        )
        for g in row.gaps
    ]
    return Treatment.model_validate({**as_dict(row), "gaps": gaps})


async def _locked_treatment(conn: asyncpg.Connection, treatment_id: int) -> treatments.Treatment:
    row = await treatments.lock(conn, treatment_id)
    return or_not_found(row, "treatment", treatment_id)


@API.route(
    "GET",
    "/api/v1/treatments",
    summary="List treatments (inactive ones too, unless filtered)",
    tag="treatments",
    roles=ALL_STAFF,
    query=TreatmentQuery,
    response=Page[Treatment],
)
async def list_treatments(ctx: Ctx) -> Page[Treatment]:
    query: TreatmentQuery = ctx.query
    rows = await treatments.list_page(
        ctx.pool,
        clinic_id=query.clinic_id,
        active=query.active,
        after_id=query.after_id(),
        limit=query.fetch,
    )
    return Page[Treatment].of(rows, query.limit, _treatment)


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
    location="/api/v1/treatments/{id}",
)
async def create_treatment(ctx: Ctx) -> Treatment:
    """A duplicate `code` in the clinic is a 409; an unknown `clinic_id` a 404."""
    body: TreatmentCreate = ctx.body
    values = {**body.model_dump(exclude={"gaps"}), "gaps": body.gaps, "active": True}
    _check_template(values, set(body.model_fields_set))

    async def work(conn: asyncpg.Connection) -> Any:
        await require_clinic(conn, body.clinic_id)
        row = await treatments.insert(
            conn,
            clinic_id=body.clinic_id,
            fields=fields_of(TreatmentFields, values),
            gaps=_gap_specs(body.gaps),
        )
        if row.sessions_max > 1 or row.needs_consultation:
            # A course (or a treatment that needs a consultation first: an injection, a
            # procedure) starts with the clinical defaults' aftercare check-ins, editable at
            # /api/v1/treatments/{id}/check-in-plan; a consultation gets none.
            await check_in_plans.replace(conn, row.id, check_in_plans.DEFAULT_PLAN)
        created = _treatment(row)
        await record_item(conn, ctx, "create", "treatment", created.id, created)
        # A procedure starts with the clinical defaults' aftercare (editable at .../aftercare).
        aftercare = default_for_new_treatment(needs_consultation=body.needs_consultation)
        if aftercare is not None:
            await aftercare_templates.put(
                conn,
                treatment_id=row.id,
                clinic_id=body.clinic_id,
                content=aftercare,
                by=ctx.actor.name,
                now=ctx.now,
            )
        return created

    created = await write(ctx, work, UNIQUE_CODE)
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
    return _treatment(
        or_not_found(await treatments.get(ctx.pool, treatment_id), "treatment", treatment_id)
    )


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
    body: TreatmentPatch = ctx.body
    sent = body.model_dump(exclude_unset=True, exclude={"gaps"})
    if "gaps" in body.model_fields_set:
        sent["gaps"] = body.gaps

    async def write(
        conn: asyncpg.Connection, row: treatments.Treatment
    ) -> treatments.Treatment | None:
        # The stored gaps (GapSpec) have the positions and days the checks and the store need.
        merged = {**as_dict(row), **sent}
        _check_template(merged, set(sent))
        return await treatments.update(
            conn,
            treatment_id,
            expected_version=row.version,
            fields=fields_of(TreatmentFields, merged),
            gaps=_gap_specs(merged["gaps"]),
        )

    return await update_versioned(
        ctx,
        entity="treatment",
        ident=treatment_id,
        changed=bool(sent),
        lock=_locked_treatment,
        view=_treatment,
        store=write,
        conflicts=UNIQUE_CODE,
    )


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
    await delete_or_deactivate(
        ctx,
        entity="treatment",
        ident=ctx.path["treatment_id"],
        lock=_locked_treatment,
        view=_treatment,
        delete=treatments.delete,
    )
