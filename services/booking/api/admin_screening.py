"""Safety screening in the admin API: each clinic's screening questions (seeded with the defaults
of clinical-defaults.md, edited by admins) and a patient's answers (clinicians and admins: the
answers are clinical). The rules of answering are in shared/domain/screening.py; answers are
given with a staff booking (`POST /api/v1/bookings`) and at check-in.

| endpoint                                   | admin | front_desk | clinician |
| ------------------------------------------ | ----- | ---------- | --------- |
| list a clinic's questions                  | yes   | yes        | yes       |
| add or change a question                   | yes   | no         | no        |
| a patient's answers                        | yes   | no         | yes       |
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, StrictBool, StringConstraints

from services.booking.api import API
from services.booking.api.admin_patients import audit_patient, existing_patient
from services.booking.api.common import (
    ADMIN,
    ALL_STAFF,
    CLINICAL,
    or_not_found,
    record,
    require_clinic,
    write,
)
from services.booking.api.fields import Body, optional, text
from services.booking.api.framework import ApiError, Ctx
from services.booking.api.pagination import Page, PageQuery
from shared.db.transactions import in_transaction
from shared.store import screening
from shared.store.screening import AnswerSource, QuestionFields

TAG = "screening"

QuestionCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
TreatmentCode = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Wording = text(500, min_length=1)


class Question(BaseModel):
    id: int
    clinic_id: int
    code: str = Field(description="what answers refer to; never changes")
    wording: str
    applies_to: list[str] | None = Field(
        description="the treatment codes it is asked for; null: every treatment"
    )
    position: int
    active: bool
    updated_at: datetime


class QuestionCreate(Body):
    code: QuestionCode
    wording: Wording
    applies_to: list[TreatmentCode] | None = Field(None, max_length=100)
    position: int = Field(0, ge=0, le=1000)
    active: StrictBool = True


class QuestionPatch(Body):
    wording: Wording = optional()
    applies_to: list[TreatmentCode] | None = optional()
    position: int = optional(ge=0, le=1000)
    active: StrictBool = optional()


class Answer(BaseModel):
    id: int
    appointment_id: int | None
    question_code: str
    answer: bool
    details: str
    answered_at: datetime
    source: AnswerSource
    actor: str


def _question(row: screening.Question) -> Question:
    return Question(
        id=row.id,
        clinic_id=row.clinic_id,
        code=row.code,
        wording=row.wording,
        applies_to=row.applies_to,
        position=row.position,
        active=row.active,
        updated_at=row.updated_at,
    )


def _asked_order(row: screening.Question) -> tuple[int, int]:
    return (row.position, row.id)


@API.route(
    "GET",
    "/api/v1/clinics/{clinic_id}/screening-questions",
    summary="The clinic's screening questions, in the order they are asked",
    tag=TAG,
    roles=ALL_STAFF,
    query=PageQuery,
    response=Page[Question],
    errors=(404,),
)
async def list_screening_questions(ctx: Ctx) -> Page[Question]:
    """Every question (inactive ones too), by position."""
    query: PageQuery = ctx.query
    clinic_id = ctx.path["clinic_id"]
    after = query.after(int, int)
    async with ctx.pool.acquire() as conn:
        await require_clinic(conn, clinic_id)
        # A clinic has a few dozen questions at most: paged here, in the order they are asked.
        rows = sorted(await screening.questions(conn, clinic_id), key=_asked_order)
    if after is not None:
        rows = [r for r in rows if _asked_order(r) > (after[0], after[1])]
    return Page[Question].of(rows[: query.fetch], query.limit, _question, key=_asked_order)


@API.route(
    "GET",
    "/api/v1/screening-questions/{question_id}",
    summary="One screening question",
    tag=TAG,
    roles=ALL_STAFF,
    response=Question,
    errors=(404,),
)
async def get_screening_question(ctx: Ctx) -> Question:
    question_id = ctx.path["question_id"]
    row = await screening.get_question(ctx.pool, question_id)
    return _question(or_not_found(row, "screening question", question_id))


@API.route(
    "POST",
    "/api/v1/clinics/{clinic_id}/screening-questions",
    summary="Add a screening question",
    tag=TAG,
    roles=ADMIN,
    body=QuestionCreate,
    response=Question,
    status=201,
    errors=(404, 409),
    location="/api/v1/screening-questions/{id}",
)
async def create_screening_question(ctx: Ctx) -> Question:
    """A code the clinic has already is a 409 (deactivate or reword that one instead)."""
    body: QuestionCreate = ctx.body
    clinic_id = ctx.path["clinic_id"]

    async def work(conn: asyncpg.Connection) -> Question:
        await require_clinic(conn, clinic_id)
        fields = QuestionFields(
            body.code, body.wording, body.applies_to, body.position, body.active
        )
        row = await screening.insert_question(conn, clinic_id, fields, now=ctx.now)
        if row is None:
            raise ApiError(
                409,
                "Conflict",
                f"the clinic has a screening question {body.code!r} already",
                type_="duplicate",
            )
        created = _question(row)
        await record(
            conn,
            ctx,
            action="screening_question.create",
            entity="screening_question",
            entity_id=row.id,
            details={"question": created.model_dump(mode="json")},
        )
        return created

    return await write(ctx, work)


@API.route(
    "PATCH",
    "/api/v1/screening-questions/{question_id}",
    summary="Reword, re-scope, reorder or (de)activate a screening question",
    tag=TAG,
    roles=ADMIN,
    body=QuestionPatch,
    response=Question,
    errors=(404,),
)
async def update_screening_question(ctx: Ctx) -> Question:
    """The code stays (answers refer to it). Audited with the fields sent."""
    body: QuestionPatch = ctx.body
    question_id = ctx.path["question_id"]
    changes: dict[str, Any] = {n: getattr(body, n) for n in body.model_fields_set}

    async def work(conn: asyncpg.Connection) -> Question:
        row = await screening.update_question(conn, question_id, changes, now=ctx.now)
        updated = _question(or_not_found(row, "screening question", question_id))
        await record(
            conn,
            ctx,
            action="screening_question.update",
            entity="screening_question",
            entity_id=question_id,
            details={"changed": sorted(changes)},
        )
        return updated

    return await write(ctx, work)


@API.route(
    "GET",
    "/api/v1/patients/{patient_id}/screening-answers",
    summary="A patient's screening answers, newest first",
    tag=TAG,
    roles=CLINICAL,
    query=PageQuery,
    response=Page[Answer],
    errors=(404,),
)
async def list_screening_answers(ctx: Ctx) -> Page[Answer]:
    """Every answer given (from the booking form, staff, check-in), with who recorded it and
    for which appointment. Audited as `patient.read`."""
    query: PageQuery = ctx.query
    patient_id = ctx.path["patient_id"]

    async def work(conn: asyncpg.Connection) -> list[screening.Answer]:
        await existing_patient(conn, patient_id)
        rows = await screening.for_patient(conn, patient_id, limit=10_000)
        await audit_patient(
            conn, ctx, "patient.read", patient_id, details={"view": "screening_answers"}
        )
        return rows

    rows = await in_transaction(ctx.pool, work)
    after = query.after_id()
    if after is not None:
        rows = [r for r in rows if r.id < after]
    return Page[Answer].of(
        rows[: query.fetch],
        query.limit,
        lambda r: Answer(
            id=r.id,
            appointment_id=r.appointment_id,
            question_code=r.question_code,
            answer=r.answer,
            details=r.details,
            answered_at=r.answered_at,
            source=r.source,
            actor=r.actor,
        ),
    )
