"""Two real `regimen serve scheduler` processes against one database for a simulated three
weeks of course progression: every next-session proposal, release, call-list entry, course
completion and maintenance reminder happens exactly once, and both processes do some of it.

The other parts are played in this process at the same moved time:
* the front desk and the clinicians check sessions in and complete them, and the front desk
  works the call list, through the real admin API (the booking app on a real socket, its clock
  set to the time the processes follow);
* the patients answer proposals as the notifier's SMS reply handler does (C: accept, R:
  release as declined, both shared/domain/proposals.py) and confirm reminders with C;
* the notifier sends what is due (tests/scheduler/world.py).

The clock stops every two hours from 07:00 to 19:00 London and once overnight, starting on a
Monday 07:00 in London (the processes' clock is moved there first) in a stretch without a
daylight-saving change, so the weekdays of the practitioners' hours and hence every proposed
time are the same whenever the test runs. Each process follows its own clock file: on two
steps in three one process sees the new time first and does the work alone while the other
then finds nothing left (so both certainly do some work); on the third both
move at once and race (released together from a lock: `move`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from shared import outbox_plan
from shared.clock import FrozenClock
from shared.db.transactions import in_transaction
from shared.domain import proposals as proposal_domain
from shared.domain.appointment_changes import Change
from shared.store import appointments, call_tasks, proposals, series
from shared.store.audit import Actor
from tests import factories
from tests.appointments.conftest import COMPLETION, Desk
from tests.conftest import BookingApi
from tests.scheduler.replicas import (
    Replica,
    items_by_sweep,
    ready,
    start_replicas,
    stop_all,
    until,
    wait_until_swept,
    wait_until_up,
)
from tests.scheduler.world import HART, PATEL, confirm, send_due

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
# Every two hours from 07:00 to 19:00 London (shorter than any check-in window, so each
# session is checked in), then overnight to 07:00.
STEP = timedelta(hours=2)
DAY_ENDS = 19
DAYS = 21


def moments(t0: datetime, days: int) -> list[datetime]:
    """The simulated moments after `t0` (a 07:00 London) at which the clocks stop."""
    found = []
    moment = t0
    while moment < t0 + timedelta(days=days):
        local = moment.astimezone(LONDON)
        if local.hour + STEP.seconds // 3600 <= DAY_ENDS:
            moment += STEP
        else:
            moment = datetime.combine(
                local.date() + timedelta(days=1), time(7), tzinfo=LONDON
            ).astimezone(UTC)
        found.append(moment)
    return found


def simulated_start(real_now: datetime) -> datetime:
    """The first Monday 07:00 London after `real_now` from which London keeps one UTC offset
    for the next 30 days."""
    day = (real_now + timedelta(hours=1)).astimezone(LONDON).date() + timedelta(days=1)
    while True:
        start = datetime.combine(day, time(7), tzinfo=LONDON)
        offsets = {
            datetime.combine(day + timedelta(days=n), time(12), tzinfo=LONDON).utcoffset()
            for n in range(-1, 31)
        }
        if day.weekday() == 0 and len(offsets) == 1:
            return start.astimezone(UTC)
        day += timedelta(days=1)


@pytest.fixture
def clock() -> FrozenClock:
    """The booking app's clock (booking_api): set to each simulated moment."""
    return FrozenClock(simulated_start(datetime.now(UTC)))


@dataclass
class Course:
    series_id: int
    patient_id: int
    # Proposed position -> the patient's answer: "C" (accept), "R" (other times), None (none).
    answers: dict[int, str | None] = field(default_factory=dict)
    # Positions whose patient replies C to the 72 h reminder.
    confirms: set[int] = field(default_factory=set)


async def treatment(pool: asyncpg.Pool, code: str) -> tuple[int, int]:
    row = await pool.fetchrow("SELECT id, sessions_max FROM treatment WHERE code = $1", code)
    return int(row["id"]), int(row["sessions_max"])


