"""The availability read (owner of no table): everything that decides when a clinic's
practitioners are free over a window of days, in one statement.

It reads across `practitioner`, `working_hours`, `time_off`, `schedule_override`, `appointment`
and `booking_hold`, against the rule that a read stays with its owner's tables, on purpose:
availability is the hottest read there is, and one round trip instead of five is a good part of
what keeps it in single-digit milliseconds. Each part says the same as the owner's own read
(`practitioners.active_ids`, `working_hours.for_practitioner`, `time_off.overlapping`,
`schedule_overrides.for_practitioners`, `appointments.busy_by_practitioner`). Writes stay
with the owners.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache

from shared.store import Executor
from shared.store.working_hours import HoursRange


@dataclass(frozen=True)
class Diary:
    """One active practitioner over the window. `hours` is None when the caller said it holds
    the week of `hours_key`; busy time is in microseconds since the epoch, starts ascending."""

    practitioner_id: int
    hours_key: str
    hours: list[HoursRange] | None
    time_off: list[tuple[datetime, datetime]]
    overrides: list[tuple[date, tuple[tuple[time, time], ...]]]
    busy_starts: list[int]
    busy_ends: list[int]


# Named so that a test can check its plan (the appointments part must use the exclusion
# constraint's index: same partial predicate, same columns).
DIARIES_SQL = """
    SELECT p.id, p.hours_key::text AS hours_key, w.weekdays, w.starts, w.ends,
           o.off_starts, o.off_ends, d.days, d.ranges, b.busy_starts, b.busy_ends
    FROM practitioner p
    LEFT JOIN LATERAL (
        SELECT array_agg(h.weekday ORDER BY h.weekday, h.starts) AS weekdays,
               array_agg(h.starts ORDER BY h.weekday, h.starts) AS starts,
               array_agg(h.ends ORDER BY h.weekday, h.starts) AS ends
        FROM working_hours h
        WHERE h.practitioner_id = p.id AND NOT (p.hours_key::text = ANY($3::text[]))
    ) AS w ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(lower(t.during)) AS off_starts, array_agg(upper(t.during)) AS off_ends
        FROM time_off t
        WHERE t.practitioner_id = p.id AND t.during && tstzrange($4, $5)
    ) AS o ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(s.day) AS days, array_agg(s.ranges::text) AS ranges
        FROM schedule_override s
        WHERE s.practitioner_id = p.id AND s.day BETWEEN $6 AND $7
    ) AS d ON true
    LEFT JOIN LATERAL (
        SELECT array_agg((extract(epoch FROM lower(a.blocked)) * 1000000)::bigint
                         ORDER BY lower(a.blocked)) AS busy_starts,
               array_agg((extract(epoch FROM upper(a.blocked)) * 1000000)::bigint
                         ORDER BY lower(a.blocked)) AS busy_ends
        FROM appointment a
        LEFT JOIN booking_hold bh ON bh.id = a.hold_id
        WHERE a.practitioner_id = p.id
          AND a.blocked && tstzrange($4, $5)
          AND a.status IN ('held', 'booked', 'confirmed', 'checked_in')
          AND NOT (a.status = 'held' AND bh.expires_at <= $8)
          AND NOT (a.id = ANY($9::bigint[]))
    ) AS b ON true
    WHERE p.clinic_id = $1 AND p.active AND ($2::bigint[] IS NULL OR p.id = ANY($2::bigint[]))
    ORDER BY p.id
    """


@lru_cache(maxsize=4096)
def _ranges(text: str) -> tuple[tuple[time, time], ...]:
    # Kept: clinics' day overrides repeat a handful of texts ("09:00-13:00"), and parsing them
    # for every day of every diary read was a seventh of an availability answer's work.
    return tuple(
        sorted((time.fromisoformat(a), time.fromisoformat(b)) for a, b in json.loads(text))
    )


async def for_window(
    db: Executor,
    clinic_id: int,
    only: Sequence[int] | None,
    *,
    known_keys: Collection[str],
    start: datetime,
    end: datetime,
    first_day: date,
    last_day: date,
    now: datetime,
    exclude_ids: Sequence[int] = (),
) -> list[Diary]:
    """The clinic's active practitioners (or those of `only`), by id: each one's week key (and
    week, unless its key is in `known_keys`), time off overlapping [start, end), overrides of
    first_day..last_day, and busy time overlapping [start, end) (expired holds and
    `exclude_ids` left out). One statement, so one snapshot."""
    rows = await db.fetch(
        DIARIES_SQL,
        clinic_id,
        list(only) if only is not None else None,
        list(known_keys),
        start,
        end,
        first_day,
        last_day,
        now,
        list(exclude_ids),
    )
    diaries = []
    for row in rows:
        hours: list[HoursRange] | None = None
        if row["hours_key"] not in known_keys:
            week = (row["weekdays"] or [], row["starts"] or [], row["ends"] or [])
            hours = list(zip(*week, strict=True))
        diaries.append(
            Diary(
                practitioner_id=row["id"],
                hours_key=row["hours_key"],
                hours=hours,
                time_off=list(zip(row["off_starts"] or [], row["off_ends"] or [], strict=True)),
                overrides=[
                    (day, _ranges(text))
                    for day, text in zip(row["days"] or [], row["ranges"] or [], strict=True)
                ],
                busy_starts=row["busy_starts"] or [],
                busy_ends=row["busy_ends"] or [],
            )
        )
    return diaries
