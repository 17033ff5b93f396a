"""The loader feeds the pure engine exactly what the database holds."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from services.devkit.demo_data import seed_demo_data
from shared.scheduling.availability import free_starts
from shared.scheduling.loader import load_clinic, load_schedules, load_treatment
from shared.store import time_off
from tests import factories


async def test_demo_data_loads_and_bookings_and_time_off_remove_slots(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    clinic = await load_clinic(pool, 1)
    course = await pool.fetchval("SELECT id FROM treatment WHERE code = 'hair-mesotherapy'")
    treatment = await load_treatment(pool, course)
    assert clinic is not None and treatment is not None
    assert clinic.time_zone == "Europe/London"
    assert treatment.sessions_max == 8 and treatment.gaps[2].target_days == 7
    assert treatment.gaps[5].target_days == 14
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    day = date(2026, 3, 3)  # a Tuesday: both practitioners work

    async def starts() -> list[tuple[int, datetime]]:
        schedules = await load_schedules(
            pool, 1, practitioner_ids=None, first_day=day, last_day=day, zone=clinic.zone, now=now
        )
        found = free_starts(
            treatment.spec, schedules, clinic.rules, first_day=day, last_day=day, now=now
        )
        return [(f.practitioner_id, f.start) for f in found]

    before = await starts()
    ten = datetime(2026, 3, 3, 10, tzinfo=UTC)  # 10:00 in London in March (GMT)
    assert (1, ten) in before and (2, ten) in before
    async with pool.acquire() as conn:
        patient = await factories.patient(
            conn, clinic_id=1, first_name="Ada", last_name="Test", now=now
        )
        # 10:00-10:30 and the course's 10-minute buffer after it.
        await factories.appointment(
            conn,
            clinic_id=1,
            practitioner_id=1,
            treatment_id=course,
            patient_id=patient,
            starts_at=ten,
            now=now,
        )
        await time_off.insert(
            conn,
            2,
            starts_at=datetime.combine(day, time(9), UTC),
            ends_at=datetime.combine(day, time(12), UTC),
            reason="",
            now=now,
        )
    after = await starts()
    assert (1, ten) not in after and (2, ten) not in after
    # The 10-minute buffer after 10:00-10:30 also blocks a 10:30 start with practitioner 1.
    assert (1, ten + timedelta(minutes=30)) not in after
    assert (1, ten + timedelta(minutes=45)) in after
    assert (2, datetime(2026, 3, 3, 14, tzinfo=UTC)) in after