async def course(
    api: BookingApi,
    number: int,
    *,
    code: str,
    done: int,
    next_at: datetime,
    practitioner_id: int,
    sms: bool = True,
    answers: dict[int, str | None] | None = None,
    confirms: set[int] | None = None,
) -> Course:
    """A patient's course with sessions 1..`done` completed weeks ago and the next one booked
    at `next_at` (its reminders planned as a booking plans them)."""
    now = api.clock.now()
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name=f"P{number}",
        last_name="Course",
        mobile=f"+4477009003{number:02d}",
        email=f"p{number}@example.com",
        date_of_birth=None,
        now=now,
    )
    await factories.consent(api.pool, patient_id, {"care_sms": sms, "care_email": not sms}, now=now)
    treatment_id, planned = await treatment(api.pool, code)
    series_id = await series.insert(
        api.pool,
        clinic_id=api.clinic_id,
        patient_id=patient_id,
        treatment_id=treatment_id,
        planned_sessions=planned,
        now=now,
    )
    for position in range(1, done + 2):
        await factories.appointment(
            api.pool,
            clinic_id=api.clinic_id,
            practitioner_id=practitioner_id,
            treatment_id=treatment_id,
            patient_id=patient_id,
            starts_at=next_at - timedelta(days=28 * (done + 1 - position)),
            now=now,
            status="completed" if position <= done else "booked",
            series_id=series_id,
            position=position,
        )
    booked = await api.pool.fetchval(
        "SELECT id FROM appointment WHERE series_id = $1 AND status = 'booked'", series_id
    )

    async def plan(conn: asyncpg.Connection) -> None:
        appointment = await appointments.get(conn, booked)
        assert appointment is not None
        await outbox_plan.plan_reminders(conn, appointment, now=now)

    await in_transaction(api.pool, plan)
    return Course(series_id, patient_id, answers or {}, confirms or set())


async def answer_proposal(
    pool: asyncpg.Pool, appointment_id: int, patient_id: int, word: str, now: datetime
) -> None:
    """The patient's reply to a proposal, settled as the notifier's reply handler settles it."""
    change = Change(Actor("patient", patient_id, "SMS reply"), now)

    async def work(conn: asyncpg.Connection) -> None:
        proposal = await proposal_domain.lock_open(conn, appointment_id)
        assert proposal is not None
        if word == "C":
            settled = await proposal_domain.accept(conn, proposal, change)
        else:
            settled = await proposal_domain.release(conn, proposal, change, declined=True)
        assert settled is not None

    await in_transaction(pool, work)


async def reminded(pool: asyncpg.Pool, appointment_id: int) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM notification WHERE appointment_id = $1 "
            "AND kind = 'reminder_72h' AND status = 'sent')",
            appointment_id,
        )
    )


async def work_the_call_list(desk: Desk) -> None:
    """The front desk phones everyone on the call list and closes each task: a cause that a
    sweep finds again on its next runs (an overdue gap) must not be filed again."""
    reply = await desk.api.call("GET", "/api/v1/call-list", role="front_desk")
    assert reply.status == 200, reply.body
    for task in reply.body["items"]:
        done = await desk.api.call(
            "POST",
            f"/api/v1/call-list/{task['id']}/done",
            role="front_desk",
            json={"outcome": "spoke to them"},
        )
        # A sweep may have closed it meanwhile (a not-confirmed session since checked in).
        assert done.status == 200 or done.body["type"].endswith("/already-done"), done.body


