"""What every change of an appointment is made of: who makes it (`Change`), the appointment
locked at the version the caller read, and the state transition written with its history event
and its audit row in the same transaction, so none of them exists without the others.

Lock order, to stay clear of deadlocks: a series row before any of its appointments. Changes
that touch several sessions of a course (reschedule, cancel the rest) take the series lock
first, so they run one at a time per course; single-appointment actions lock only their row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.domain.appointment_states import Status
from shared.domain.errors import NotFound
from shared.scheduling.loader import ClinicInfo, TreatmentInfo, load_clinic, load_treatment
from shared.store import appointments, audit
from shared.store import series as series_store
from shared.store.appointments import Appointment, VersionConflict
from shared.store.audit import Actor

Executor = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class Change:
    """Who makes a change, when, and the request it came in on (for the audit log)."""

    actor: Actor
    now: datetime
    request_id: str | None = None


async def audit_appointment(
    conn: Executor,
    change: Change,
    action: str,
    appointment: Appointment,
    *,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action=action,
        entity="appointment",
        entity_id=appointment.id,
        patient_id=appointment.patient_id,
        reason=reason,
        details=details,
        request_id=change.request_id,
    )


async def locked(
    conn: asyncpg.Connection,
    appointment_id: int,
    expected_version: int | None,
    *,
    lock_series: bool = False,
) -> Appointment:
    """The appointment, locked for this transaction and at the version the caller read.

    With `lock_series`, its series row is locked first (see the module's lock order).
    """
    if lock_series:
        head = await appointments.get(conn, appointment_id)
        if head is None:
            raise NotFound("appointment", appointment_id)
        if head.series_id is not None:
            await series_store.lock(conn, head.series_id)
    current = await appointments.lock(conn, appointment_id)
    if current is None:
        raise NotFound("appointment", appointment_id)
    if expected_version is not None and current.version != expected_version:
        raise VersionConflict(current)
    return current


async def clinic_of(db: Executor, clinic_id: int) -> ClinicInfo:
    clinic = await load_clinic(db, clinic_id)
    if clinic is None:  # the foreign key makes this impossible; say so if it ever happens
        raise LookupError(f"clinic {clinic_id} vanished")
    return clinic


async def treatment_of(db: Executor, treatment_id: int) -> TreatmentInfo:
    treatment = await load_treatment(db, treatment_id)
    if treatment is None:
        raise LookupError(f"treatment {treatment_id} vanished")
    return treatment


async def transition_audited(
    conn: asyncpg.Connection,
    current: Appointment,
    to_status: Status,
    action: str,
    change: Change,
    *,
    reason: str = "",
    details: dict[str, Any] | None = None,
    audit_details: dict[str, Any],
) -> Appointment:
    """Move a locked appointment and audit it in the same transaction, so the move and its
    audit row (which names the status it left) commit or roll back together."""
    updated = await appointments.transition(
        conn,
        current.id,
        to_status,
        actor=change.actor.label,
        now=change.now,
        reason=reason,
        details=details,
    )
    assert updated is not None  # the caller holds the row's lock
    await audit_appointment(
        conn,
        change,
        f"appointment.{action}",
        updated,
        reason=reason,
        details={"from_status": current.status, **audit_details},
    )
    return updated
