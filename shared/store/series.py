"""Courses of treatment (owner of `series`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool
SeriesStatus = Literal["active", "paused", "completed", "cancelled"]


@dataclass(frozen=True)
class Series:
    id: int
    clinic_id: int
    patient_id: int
    treatment_id: int
    planned_sessions: int
    status: SeriesStatus
    plan_notes: str
    version: int
    created_at: datetime
    updated_at: datetime


async def create(
    conn: Executor,
    *,
    clinic_id: int,
    patient_id: int,
    treatment_id: int,
    planned_sessions: int,
    now: datetime,
) -> int:
    return int(
        await conn.fetchval(
            """
            INSERT INTO series (clinic_id, patient_id, treatment_id, planned_sessions,
                                created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $5) RETURNING id
            """,
            clinic_id,
            patient_id,
            treatment_id,
            planned_sessions,
            now,
        )
    )


async def get(db: Executor, series_id: int) -> Series | None:
    row = await db.fetchrow(
        """
        SELECT id, clinic_id, patient_id, treatment_id, planned_sessions, status, plan_notes,
               version, created_at, updated_at
        FROM series WHERE id = $1
        """,
        series_id,
    )
    return None if row is None else Series(**dict(row))


async def for_patient(db: Executor, patient_id: int) -> list[Series]:
    rows = await db.fetch(
        """
        SELECT id, clinic_id, patient_id, treatment_id, planned_sessions, status, plan_notes,
               version, created_at, updated_at
        FROM series WHERE patient_id = $1 ORDER BY id
        """,
        patient_id,
    )
    return [Series(**dict(r)) for r in rows]


async def set_status(
    conn: Executor, series_id: int, status: SeriesStatus, *, now: datetime
) -> None:
    await conn.execute(
        "UPDATE series SET status = $2, version = version + 1, updated_at = $3 WHERE id = $1",
        series_id,
        status,
        now,
    )
