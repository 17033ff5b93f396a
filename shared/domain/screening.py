"""Safety screening before a session: the default questions (clinical-defaults.md), recording
answers, and what a new positive answer means.

* The questions are data per clinic (`screening_question`), seeded from DEFAULTS when a clinic
  is made and edited through the admin API; a question applies to every treatment or to the
  treatment codes in its `applies_to`.
* Answers are append-only rows (`screening_answer`). A NEW positive answer (yes where the
  patient's previous answer to that question was no, or a first yes) flags the session it was
  given for with a review reason naming the question: check-in refuses a flagged session until a
  clinician reviews it. A yes already known (and so already reviewed) does not flag again.
* Before each session the answers are re-confirmed for that appointment: check-in needs an
  answer to every question that applies, given for this appointment within RECONFIRM_WINDOW
  before now (`missing_for`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from shared.store import appointments, patients
from shared.store import screening as store
from shared.store.appointments import Appointment
from shared.store.screening import AnswerSource, NewAnswer, Question, QuestionFields

# Answers given for an appointment this long before check-in still count as re-confirmed (the
# booking form's answers for a first session a few days away, a pre-visit answer).
RECONFIRM_WINDOW = timedelta(days=7)

# Staff booked the patient without their answers: the sessions wait for a clinician.
NOT_ANSWERED = "screening not answered"

# The defaults of clinical-defaults.md ("Screening asked before the first session and
# re-confirmed before each one"). Kept identical to the seed in migration 0015_screening.sql.
DEFAULTS: tuple[QuestionFields, ...] = (
    QuestionFields(
        "allergy",
        "Are you allergic to any medicine, to local anaesthetics such as lidocaine, or to "
        "vitamins?",
        None,
        1,
    ),
    QuestionFields(
        "blood_thinners_or_nsaids",
        "Do you take blood thinners (such as warfarin, apixaban, rivaroxaban, clopidogrel or "
        "aspirin) or anti-inflammatory painkillers (such as ibuprofen)?",
        None,
        2,
    ),
    QuestionFields("bleeding_disorder", "Do you have a bleeding or clotting disorder?", None, 3),
    QuestionFields("pregnant_or_breastfeeding", "Are you pregnant or breast-feeding?", None, 4),
    QuestionFields(
        "scalp_infection_or_fever",
        "Do you have an infection of the scalp or a fever at the moment?",
        None,
        5,
    ),
    QuestionFields(
        "immunosuppressed",
        "Is your immune system weakened by an illness or by medicines (such as steroids or "
        "chemotherapy)?",
        None,
        6,
    ),
    QuestionFields(
        "keloid_history",
        "Have you ever had keloid scars (raised scars that grow beyond a wound)?",
        ["scalp-microneedling"],
        7,
    ),
    QuestionFields(
        "isotretinoin",
        "Do you take isotretinoin (such as Roaccutane), or have you taken it recently?",
        None,
        8,
    ),
)


@dataclass(frozen=True)
class Given:
    """One answer as given: yes/no and what the patient said about it."""

    answer: bool
    details: str = ""


async def seed_defaults(conn: asyncpg.Connection, clinic_id: int, *, now: datetime) -> None:
    await store.seed(conn, clinic_id, DEFAULTS, now=now)


async def applicable(
    db: asyncpg.Connection | asyncpg.Pool, appointment: Appointment
) -> list[Question]:
    """The clinic's active questions that apply to the appointment's treatment."""
    code = await db.fetchval("SELECT code FROM treatment WHERE id = $1", appointment.treatment_id)
    return [q for q in await store.questions(db, appointment.clinic_id) if q.applies(str(code))]


def new_positive_reason(question: Question | None, code: str) -> str:
    label = question.wording if question is not None else code
    return f"screening: new positive answer to '{code}' ({label})"


async def record(
    conn: asyncpg.Connection,
    answers: Mapping[str, Given],
    *,
    clinic_id: int,
    patient_id: int,
    appointment_id: int | None,
    source: AnswerSource,
    actor: str,
    now: datetime,
    sync_record: bool = True,
) -> list[str]:
    """Store the answers (codes the clinic asks; the caller checked them) and return the review
    reasons of the NEW positive ones (see the module doc), in question order. With
    `sync_record`, the patient record's `screening` (what the admin API shows and the booking
    form compares with) gets the same yes/no values."""
    if not answers:
        return []
    previous = await store.latest_by_question(conn, patient_id)
    known = {q.code: q for q in await store.questions(conn, clinic_id)}
    await store.insert_answers(
        conn,
        [NewAnswer(code, given.answer, given.details) for code, given in answers.items()],
        clinic_id=clinic_id,
        patient_id=patient_id,
        appointment_id=appointment_id,
        source=source,
        actor=actor,
        now=now,
    )
    if sync_record:
        await patients.merge_screening(
            conn, patient_id, {code: given.answer for code, given in answers.items()}, now=now
        )
    new_positive = [
        code
        for code, given in answers.items()
        if given.answer and (code not in previous or not previous[code].answer)
    ]
    order = {code: n for n, code in enumerate(known)}
    new_positive.sort(key=lambda c: order.get(c, len(order)))
    return [new_positive_reason(known.get(code), code) for code in new_positive]


async def flag(
    conn: asyncpg.Connection,
    appointment: Appointment,
    reasons: Sequence[str],
    *,
    actor: str,
    now: datetime,
    note: str,
) -> Appointment:
    """Add review reasons to the appointment (kept once each) and flag it for a clinician."""
    merged = [
        *appointment.review_reasons,
        *(r for r in reasons if r not in appointment.review_reasons),
    ]
    updated = await appointments.set_review(
        conn, appointment.id, needs_review=True, reasons=merged, actor=actor, now=now, note=note
    )
    assert updated is not None  # the caller holds the appointment
    return updated


async def missing_for(
    conn: asyncpg.Connection, appointment: Appointment, *, now: datetime
) -> list[Question]:
    """The questions that apply to the appointment and were not answered for it within
    RECONFIRM_WINDOW: what check-in still needs."""
    given = await store.for_appointment_since(conn, appointment.id, now - RECONFIRM_WINDOW)
    return [q for q in await applicable(conn, appointment) if q.code not in given]
