"""Reads of working hours, time off and overrides for the availability engine.

(To be merged into shared/store/schedules.py, the owner of those tables.)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time
from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


async def active_practitioner_ids(
    db: Executor, clinic_id: int, only: Sequence[int] | None
) -> list[int]:
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


async def working_hours_for(db: Executor, ids: list[int]) -> list[tuple[int, int, time, time]]:
    rows = await db.fetch(
        """
        SELECT practitioner_id, weekday, starts, ends FROM working_hours
        WHERE practitioner_id = ANY($1::bigint[])
        """,
        ids,
    )
    return [(r["practitioner_id"], r["weekday"], r["starts"], r["ends"]) for r in rows]


async def time_off_for(
    db: Executor, ids: list[int], start: datetime, end: datetime
) -> list[tuple[int, datetime, datetime]]:
    rows = await db.fetch(
        """
        SELECT practitioner_id, lower(during) AS s, upper(during) AS e FROM time_off
        WHERE practitioner_id = ANY($1::bigint[]) AND during && tstzrange($2, $3)
        """,
        ids,
        start,
        end,
    )
    return [(r["practitioner_id"], r["s"], r["e"]) for r in rows]


async def overrides_for(
    db: Executor, ids: list[int], first_day: date, last_day: date
) -> list[tuple[int, date, Any]]:
    rows = await db.fetch(
        """
        SELECT practitioner_id, day, ranges FROM schedule_override
        WHERE practitioner_id = ANY($1::bigint[]) AND day BETWEEN $2 AND $3
        """,
        ids,
        first_day,
        last_day,
    )
    return [(r["practitioner_id"], r["day"], r["ranges"]) for r in rows]
