"""Practitioners' schedules: weekly working hours, time off and one-off day overrides (owner of
`working_hours`, `time_off` and `schedule_override`).

Working hours are local wall-clock times (ISO weekday, 1 = Monday) in the clinic's zone; time
off is absolute (`tstzrange`, half-open); an override replaces one local date's hours, and an
override without ranges means closed that day. Override ranges are stored as JSON pairs of
"HH:MM" strings, e.g. [["09:00", "12:00"]].
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool

HoursRange = tuple[int, time, time]  # (weekday, starts, ends)
DayRange = tuple[time, time]


# -- Weekly working hours --------------------------------------------------------------------------


async def list_working_hours(db: Executor, practitioner_id: int) -> list[HoursRange]:
    rows = await db.fetch(
        """
        SELECT weekday, starts, ends FROM working_hours
        WHERE practitioner_id = $1 ORDER BY weekday, starts
        """,
        practitioner_id,
    )
    return [(r["weekday"], r["starts"], r["ends"]) for r in rows]


async def replace_working_hours(
    conn: asyncpg.Connection, practitioner_id: int, hours: list[HoursRange]
) -> None:
    """Swap the whole week at once, so no reader sees half a week. Run inside the caller's
    transaction; overlapping ranges raise asyncpg.ExclusionViolationError."""
    await conn.execute("DELETE FROM working_hours WHERE practitioner_id = $1", practitioner_id)
    await conn.executemany(
        """
        INSERT INTO working_hours (practitioner_id, weekday, starts, ends)
        VALUES ($1, $2, $3, $4)
        """,
        [(practitioner_id, weekday, starts, ends) for weekday, starts, ends in hours],
    )


# -- Time off --------------------------------------------------------------------------------------


async def list_time_off(
    db: Executor,
    practitioner_id: int,
    *,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Time off overlapping [since, until) (either end open), ordered by start; keyset-paginated
    on (starts_at, id) after `after`."""
    rows = await db.fetch(
        """
        SELECT id, practitioner_id, lower(during) AS starts_at, upper(during) AS ends_at, reason,
               created_at
        FROM time_off
        WHERE practitioner_id = $1
          AND during && tstzrange($2, $3)
          AND ($4::timestamptz IS NULL OR (lower(during), id) > ($4, $5::bigint))
        ORDER BY lower(during), id
        LIMIT $6
        """,
        practitioner_id,
        since,
        until,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(r) for r in rows]


async def create_time_off(
    db: Executor,
    practitioner_id: int,
    *,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    row = await db.fetchrow(
        """
        INSERT INTO time_off (practitioner_id, during, reason, created_at)
        VALUES ($1, tstzrange($2, $3), $4, $5)
        RETURNING id, practitioner_id, lower(during) AS starts_at, upper(during) AS ends_at,
                  reason, created_at
        """,
        practitioner_id,
        starts_at,
        ends_at,
        reason,
        now,
    )
    assert row is not None
    return dict(row)


async def delete_time_off(
    db: Executor, practitioner_id: int, time_off_id: int
) -> dict[str, Any] | None:
    """The deleted row, or None if this practitioner has no such time off."""
    row = await db.fetchrow(
        """
        DELETE FROM time_off WHERE id = $1 AND practitioner_id = $2
        RETURNING id, practitioner_id, lower(during) AS starts_at, upper(during) AS ends_at,
                  reason, created_at
        """,
        time_off_id,
        practitioner_id,
    )
    return None if row is None else dict(row)


# -- One-off day overrides -------------------------------------------------------------------------


def _ranges_to_json(ranges: list[DayRange]) -> list[list[str]]:
    return [[starts.strftime("%H:%M"), ends.strftime("%H:%M")] for starts, ends in ranges]


def _ranges_from_json(raw: list[list[str]]) -> list[DayRange]:
    return [(time.fromisoformat(starts), time.fromisoformat(ends)) for starts, ends in raw]


def _override(row: asyncpg.Record) -> dict[str, Any]:
    data = dict(row)
    data["ranges"] = _ranges_from_json(data["ranges"])
    return data


async def list_overrides(
    db: Executor,
    practitioner_id: int,
    *,
    first_day: date | None,
    last_day: date | None,
    after_day: date | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Overrides with first_day <= day <= last_day (either end open), by day; keyset on day."""
    rows = await db.fetch(
        """
        SELECT practitioner_id, day, ranges, reason FROM schedule_override
        WHERE practitioner_id = $1
          AND ($2::date IS NULL OR day >= $2)
          AND ($3::date IS NULL OR day <= $3)
          AND ($4::date IS NULL OR day > $4)
        ORDER BY day
        LIMIT $5
        """,
        practitioner_id,
        first_day,
        last_day,
        after_day,
        limit,
    )
    return [_override(r) for r in rows]


async def get_override(
    db: Executor, practitioner_id: int, day: date, *, for_update: bool = False
) -> dict[str, Any] | None:
    if for_update:
        row = await db.fetchrow(
            """
            SELECT practitioner_id, day, ranges, reason FROM schedule_override
            WHERE practitioner_id = $1 AND day = $2 FOR UPDATE
            """,
            practitioner_id,
            day,
        )
    else:
        row = await db.fetchrow(
            """
            SELECT practitioner_id, day, ranges, reason FROM schedule_override
            WHERE practitioner_id = $1 AND day = $2
            """,
            practitioner_id,
            day,
        )
    return None if row is None else _override(row)


async def set_override(
    db: Executor, practitioner_id: int, day: date, *, ranges: list[DayRange], reason: str
) -> dict[str, Any]:
    """Create or replace the override of one day (one per practitioner and day)."""
    row = await db.fetchrow(
        """
        INSERT INTO schedule_override (practitioner_id, day, ranges, reason)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (practitioner_id, day)
            DO UPDATE SET ranges = EXCLUDED.ranges, reason = EXCLUDED.reason
        RETURNING practitioner_id, day, ranges, reason
        """,
        practitioner_id,
        day,
        _ranges_to_json(sorted(ranges)),
        reason,
    )
    assert row is not None
    return _override(row)


async def delete_override(db: Executor, practitioner_id: int, day: date) -> dict[str, Any] | None:
    """The deleted override, or None if that day had none."""
    row = await db.fetchrow(
        """
        DELETE FROM schedule_override WHERE practitioner_id = $1 AND day = $2
        RETURNING practitioner_id, day, ranges, reason
        """,
        practitioner_id,
        day,
    )
    return None if row is None else _override(row)


# -- Bulk reads for the availability engine --------------------------------------------------------


async def working_hours_for(db: Executor, ids: list[int]) -> list[tuple[int, int, time, time]]:
    """(practitioner_id, weekday, starts, ends) of several practitioners' weeks."""
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
    """(practitioner_id, starts_at, ends_at) of time off overlapping [start, end)."""
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
    """(practitioner_id, day, ranges) with `ranges` as stored: [["09:00", "12:00"], ...]."""
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
