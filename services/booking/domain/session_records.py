"""The session record: what was done at a completed session (product, lot and its expiry,
areas, depth or needle length, volume, anaesthetic, notes, who performed it), taken with the
completion or added and corrected later, each version kept (shared/store/session_records).

Rules:
* A treatment that is a procedure needs at least the product and the lot number, so that a
  recall finds every patient who received a lot; a consultation needs no record (it may have
  one). Which is which is `needs_lot`.
* A lot past its expiry on the session's local date is refused: an expired product must not be
  used. If it was used anyway, the record must say so truthfully, so it is taken with
  `expired_lot_acknowledged` (kept in the record and the audit log); acknowledging a lot that
  had not expired is refused, so the flag never marks a record by mistake.
* `performed_by` is a practitioner of the session's clinic, the appointment's own by default.
* Only a completed session has a record; a correction names the record's version (If-Match)
  and a reason.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import asyncpg

from services.booking.domain import actions
from shared.domain.appointment_changes import (
    Change,
    audit_appointment,
    clinic_of,
    locked,
    treatment_of,
)
from shared.domain.appointment_states import check_transition
from shared.domain.errors import Conflict, InvalidField, NotFound, Stale
from shared.scheduling.loader import TreatmentInfo
from shared.store import practitioners
from shared.store import session_records as store
from shared.store.appointments import Appointment
from shared.store.session_records import RecordFields, SessionRecord

COMPLETION_REASON = "recorded when the session was completed"


def needs_lot(treatment: TreatmentInfo) -> bool:
    """Whether completing a session of this treatment needs a record with product and lot.

    A consultation is a single visit that no course depends on being part of; every course
    treatment (several sessions, or needing a consultation first) is a procedure. Until
    treatments say so themselves, this is read from the treatment's own settings, not its
    name or code."""
    return treatment.needs_consultation or treatment.sessions_max > 1


async def _session_date(conn: asyncpg.Connection, appointment: Appointment) -> date:
    clinic = await clinic_of(conn, appointment.clinic_id)
    return appointment.starts_at.astimezone(clinic.zone).date()


async def checked(
    conn: asyncpg.Connection,
    appointment: Appointment,
    fields: RecordFields,
    *,
    prefix: str,
) -> RecordFields:
    """`fields` made complete (performed_by defaulted) and checked against the session, or an
    InvalidField naming the field by its path under `prefix` (e.g. `record.lot_expiry`)."""

    def at(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    treatment = await treatment_of(conn, appointment.treatment_id)
    if needs_lot(treatment):
        for name in ("product", "lot_number"):
            if getattr(fields, name) is None:
                raise InvalidField(
                    at(name),
                    f"required for {treatment.name}: a recall must find every patient who "
                    "received a lot",
                )
    if fields.lot_expiry is not None and fields.lot_number is None:
        raise InvalidField(at("lot_number"), "give the lot number the expiry date belongs to")
    session_day = await _session_date(conn, appointment)
    expired = fields.lot_expiry is not None and fields.lot_expiry < session_day
    if expired and not fields.expired_lot_acknowledged:
        raise InvalidField(
            at("lot_expiry"),
            f"the lot expired on {fields.lot_expiry}, before the session on {session_day}: an "
            "expired product must not be used; if it was, record it with "
            "expired_lot_acknowledged: true",
            lot_expiry=str(fields.lot_expiry),
            session_date=str(session_day),
        )
    if fields.expired_lot_acknowledged and not expired:
        raise InvalidField(
            at("expired_lot_acknowledged"),
            "only for a lot whose expiry date is before the session's date",
        )
    performed_by = fields.performed_by or appointment.practitioner_id
    practitioner = await practitioners.get(conn, performed_by)
    if practitioner is None or practitioner.clinic_id != appointment.clinic_id:
        raise InvalidField(
            at("performed_by"), f"no practitioner with id {performed_by} at this clinic"
        )
    return dataclasses.replace(fields, performed_by=performed_by)


async def _audit(
    conn: asyncpg.Connection,
    change: Change,
    appointment: Appointment,
    action: str,
    saved: SessionRecord,
    *,
    reason: str,
    changed: list[str],
) -> None:
    # Field names only: the values are clinical and live in the record's own history.
    details: dict[str, Any] = {"session_record_version": saved.version, "fields": changed}
    if saved.fields.expired_lot_acknowledged:
        details["expired_lot_acknowledged"] = True
    await audit_appointment(conn, change, action, appointment, reason=reason, details=details)


def _filled(fields: RecordFields) -> list[str]:
    empty = RecordFields()
    return sorted(
        name for name in store.FIELD_NAMES if getattr(fields, name) != getattr(empty, name)
    )


async def complete(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    record: RecordFields | None,
    expected_version: int,
    change: Change,
) -> Appointment:
    """checked_in → completed with the session's record, in one transaction: a refused record
    completes nothing. The record is written before the completion's follow-up is planned
    (shared.domain.after_session), which may read it."""
    current = await locked(conn, appointment_id, expected_version)
    check_transition(current.status, "completed")
    if record is None:
        treatment = await treatment_of(conn, current.treatment_id)
        if needs_lot(treatment):
            raise InvalidField(
                "record",
                f"completing a {treatment.name} session needs its record: at least product "
                "and lot_number",
            )
        return await actions.act(
            conn,
            appointment_id,
            state=actions.COMPLETE,
            expected_version=expected_version,
            change=change,
        )
    fields = await checked(conn, current, record, prefix="record")

    async def write_record(conn: asyncpg.Connection, updated: Appointment) -> None:
        saved = await store.insert(
            conn,
            updated.id,
            fields,
            actor=change.actor.label,
            reason=COMPLETION_REASON,
            now=change.now,
        )
        await _audit(
            conn,
            change,
            updated,
            "session_record.create",
            saved,
            reason=COMPLETION_REASON,
            changed=_filled(fields),
        )

    return await actions.act(
        conn,
        appointment_id,
        state=actions.COMPLETE,
        expected_version=expected_version,
        change=change,
        then=write_record,
    )


async def write(
    conn: asyncpg.Connection,
    appointment_id: int,
    *,
    fields: RecordFields | None = None,
    changes: dict[str, Any] | None = None,
    reason: str,
    expected_version: int | None,
    change: Change,
) -> SessionRecord:
    """Add the record of a completed session, or correct it: `fields` replaces every value
    (PUT), `changes` only those named (PATCH, which needs an existing record). A correction
    needs the record's version as last read (`expected_version`): Stale when it moved on,
    Conflict when none was sent. Every version stays in the history with `reason`."""
    appointment = await locked(conn, appointment_id, None)
    if appointment.status != "completed":
        raise Conflict(
            f"the appointment is {appointment.status}: only a completed session has a record",
            code="not-completed",
            current_status=appointment.status,
        )
    current = await store.lock_for_appointment(conn, appointment_id)
    if current is None and fields is None:
        raise NotFound("session record of appointment", appointment_id)
    if current is not None:
        if expected_version is None:
            raise Conflict(
                f"the session already has a record (version {current.version}): send If-Match "
                "with it to correct it",
                code="record-exists",
                current_version=current.version,
            )
        if current.version != expected_version:
            raise Stale("session record", current)
    if fields is None:
        assert current is not None and changes is not None
        fields = dataclasses.replace(current.fields, **changes)
    new = await checked(conn, appointment, fields, prefix="")
    actor = change.actor.label
    if current is None:
        saved = await store.insert(
            conn, appointment_id, new, actor=actor, reason=reason, now=change.now
        )
        await _audit(
            conn,
            change,
            appointment,
            "session_record.create",
            saved,
            reason=reason,
            changed=_filled(new),
        )
        return saved
    changed = sorted(
        name for name in store.FIELD_NAMES if getattr(current.fields, name) != getattr(new, name)
    )
    if not changed:
        return current
    saved = await store.replace(conn, current, new, actor=actor, reason=reason, now=change.now)
    await _audit(
        conn,
        change,
        appointment,
        "session_record.correct",
        saved,
        reason=reason,
        changed=changed,
    )
    return saved
