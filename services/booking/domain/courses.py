"""Courses (series): a clinician's plan notes and the course's status. Completed and cancelled
are final, and a course never disagrees with its sessions."""

from __future__ import annotations

import asyncpg

from services.booking.domain.errors import NotActive
from shared.domain.appointment_changes import Change
from shared.domain.appointment_states import ACTIVE
from shared.domain.errors import Conflict, NotFound
from shared.store import appointments, audit
from shared.store import series as series_store
from shared.store.series import SeriesStatus

SERIES_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"active", "paused", "completed", "cancelled"}),
    "paused": frozenset({"active", "paused", "completed", "cancelled"}),
    "completed": frozenset({"completed"}),
    "cancelled": frozenset({"cancelled"}),
}


async def update_series(
    conn: asyncpg.Connection,
    series_id: int,
    *,
    plan_notes: str | None,
    status: SeriesStatus | None,
    expected_version: int,
    change: Change,
) -> series_store.Series:
    """Change a course's plan notes and/or status (None leaves a field alone).

    Completed and cancelled are final. A course with sessions still on the books cannot be
    marked completed or cancelled: cancel them first (cancel with scope rest_of_course), so
    the course and its appointments never disagree.
    """
    current = await series_store.lock(conn, series_id)
    if current is None:
        raise NotFound("series", series_id)
    if current.version != expected_version:
        raise series_store.StaleSeries(current)
    if status is not None:
        await _check_series_status(conn, current, status)
    updated = await series_store.update(
        conn,
        series_id,
        plan_notes=plan_notes,
        status=status,
        expected_version=expected_version,
        now=change.now,
    )
    assert updated is not None
    changed = {
        name: {"from": getattr(current, name), "to": getattr(updated, name)}
        for name in ("status", "plan_notes")
        if getattr(current, name) != getattr(updated, name)
    }
    await audit.insert(
        conn,
        at=change.now,
        actor=change.actor,
        action="series.update",
        entity="series",
        entity_id=series_id,
        patient_id=current.patient_id,
        details={"changed": changed},
        request_id=change.request_id,
    )
    return updated


async def _check_series_status(
    conn: asyncpg.Connection, current: series_store.Series, status: SeriesStatus
) -> None:
    if status not in SERIES_TRANSITIONS[current.status]:
        raise NotActive(current.status, f"a {current.status} course cannot become {status}")
    if status in ("completed", "cancelled") and current.status != status:
        active = [
            a.id for a in await appointments.for_series(conn, current.id) if a.status in ACTIVE
        ]
        if active:
            raise Conflict(
                code="sessions-still-booked",
                message=f"the course still has {len(active)} session(s) on the books; cancel them "
                "first (cancel with scope rest_of_course) or complete them",
                appointment_ids=active,
            )
