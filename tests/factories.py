"""Rows for tests to stand on, written through the stores' own inserts (the typed insert
objects), so that set-up obeys the same rules as the code under test and a change to a table
is made once here. Each function takes the pool or a connection and returns the new row's id;
the defaults are the most ordinary row (a booked staff appointment with no review flag).

(tests/messaging/factories.py builds rows in memory, for the pure rendering tests.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.domain.appointment_states import Status
from shared.store import appointments, consents, patients, treatments
from shared.store.appointments import NewAppointment
from shared.store.consents import ConsentKind
from shared.store.patients import NewPatient

Db = asyncpg.Pool | asyncpg.Connection
NO_BUFFERS = (timedelta(0), timedelta(0))


@asynccontextmanager
async def _connection(db: Db) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def appointment(
    db: Db,
    *,
    clinic_id: int,
    practitioner_id: int,
    treatment_id: int,
    patient_id: int | None,
    starts_at: datetime,
    now: datetime,
    status: Status = "booked",
    series_id: int | None = None,
    position: int | None = None,
    hold_id: int | None = None,
    needs_review: bool = False,
    review_reasons: Sequence[str] = (),
    source: str = "staff",
    buffers: tuple[timedelta, timedelta] | None = None,
) -> int:
    """One appointment (with its first history event, actor 'test'), as long as its treatment
    and blocking the treatment's buffers unless `buffers` (before, after) are given."""
    treatment = await treatments.get(db, treatment_id)
    assert treatment is not None, f"no treatment {treatment_id}"
    before, after = buffers or (
        timedelta(minutes=treatment.buffer_before_minutes),
        timedelta(minutes=treatment.buffer_after_minutes),
    )
    new = NewAppointment(
        clinic_id=clinic_id,
        practitioner_id=practitioner_id,
        treatment_id=treatment_id,
        patient_id=patient_id,
        status=status,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=treatment.duration_minutes),
        buffer_before=before,
        buffer_after=after,
        series_id=series_id,
        position=position,
        hold_id=hold_id,
        needs_review=needs_review,
        review_reasons=review_reasons,
        source=source,
    )
    async with _connection(db) as conn:
        return await appointments.insert(conn, new, actor="test", now=now)


async def patient(db: Db, *, now: datetime, **fields: Any) -> int:
    """One patient; `fields` are NewPatient's (clinic_id, first_name and last_name at least)."""
    return await patients.insert(db, NewPatient(**fields), now=now)


async def consent(
    db: Db,
    patient_id: int,
    granted: Mapping[ConsentKind, bool],
    *,
    now: datetime,
    source: str = "test",
    wording_version: str = "v1",
) -> None:
    """One consent row per kind in `granted` (kind → whether it was given), in that order."""
    for kind, given in granted.items():
        await consents.insert(
            db,
            patient_id,
            kind=kind,
            granted=given,
            source=source,
            wording_version=wording_version,
            now=now,
        )


async def completed_consultation(
    db: Db,
    *,
    clinic_id: int,
    patient_id: int,
    now: datetime,
    practitioner_id: int = 1,
    days_ago: int = 14,
) -> int:
    """A consultation the patient had `days_ago` days before `now` (status completed), so that
    the consultation gate lets a course be booked for them."""
    async with _connection(db) as conn:
        treatment_id = await conn.fetchval(
            "SELECT id FROM treatment WHERE clinic_id = $1 AND code = 'consultation'", clinic_id
        )
        return await appointment(
            conn,
            clinic_id=clinic_id,
            practitioner_id=practitioner_id,
            treatment_id=int(treatment_id),
            patient_id=patient_id,
            starts_at=now - timedelta(days=days_ago),
            now=now,
            status="completed",
        )


async def courses_without_consultation(db: Db) -> None:
    """Let every treatment be booked without a consultation first: for tests of booking itself
    (holds, gaps, messages), not of the consultation gate (tests/safety has those)."""
    async with _connection(db) as conn:
        await conn.execute("UPDATE treatment SET needs_consultation = false")


async def screening_all_no(db: Db, clinic_id: int) -> dict[str, bool]:
    """A "no" to every active screening question of the clinic: the re-confirmation check-in
    needs, for tests of check-in itself."""
    async with _connection(db) as conn:
        codes = await conn.fetch(
            "SELECT code FROM screening_question WHERE clinic_id = $1 AND active", clinic_id
        )
    return {row["code"]: False for row in codes}
