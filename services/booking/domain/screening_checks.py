"""Screening on the booking paths and at check-in (the rules are in shared/domain/screening):

* a public booking that created the patient stores the form's answers as real answers, given
  for the first session booked (a matched patient's record is never changed by a form: what it
  said differently waits in `form_difference`, and check-in asks again);
* a staff booking carries the answers for every question that applies, or none: without them
  (and with no complete answers on file) a single visit or a new course is flagged "screening
  not answered" (sessions added to a booked course are not: check-in re-confirms);
* check-in re-confirms the answers for that appointment (`check_in`): without a recent answer to
  every question that applies it is refused naming them; a new positive answer flags the
  session and check-in is refused until a clinician reviews it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.booking.domain.intake import PatientForm, is_positive
from shared.domain import screening
from shared.domain.appointment_changes import Change, locked
from shared.domain.errors import Conflict, InvalidField
from shared.domain.screening import Given
from shared.store import screening as store
from shared.store.appointments import Appointment
from shared.store.patients import Patient
from shared.store.screening import AnswerSource, Question


class ScreeningNotConfirmed(Conflict):
    code = "screening-not-confirmed"

    def __init__(self, missing: Sequence[Question]) -> None:
        super().__init__(
            "re-confirm the screening answers before check-in: send `screening` with a yes/no "
            "answer to " + ", ".join(q.code for q in missing),
            missing=[{"code": q.code, "question": q.wording} for q in missing],
        )


class ScreeningFlagged(Conflict):
    """Raised after the answers and the flag were committed (see `check_in`)."""

    code = "needs-review"

    def __init__(self, appointment: Appointment) -> None:
        super().__init__(
            "a clinician must review this appointment before check-in: "
            + "; ".join(appointment.review_reasons),
            review_reasons=appointment.review_reasons,
            version=appointment.version,
        )


def _unknown(questions: Sequence[Question], answers: Mapping[str, Given], path: str) -> None:
    asked = {q.code for q in questions if q.active}
    for code in answers:
        if code not in asked:
            raise InvalidField(
                f"{path}.{code}",
                "not a screening question of this clinic; the questions are: "
                + ", ".join(sorted(asked)),
            )


# -- the public form and API ---------------------------------------------------------------------


def form_answers(form: PatientForm, questions: Sequence[Question]) -> dict[str, Given]:
    """The form's answers to the clinic's questions: a key that is a question code (true or a
    text that is not a "no" is a yes, the text its details), and the allergies box for
    `allergy` when the form did not answer it by code. Other keys stay in the record's JSON."""
    codes = {q.code for q in questions if q.active}
    out: dict[str, Given] = {}
    for key, value in form.screening.items():
        if key not in codes:
            continue
        if isinstance(value, bool):
            out[key] = Given(value)
        else:
            out[key] = Given(is_positive(value), value.strip() if is_positive(value) else "")
    if "allergy" in codes and "allergy" not in out:
        allergic = is_positive(form.allergies)
        out["allergy"] = Given(allergic, form.allergies.strip()[:2000] if allergic else "")
    return out


async def record_form(
    conn: asyncpg.Connection,
    form: PatientForm,
    first: Appointment,
    *,
    patient_id: int,
    source: AnswerSource,
    actor: str,
    now: datetime,
) -> None:
    """A new patient's answers from the public form or API, given for the first session. Their
    positive answers flagged the booking already (intake.screening_reasons)."""
    answers = form_answers(form, await store.questions(conn, first.clinic_id))
    await screening.record(
        conn,
        answers,
        clinic_id=first.clinic_id,
        patient_id=patient_id,
        appointment_id=first.id,
        source=source,
        actor=actor,
        now=now,
        sync_record=False,  # the new record holds the form's answers already
    )


