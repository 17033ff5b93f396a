"""Clinics, practitioners, working hours and treatments (owner of those tables' SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
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
) -> int:
    return int(
        await db.fetchval(
            """
            INSERT INTO clinic (name, time_zone, phone, address, region)
            VALUES ($1, $2, $3, $4, $5) RETURNING id
            """,
            name,
            time_zone,
            phone,
            address,
            region,
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
        await db.executemany(
            """
            INSERT INTO treatment_gap (treatment_id, position, target_days, min_days, max_days)
            VALUES ($1, $2, $3, $4, $5)
            """,
            [(treatment_id, g.position, g.target_days, g.min_days, g.max_days) for g in gaps or []],
        )
    return treatment_id


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
        SELECT id, name, time_zone, phone, address, region, brand_colour
        FROM clinic ORDER BY id LIMIT 1
        """
    )
    return None if row is None else dict(row)
