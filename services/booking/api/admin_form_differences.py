"""What a public booking form said about a patient already on file, waiting for staff.

The form books a returning patient (matched by mobile, else email) without changing their record,
since whoever filled it in may not be them (services/booking/domain/intake.py). Each such
booking that said something different keeps the submitted values here; a clinician or admin
compares them with the patient, updates the record through the patients API if the patient
confirms, and marks the item reviewed with a note.

Roles: `admin` and `clinician`: the values include medical answers (allergies, medications,
screening), which the front desk does not see. Every list is audited as a read of the patients
it shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from services.booking.api import API
from services.booking.api.common import CLINICAL, Read, or_not_found, record, record_reads
from services.booking.api.fields import Body, Id, Reason, optional
from services.booking.api.framework import ApiError, Ctx
from services.booking.api.pagination import Page, PageQuery
from shared.db.transactions import in_transaction
from shared.store import form_differences
from shared.store.form_differences import FormDifference

TAG = "form differences"


class FormDifferenceOut(BaseModel):
    id: int
    clinic_id: int
    patient_id: int
    appointment_ids: list[int] = Field(description="the sessions that booking made")
    submitted: dict[str, Any] = Field(
        description="field name → what the form said, for each field that differs from the "
        "record (consents: kind → ticked)"
    )
    created_at: datetime
    reviewed_at: datetime | None
    reviewed_by: str | None
    review_note: str


class FormDifferenceQuery(PageQuery):
    patient_id: Id = optional(description="only this patient's")
    include_reviewed: bool = Field(False, description="also those already reviewed")


class Review(Body):
    note: Reason = Field(description="what was found, e.g. 'spoke to patient: new email confirmed'")


def _out(item: FormDifference) -> FormDifferenceOut:
    return FormDifferenceOut.model_validate(item, from_attributes=True)


@API.route(
    "GET",
    "/api/v1/form-differences",
    summary="Booking forms that differ from the patient on file, oldest first",
    tag=TAG,
    roles=CLINICAL,
    query=FormDifferenceQuery,
    response=Page[FormDifferenceOut],
)
async def list_form_differences(ctx: Ctx) -> Page[FormDifferenceOut]:
    """Those not yet reviewed, unless `include_reviewed`. Audited as a read of each patient."""
    query: FormDifferenceQuery = ctx.query
    rows = await form_differences.list_page(
        ctx.pool,
        open_only=not query.include_reviewed,
        patient_id=query.patient_id,
        after_id=query.after_id(),
        limit=query.fetch,
    )
    shown = Page[FormDifferenceOut].of(rows, query.limit, _out)
    await record_reads(
        ctx,
        action="form_difference.read",
        entity="form_difference",
        reads=[Read(item.id, item.patient_id, {}) for item in shown.items],
    )
    return shown


@API.route(
    "POST",
    "/api/v1/form-differences/{difference_id}/review",
    summary="Mark a form difference as reviewed, with a note",
    tag=TAG,
    roles=CLINICAL,
    body=Review,
    response=FormDifferenceOut,
    errors=(409,),
)
async def review_form_difference(ctx: Ctx) -> FormDifferenceOut:
    """Changes nothing on the patient's record: update it through the patients API first if
    the patient confirmed what the form said."""
    body: Review = ctx.body
    difference_id = ctx.path["difference_id"]
    assert ctx.staff is not None

    async def work(conn: asyncpg.Connection) -> Any:
        current = or_not_found(
            await form_differences.get(conn, difference_id), "form difference", difference_id
        )
        done = await form_differences.mark_reviewed(
            conn, difference_id, by=ctx.actor.label, note=body.note, now=ctx.now
        )
        if done is None:
            raise ApiError(
                409,
                "Conflict",
                f"already reviewed at {current.reviewed_at} by {current.reviewed_by}",
                type_="already-reviewed",
            )
        await record(
            conn,
            ctx,
            action="form_difference.review",
            entity="form_difference",
            entity_id=difference_id,
            patient_id=done.patient_id,
            reason=body.note,
        )
        return done

    done = await in_transaction(ctx.pool, work)
    return _out(done)
