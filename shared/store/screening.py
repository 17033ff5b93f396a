"""Safety screening (owner of `screening_question` and `screening_answer`).

Invariants: a clinic's questions are unique by code; answers are only ever inserted (a
re-confirmation is a new row), each with its source and who recorded it, so the newest answer to
a question is the patient's current one and the history of every answer stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from shared.store import Executor

AnswerSource = Literal["public_form", "public_api", "staff", "check_in", "pre_visit"]


@dataclass(frozen=True)
class Question:
    id: int
    clinic_id: int
    code: str
    wording: str
    applies_to: list[str] | None  # treatment codes; None: every treatment
    position: int
    active: bool
    created_at: datetime
    updated_at: datetime

    def applies(self, treatment_code: str) -> bool:
        return self.active and (self.applies_to is None or treatment_code in self.applies_to)


@dataclass(frozen=True)
class QuestionFields:
    code: str
    wording: str
    applies_to: list[str] | None = None
    position: int = 0
    active: bool = True


@dataclass(frozen=True)
class Answer:
    id: int
    clinic_id: int
    patient_id: int
    appointment_id: int | None
    question_code: str
    answer: bool
    details: str
    answered_at: datetime
    source: AnswerSource
    actor: str


@dataclass(frozen=True)
class NewAnswer:
    question_code: str
    answer: bool
    details: str = ""


def _question(row: asyncpg.Record) -> Question:
    data = dict(row)
    applies = data["applies_to"]
    data["applies_to"] = None if applies is None else list(applies)
    return Question(**data)


def _answer(row: asyncpg.Record) -> Answer:
    return Answer(**dict(row))


_Q = "id, clinic_id, code, wording, applies_to, position, active, created_at, updated_at"
_A = """id, clinic_id, patient_id, appointment_id, question_code, answer, details, answered_at,
    source, actor"""


async def seed(
    conn: Executor, clinic_id: int, defaults: Sequence[QuestionFields], *, now: datetime
) -> None:
    """The defaults for a clinic; a question the clinic already has (by code) is left alone."""
    for q in defaults:
        await conn.execute(
            """
            INSERT INTO screening_question (clinic_id, code, wording, applies_to, position,
                                            active, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
            ON CONFLICT (clinic_id, code) DO NOTHING
            """,
            clinic_id,
            q.code,
            q.wording,
            q.applies_to,
            q.position,
            q.active,
            now,
        )


async def questions(db: Executor, clinic_id: int) -> list[Question]:
    """Every question of the clinic, active or not, in the order they are asked."""
    rows = await db.fetch(
        f"SELECT {_Q} FROM screening_question WHERE clinic_id = $1 ORDER BY position, code",  # noqa: S608
        clinic_id,
    )
    return [_question(r) for r in rows]


async def get_question(db: Executor, question_id: int) -> Question | None:
    row = await db.fetchrow(f"SELECT {_Q} FROM screening_question WHERE id = $1", question_id)  # noqa: S608
    return None if row is None else _question(row)


async def insert_question(
    conn: Executor, clinic_id: int, fields: QuestionFields, *, now: datetime
) -> Question | None:
    """None when the clinic has a question with this code already."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO screening_question (clinic_id, code, wording, applies_to, position, active,
                                        created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
        ON CONFLICT (clinic_id, code) DO NOTHING
        RETURNING {_Q}
        """,  # noqa: S608
        clinic_id,
        fields.code,
        fields.wording,
        fields.applies_to,
        fields.position,
        fields.active,
        now,
    )
    return None if row is None else _question(row)


_EDITABLE = ("wording", "applies_to", "position", "active")


async def update_question(
    conn: Executor, question_id: int, changes: dict[str, Any], *, now: datetime
) -> Question | None:
    """Change wording, applies_to, position or active (the code is the question's identity:
    answers refer to it)."""
    names = [n for n in _EDITABLE if n in changes]  # column names from the fixed list only
    sets = "".join(f", {name} = ${i}" for i, name in enumerate(names, start=3))
    row = await conn.fetchrow(
        f"""
        UPDATE screening_question SET updated_at = $2{sets}
        WHERE id = $1
        RETURNING {_Q}
        """,  # noqa: S608
        question_id,
        now,
        *(changes[n] for n in names),
    )
    return None if row is None else _question(row)


async def insert_answers(
    conn: Executor,
    answers: Sequence[NewAnswer],
    *,
    clinic_id: int,
    patient_id: int,
    appointment_id: int | None,
    source: AnswerSource,
    actor: str,
    now: datetime,
) -> None:
    await conn.executemany(
        """
        INSERT INTO screening_answer (clinic_id, patient_id, appointment_id, question_code,
                                      answer, details, answered_at, source, actor)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        [
            (
                clinic_id,
                patient_id,
                appointment_id,
                a.question_code,
                a.answer,
                a.details,
                now,
                source,
                actor,
            )
            for a in answers
        ],
    )


async def latest_by_question(db: Executor, patient_id: int) -> dict[str, Answer]:
    """The patient's current answer to each question they were asked (the newest)."""
    rows = await db.fetch(
        f"""
        SELECT DISTINCT ON (question_code) {_A} FROM screening_answer
        WHERE patient_id = $1
        ORDER BY question_code, answered_at DESC, id DESC
        """,  # noqa: S608
        patient_id,
    )
    return {r["question_code"]: _answer(r) for r in rows}


async def for_appointment_since(
    db: Executor, appointment_id: int, since: datetime
) -> dict[str, Answer]:
    """The newest answer to each question given for this appointment at or after `since`."""
    rows = await db.fetch(
        f"""
        SELECT DISTINCT ON (question_code) {_A} FROM screening_answer
        WHERE appointment_id = $1 AND answered_at >= $2
        ORDER BY question_code, answered_at DESC, id DESC
        """,  # noqa: S608
        appointment_id,
        since,
    )
    return {r["question_code"]: _answer(r) for r in rows}


async def for_patient(db: Executor, patient_id: int, *, limit: int = 500) -> list[Answer]:
    """The patient's answers, newest first."""
    rows = await db.fetch(
        f"""
        SELECT {_A} FROM screening_answer WHERE patient_id = $1
        ORDER BY answered_at DESC, id DESC LIMIT $2
        """,  # noqa: S608
        patient_id,
        limit,
    )
    return [_answer(r) for r in rows]
