"""Sessions with their reminders planned as a booking plans them, and the notifier's part
played by the test: marking due reminders sent (what the notifier records once Twilio has
taken a message). Shared by the in-process and the two-process call-list tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from services.devkit.demo_data import seed_demo_data
from shared import outbox_plan
from shared.db.transactions import in_transaction
from shared.store import appointments
from tests import factories

HART, PATEL = 1, 2  # the demo practitioners


async def clinic_and_treatment(pool: asyncpg.Pool) -> tuple[int, int]:
    """The demo clinic (seeded on first use) and its consultation."""
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    clinic_id = int(await pool.fetchval("SELECT min(id) FROM clinic"))
    treatment_id = int(await pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'"))
    return clinic_id, treatment_id


async def book(
    pool: asyncpg.Pool,
    *,
    starts_at: datetime,
    now: datetime,
    practitioner_id: int = HART,
    patient_id: int | None = None,
    mobile: str = "+447700900123",
) -> tuple[int, int]:
    """A booked session for a patient who takes care SMS, with its reminders planned at `now`
    (those whose moment has passed are skipped, as at a real booking); (appointment, patient)."""
    clinic_id, treatment_id = await clinic_and_treatment(pool)
    if patient_id is None:
        patient_id = await factories.patient(
            pool,
            clinic_id=clinic_id,
            first_name="Ada",
            last_name="Lovelace",
            mobile=mobile,
            now=now,
        )
        await factories.consent(pool, patient_id, {"care_sms": True}, now=now)
    appointment_id = await factories.appointment(
        pool,
        clinic_id=clinic_id,
        practitioner_id=practitioner_id,
        treatment_id=treatment_id,
        patient_id=patient_id,
        starts_at=starts_at,
        now=now,
    )

    async def plan(conn: asyncpg.Connection) -> None:
        appointment = await appointments.get(conn, appointment_id)
        assert appointment is not None
        await outbox_plan.plan_reminders(conn, appointment, now=now)

    await in_transaction(pool, plan)
    return appointment_id, patient_id


async def send_due(pool: asyncpg.Pool, now: datetime) -> int:
    """The notifier's part: every scheduled message due by `now` is sent at `now`."""
    result = await pool.execute(
        """
        UPDATE notification SET status = 'sent', sent_at = $1, updated_at = $1
        WHERE status = 'scheduled' AND due_at <= $1
        """,
        now,
    )
    return int(result.split()[-1])


async def reminder(pool: asyncpg.Pool, appointment_id: int, kind: str) -> int | None:
    value = await pool.fetchval(
        "SELECT id FROM notification WHERE appointment_id = $1 AND kind = $2",
        appointment_id,
        kind,
    )
    return None if value is None else int(value)


async def confirm(pool: asyncpg.Pool, appointment_id: int, now: datetime) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        await appointments.transition(conn, appointment_id, "confirmed", actor="test", now=now)

    await in_transaction(pool, work)


async def not_confirmed_tasks(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM call_task WHERE reason = 'not_confirmed' ORDER BY appointment_id, id"
    )


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
