"""A treatment's aftercare template: what completing one of its sessions sends the patient (SMS
with a link, email with the full text) and what the aftercare page behind the link shows.

Roles: every staff role reads it; clinicians and admins write it (clinical wording). PUT
replaces the whole template; with If-Match (the ETag last read) a change made meanwhile is a
412 instead of being overwritten. DELETE removes it: the treatment's sessions then send no
aftercare (a consultation has none). An edit applies to the next completion; messages already
planned keep the text they were planned with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.common import ALL_STAFF, CLINICAL, or_not_found, record, stale, write
from services.booking.api.fields import Body, text
from services.booking.api.framework import ApiError, Ctx
from shared.store import aftercare_templates, treatments
from shared.store.aftercare_templates import AftercareContent, AftercareTemplate

Line = text(500, min_length=1)
NormalText = text(2000, min_length=1)
Lines = Annotated[list[Line], Field(min_length=1, max_length=40)]
BASE = "/api/v1/treatments/{treatment_id}/aftercare"


class AftercareBody(Body):
    instructions: Lines = Field(description="what to do and avoid, one instruction a line")
    normal_course: NormalText = Field(
        description="what is normal after a session (redness, mild swelling...) and for how long"
    )
    normal_days: int = Field(
        ge=1, le=60, description="the longest the normal course lasts; longer: call the clinic"
    )
    call_when: Lines = Field(description="when to call the clinic, one sign a line")
    emergency_signs: Lines = Field(
        description="what is an emergency (call the emergency number of the clinic's country)"
    )


class Aftercare(BaseModel):
    treatment_id: int
    clinic_id: int
    instructions: list[str]
    normal_course: str
    normal_days: int
    call_when: list[str]
    emergency_signs: list[str]
    version: int
    updated_at: datetime
    updated_by: str


def _view(row: AftercareTemplate) -> Aftercare:
    content = row.content
    return Aftercare(
        treatment_id=row.treatment_id,
        clinic_id=row.clinic_id,
        instructions=content.instructions,
        normal_course=content.normal_course,
        normal_days=content.normal_days,
        call_when=content.call_when,
        emergency_signs=content.emergency_signs,
        version=row.version,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _no_template(treatment_id: int) -> ApiError:
    return ApiError(
        404,
        "Not Found",
        f"treatment {treatment_id} has no aftercare template: its sessions send no aftercare",
        type_="not-found",
    )


@API.route(
    "GET",
    BASE,
    summary="A treatment's aftercare template",
    tag="treatments",
    roles=ALL_STAFF,
    response=Aftercare,
    errors=(404,),
)
async def get_aftercare(ctx: Ctx) -> Aftercare:
    treatment_id = ctx.path["treatment_id"]
    or_not_found(await treatments.get(ctx.pool, treatment_id), "treatment", treatment_id)
    row = await aftercare_templates.get(ctx.pool, treatment_id)
    if row is None:
        raise _no_template(treatment_id)
    return _view(row)


@API.route(
    "PUT",
    BASE,
    summary="Set a treatment's aftercare template (the whole of it)",
    tag="treatments",
    roles=CLINICAL,
    body=AftercareBody,
    response=Aftercare,
    errors=(404, 412),
)
async def put_aftercare(ctx: Ctx) -> Aftercare:
    """Creates the template or replaces it. If-Match is optional here (a first template has no
    ETag); when sent, it must be the current version."""
    treatment_id = ctx.path["treatment_id"]
    body: AftercareBody = ctx.body
    expected = ctx.if_match() if "If-Match" in ctx.request.headers else None

    async def work(conn: asyncpg.Connection) -> Any:
        treatment = await treatments.lock(conn, treatment_id)
        treatment = or_not_found(treatment, "treatment", treatment_id)
        current = await aftercare_templates.lock(conn, treatment_id)
        if expected is not None and (current is None or current.version != expected):
            raise stale("aftercare template", treatment_id, current.version if current else 0)
        row = await aftercare_templates.put(
            conn,
            treatment_id=treatment_id,
            clinic_id=treatment.clinic_id,
            content=AftercareContent(**body.model_dump()),
            by=ctx.actor.name,
            now=ctx.now,
        )
        view = _view(row)
        await record(
            conn,
            ctx,
            action="aftercare_template.put",
            entity="treatment",
            entity_id=treatment_id,
            details={"aftercare": view.model_dump(mode="json")},
        )
        return view

    updated: Aftercare = await write(ctx, work)
    return updated


@API.route(
    "DELETE",
    BASE,
    summary="Remove a treatment's aftercare template (its sessions then send none)",
    tag="treatments",
    roles=CLINICAL,
    status=204,
    errors=(404,),
)
async def delete_aftercare(ctx: Ctx) -> None:
    treatment_id = ctx.path["treatment_id"]

    async def work(conn: asyncpg.Connection) -> Any:
        current = await aftercare_templates.lock(conn, treatment_id)
        if current is None:
            or_not_found(await treatments.get(conn, treatment_id), "treatment", treatment_id)
            raise _no_template(treatment_id)
        await aftercare_templates.delete(conn, treatment_id)
        await record(
            conn,
            ctx,
            action="aftercare_template.delete",
            entity="treatment",
            entity_id=treatment_id,
            details={"aftercare": _view(current).model_dump(mode="json")},
        )

    await write(ctx, work)
