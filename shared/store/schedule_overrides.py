"""One-off day overrides of practitioners' weekly hours (owner of `schedule_override`).

An override replaces one local date's hours with its ranges; an override without ranges means
closed that day. Invariant: at most one per practitioner and day (`upsert` replaces it). The
ranges are stored as JSON pairs of "HH:MM" strings, e.g. [["09:00", "12:00"]], and read back
as (starts, ends) times, sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, time

import asyncpg

from shared.store import Executor

DayRange = tuple[time, time]


@dataclass(frozen=True)
class ScheduleOverride:
    """One `schedule_override` row (its surrogate id aside: practitioner and day identify it)."""

    practitioner_id: int
    day: date
    ranges: list[DayRange]
    reason: str


_COLUMNS = "practitioner_id, day, ranges, reason"


def _ranges_to_json(ranges: Sequence[DayRange]) -> list[list[str]]:
    return [[starts.strftime("%H:%M"), ends.strftime("%H:%M")] for starts, ends in ranges]


def _override(row: asyncpg.Record) -> ScheduleOverride:
    data = dict(row)
    data["ranges"] = [(time.fromisoformat(a), time.fromisoformat(b)) for a, b in data["ranges"]]
    return ScheduleOverride(**data)


async def list_page(
    db: Executor,
    practitioner_id: int,
    *,
    first_day: date | None,
    last_day: date | None,
    after_day: date | None,
    limit: int,
) -> list[ScheduleOverride]:
    """Overrides with first_day <= day <= last_day (either end open), by day; keyset on day."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM schedule_override
        WHERE practitioner_id = $1
          AND ($2::date IS NULL OR day >= $2)
          AND ($3::date IS NULL OR day <= $3)
          AND ($4::date IS NULL OR day > $4)
        ORDER BY day
        LIMIT $5
        """,  # noqa: S608 - constant
        practitioner_id,
        first_day,
        last_day,
        after_day,
        limit,
    )
    return [_override(r) for r in rows]


async def for_practitioners(
    db: Executor, practitioner_ids: Sequence[int], first_day: date, last_day: date
) -> list[ScheduleOverride]:
    """Several practitioners' overrides of the days first_day..last_day, in one query (for the
    availability engine), in no order."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM schedule_override
        WHERE practitioner_id = ANY($1::bigint[]) AND day BETWEEN $2 AND $3
        """,  # noqa: S608 - constant
        list(practitioner_ids),
        first_day,
        last_day,
    )
    return [_override(r) for r in rows]


async def lock(
    conn: asyncpg.Connection, practitioner_id: int, day: date
) -> ScheduleOverride | None:
    """Read and lock one day's override for the rest of the caller's transaction."""
    row = await conn.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM schedule_override
        WHERE practitioner_id = $1 AND day = $2 FOR UPDATE
        """,  # noqa: S608 - constant
        practitioner_id,
        day,
    )
    return None if row is None else _override(row)


async def upsert(
    db: Executor, practitioner_id: int, day: date, *, ranges: Sequence[DayRange], reason: str
) -> ScheduleOverride:
    """Create or replace the override of one day (one per practitioner and day)."""
    row = await db.fetchrow(
        f"""
        INSERT INTO schedule_override (practitioner_id, day, ranges, reason)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (practitioner_id, day)
            DO UPDATE SET ranges = EXCLUDED.ranges, reason = EXCLUDED.reason
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        practitioner_id,
        day,
        _ranges_to_json(sorted(ranges)),
        reason,
    )
    assert row is not None
    return _override(row)


async def delete(db: Executor, practitioner_id: int, day: date) -> ScheduleOverride | None:
    """The deleted override, or None if that day had none."""
    row = await db.fetchrow(
        f"""
        DELETE FROM schedule_override WHERE practitioner_id = $1 AND day = $2
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        practitioner_id,
        day,
    )
    return None if row is None else _override(row)