async def play(desk: Desk, courses: list[Course], now: datetime) -> None:
    """What the patients and the clinic do at `now`, before the schedulers sweep."""
    pool = desk.pool
    await work_the_call_list(desk)
    for c in courses:
        ids = await pool.fetch(
            "SELECT id FROM appointment WHERE series_id = $1 "
            "AND status IN ('held', 'booked', 'confirmed', 'checked_in') ORDER BY id",
            c.series_id,
        )
        for (appointment_id,) in ids:
            session = await appointments.get(pool, appointment_id)
            assert session is not None and session.position is not None
            if session.status == "held":
                # An unexpected proposal fails here (KeyError): none is made twice.
                word = c.answers[session.position]
                if word is not None:
                    await answer_proposal(pool, session.id, c.patient_id, word, now)
                continue
            if (
                session.status == "booked"
                and session.position in c.confirms
                and await reminded(pool, session.id)
            ):
                await confirm(pool, session.id, now)  # the patient's C to the reminder
            if session.status in ("booked", "confirmed") and now >= session.starts_at - STEP:
                reply = await desk.act(session.id, "check-in")
                assert reply.status == 200, reply.body
            if now >= session.ends_at:
                reply = await desk.act(session.id, "complete", role="clinician", json=COMPLETION)
                assert reply.status == 200, reply.body


# The sweeps that read `series` first (proposing, completing, the gap check): held at the
# barrier below, all six of the two processes go at once.
SERIES_SWEEPS_OF_BOTH = 3 * 2


async def move(
    http: aiohttp.ClientSession,
    replicas: list[Replica],
    order: int,
    offset: timedelta,
    at: datetime,
    db_url: str,
) -> None:
    """Move the processes' clocks to `offset`: one first, then the other (order 0 or 1), or
    both at once (2). At once, they also start together: the test locks the `series` table,
    moves both clocks, waits until the course sweeps of both processes are queued behind the
    lock and lets them all go at the same moment (two processes polling a file would otherwise
    seldom meet inside a transaction of a few milliseconds)."""
    if order != 2:
        for replica in (replicas[order], replicas[1 - order]):
            replica.clock_file.write_text(str(offset.total_seconds()))
            await wait_until_swept(http, [replica], at)
        return
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE series IN ACCESS EXCLUSIVE MODE")
            for replica in replicas:
                replica.clock_file.write_text(str(offset.total_seconds()))

            async def queued() -> bool:
                waiting = await conn.fetchval(
                    "SELECT count(DISTINCT pid) FROM pg_locks "
                    "WHERE relation = 'series'::regclass AND NOT granted"
                )
                return int(waiting) >= SERIES_SWEEPS_OF_BOTH

            await until(queued, "the course sweeps of both processes at the barrier")
    finally:
        await conn.close()
    await wait_until_swept(http, replicas, at)


