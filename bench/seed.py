"""A group of clinics after a few years, for the benchmarks: the demo clinic with ten
practitioners (the ones measured), thirty-nine more clinics in three time zones with three
practitioners each, about 80,000 patients, and 1,000,000 appointments (by default) reaching back
years: most of them in the past (completed, some cancelled or no-shows), the next six months
about 60 % booked and busiest in the coming weeks, with live and lapsed holds among them, some
time off and a few changed days.

Seeded set-based (generate_series inside a handful of INSERT ... SELECT statements, no row-by-row
round trips) so a million rows take well under a minute; `random()` is seeded first, so two runs
seed the same diaries."""

from __future__ import annotations

from datetime import date, timedelta

import asyncpg

from services.devkit.demo_data import lunch_break_week, seed_demo_data
from shared.store import practitioners, working_hours
from shared.store.practitioners import PractitionerFields

OTHER_CLINICS = 39
PRACTITIONERS_PER_OTHER_CLINIC = 3
PATIENTS_PER_OTHER_CLINIC = 2_000
ZONES = ("Europe/London", "Europe/Paris", "America/New_York")
HISTORY_YEARS = 8  # candidates go back this far; the newest `appointments` of them are kept
FUTURE_DAYS = 183


async def seed_busy_clinic(
    url: str, *, today: date, appointments: int = 1_000_000, other_clinics: int = OTHER_CLINICS
) -> None:
    """Seed the group into the migrated, empty database at `url` (its owner's URL)."""
    conn = await asyncpg.connect(url)
    try:
        await seed_demo_data(conn)
        for n in range(3, 11):
            fields = PractitionerFields(name=f"Practitioner {n}", email=f"p{n}@regimen.localhost")
            practitioner = await practitioners.insert(conn, clinic_id=1, fields=fields)
            await working_hours.replace(conn, practitioner.id, lunch_break_week((1, 2, 3, 4, 5)))
        async with conn.transaction():
            await conn.execute("SELECT setseed(0.42)")
            await _other_clinics(conn, other_clinics)
            await _patients(conn)
            await _appointments(conn, today, appointments)
            await _holds(conn, today)
            await _time_off_and_overrides(conn, today)
        # As autovacuum leaves a database that has run for years (it vacuums after inserts
        # too): statistics current and the history's pages marked all-visible.
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def _other_clinics(conn: asyncpg.Connection, count: int) -> None:
    await conn.execute(
        """
        INSERT INTO clinic (name, time_zone, phone, address, region, created_at)
        SELECT 'Clinic ' || n, ($1::text[])[1 + n % 3], '+44207946' || lpad(n::text, 4, '0'),
               n || ' High Street', CASE WHEN n % 3 = 2 THEN 'US' ELSE 'GB' END, now()
        FROM generate_series(2, $2 + 1) AS n
        """,
        list(ZONES),
        count,
    )
    await conn.execute(
        """
        INSERT INTO treatment (clinic_id, code, name, duration_minutes)
        SELECT id, 'consultation', 'Consultation', 30 FROM clinic WHERE id > 1
        """
    )
    await conn.execute(
        """
        INSERT INTO practitioner (clinic_id, name, email)
        SELECT c.id, 'Practitioner ' || c.id || '-' || k, 'p' || c.id || '-' || k || '@x.test'
        FROM clinic c CROSS JOIN generate_series(1, $1) AS k WHERE c.id > 1
        """,
        PRACTITIONERS_PER_OTHER_CLINIC,
    )
    await conn.execute(
        """
        INSERT INTO working_hours (practitioner_id, weekday, starts, ends)
        SELECT p.id, d, r.starts, r.ends
        FROM practitioner p CROSS JOIN generate_series(1, 5) AS d
        CROSS JOIN (VALUES (time '09:00', time '13:00'), (time '14:00', time '18:00'))
             AS r (starts, ends)
        WHERE p.clinic_id > 1
        """
    )


