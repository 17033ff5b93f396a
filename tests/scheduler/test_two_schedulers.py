"""Two real `regimen serve scheduler` processes against one database for a simulated three
weeks: every call-list entry is filed exactly once. Their clocks move together through
REGIMEN_DEV_CLOCK_FILE; after each move the test waits until both have swept at the new time
(their /readyz detail says when each sweep last started, by their clock). The notifier's part,
sending reminders when due, is played by the test (tests/scheduler/world.py)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.store import call_tasks
from tests.scheduler.replicas import (
    items_by_sweep,
    ready,
    start_replicas,
    stop_all,
    wait_until_swept,
    wait_until_up,
)
from tests.scheduler.world import book, confirm, hours, not_confirmed_tasks, send_due

pytestmark = pytest.mark.slow

STEP = timedelta(hours=2)
WEEKS = 3


async def test_two_scheduler_processes_file_each_call_list_entry_once_over_three_weeks(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    offset = timedelta(0)

    def now() -> datetime:  # the processes' clock: real time plus the file's offset
        return datetime.now(UTC) + offset

    t0 = now().replace(minute=0, second=0, microsecond=0) + hours(1)
    # (start, patient's mobile): each its own patient; what should become of it is below.
    plan = {
        "asked": t0 + timedelta(days=4),
        "confirmed": t0 + timedelta(days=6),
        "booked_late": t0 + timedelta(days=9),  # booked 60 h ahead: never asked
        "closed_by_staff": t0 + timedelta(days=8),
        "second_week": t0 + timedelta(days=12, hours=3),
        "third_week": t0 + timedelta(days=17, hours=5),
        "at_the_end": t0 + timedelta(days=22),
    }
    ids: dict[str, int] = {}
    for number, (name, start) in enumerate(plan.items()):
        if name == "booked_late":
            continue
        ids[name], _ = await book(
            pool, starts_at=start, now=now(), mobile=f"+4477009002{number:02d}"
        )

    clock_file = tmp_path / "clock-offset"
    clock_file.write_text("0")
    replicas = start_replicas(db_url, [clock_file, clock_file], tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_up(http, replicas)

            end = t0 + timedelta(weeks=WEEKS)
            closed = False
            while now() < end:
                offset += STEP
                moment = now()
                if "booked_late" not in ids and moment >= plan["booked_late"] - hours(60):
                    ids["booked_late"], _ = await book(
                        pool, starts_at=plan["booked_late"], now=moment, mobile="+447700900299"
                    )
                await send_due(pool, moment)  # the notifier sends what is due by then
                if moment >= plan["confirmed"] - hours(70):
                    if (
                        await pool.fetchval(
                            "SELECT status FROM appointment WHERE id = $1", ids["confirmed"]
                        )
                        == "booked"
                    ):
                        await confirm(pool, ids["confirmed"], moment)  # the patient's C
                clock_file.write_text(str(offset.total_seconds()))
                await wait_until_swept(http, replicas, moment)
                if not closed:
                    open_tasks = [
                        t
                        for t in await not_confirmed_tasks(pool)
                        if t["appointment_id"] == ids["closed_by_staff"]
                    ]
                    if open_tasks:
                        await call_tasks.mark_done(
                            pool,
                            open_tasks[0]["id"],
                            by="front desk",
                            outcome="spoke to them",
                            now=moment,
                        )
                        closed = True

            items = 0.0
            for replica in replicas:
                items += (await items_by_sweep(http, replica)).get("call-unconfirmed", 0.0)
                body = await ready(http, replica.base)
                assert body is not None and body["late_sweeps"] == []
    finally:
        await stop_all(replicas)
    for replica in replicas:
        log = replica.log.read_text()
        assert replica.process.returncode == 0, log
        assert '"sweep failed"' not in log, log

    tasks = await not_confirmed_tasks(pool)
    filed = Counter(t["appointment_id"] for t in tasks)
    expected = {"asked", "closed_by_staff", "second_week", "third_week", "at_the_end"}
    assert filed == Counter({ids[name]: 1 for name in expected})
    assert items == len(tasks)  # what the two processes say they filed, between them
    for task in tasks:
        start = plan[next(n for n, i in ids.items() if i == task["appointment_id"])]
        # Filed at the first sweep past its 48 h mark (the clock moves in steps of STEP).
        assert start - hours(48) <= task["created_at"] < start - hours(48) + STEP + hours(1)
    assert await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'call_task.file'"
    ) == len(tasks)
