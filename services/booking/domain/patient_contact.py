"""What a patient changes about how they are reached: their mobile and email, their consents,
and asking for a new private link. The self-service pages call these; staff change the same
through the patients API.

A new mobile or email revokes every link sent so far (shared/store/patients.update bumps the
link version) and is told to the old contact (shared/outbox_plan.plan_contact_changed): if the
change was not the patient's, that is how they learn. Consents are append-only: only those whose
state changed are recorded, with their source and the version of the wording shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from shared import outbox_plan
from shared.domain.errors import Stale
from shared.store import audit, patients
from shared.store import consents as consent_store
from shared.store.audit import Actor
from shared.store.consents import ConsentKind
from shared.store.patients import Patient


async def change_contact(
    conn: asyncpg.Connection,
    patient: Patient,
    changes: Mapping[str, str | None],
    *,
    expected_version: int,
    actor: Actor,
    now: datetime,
    request_id: str | None,
) -> Patient:
    """Set the patient's `mobile` and/or `email` (already normalised); raises Stale when the
    record changed since the caller read it at `expected_version`."""
    try:
        updated = await patients.update(
            conn, patient.id, expected_version=expected_version, changes=dict(changes), now=now
        )
    except patients.StaleVersion:
        fresh = await patients.get(conn, patient.id)
        assert fresh is not None  # patients are never deleted
        raise Stale("patient", fresh) from None
    assert updated is not None  # patients are never deleted
    await outbox_plan.plan_contact_changed(conn, patient, updated, now=now)
    await audit.insert(
        conn,
        at=now,
        actor=actor,
        action="patient.update",
        entity="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        details={"fields": sorted(changes)},
        request_id=request_id,
    )
    return updated


async def set_consents(
    conn: asyncpg.Connection,
    patient_id: int,
    wanted: Mapping[ConsentKind, bool],
    *,
    source: str,
    wording_version: str,
    actor: Actor,
    now: datetime,
    request_id: str | None,
) -> dict[ConsentKind, bool]:
    """Record the consents of `wanted` whose state differs from the current one; returns those
    (empty: nothing changed)."""
    # Locked first: two saves at once compare with each other's result, and queue instead of
    # deadlocking in the re-planning of reminders (which locks the patient too).
    await patients.lock(conn, patient_id)
    current = await consent_store.current(conn, patient_id)
    changed = {
        kind: granted
        for kind, granted in wanted.items()
        if granted != (kind in current and current[kind].granted)
    }
    if changed:
        await record_consents(
            conn,
            patient_id,
            changed,
            source=source,
            wording_version=wording_version,
            actor=actor,
            now=now,
            request_id=request_id,
            replan=True,
        )
    return changed


async def record_consents(
    conn: asyncpg.Connection,
    patient_id: int,
    answers: Mapping[ConsentKind, bool],
    *,
    source: str,
    wording_version: str,
    actor: Actor,
    now: datetime,
    request_id: str | None,
    replan: bool = False,
) -> None:
    """Record every answer given (append-only rows), and one audit row naming them all.

    `replan`: the patient may have reminders planned already (not a new patient's first
    answers, planned right after by the booking): a change of care consent moves them to the
    channel now allowed (shared/outbox_plan.on_consents_changed), and the audit row says what
    was cancelled and planned."""
    for kind, granted in answers.items():
        await consent_store.insert(
            conn,
            patient_id,
            kind=kind,
            granted=granted,
            source=source,
            wording_version=wording_version,
            now=now,
        )
    details: dict[str, Any] = {
        "consents": dict(answers),
        "source": source,
        "wording_version": wording_version,
    }
    if replan and any(kind in consent_store.CARE_KINDS for kind in answers):
        replanned = await outbox_plan.on_consents_changed(conn, patient_id, now=now)
        details["reminders"] = replanned.summary()
    await audit.insert(
        conn,
        at=now,
        actor=actor,
        action="consent.record",
        entity="patient",
        entity_id=patient_id,
        patient_id=patient_id,
        details=details,
        request_id=request_id,
    )


async def request_new_link(
    conn: asyncpg.Connection,
    patient_id: int,
    *,
    actor: Actor,
    now: datetime,
    request_id: str | None,
) -> list[int]:
    """A patient with an expired or replaced link asks for a new one: the current link goes to
    the contacts on file, at most once an hour (the outbox's dedupe key). The messages planned."""
    planned = await outbox_plan.plan_new_link(conn, patient_id, now=now, asked_by_patient=True)
    if planned:
        await audit.insert(
            conn,
            at=now,
            actor=actor,
            action="patient.link_request",
            entity="patient",
            entity_id=patient_id,
            patient_id=patient_id,
            details={"notifications": planned},
            request_id=request_id,
        )
    return planned
