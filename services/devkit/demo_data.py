"""Demo data for `regimen dev` on an empty database: a clinic in London, two practitioners, and
the treatments of the clinical defaults (course templates as the handout gives them)."""

from __future__ import annotations

from datetime import time

import asyncpg

from shared.store import clinics
from shared.store.clinics import GapSpec


def _weekly_then_fortnightly() -> list[GapSpec]:
    # "Four weekly, then four fortnightly": sessions 2-4 follow at 7 days (6-10), sessions
    # 5-8 at 14 days (12-21).
    weekly = [GapSpec(p, 7, 6, 10) for p in (2, 3, 4)]
    fortnightly = [GapSpec(p, 14, 12, 21) for p in (5, 6, 7, 8)]
    return weekly + fortnightly


async def seed_demo_data(conn: asyncpg.Connection) -> bool:
    """Insert the demo clinic if the database has no clinic yet; return whether it did."""
    async with conn.transaction():
        # Two `regimen dev` starting at once must not seed twice.
        await conn.execute("LOCK TABLE clinic IN EXCLUSIVE MODE")
        if await clinics.count_clinics(conn):
            return False
        clinic_id = await clinics.insert_clinic(
            conn,
            name="Regimen Demo Hair Clinic",
            time_zone="Europe/London",
            phone="+442079460000",
            address="1 Demo Street, London W1A 1AA",
            region="GB",
            # The UK and the Crown Dependencies, whose mobiles share +44 and its numbering.
            sms_countries=("GB", "GG", "JE", "IM"),
        )
        for name, email, days in (
            ("Dr Amelia Hart", "amelia.hart@regimen.localhost", (1, 2, 3, 4, 5)),
            ("Dr Samir Patel", "samir.patel@regimen.localhost", (2, 3, 4, 5, 6)),
        ):
            practitioner_id = await clinics.insert_practitioner(
                conn, clinic_id=clinic_id, name=name, email=email
            )
            for weekday in days:
                # A lunch break splits each day into two ranges.
                for starts, ends in ((time(9), time(13)), (time(14), time(18))):
                    await clinics.insert_working_hours(
                        conn,
                        practitioner_id=practitioner_id,
                        weekday=weekday,
                        starts=starts,
                        ends=ends,
                    )
        await clinics.insert_treatment(
            conn, clinic_id=clinic_id, code="consultation", name="Consultation", duration_minutes=30
        )
        await clinics.insert_treatment(
            conn,
            clinic_id=clinic_id,
            code="hair-mesotherapy",
            name="Hair mesotherapy course",
            duration_minutes=30,
            buffer_after_minutes=10,
            needs_consultation=True,
            sessions_min=8,
            sessions_max=8,
            maintenance_interval_days=91,
            gaps=_weekly_then_fortnightly(),
        )
        await clinics.insert_treatment(
            conn,
            clinic_id=clinic_id,
            code="prp-hair",
            name="PRP for hair",
            duration_minutes=60,
            buffer_after_minutes=15,
            needs_consultation=True,
            sessions_min=4,
            sessions_max=4,
            maintenance_interval_days=150,
            gaps=[GapSpec(p, 28, 14, 42) for p in (2, 3, 4)],
        )
        await clinics.insert_treatment(
            conn,
            clinic_id=clinic_id,
            code="scalp-microneedling",
            name="Scalp microneedling",
            duration_minutes=45,
            buffer_after_minutes=10,
            needs_consultation=True,
            sessions_min=4,
            sessions_max=6,
            maintenance_interval_days=75,
            gaps=[GapSpec(p, 28, 21, 56) for p in (2, 3, 4, 5, 6)],
        )
    return True
