"""Practitioners' weekly working hours (owner of `working_hours`).

Hours are local wall-clock times in the clinic's zone, on ISO weekdays (1 = Monday); several
ranges on one day make breaks, and the table refuses two that overlap. Invariant: a week is
only ever written whole (`replace`), so no reader sees half of one; the practitioner's version
guards it (shared/store/practitioners.py `bump_version`). Every change of a practitioner's rows
also gives them a new `practitioner.hours_key` (a trigger, migration 0020), which availability
caches the week under (shared/store/diaries.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time

import asyncpg

from shared.store import Executor

HoursRange = tuple[int, time, time]  # (weekday, starts, ends), as a week is written


@dataclass(frozen=True)
class WorkingHours:
    """One `working_hours` row (its surrogate id aside: a week is replaced whole)."""

    practitioner_id: int
    weekday: int
    starts: time
    ends: time


_COLUMNS = "practitioner_id, weekday, starts, ends"


async def for_practitioner(db: Executor, practitioner_id: int) -> list[WorkingHours]:
    """One practitioner's week, by weekday and start."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM working_hours
        WHERE practitioner_id = $1 ORDER BY weekday, starts
        """,  # noqa: S608 - constant
        practitioner_id,
    )
    return [WorkingHours(**dict(r)) for r in rows]


async def for_practitioners(db: Executor, practitioner_ids: Sequence[int]) -> list[WorkingHours]:
    """Several practitioners' weeks in one query (for the availability engine), in no order."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM working_hours "  # noqa: S608 - constant
        "WHERE practitioner_id = ANY($1::bigint[])",
        list(practitioner_ids),
    )
    return [WorkingHours(**dict(r)) for r in rows]


async def replace(
    conn: asyncpg.Connection, practitioner_id: int, hours: Sequence[HoursRange]
) -> None:
    """Swap the whole week at once. Run inside the caller's transaction; overlapping ranges
    raise asyncpg.ExclusionViolationError."""
    await conn.execute("DELETE FROM working_hours WHERE practitioner_id = $1", practitioner_id)
    await conn.executemany(
        """
        INSERT INTO working_hours (practitioner_id, weekday, starts, ends)
        VALUES ($1, $2, $3, $4)
        """,
        [(practitioner_id, weekday, starts, ends) for weekday, starts, ends in hours],
    )