async def _patients(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        INSERT INTO patient (clinic_id, first_name, last_name, mobile, created_at, updated_at)
        SELECT c.id, 'Patient', 'No ' || n,
               '+4479' || lpad(c.id::text, 3, '0') || lpad(n::text, 5, '0'), now(), now()
        FROM clinic c
        CROSS JOIN LATERAL generate_series(1, CASE WHEN c.id = 1 THEN 1000 ELSE $1 END) AS n
        """,
        PATIENTS_PER_OTHER_CLINIC,
    )


async def _appointments(conn: asyncpg.Connection, today: date, appointments: int) -> None:
    # Mondays to Fridays, sixteen 30-minute slots a day in the clinic's own zone. A past slot is
    # taken 60 % of the time; the future fills from about 85 % next week down to about 35 % six
    # months out, as a diary does. The newest `appointments` candidates are kept, so the
    # coming weeks are realistically full and history reaches back as far as the count allows.
    await conn.execute(
        """
        CREATE TEMPORARY TABLE seed_clinic ON COMMIT DROP AS
        SELECT c.id AS clinic_id, c.time_zone, t.id AS treatment_id,
               min(pa.id) AS first_patient, count(pa.id) AS patients
        FROM clinic c
        JOIN treatment t ON t.clinic_id = c.id AND t.code = 'consultation'
        JOIN patient pa ON pa.clinic_id = c.id
        GROUP BY c.id, c.time_zone, t.id
        """
    )
    await conn.execute(
        """
        WITH candidate AS (
            SELECT s.clinic_id, s.treatment_id, s.first_patient, s.patients,
                   p.id AS practitioner_id, d::date AS day,
                   ((d::date + time '09:00' + (k * interval '30 minutes')
                     + CASE WHEN k >= 8 THEN interval '1 hour' ELSE interval '0' END)
                    AT TIME ZONE s.time_zone) AS starts_at
            FROM practitioner p
            JOIN seed_clinic s ON s.clinic_id = p.clinic_id
            CROSS JOIN generate_series($1::date, $2::date, interval '1 day') AS d
            CROSS JOIN generate_series(0, 15) AS k
            WHERE extract(isodow FROM d) <= 5
              AND random() < CASE WHEN d < $4::date THEN 0.6
                                  ELSE 0.85 - 0.5 * (d::date - $4::date) / $5::float END
        ), kept AS (
            SELECT *, random() AS fate FROM candidate ORDER BY starts_at DESC LIMIT $3
        )
        INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, status,
                                 during, blocked, source, cancelled_reason, cancelled_by,
                                 status_changed_at, created_at)
        SELECT clinic_id, practitioner_id, treatment_id,
               first_patient + (random() * (patients - 1))::int, status,
               tstzrange(starts_at, starts_at + interval '30 minutes'),
               tstzrange(starts_at, starts_at + interval '30 minutes'),
               'seed',
               CASE WHEN status = 'cancelled' THEN 'patient asked' END,
               CASE WHEN status = 'cancelled' THEN 'patient' END,
               least(starts_at, now()), starts_at - interval '20 days'
        FROM (
            SELECT *, CASE
                WHEN day < $4::date THEN CASE WHEN fate < 0.88 THEN 'completed'
                                              WHEN fate < 0.95 THEN 'cancelled'
                                              ELSE 'no_show' END
                ELSE CASE WHEN fate < 0.6 THEN 'booked'
                          WHEN fate < 0.92 THEN 'confirmed'
                          ELSE 'cancelled' END
            END AS status
            FROM kept
        ) AS k
        """,
        today - timedelta(days=365 * HISTORY_YEARS),
        today + timedelta(days=FUTURE_DAYS),
        appointments,
        today,
        FUTURE_DAYS,
    )


async def _holds(conn: asyncpg.Connection, today: date) -> None:
    # Patients part-way through the form: about 1 % of the next fortnight is held, half of those
    # holds lapsed already (they block nothing, but their rows are still there to be skipped).
    await conn.execute(
        """
        WITH picked AS (
            SELECT id, clinic_id, treatment_id, row_number() OVER () AS n
            FROM appointment
            WHERE status = 'booked' AND lower(during) < $1::date + 14 AND random() < 0.01
        ), hold AS (
            INSERT INTO booking_hold (clinic_id, treatment_id, token_hash, expires_at, created_at)
            SELECT clinic_id, treatment_id, sha256(('seed hold ' || n)::bytea),
                   CASE WHEN n % 2 = 0 THEN now() - interval '1 hour'
                        ELSE now() + interval '6 hours' END,
                   now() - interval '2 hours'
            FROM picked
            RETURNING id, token_hash
        )
        UPDATE appointment a SET status = 'held', hold_id = hold.id, patient_id = NULL
        FROM picked JOIN hold ON hold.token_hash = sha256(('seed hold ' || picked.n)::bytea)
        WHERE a.id = picked.id
        """,
        today,
    )


async def _time_off_and_overrides(conn: asyncpg.Connection, today: date) -> None:
    # A week of holiday each quarter for every practitioner, and a short Friday each month.
    await conn.execute(
        """
        INSERT INTO time_off (practitioner_id, during, reason, created_at)
        SELECT p.id, tstzrange(w, w + interval '7 days'), 'holiday', now()
        FROM practitioner p
        CROSS JOIN generate_series($1::date - 365 * 3, $1::date + 183, interval '91 days') AS q
        CROSS JOIN LATERAL (SELECT q + (p.id % 13) * interval '1 day' AS w) AS shifted
        """,
        today,
    )
    await conn.execute(
        """
        INSERT INTO schedule_override (practitioner_id, day, ranges, reason)
        SELECT p.id, m::date + 4 + (p.id % 20)::int, '[["09:00", "13:00"]]', 'short day'
        FROM practitioner p
        CROSS JOIN generate_series($1::date - 365, $1::date + 183, interval '1 month') AS m
        ON CONFLICT DO NOTHING
        """,
        today,
    )
