"""The consultation gate: the one rule every booking path applies to the first session of a course
whose treatment `needs_consultation` (the public JSON API, the public form, staff bookings).

A course passes the gate when, at the same clinic:
* the patient has a consultation on file (`appointments.consultation_before`): completed, or
  booked/confirmed/checked in and ending by the course's first session; or
* a clinician or admin overrides it with a reason (staff bookings only): the reason goes to the
  audit log and the history of every session booked; or
* the patient declared on the booking form that they had a consultation elsewhere or before the
  clinic used Regimen (the form's "I have had a consultation" step, which offers booking one
  first): the sessions are then flagged for clinician review, and check-in refuses a flagged
  session, so no session happens before a clinician has checked the claim.

The public JSON API has no declaration, and its answer may not depend on a patient's record:
whoever calls it may only know the patient's mobile, and a 201 for a patient with a
consultation on file against a 409 for one without would tell them what the record holds. So
there (`on_file_counts=False`) every course that needs a consultation is refused: the patient
books the consultation, and the course with the clinic or on the booking page.

Later sessions of a course (staff adding to a series, the patient's next-session page, the
scheduler's proposals) are not gated again: the course passed when its first session was booked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.domain.errors import Conflict
from shared.scheduling.loader import TreatmentInfo
from shared.store import appointments, audit
from shared.store.appointments import Appointment
from shared.store.audit import Actor

# Review reason (staff-facing, stored on the appointments) when the patient skips the offered
# consultation on the form because they say they already had one.
CONSULTATION_CLAIMED = (
    "patient says they already had the consultation this course needs: check before session 1"
)

Basis = Literal["not_needed", "on_file", "override", "declared"]


class ConsultationRequired(Conflict):
    """A course that needs a consultation, for a patient without one (and no override)."""

    code = "consultation-required"

    def __init__(self, treatment: TreatmentInfo, *, public_api: bool = False) -> None:
        super().__init__(
            f"{treatment.name} needs a consultation first: book a consultation; the clinic books "
            "the course with you after it, or book it on the clinic's booking page"
            if public_api
            else f"{treatment.name} needs a consultation first: book a consultation, then the "
            "course (a consultation booked before the course's first session counts)",
            treatment_id=treatment.id,
        )


@dataclass(frozen=True)
class GateResult:
    basis: Basis
    consultation_id: int | None = None
    override_reason: str | None = None

    @property
    def review_reasons(self) -> list[str]:
        """What the booked sessions must be flagged with for a clinician (empty: nothing)."""
        return [CONSULTATION_CLAIMED] if self.basis == "declared" else []

    def audit_details(self) -> dict[str, object]:
        out: dict[str, object] = {"basis": self.basis}
        if self.consultation_id is not None:
            out["consultation_appointment_id"] = self.consultation_id
        if self.override_reason is not None:
            out["override_reason"] = self.override_reason
        return out


def is_consultation(treatment: TreatmentInfo) -> bool:
    """What counts as a consultation (kept in step with `appointments.consultation_before`)."""
    return (
        not treatment.is_course
        and not treatment.needs_consultation
        and "consult" in treatment.code.casefold()
    )


async def check(
    conn: asyncpg.Connection,
    treatment: TreatmentInfo,
    *,
    clinic_id: int,
    patient_id: int,
    first_start: datetime,
    override_reason: str | None = None,
    declared: bool = False,
    on_file_counts: bool = True,
) -> GateResult:
    """Whether the first session of `treatment` starting at `first_start` may be booked for the
    patient, and on what basis; raises ConsultationRequired otherwise. The caller checked that
    whoever gives `override_reason` may override (clinician or admin). With `on_file_counts`
    false (the public API) the patient's record is not looked at."""
    if not treatment.needs_consultation:
        return GateResult("not_needed")
    if on_file_counts:
        found = await appointments.consultation_before(
            conn, patient_id=patient_id, clinic_id=clinic_id, before=first_start
        )
        if found is not None:
            return GateResult("on_file", consultation_id=found.id)
    if override_reason is not None:
        return GateResult("override", override_reason=override_reason)
    if declared:
        return GateResult("declared")
    raise ConsultationRequired(treatment, public_api=not on_file_counts)


async def record_override(
    conn: asyncpg.Connection,
    gate: GateResult,
    *,
    patient_id: int,
    series_id: int | None,
    booked: Sequence[Appointment],
    now: datetime,
    actor: Actor,
    request_id: str | None,
) -> None:
    """A clinician's override of the gate: its own audit entry (action `consultation.override`,
    the reason as the entry's reason) and an event in the history of every session booked, in
    the booking's transaction."""
    reason = gate.override_reason or ""
    await audit.insert(
        conn,
        at=now,
        actor=actor,
        action="consultation.override",
        entity="series" if series_id is not None else "appointment",
        entity_id=series_id if series_id is not None else booked[0].id,
        patient_id=patient_id,
        reason=reason,
        details={"appointment_ids": [a.id for a in booked]},
        request_id=request_id,
    )
    for row in booked:
        await appointments.add_note_event(
            conn,
            row.id,
            actor=actor.label,
            now=now,
            reason=reason,
            details={"consultation": "override"},
        )
