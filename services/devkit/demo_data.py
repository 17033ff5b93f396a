"""Demo data for `regimen dev` on an empty database: a clinic in London, two practitioners, the
treatments of the clinical defaults (course templates as the handout gives them, and each
procedure's aftercare template), and a care team for staff alerts (an on-call clinician, an
escalation list of three, a clinic admin) whose mobiles and emails are demo addresses the dev
inbox shows."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import asyncpg

from shared.clock import SystemClock
from shared.domain import screening
from shared.domain.aftercare_defaults import DEMO_TEMPLATES
from shared.store import (
    aftercare_templates,
    care_team,
    check_in_plans,
    clinics,
    practitioners,
    treatments,
    working_hours,
)
from shared.store.clinics import ClinicSettings
from shared.store.practitioners import PractitionerFields
from shared.store.treatments import GapSpec, TreatmentFields


def _weekly_then_fortnightly() -> list[GapSpec]:
    # "Four weekly, then four fortnightly": sessions 2-4 follow at 7 days (6-10), sessions
    # 5-8 at 14 days (12-21).
    weekly = [GapSpec(p, 7, 6, 10) for p in (2, 3, 4)]
    fortnightly = [GapSpec(p, 14, 12, 21) for p in (5, 6, 7, 8)]
    return weekly + fortnightly


def lunch_break_week(days: tuple[int, ...]) -> list[working_hours.HoursRange]:
    """9:00-18:00 on each of `days` (ISO weekdays), a lunch break splitting each in two."""
    return [
        (day, starts, ends)
        for day in days
        for starts, ends in ((time(9), time(13)), (time(14), time(18)))
    ]


async def seed_demo_data(conn: asyncpg.Connection) -> bool:
    """Insert the demo clinic if the database has no clinic yet; return whether it did."""
    async with conn.transaction():
        # Two `regimen dev` starting at once must not seed twice.
        await clinics.lock_table(conn)
        if await clinics.count(conn):
            return False
        now = SystemClock().now()
        clinic = await clinics.insert(
            conn,
            ClinicSettings(
                name="Regimen Demo Hair Clinic",
                time_zone="Europe/London",
                phone="+442079460000",
                address="1 Demo Street, London W1A 1AA",
                region="GB",
                # The UK and the Crown Dependencies, whose mobiles share +44 and its numbering.
                sms_countries=("GB", "GG", "JE", "IM"),
            ),
            now=now,
        )
        clinic_id = clinic.id
        await screening.seed_defaults(conn, clinic_id, now=SystemClock().now())
        for name, email, days in (
            ("Dr Amelia Hart", "amelia.hart@regimen.localhost", (1, 2, 3, 4, 5)),
            ("Dr Samir Patel", "samir.patel@regimen.localhost", (2, 3, 4, 5, 6)),
        ):
            practitioner = await practitioners.insert(
                conn, clinic_id=clinic_id, fields=PractitionerFields(name=name, email=email)
            )
            await working_hours.replace(conn, practitioner.id, lunch_break_week(days))
        await seed_care_team(conn, clinic_id, now=SystemClock().now())
        await treatments.insert(
            conn,
            clinic_id=clinic_id,
            fields=TreatmentFields(code="consultation", name="Consultation", duration_minutes=30),
        )
        inserted = await treatments.insert(
            conn,
            clinic_id=clinic_id,
            fields=TreatmentFields(
                code="hair-mesotherapy",
                name="Hair mesotherapy course",
                duration_minutes=30,
                buffer_after_minutes=10,
                needs_consultation=True,
                sessions_min=8,
                sessions_max=8,
                maintenance_interval_days=91,
            ),
            gaps=_weekly_then_fortnightly(),
        )
        ids = {inserted.code: inserted.id}
        inserted = await treatments.insert(
            conn,
            clinic_id=clinic_id,
            fields=TreatmentFields(
                code="prp-hair",
                name="PRP for hair",
                duration_minutes=60,
                buffer_after_minutes=15,
                needs_consultation=True,
                sessions_min=4,
                sessions_max=4,
                maintenance_interval_days=150,
            ),
            gaps=[GapSpec(p, 28, 14, 42) for p in (2, 3, 4)],
        )
        ids[inserted.code] = inserted.id
        inserted = await treatments.insert(
            conn,
            clinic_id=clinic_id,
            fields=TreatmentFields(
                code="scalp-microneedling",
                name="Scalp microneedling",
                duration_minutes=45,
                buffer_after_minutes=10,
                needs_consultation=True,
                sessions_min=4,
                sessions_max=6,
                maintenance_interval_days=75,
            ),
            gaps=[GapSpec(p, 28, 21, 56) for p in (2, 3, 4, 5, 6)],
        )
        ids[inserted.code] = inserted.id
        # The clinical defaults' aftercare for each procedure (the consultation has none).
        for code, content in DEMO_TEMPLATES.items():
            await aftercare_templates.put(
                conn,
                treatment_id=ids[code],
                clinic_id=clinic_id,
                content=content(),
                by="demo data",
                now=now,
            )
        # The clinical defaults' aftercare check-ins for every course (a consultation has none).
        for course_id in ids.values():
            await check_in_plans.replace(conn, course_id, check_in_plans.DEFAULT_PLAN)
    return True


DEMO_CARE_TEAM: tuple[care_team.MemberFields, ...] = (
    care_team.MemberFields(
        "Dr Amelia Hart", "clinician", "+447700900301", "amelia.hart@regimen.localhost"
    ),
    care_team.MemberFields(
        "Dr Samir Patel", "clinician", "+447700900302", "samir.patel@regimen.localhost"
    ),
    care_team.MemberFields(
        "Nurse Jo Reid", "clinician", "+447700900303", "jo.reid@regimen.localhost"
    ),
    care_team.MemberFields(
        "Priya Shah (clinic admin)", "admin", "+447700900304", "admin@regimen.localhost"
    ),
)


async def seed_care_team(conn: asyncpg.Connection, clinic_id: int, *, now: datetime) -> None:
    """The demo care team: Dr Hart on call for years either side of `now` (the dev clock may
    be moved anywhere), and the escalation list "whoever is on call, Dr Patel, Nurse Reid"."""
    members = [await care_team.insert_member(conn, clinic_id, f, now=now) for f in DEMO_CARE_TEAM]
    await care_team.insert_shift(
        conn,
        clinic_id,
        member_id=members[0].id,
        starts_at=now - timedelta(days=3650),
        ends_at=now + timedelta(days=3650),
        now=now,
    )
    await care_team.replace_escalation(
        conn,
        clinic_id,
        [
            care_team.Step(0, None, True),
            care_team.Step(1, members[1].id, False),
            care_team.Step(2, members[2].id, False),
        ],
    )
