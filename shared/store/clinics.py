"""Clinics, practitioners, working hours and treatments (owner of those tables' SQL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class GapSpec:
    position: int
    target_days: int
    min_days: int
    max_days: int


async def count_clinics(db: Executor) -> int:
    return int(await db.fetchval("SELECT count(*) FROM clinic"))


async def insert_clinic(
    db: Executor,
    *,
    name: str,
    time_zone: str,
    phone: str,
    address: str,
    region: str,
    sms_countries: Sequence[str] | None = None,
) -> int:
    return int(
        await db.fetchval(
            """
            INSERT INTO clinic (name, time_zone, phone, address, region, sms_countries)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
            """,
            name,
            time_zone,
            phone,
            address,
            region,
            None if sms_countries is None else list(sms_countries),
        )
    )


async def insert_practitioner(db: Executor, *, clinic_id: int, name: str, email: str) -> int:
    return int(
        await db.fetchval(
            "INSERT INTO practitioner (clinic_id, name, email) VALUES ($1, $2, $3) RETURNING id",
            clinic_id,
            name,
            email,
        )
    )


async def insert_working_hours(
    db: Executor, *, practitioner_id: int, weekday: int, starts: time, ends: time
) -> None:
    await db.execute(
        """
        INSERT INTO working_hours (practitioner_id, weekday, starts, ends)
        VALUES ($1, $2, $3, $4)
        """,
        practitioner_id,
        weekday,
        starts,
        ends,
    )


async def insert_treatment(
    db: asyncpg.Connection,
    *,
    clinic_id: int,
    code: str,
    name: str,
    duration_minutes: int,
    buffer_before_minutes: int = 0,
    buffer_after_minutes: int = 0,
    needs_consultation: bool = False,
    sessions_min: int = 1,
    sessions_max: int = 1,
    maintenance_interval_days: int | None = None,
    gaps: list[GapSpec] | None = None,
) -> int:
    async with db.transaction():
        treatment_id = int(
            await db.fetchval(
                """
                INSERT INTO treatment (clinic_id, code, name, duration_minutes,
                    buffer_before_minutes, buffer_after_minutes, needs_consultation,
                    sessions_min, sessions_max, maintenance_interval_days)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id
                """,
                clinic_id,
                code,
                name,
                duration_minutes,
                buffer_before_minutes,
                buffer_after_minutes,
                needs_consultation,
                sessions_min,
                sessions_max,
                maintenance_interval_days,
            )
        )
        await _insert_gaps(db, treatment_id, gaps or [])
    return treatment_id


async def _insert_gaps(db: Executor, treatment_id: int, gaps: Sequence[GapSpec]) -> None:
    await db.executemany(
        """
        INSERT INTO treatment_gap (treatment_id, position, target_days, min_days, max_days)
        VALUES ($1, $2, $3, $4, $5)
        """,
        [(treatment_id, g.position, g.target_days, g.min_days, g.max_days) for g in gaps],
    )


async def list_treatments(db: Executor, clinic_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """
        SELECT id, code, name, duration_minutes, needs_consultation, sessions_min, sessions_max
        FROM treatment WHERE clinic_id = $1 AND active ORDER BY id
        """,
        clinic_id,
    )
    return [dict(r) for r in rows]


async def first_clinic(db: Executor) -> dict[str, Any] | None:
    row = await db.fetchrow(
        """
        SELECT id, name, time_zone, phone, address, region, brand_colour, sms_countries
        FROM clinic ORDER BY id LIMIT 1
        """
    )
    return None if row is None else dict(row)


# -- Clinic settings (the admin API) ---------------------------------------------------------------


@dataclass(frozen=True)
class ClinicSettings:
    """Everything about a clinic that staff may set; the whole set is written at once."""

    name: str
    time_zone: str
    phone: str
    address: str
    region: str
    brand_colour: str
    quiet_start: time
    quiet_end: time
    min_notice_minutes: int
    horizon_days: int
    cancellation_notice_hours: int
    hold_minutes: int
    no_show_grace_minutes: int
    slot_step_minutes: int
    # None: the clinic texts only its own region (see sms_countries_of).
    sms_countries: list[str] | None = None


def sms_countries_of(stored: Sequence[str] | None, region: str) -> tuple[str, ...]:
    """The countries a clinic sends SMS to: those it chose, else only its own region."""
    return tuple(stored) if stored else (region,)


def _settings_values(s: ClinicSettings) -> tuple[Any, ...]:
    """The settings in the column order of the INSERT and UPDATE below."""
    return (
        s.name,
        s.time_zone,
        s.phone,
        s.address,
        s.region,
        s.brand_colour,
        s.quiet_start,
        s.quiet_end,
        s.min_notice_minutes,
        s.horizon_days,
        s.cancellation_notice_hours,
        s.hold_minutes,
        s.no_show_grace_minutes,
        s.slot_step_minutes,
        s.sms_countries,
    )


async def get_clinic(
    db: Executor, clinic_id: int, *, for_update: bool = False
) -> dict[str, Any] | None:
    if for_update:
        row = await db.fetchrow(
            """
            SELECT id, name, time_zone, phone, address, region, brand_colour, quiet_start,
                   quiet_end, min_notice_minutes, horizon_days, cancellation_notice_hours,
                   hold_minutes, no_show_grace_minutes, slot_step_minutes, sms_countries,
                   version, created_at
            FROM clinic WHERE id = $1 FOR UPDATE
            """,
            clinic_id,
        )
    else:
        row = await db.fetchrow(
            """
            SELECT id, name, time_zone, phone, address, region, brand_colour, quiet_start,
                   quiet_end, min_notice_minutes, horizon_days, cancellation_notice_hours,
                   hold_minutes, no_show_grace_minutes, slot_step_minutes, sms_countries,
                   version, created_at
            FROM clinic WHERE id = $1
            """,
            clinic_id,
        )
    return None if row is None else dict(row)


async def clinic_exists(db: Executor, clinic_id: int) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM clinic WHERE id = $1)", clinic_id))


async def list_clinics(db: Executor, *, after_id: int | None, limit: int) -> list[dict[str, Any]]:
    """Oldest first, keyset-paginated on id."""
    rows = await db.fetch(
        """
        SELECT id, name, time_zone, phone, address, region, brand_colour, quiet_start,
               quiet_end, min_notice_minutes, horizon_days, cancellation_notice_hours,
               hold_minutes, no_show_grace_minutes, slot_step_minutes, sms_countries,
               version, created_at
        FROM clinic
        WHERE ($1::bigint IS NULL OR id > $1)
        ORDER BY id
        LIMIT $2
        """,
        after_id,
        limit,
    )
    return [dict(r) for r in rows]


async def create_clinic(db: Executor, settings: ClinicSettings, *, now: datetime) -> dict[str, Any]:
    row = await db.fetchrow(
        """
        INSERT INTO clinic (name, time_zone, phone, address, region, brand_colour, quiet_start,
            quiet_end, min_notice_minutes, horizon_days, cancellation_notice_hours, hold_minutes,
            no_show_grace_minutes, slot_step_minutes, sms_countries, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        RETURNING id, name, time_zone, phone, address, region, brand_colour, quiet_start,
                  quiet_end, min_notice_minutes, horizon_days, cancellation_notice_hours,
                  hold_minutes, no_show_grace_minutes, slot_step_minutes, sms_countries,
                  version, created_at
        """,
        *_settings_values(settings),
        now,
    )
    assert row is not None
    return dict(row)


async def update_clinic(
    db: Executor, clinic_id: int, *, expected_version: int, settings: ClinicSettings
) -> dict[str, Any] | None:
    """Write every setting and bump the version; None if the row is gone or was changed since
    `expected_version` was read."""
    row = await db.fetchrow(
        """
        UPDATE clinic SET name = $3, time_zone = $4, phone = $5, address = $6, region = $7,
               brand_colour = $8, quiet_start = $9, quiet_end = $10, min_notice_minutes = $11,
               horizon_days = $12, cancellation_notice_hours = $13, hold_minutes = $14,
               no_show_grace_minutes = $15, slot_step_minutes = $16, sms_countries = $17,
               version = version + 1
        WHERE id = $1 AND version = $2
        RETURNING id, name, time_zone, phone, address, region, brand_colour, quiet_start,
                  quiet_end, min_notice_minutes, horizon_days, cancellation_notice_hours,
                  hold_minutes, no_show_grace_minutes, slot_step_minutes, sms_countries,
                  version, created_at
        """,
        clinic_id,
        expected_version,
        *_settings_values(settings),
    )
    return None if row is None else dict(row)


# -- Practitioners (the admin API) -----------------------------------------------------------------


@dataclass(frozen=True)
class PractitionerFields:
    name: str
    email: str | None
    phone: str | None
    active: bool


def _practitioner_values(f: PractitionerFields) -> tuple[Any, ...]:
    """The fields in the column order of the INSERT and UPDATE below."""
    return (f.name, f.email, f.phone, f.active)


async def get_practitioner(
    db: Executor, practitioner_id: int, *, for_update: bool = False
) -> dict[str, Any] | None:
    if for_update:
        row = await db.fetchrow(
            """
            SELECT id, clinic_id, name, email, phone, active, version
            FROM practitioner WHERE id = $1 FOR UPDATE
            """,
            practitioner_id,
        )
    else:
        row = await db.fetchrow(
            """
            SELECT id, clinic_id, name, email, phone, active, version
            FROM practitioner WHERE id = $1
            """,
            practitioner_id,
        )
    return None if row is None else dict(row)


async def list_practitioners(
    db: Executor,
    *,
    clinic_id: int | None,
    active: bool | None,
    after_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Oldest first, keyset-paginated on id; filters are optional."""
    rows = await db.fetch(
        """
        SELECT id, clinic_id, name, email, phone, active, version
        FROM practitioner
        WHERE ($1::bigint IS NULL OR clinic_id = $1)
          AND ($2::boolean IS NULL OR active = $2)
          AND ($3::bigint IS NULL OR id > $3)
        ORDER BY id
        LIMIT $4
        """,
        clinic_id,
        active,
        after_id,
        limit,
    )
    return [dict(r) for r in rows]


async def active_practitioner_ids(
    db: Executor, clinic_id: int, only: Sequence[int] | None
) -> list[int]:
    """The clinic's bookable practitioners, optionally narrowed to `only` (for availability)."""
    rows = await db.fetch(
        """
        SELECT id FROM practitioner
        WHERE clinic_id = $1 AND active AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
        ORDER BY id
        """,
        clinic_id,
        list(only) if only is not None else None,
    )
    return [r["id"] for r in rows]


async def create_practitioner(
    db: Executor, *, clinic_id: int, fields: PractitionerFields
) -> dict[str, Any]:
    row = await db.fetchrow(
        """
        INSERT INTO practitioner (clinic_id, name, email, phone, active)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING id, clinic_id, name, email, phone, active, version
        """,
        clinic_id,
        *_practitioner_values(fields),
    )
    assert row is not None
    return dict(row)


async def update_practitioner(
    db: Executor, practitioner_id: int, *, expected_version: int, fields: PractitionerFields
) -> dict[str, Any] | None:
    """None if the row is gone or changed since `expected_version`."""
    row = await db.fetchrow(
        """
        UPDATE practitioner SET name = $3, email = $4, phone = $5, active = $6,
               version = version + 1
        WHERE id = $1 AND version = $2
        RETURNING id, clinic_id, name, email, phone, active, version
        """,
        practitioner_id,
        expected_version,
        *_practitioner_values(fields),
    )
    return None if row is None else dict(row)


async def bump_practitioner_version(
    db: Executor, practitioner_id: int, *, expected_version: int
) -> int | None:
    """The practitioner's version also guards their weekly hours; None if it moved on."""
    version = await db.fetchval(
        """
        UPDATE practitioner SET version = version + 1
        WHERE id = $1 AND version = $2 RETURNING version
        """,
        practitioner_id,
        expected_version,
    )
    return None if version is None else int(version)


async def delete_practitioner(conn: asyncpg.Connection, practitioner_id: int) -> bool:
    """Delete the row if nothing refers to it, else deactivate it (history keeps pointing at it).
    Returns whether it was deleted. Must run inside the caller's transaction."""
    try:
        # A savepoint, so that a refused DELETE leaves the outer transaction usable.
        async with conn.transaction():
            await conn.execute("DELETE FROM practitioner WHERE id = $1", practitioner_id)
    except asyncpg.ForeignKeyViolationError:
        await conn.execute(
            "UPDATE practitioner SET active = false, version = version + 1 WHERE id = $1",
            practitioner_id,
        )
        return False
    return True


# -- Treatments (the admin API) --------------------------------------------------------------------


@dataclass(frozen=True)
class TreatmentFields:
    code: str
    name: str
    description: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    needs_consultation: bool
    sessions_min: int
    sessions_max: int
    maintenance_interval_days: int | None
    public: bool
    active: bool


def _treatment_values(f: TreatmentFields) -> tuple[Any, ...]:
    """The fields in the column order of the INSERT and UPDATE below."""
    return (
        f.code,
        f.name,
        f.description,
        f.duration_minutes,
        f.buffer_before_minutes,
        f.buffer_after_minutes,
        f.needs_consultation,
        f.sessions_min,
        f.sessions_max,
        f.maintenance_interval_days,
        f.public,
        f.active,
    )


async def _gaps_by_treatment(db: Executor, treatment_ids: list[int]) -> dict[int, list[GapSpec]]:
    rows = await db.fetch(
        """
        SELECT treatment_id, position, target_days, min_days, max_days
        FROM treatment_gap WHERE treatment_id = ANY($1::bigint[])
        ORDER BY treatment_id, position
        """,
        treatment_ids,
    )
    gaps: dict[int, list[GapSpec]] = {tid: [] for tid in treatment_ids}
    for r in rows:
        gaps[r["treatment_id"]].append(
            GapSpec(r["position"], r["target_days"], r["min_days"], r["max_days"])
        )
    return gaps


async def _with_gaps(db: Executor, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    gaps = await _gaps_by_treatment(db, [r["id"] for r in rows])
    return [{**dict(r), "gaps": gaps[r["id"]]} for r in rows]


async def get_treatment(
    db: Executor, treatment_id: int, *, for_update: bool = False
) -> dict[str, Any] | None:
    """The treatment with its series template (`gaps`: GapSpec per position)."""
    if for_update:
        row = await db.fetchrow(
            """
            SELECT id, clinic_id, code, name, description, duration_minutes,
                   buffer_before_minutes, buffer_after_minutes, needs_consultation, sessions_min,
                   sessions_max, maintenance_interval_days, public, active, version
            FROM treatment WHERE id = $1 FOR UPDATE
            """,
            treatment_id,
        )
    else:
        row = await db.fetchrow(
            """
            SELECT id, clinic_id, code, name, description, duration_minutes,
                   buffer_before_minutes, buffer_after_minutes, needs_consultation, sessions_min,
                   sessions_max, maintenance_interval_days, public, active, version
            FROM treatment WHERE id = $1
            """,
            treatment_id,
        )
    if row is None:
        return None
    return (await _with_gaps(db, [row]))[0]


async def list_treatments_page(
    db: Executor,
    *,
    clinic_id: int | None,
    active: bool | None,
    after_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Every treatment (inactive ones too, unless filtered), oldest first, keyset on id."""
    rows = await db.fetch(
        """
        SELECT id, clinic_id, code, name, description, duration_minutes,
               buffer_before_minutes, buffer_after_minutes, needs_consultation, sessions_min,
               sessions_max, maintenance_interval_days, public, active, version
        FROM treatment
        WHERE ($1::bigint IS NULL OR clinic_id = $1)
          AND ($2::boolean IS NULL OR active = $2)
          AND ($3::bigint IS NULL OR id > $3)
        ORDER BY id
        LIMIT $4
        """,
        clinic_id,
        active,
        after_id,
        limit,
    )
    return await _with_gaps(db, rows)


async def _replace_gaps(conn: Executor, treatment_id: int, gaps: list[GapSpec]) -> None:
    await conn.execute("DELETE FROM treatment_gap WHERE treatment_id = $1", treatment_id)
    await _insert_gaps(conn, treatment_id, gaps)


async def create_treatment(
    conn: asyncpg.Connection, *, clinic_id: int, fields: TreatmentFields, gaps: list[GapSpec]
) -> dict[str, Any]:
    """Insert a treatment and its gaps; run inside the caller's transaction."""
    treatment_id = await conn.fetchval(
        """
        INSERT INTO treatment (clinic_id, code, name, description, duration_minutes,
            buffer_before_minutes, buffer_after_minutes, needs_consultation, sessions_min,
            sessions_max, maintenance_interval_days, public, active)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id
        """,
        clinic_id,
        *_treatment_values(fields),
    )
    await _replace_gaps(conn, treatment_id, gaps)
    created = await get_treatment(conn, treatment_id)
    assert created is not None
    return created


async def update_treatment(
    conn: asyncpg.Connection,
    treatment_id: int,
    *,
    expected_version: int,
    fields: TreatmentFields,
    gaps: list[GapSpec],
) -> dict[str, Any] | None:
    """Write every field and the whole series template; None if the row is gone or changed
    since `expected_version`. Run inside the caller's transaction."""
    updated = await conn.fetchval(
        """
        UPDATE treatment SET code = $3, name = $4, description = $5, duration_minutes = $6,
               buffer_before_minutes = $7, buffer_after_minutes = $8, needs_consultation = $9,
               sessions_min = $10, sessions_max = $11, maintenance_interval_days = $12,
               public = $13, active = $14, version = version + 1
        WHERE id = $1 AND version = $2
        RETURNING id
        """,
        treatment_id,
        expected_version,
        *_treatment_values(fields),
    )
    if updated is None:
        return None
    await _replace_gaps(conn, treatment_id, gaps)
    return await get_treatment(conn, treatment_id)


async def delete_treatment(conn: asyncpg.Connection, treatment_id: int) -> bool:
    """Delete the treatment if no appointment, series or hold refers to it, else deactivate it.
    Returns whether it was deleted. Must run inside the caller's transaction."""
    try:
        async with conn.transaction():  # a savepoint: a refused DELETE must not abort the caller
            await conn.execute("DELETE FROM treatment WHERE id = $1", treatment_id)
    except asyncpg.ForeignKeyViolationError:
        await conn.execute(
            "UPDATE treatment SET active = false, version = version + 1 WHERE id = $1",
            treatment_id,
        )
        return False
    return True
