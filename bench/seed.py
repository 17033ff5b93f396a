"""A busy clinic for the benchmarks: the demo clinic plus eight more practitioners, a thousand
patients, and about 200,000 appointments over eight years (most of them in the past, the future
about 60 % booked, as a real diary would be)."""

from __future__ import annotations

from datetime import date, timedelta

import asyncpg

from services.devkit.demo_data import lunch_break_week, seed_demo_data
from shared.store import practitioners, working_hours
from shared.store.practitioners import PractitionerFields


async def seed_busy_clinic(url: str, *, today: date, appointments: int = 200_000) -> None:
    conn = await asyncpg.connect(url)
    try:
        await seed_demo_data(conn)
        for n in range(3, 11):
            fields = PractitionerFields(name=f"Practitioner {n}", email=f"p{n}@regimen.localhost")
            practitioner = await practitioners.insert(conn, clinic_id=1, fields=fields)
            await working_hours.replace(conn, practitioner.id, lunch_break_week((1, 2, 3, 4, 5)))
        await conn.execute(
            """
            INSERT INTO patient (clinic_id, first_name, last_name, mobile, created_at, updated_at)
            SELECT 1, 'Patient', 'No ' || n, '+4479111' || lpad(n::text, 5, '0'), now(), now()
            FROM generate_series(1, 1000) AS n
            """
        )
        # Mondays to Fridays, sixteen 30-minute slots a day, about 60 % of them taken; the
        # newest `appointments` candidates are kept so the coming weeks are realistically full.
        await conn.execute(
            """
            WITH candidate AS (
                SELECT p.id AS practitioner_id,
                       ((d::date + time '09:00' + (k * interval '30 minutes')
                         + CASE WHEN k >= 8 THEN interval '1 hour' ELSE interval '0' END)
                        AT TIME ZONE 'Europe/London') AS starts_at
                FROM practitioner p
                CROSS JOIN generate_series($1::date, $2::date, interval '1 day') AS d
                CROSS JOIN generate_series(0, 15) AS k
                WHERE extract(isodow FROM d) <= 5 AND random() < 0.6
            ), kept AS (
                SELECT * FROM candidate ORDER BY starts_at DESC LIMIT $3
            )
            INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, status,
                                     during, blocked, source, status_changed_at, created_at)
            SELECT 1, practitioner_id, 1, 1 + (random() * 999)::int,
                   CASE WHEN starts_at < $4 THEN 'completed' ELSE 'booked' END,
                   tstzrange(starts_at, starts_at + interval '30 minutes'),
                   tstzrange(starts_at, starts_at + interval '30 minutes'),
                   'seed', now(), now()
            FROM kept
            """,
            today - timedelta(days=365 * 8),
            today + timedelta(days=183),
            appointments,
            today,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