async def test_two_scheduler_processes_progress_courses_once_over_three_weeks(
    booking_api: BookingApi, db_url: str, tmp_path: Path
) -> None:
    api, pool = booking_api, booking_api.pool
    desk = Desk(api, patient_id=0)
    t0 = api.clock.now()
    offset = t0 - datetime.now(UTC)

    def at(day: int, hour: int) -> datetime:
        local = datetime.combine(t0.astimezone(LONDON).date() + timedelta(days=day), time(hour))
        return local.replace(tzinfo=LONDON).astimezone(UTC)

    meso = "hair-mesotherapy"  # 8 sessions: 7 days (6-10) before sessions 2-4, then 14 (12-21)
    courses = {
        # Session 8 of 8 on Tuesday: the course completes, its maintenance reminder planned.
        "finishes": await course(
            api, 1, code=meso, done=7, next_at=at(1, 10), practitioner_id=HART
        ),
        # Session 7 on Wednesday; session 8 proposed two weeks on, accepted, confirmed and
        # completed: the course completes.
        "accepts_and_finishes": await course(
            api,
            2,
            code=meso,
            done=6,
            next_at=at(2, 11),
            practitioner_id=HART,
            answers={8: "C"},
            confirms={8},
        ),
        # Session 1 today: session 2 proposed and accepted but never confirmed (call list),
        # session 3 accepted and confirmed, session 4 left unanswered (released).
        "weekly": await course(
            api,
            3,
            code=meso,
            done=0,
            next_at=at(0, 10),
            practitioner_id=HART,
            answers={2: "C", 3: "C", 4: None},
            confirms={3},
        ),
        # Session 1 on Tuesday; the patient asks for other times, and nobody books: overdue.
        "declines": await course(
            api, 4, code=meso, done=0, next_at=at(1, 14), practitioner_id=PATEL, answers={2: "R"}
        ),
        # Session 1 on Wednesday; the proposal is not answered (released), then overdue.
        "ignores": await course(
            api, 5, code=meso, done=0, next_at=at(2, 12), practitioner_id=HART, answers={2: None}
        ),
        # Session 1 on Thursday, its 72 h reminder by email not confirmed (call list); no care
        # SMS, so nothing is proposed; overdue.
        "no_sms": await course(
            api, 6, code=meso, done=0, next_at=at(3, 10), practitioner_id=PATEL, sms=False
        ),
        # The last of four PRP sessions on Tuesday of week 2, confirmed: completes.
        "prp_finishes": await course(
            api, 7, code="prp-hair", done=3, next_at=at(8, 15), practitioner_id=PATEL, confirms={4}
        ),
    }

    files = [tmp_path / "clock-0", tmp_path / "clock-1"]
    for file in files:
        file.write_text(str(offset.total_seconds()))
    replicas = start_replicas(db_url, files, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_up(http, replicas)
            previous = t0
            for step, planned in enumerate(moments(t0, DAYS)):
                offset += planned - previous
                previous = planned
                moment = datetime.now(UTC) + offset
                api.clock.advance(moment - api.clock.now())
                await send_due(pool, moment)  # the notifier sends what is due by then
                await play(desk, list(courses.values()), moment)
                await move(http, replicas, step % 3, offset, moment, db_url)
            items = [await items_by_sweep(http, replica) for replica in replicas]
            for replica in replicas:
                body = await ready(http, replica.base)
                assert body is not None and body["late_sweeps"] == []
    finally:
        await stop_all(replicas)
    for replica in replicas:
        log = replica.log.read_text()
        assert replica.process.returncode == 0, log
        assert '"sweep failed"' not in log, log

    # -- proposals: one per completed session that is not the last, answered as planned ------
    made = {name: await proposals.for_series(pool, c.series_id) for name, c in courses.items()}
    assert {name: [(p.position, p.status) for p in made[name]] for name in courses} == {
        "finishes": [],
        "accepts_and_finishes": [(8, "accepted")],
        "weekly": [(2, "accepted"), (3, "accepted"), (4, "released")],
        "declines": [(2, "declined")],
        "ignores": [(2, "released")],
        "no_sms": [(2, "skipped")],
        "prp_finishes": [],
    }
    assert made["no_sms"][0].note == "the patient cannot be asked by SMS"
    asked = [p for ps in made.values() for p in ps if p.status != "skipped"]
    held = [p.appointment_id for p in asked]
    # Each held one time (its own appointment, from the proposal sweep), asked once by SMS,
    # audited once.
    assert len(set(held)) == len(asked) == 6
    assert sorted(
        await pool.fetchval("SELECT array_agg(id) FROM appointment WHERE source = 'proposal'")
    ) == sorted(held)
    assert Counter(
        r["appointment_id"]
        for r in await pool.fetch(
            "SELECT appointment_id FROM notification WHERE kind = 'session_proposal'"
        )
    ) == Counter(held)
    assert await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'series.propose_next'"
    ) == len(asked)
    # The accepted ones were booked and completed in their turn; the weekly course's session 2
    # was where the desk placed it: a week after session 1, same practitioner and time.
    weekly = {p.position: p for p in made["weekly"]}
    second = await appointments.get(pool, weekly[2].appointment_id)
    assert second is not None
    assert (second.starts_at, second.practitioner_id, second.status) == (
        at(7, 10),
        HART,
        "completed",
    )
    assert (await appointments.get(pool, weekly[3].appointment_id)).status == "completed"  # type: ignore[union-attr]

    # -- releases: each unanswered one released once, the patient told once -------------------
    released = [p for ps in made.values() for p in ps if p.status == "released"]
    assert len(released) == 2
    for p in released:
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM notification WHERE kind = 'proposal_released' "
                "AND appointment_id = $1",
                p.appointment_id,
            )
            == 1
        )
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM appointment_event WHERE appointment_id = $1 "
                "AND to_status = 'cancelled'",
                p.appointment_id,
            )
            == 1
        )
    assert await pool.fetchval(
        "SELECT count(*) FROM notification WHERE kind = 'proposal_released'"
    ) == len(released)

    # -- the call list: each entry once ------------------------------------------------------
    first_session = {
        name: int(
            await pool.fetchval(
                "SELECT id FROM appointment WHERE series_id = $1 AND position = 1",
                courses[name].series_id,
            )
        )
        for name in ("declines", "ignores", "no_sms")
    }
    tasks = await call_tasks.list_page(pool, clinic_id=None, open_only=False, after=None, limit=500)
    # The desk called all those filed before the last step.
    assert all(t.done_at is not None for t in tasks if t.created_at < moment)
    # (Aftercare check-ins nobody answers put completed sessions on the list too: that is the
    # check-in follow-up's, tested in tests/notifier/test_check_ins.py; this counts the courses'.)
    course_tasks = [t for t in tasks if not t.reason.startswith("check_in_")]
    assert Counter((t.appointment_id, t.reason) for t in course_tasks) == Counter(
        {
            (weekly[2].appointment_id, "not_confirmed"): 1,
            (weekly[4].appointment_id, "proposal_unanswered"): 1,
            (made["ignores"][0].appointment_id, "proposal_unanswered"): 1,
            (made["declines"][0].appointment_id, "reschedule_requested"): 1,
            (first_session["declines"], "gap_overdue"): 1,
            (first_session["ignores"], "gap_overdue"): 1,
            (first_session["no_sms"], "gap_overdue"): 1,
            # asked by email three days before and never confirmed
            (first_session["no_sms"], "not_confirmed"): 1,
        }
    )

    # -- completions and maintenance reminders: once each ------------------------------------
    finished = ("finishes", "accepts_and_finishes", "prp_finishes")
    for name, c in courses.items():
        status = await pool.fetchval("SELECT status FROM series WHERE id = $1", c.series_id)
        completions = await pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'series.complete' AND entity_id = $1",
            c.series_id,
        )
        reminders = await pool.fetchval(
            "SELECT count(*) FROM notification WHERE kind = 'maintenance_reminder' "
            "AND patient_id = $1",
            c.patient_id,
        )
        expected = 1 if name in finished else 0
        assert (status, completions, reminders) == (
            "completed" if expected else "active",
            expected,
            expected,
        ), name

    # -- who did it: both processes, and between them exactly what is in the database ---------
    handled = Counter[str]()
    for counts in items:
        handled.update(counts)
    assert {
        name: handled[name]
        for name in (
            "propose-next-sessions",
            "release-unanswered-proposals",
            "course-gaps",
            "complete-courses",
            "call-unconfirmed",
            "mark-no-shows",
        )
    } == {
        "propose-next-sessions": 6,
        "release-unanswered-proposals": 2,
        "course-gaps": 3,
        "complete-courses": 3,
        "call-unconfirmed": 2,
        "mark-no-shows": 0,  # every session was checked in
    }
    # Moving two hours at a time, the clock passes an unanswered proposal's answer time and its
    # hold's end at once: the hold-expiry sweep may cancel the held time before the release
    # sweep lets it go (the patient is told and called once all the same, checked above). It
    # touched nothing else.
    expired = await pool.fetch(
        "SELECT appointment_id FROM appointment_event WHERE reason = 'hold expired'"
    )
    assert {r["appointment_id"] for r in expired} <= {p.appointment_id for p in released}
    assert handled["expire-holds"] == len(expired)
    assert all(sum(counts.values()) > 0 for counts in items), items


def test_the_simulation_starts_on_a_monday_morning_clear_of_clock_changes() -> None:
    start = simulated_start(datetime(2027, 3, 10, 12, tzinfo=UTC))
    # 28 March 2027 the clocks go forward: the first Monday with 30 days clear is 29 March.
    assert start.astimezone(LONDON).date() == date(2027, 3, 29)
    assert start.astimezone(LONDON).time() == time(7)