async def record_patient_edit(
    conn: asyncpg.Connection,
    patient: Patient,
    values: Mapping[str, Any],
    *,
    actor: str,
    now: datetime,
) -> None:
    """A clinician's edit of the record's screening (PATCH /patients/{id}): each yes/no given
    for a question the clinic asks becomes an answer (source staff, for no appointment), the
    edit's `details` with each yes. No flag: the clinician is the reviewer."""
    codes = {q.code for q in await store.questions(conn, patient.clinic_id) if q.active}
    details = str(values.get("details") or "")
    answers = {
        code: Given(value, details if value else "")
        for code, value in values.items()
        if code in codes and isinstance(value, bool)
    }
    await screening.record(
        conn,
        answers,
        clinic_id=patient.clinic_id,
        patient_id=patient.id,
        appointment_id=None,
        source="staff",
        actor=actor,
        now=now,
        sync_record=False,
    )


# -- staff booking -------------------------------------------------------------------------------


async def check_staff_answers(
    conn: asyncpg.Connection, clinic_id: int, treatment_code: str, answers: Mapping[str, Given]
) -> None:
    """Before booking: the codes are the clinic's, and every question that applies is answered."""
    questions = await store.questions(conn, clinic_id)
    _unknown(questions, answers, "screening")
    missing = [q.code for q in questions if q.applies(treatment_code) and q.code not in answers]
    if missing:
        raise InvalidField(
            "screening",
            "answer every screening question that applies, or none (the booking is then "
            "flagged for review): missing " + ", ".join(missing),
            missing=missing,
        )


async def after_staff_booking(
    conn: asyncpg.Connection,
    booked: Sequence[Appointment],
    answers: Mapping[str, Given] | None,
    *,
    patient_id: int,
    treatment_code: str,
    change: Change,
    adds_to_course: bool = False,
) -> list[Appointment]:
    """Record the answers (for the first session) and flag the sessions: a new positive answer
    names its question; no answers, while the patient's answers on file do not cover every
    question that applies, is "screening not answered" — except for sessions added to a course
    already booked (its first booking was screened or flagged, and every check-in re-confirms)."""
    first = min(booked, key=lambda a: a.starts_at)
    actor = change.actor.label
    if answers:
        reasons = await screening.record(
            conn,
            answers,
            clinic_id=first.clinic_id,
            patient_id=patient_id,
            appointment_id=first.id,
            source="staff",
            actor=actor,
            now=change.now,
        )
    else:
        on_file = await store.latest_by_question(conn, patient_id)
        questions = await store.questions(conn, first.clinic_id)
        complete = all(q.code in on_file for q in questions if q.applies(treatment_code))
        reasons = [] if complete or adds_to_course else [screening.NOT_ANSWERED]
    if not reasons:
        return list(booked)
    return [
        await screening.flag(conn, row, reasons, actor=actor, now=change.now, note="screening")
        for row in booked
    ]


# -- check-in ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckInScreening:
    flagged: Appointment | None  # set: a new positive answer flagged it; check-in must wait


async def check_in(
    conn: asyncpg.Connection,
    appointment_id: int,
    answers: Mapping[str, Given] | None,
    *,
    expected_version: int,
    change: Change,
) -> CheckInScreening:
    """The re-confirmation before check-in, in the check-in's transaction. Raises
    ScreeningNotConfirmed when a question that applies has no answer for this appointment within
    the window (nothing is recorded then); returns `flagged` when a new positive answer flagged
    the session: the caller commits that (the answers and the flag must stay) and refuses the
    check-in afterwards with ScreeningFlagged."""
    current = await locked(conn, appointment_id, expected_version)
    answers = dict(answers or {})
    if answers:
        _unknown(await store.questions(conn, current.clinic_id), answers, "screening")
    missing = [
        q
        for q in await screening.missing_for(conn, current, now=change.now)
        if q.code not in answers
    ]
    if missing:
        raise ScreeningNotConfirmed(missing)
    if current.patient_id is None or not answers:
        return CheckInScreening(None)
    reasons = await screening.record(
        conn,
        answers,
        clinic_id=current.clinic_id,
        patient_id=current.patient_id,
        appointment_id=current.id,
        source="check_in",
        actor=change.actor.label,
        now=change.now,
    )
    if not reasons:
        return CheckInScreening(None)
    flagged = await screening.flag(
        conn, current, reasons, actor=change.actor.label, now=change.now, note="check-in screening"
    )
    return CheckInScreening(flagged)
