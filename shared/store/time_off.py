"""Practitioners' time off (owner of `time_off`).

Time off is absolute: `during` is a half-open `tstzrange` [starts_at, ends_at), shown as its two
ends. It blocks whatever local days it covers, whatever the clinic's zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.store import Executor


@dataclass(frozen=True)
class TimeOff:
    """One `time_off` row, its range split into its ends."""

    id: int
    practitioner_id: int
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_at: datetime


_COLUMNS = """id, practitioner_id, lower(during) AS starts_at, upper(during) AS ends_at, reason,
    created_at"""


async def list_page(
    db: Executor,
    practitioner_id: int,
    *,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[TimeOff]:
    """Time off overlapping [since, until) (either end open), ordered by start; keyset-paginated
    on (starts_at, id) after `after`."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM time_off
        WHERE practitioner_id = $1
          AND during && tstzrange($2, $3)
          AND ($4::timestamptz IS NULL OR (lower(during), id) > ($4, $5::bigint))
        ORDER BY lower(during), id
        LIMIT $6
        """,  # noqa: S608 - constant
        practitioner_id,
        since,
        until,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [TimeOff(**dict(r)) for r in rows]


async def overlapping(
    db: Executor, practitioner_ids: Sequence[int], start: datetime, end: datetime
) -> list[TimeOff]:
    """Several practitioners' time off overlapping [start, end), in one query (for the
    availability engine), in no order."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM time_off
        WHERE practitioner_id = ANY($1::bigint[]) AND during && tstzrange($2, $3)
        """,  # noqa: S608 - constant
        list(practitioner_ids),
        start,
        end,
    )
    return [TimeOff(**dict(r)) for r in rows]


async def insert(
    db: Executor,
    practitioner_id: int,
    *,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    now: datetime,
) -> TimeOff:
    row = await db.fetchrow(
        f"""
        INSERT INTO time_off (practitioner_id, during, reason, created_at)
        VALUES ($1, tstzrange($2, $3), $4, $5)
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        practitioner_id,
        starts_at,
        ends_at,
        reason,
        now,
    )
    assert row is not None
    return TimeOff(**dict(row))


async def delete(db: Executor, practitioner_id: int, time_off_id: int) -> TimeOff | None:
    """The deleted row, or None if this practitioner has no such time off."""
    row = await db.fetchrow(
        f"""
        DELETE FROM time_off WHERE id = $1 AND practitioner_id = $2
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant
        time_off_id,
        practitioner_id,
    )
    return None if row is None else TimeOff(**dict(row))
