"""Availability over years of history: only the window asked for is read, through the index
that matches, and a practitioner's weekly hours, kept in memory by every booking process, are
read afresh by each of them as soon as they change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from bench.seed import seed_busy_clinic
from services.booking.domain import offers
from services.devkit.demo_data import seed_demo_data
from shared.scheduling.course import propose_course
from shared.scheduling.loader import WeeklyHoursCache, load_schedules, utc_window
from shared.store import diaries, time_off, working_hours

LONDON = ZoneInfo("Europe/London")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _busy_plan(conn: asyncpg.Connection, today: date) -> list[dict[str, Any]]:
    first, last = today + timedelta(days=7), today + timedelta(days=34)
    start, end = utc_window(first, last, LONDON)
    now = datetime.now(UTC)
    args = (1, None, [], start, end, first, last, now, [])
    raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + diaries.DIARIES_SQL, *args)
    return list(_nodes(json.loads(raw)[0]["Plan"]))


def _reads_of_appointment(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        n
        for n in nodes
        if n.get("Relation Name") == "appointment"
        or str(n.get("Index Name", "")).startswith("appointment")
    ]


async def test_four_weeks_of_ten_diaries_are_read_through_the_exclusion_index_not_the_history(
    db_url: str,
) -> None:
    # The bench's own group, smaller: 60,000 appointments reaching back over a year, most of
    # them past, with realistic statistics (the seed ends with ANALYZE).
    today = datetime.now(UTC).date()
    await seed_busy_clinic(db_url, today=today, appointments=60_000, other_clinics=2)
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM appointment") == 60_000
        nodes = await _busy_plan(conn, today)
        reads = _reads_of_appointment(nodes)
        assert not [n for n in reads if n["Node Type"] == "Seq Scan"], nodes
        used = {n["Index Name"] for n in reads if "Index Name" in n}
        assert used == {"appointment_no_double_booking"}, nodes
        index_reads = [n for n in reads if n.get("Index Name") == "appointment_no_double_booking"]
        # The window and the practitioners are the index condition, not a filter afterwards.
        assert all("blocked &&" in n["Index Cond"] for n in index_reads), index_reads

        # The seed is big enough for the assertion to mean something: without that index
        # the planner reads far more than the window (every active appointment by status).
        trial = conn.transaction()
        await trial.start()
        try:
            await conn.execute(
                "ALTER TABLE appointment DROP CONSTRAINT appointment_no_double_booking"
            )
            without = _reads_of_appointment(await _busy_plan(conn, today))
        finally:
            await trial.rollback()
        assert "appointment_no_double_booking" not in {n.get("Index Name") for n in without}
        assert max(n["Plan Rows"] for n in without) > 5 * max(n["Plan Rows"] for n in index_reads)
    finally:
        await conn.close()


async def _week_of(pool: asyncpg.Pool, cache: WeeklyHoursCache, day: date) -> dict[int, Any]:
    schedules = await load_schedules(
        pool,
        1,
        practitioner_ids=None,
        first_day=day,
        last_day=day,
        zone=LONDON,
        now=datetime(2026, 3, 1, tzinfo=UTC),
        cache=cache,
    )
    return {s.practitioner_id: s.ranges_on(day) for s in schedules}


async def test_a_changed_week_is_seen_by_the_next_availability_read_in_every_process(
    pool: asyncpg.Pool,
) -> None:
    # Two booking processes, each with the weekly hours it has read in memory (the cache is
    # the only state a process keeps between requests; two caches stand for two processes).
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    first, second = WeeklyHoursCache(), WeeklyHoursCache()
    tuesday = date(2026, 3, 3)
    usual = ((time(9), time(13)), (time(14), time(18)))
    assert (await _week_of(pool, first, tuesday))[1] == usual
    assert (await _week_of(pool, second, tuesday))[1] == usual

    # Staff change Dr Hart's week (any writer: here the store directly, as a script would).
    async with pool.acquire() as conn, conn.transaction():
        await working_hours.replace(conn, 1, [(2, time(7), time(12))])
    assert (await _week_of(pool, first, tuesday))[1] == ((time(7), time(12)),)
    assert (await _week_of(pool, second, tuesday))[1] == ((time(7), time(12)),)
    # Dr Patel's week did not change and is still right.
    assert (await _week_of(pool, second, tuesday))[2] == usual

    # Back again: the old week's hours are not served from memory under the new state.
    async with pool.acquire() as conn, conn.transaction():
        await working_hours.replace(conn, 1, [(d, a, b) for d in range(1, 6) for a, b in usual])
    assert (await _week_of(pool, first, tuesday))[1] == usual


async def _diaries(pool: asyncpg.Pool, known: set[str]) -> list[diaries.Diary]:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    day = date(2026, 3, 3)
    start, end = utc_window(day, day, LONDON)
    return await diaries.for_window(
        pool,
        1,
        None,
        known_keys=known,
        start=start,
        end=end,
        first_day=day,
        last_day=day,
        now=now,
    )


async def test_an_unchanged_week_is_not_read_again(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    roster = await _diaries(pool, set())
    assert all(entry.hours for entry in roster)
    keys = {entry.hours_key for entry in roster}
    again = await _diaries(pool, keys)
    assert [e.practitioner_id for e in again] == [e.practitioner_id for e in roster]
    assert all(entry.hours is None for entry in again)
    # A change of one week renews that practitioner's key only, and sends their week.
    async with pool.acquire() as conn, conn.transaction():
        await working_hours.replace(conn, 2, [(6, time(10), time(14))])
    changed = await _diaries(pool, keys)
    assert changed[0].hours is None
    assert changed[1].hours == [(6, time(10), time(14))]


async def test_a_course_the_preferred_practitioner_cannot_finish_reads_the_others_only_where_needed(
    pool: asyncpg.Pool,
) -> None:
    # Dr Hart (1) is away the week of session 2 and the fortnight of session 5, so Dr Patel (2)
    # takes those two; the answer is the one made from everyone's whole diaries.
    async with pool.acquire() as conn:
        await seed_demo_data(conn)
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    holidays = ((date(2026, 3, 9), date(2026, 3, 14)), (date(2026, 4, 4), date(2026, 4, 15)))
    for away_from, away_until in holidays:
        await time_off.insert(
            pool,
            1,
            starts_at=datetime.combine(away_from, time(0), LONDON),
            ends_at=datetime.combine(away_until, time(0), LONDON),
            reason="holiday",
            now=now,
        )
    course = await pool.fetchval("SELECT id FROM treatment WHERE code = 'hair-mesotherapy'")
    async with pool.acquire() as conn:
        offer = await offers.load_offer(conn, course, public=True)
        assert offer is not None
        first_start = datetime(2026, 3, 3, 10, tzinfo=UTC)
        proposal = await offers.propose(
            conn, offer, first_start=first_start, practitioner_id=1, sessions=8, now=now
        )
        everyone = await load_schedules(
            conn,
            1,
            practitioner_ids=None,
            first_day=date(2026, 3, 3),
            last_day=date(2026, 3, 3) + timedelta(days=3 * 10 + 4 * 21),
            zone=LONDON,
            now=now,
        )
    whole = propose_course(
        offer.treatment.spec,
        offer.treatment.gaps,
        8,
        first_start,
        1,
        everyone,
        offer.clinic.rules,
        now=now,
        step=offer.clinic.slot_step,
    )
    assert proposal.complete
    assert [s.practitioner_id for s in proposal.sessions] == [1, 2, 1, 1, 2, 1, 1, 1]
    assert proposal == whole
