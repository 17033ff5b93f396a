"""The call list's "not confirmed" sweep (services/scheduler/call_list.py): a session asked to
confirm by the 72 h reminder and still not confirmed 48 h before (the clinic's setting) goes on
the staff call list once; sessions never asked, confirmed ones and past ones do not. The clock
is moved; each sweep run is called and awaited."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from services.scheduler.call_list import file_unconfirmed
from shared import outbox_plan
from shared.clock import FrozenClock
from shared.db.pool import APP_ROLE, create_pool
from shared.db.transactions import in_transaction
from shared.store import appointments, call_tasks
from tests.conftest import BookingApi
from tests.scheduler.world import (
    HART,
    PATEL,
    book,
    confirm,
    hours,
    not_confirmed_tasks,
    reminder,
    send_due,
)


async def test_an_asked_session_still_unconfirmed_48h_before_goes_on_the_call_list_once(
    pool: asyncpg.Pool, clock: FrozenClock
) -> None:
    start = clock.now() + timedelta(days=5, hours=1)
    appointment_id, patient_id = await book(pool, starts_at=start, now=clock.now())

    clock.set(start - hours(72))
    assert await send_due(pool, clock.now()) == 1  # the 72 h reminder: "Reply C to confirm"
    clock.set(start - hours(48) - timedelta(minutes=1))
    assert await file_unconfirmed(pool, clock) == 0  # the patient still has time
    clock.set(start - hours(48))
    assert await file_unconfirmed(pool, clock) == 1

    (task,) = await not_confirmed_tasks(pool)
    assert task["appointment_id"] == appointment_id and task["patient_id"] == patient_id
    assert task["created_at"] == clock.now() and task["done_at"] is None
    assert task["detail"] == "asked to confirm; not confirmed 48 h before the start"
    audit = await pool.fetchrow(
        "SELECT * FROM audit_log WHERE action = 'call_task.file' AND entity_id = $1", task["id"]
    )
    assert audit is not None and audit["actor_kind"] == "system"
    assert audit["patient_id"] == patient_id

    # Every later tick: nothing new, and staff closing the task does not bring it back.
    clock.advance(hours(1))
    assert await file_unconfirmed(pool, clock) == 0
    done = await call_tasks.mark_done(
        pool, task["id"], by="front desk", outcome="left a message", now=clock.now()
    )
    assert done is not None
    clock.advance(hours(20))
    assert await file_unconfirmed(pool, clock) == 0
    assert len(await not_confirmed_tasks(pool)) == 1


async def test_a_task_whose_reason_has_gone_is_closed_by_the_next_sweep(
    pool: asyncpg.Pool, clock: FrozenClock
) -> None:
    # The accident: the patient replies C an hour after the session went on the call list;
    # the front desk must not phone them about it.
    start = clock.now() + timedelta(days=5, hours=1)
    late_reply, _ = await book(pool, starts_at=start, now=clock.now(), mobile="+447700900011")
    cancelled, _ = await book(
        pool, starts_at=start + hours(1), now=clock.now(), mobile="+447700900012"
    )
    staying, _ = await book(
        pool, starts_at=start + hours(2), now=clock.now(), mobile="+447700900013"
    )
    clock.set(start + hours(2) - hours(72))
    assert await send_due(pool, clock.now()) == 3
    clock.set(start + hours(2) - hours(48))
    assert await file_unconfirmed(pool, clock) == 3

    clock.advance(hours(1))
    await confirm(pool, late_reply, clock.now())

    async def cancel(conn: asyncpg.Connection) -> None:
        await appointments.transition(conn, cancelled, "cancelled", actor="test", now=clock.now())

    await in_transaction(pool, cancel)
    clock.advance(timedelta(minutes=5))
    assert await file_unconfirmed(pool, clock) == 0
    tasks = {t["appointment_id"]: t for t in await not_confirmed_tasks(pool)}
    assert tasks[late_reply]["done_by"] == "regimen"
    assert tasks[late_reply]["outcome"] == "closed by Regimen: the patient confirmed"
    assert tasks[cancelled]["outcome"] == "closed by Regimen: the appointment was cancelled"
    assert tasks[staying]["done_at"] is None  # still unconfirmed: still to call
    # Closed is closed: the next runs neither reopen nor refile them.
    clock.advance(hours(1))
    assert await file_unconfirmed(pool, clock) == 0
    assert len(await not_confirmed_tasks(pool)) == 3


async def test_a_task_closed_because_the_patient_came_does_not_say_they_confirmed(
    pool: asyncpg.Pool, clock: FrozenClock
) -> None:
    # The patient never answered the reminder and simply turned up: the desk reading the done
    # tasks must not be told that they confirmed.
    start = clock.now() + timedelta(days=5, hours=1)
    came, _ = await book(pool, starts_at=start, now=clock.now(), mobile="+447700900021")
    finished, _ = await book(
        pool, starts_at=start + hours(1), now=clock.now(), mobile="+447700900022"
    )
    clock.set(start + hours(1) - hours(72))
    assert await send_due(pool, clock.now()) == 2
    clock.set(start + hours(1) - hours(48))
    assert await file_unconfirmed(pool, clock) == 2

    clock.set(start - hours(1))

    async def check_in(conn: asyncpg.Connection) -> None:
        for appointment_id in (came, finished):
            await appointments.transition(
                conn, appointment_id, "checked_in", actor="test", now=clock.now()
            )
        await appointments.transition(conn, finished, "completed", actor="test", now=clock.now())

    await in_transaction(pool, check_in)
    assert await file_unconfirmed(pool, clock) == 0
    tasks = {t["appointment_id"]: t for t in await not_confirmed_tasks(pool)}
    for appointment_id in (came, finished):
        assert tasks[appointment_id]["done_by"] == "regimen"
        assert tasks[appointment_id]["outcome"] == (
            "closed by Regimen: the patient came (checked in)"
        )


async def test_a_session_moved_to_a_new_time_is_asked_and_called_about_afresh(
    pool: asyncpg.Pool, clock: FrozenClock
) -> None:
    start = clock.now() + timedelta(days=5, hours=1)
    appointment_id, _ = await book(pool, starts_at=start, now=clock.now())
    clock.set(start - hours(72))
    await send_due(pool, clock.now())
    clock.set(start - hours(48))
    assert await file_unconfirmed(pool, clock) == 1

    # The front desk calls and moves it a week later; its reminders are planned again.
    clock.advance(hours(2))
    new_start = start + timedelta(days=7)

    async def move(conn: asyncpg.Connection) -> None:
        await appointments.move(
            conn,
            appointment_id,
            practitioner_id=HART,
            starts_at=new_start,
            ends_at=new_start + timedelta(minutes=30),
            buffer_before=timedelta(0),
            buffer_after=timedelta(0),
            actor="test",
            now=clock.now(),
        )
        await outbox_plan.on_moved_together(conn, [appointment_id], now=clock.now())

    await in_transaction(pool, move)
    clock.advance(timedelta(minutes=5))
    assert await file_unconfirmed(pool, clock) == 0
    (first,) = await not_confirmed_tasks(pool)
    assert first["outcome"] == "closed by Regimen: the appointment was moved"

    # The old question does not count for the new time: nothing until it is asked again.
    clock.set(new_start - hours(48))
    assert await file_unconfirmed(pool, clock) == 0
    assert await send_due(pool, clock.now()) >= 1  # the new 72 h reminder leaves (late)
    clock.advance(timedelta(minutes=5))
    assert await file_unconfirmed(pool, clock) == 1
    assert [t["done_at"] is None for t in await not_confirmed_tasks(pool)] == [False, True]


async def test_sessions_never_asked_confirmed_or_past_stay_off_the_list(
    pool: asyncpg.Pool, clock: FrozenClock
) -> None:
    now = clock.now()
    start = now + timedelta(days=5, hours=1)
    asked, _ = await book(pool, starts_at=start, now=now, mobile="+447700900001")
    confirmed, _ = await book(pool, starts_at=start + hours(1), now=now, mobile="+447700900002")
    failed, _ = await book(pool, starts_at=start + hours(2), now=now, mobile="+447700900003")
    clock.set(start - hours(72))
    late_booking_start = start - hours(3)
    # Booked 69 h ahead: its 72 h reminder's moment had passed, so it was never asked.
    late, _ = await book(
        pool, starts_at=late_booking_start, now=clock.now(), mobile="+447700900004"
    )
    assert await reminder(pool, late, "reminder_72h") is None
    failed_reminder = await reminder(pool, failed, "reminder_72h")
    await pool.execute("UPDATE notification SET status = 'failed' WHERE id = $1", failed_reminder)
    await send_due(pool, clock.now())
    clock.advance(hours(2))
    await confirm(pool, confirmed, clock.now())  # the patient replied C

    clock.set(start - hours(47))  # all four are inside their 48 h
    assert await file_unconfirmed(pool, clock) == 1
    assert [t["appointment_id"] for t in await not_confirmed_tasks(pool)] == [asked]

    # Past its start a booked session is the no-show sweep's, not the call list's.
    past, _ = await book(
        pool,
        starts_at=clock.now() + hours(60),
        now=clock.now() - hours(20),
        practitioner_id=PATEL,
        mobile="+447700900005",
    )
    await send_due(pool, clock.now())
    clock.set(clock.now() + hours(61))
    assert await file_unconfirmed(pool, clock) == 0
    assert past not in [t["appointment_id"] for t in await not_confirmed_tasks(pool)]


async def test_a_merged_reminder_that_asked_counts_for_every_session_it_named(
    pool: asyncpg.Pool, clock: FrozenClock
) -> None:
    # Two sessions two days apart: the first one's 24 h reminder and the second one's 72 h
    # reminder fall due together and leave as one SMS, which asks "Reply C to confirm" for
    # both (shared/messaging/render.py _asks_confirmation). The notifier merges them so.
    now = clock.now()
    first_start = now + timedelta(days=2, hours=12)  # booked inside 72 h: no 72 h reminder
    first, patient_id = await book(pool, starts_at=first_start, now=now)
    second, _ = await book(
        pool, starts_at=first_start + timedelta(days=2), now=now, patient_id=patient_id
    )
    assert await reminder(pool, first, "reminder_72h") is None
    carrier = await reminder(pool, first, "reminder_24h")
    merged = await reminder(pool, second, "reminder_72h")
    await pool.execute(
        """
        UPDATE notification SET status = 'suppressed', status_reason = 'merged' WHERE id = $1
        """,
        merged,
    )
    await pool.execute(
        """
        UPDATE notification SET context = context || jsonb_build_object(
            'merged_appointment_ids', jsonb_build_array($2::bigint),
            'merged_kinds', jsonb_build_array('reminder_72h'),
            'merged_notification_ids', jsonb_build_array($3::bigint))
        WHERE id = $1
        """,
        carrier,
        second,
        merged,
    )
    clock.set(first_start - hours(24))
    await send_due(pool, clock.now())
    clock.advance(timedelta(minutes=5))
    assert await file_unconfirmed(pool, clock) == 1  # the first: asked, 24 h away
    clock.set(first_start + timedelta(days=2) - hours(48))
    assert await file_unconfirmed(pool, clock) == 1  # the second, at its 48 h mark
    assert [t["appointment_id"] for t in await not_confirmed_tasks(pool)] == [first, second]


async def test_the_clinic_sets_how_many_hours_before_the_start(
    booking_api: BookingApi, clock: FrozenClock
) -> None:
    pool = booking_api.pool
    clinic = f"/api/v1/clinics/{booking_api.clinic_id}"
    refused = await booking_api.call(
        "PATCH",
        clinic,
        role="admin",
        json={"unconfirmed_call_hours": 72},
        headers={"If-Match": '"1"'},
    )
    assert refused.status == 422
    assert {e["path"] for e in refused.body["errors"]} == {"unconfirmed_call_hours"}
    changed = await booking_api.call(
        "PATCH",
        clinic,
        role="admin",
        json={"unconfirmed_call_hours": 24},
        headers={"If-Match": '"1"'},
    )
    assert changed.status == 200 and changed.body["unconfirmed_call_hours"] == 24

    start = clock.now() + timedelta(days=5, hours=1)
    appointment_id, _ = await book(pool, starts_at=start, now=clock.now())
    clock.set(start - hours(72))
    await send_due(pool, clock.now())
    clock.set(start - hours(25))
    assert await file_unconfirmed(pool, clock) == 0
    clock.set(start - hours(24))
    assert await file_unconfirmed(pool, clock) == 1
    (task,) = await not_confirmed_tasks(pool)
    assert task["detail"] == "asked to confirm; not confirmed 24 h before the start"


async def test_many_sweeps_racing_on_two_replicas_file_each_session_once(
    pool: asyncpg.Pool, clock: FrozenClock, db_url: str
) -> None:
    now = clock.now()
    start = now + timedelta(days=5)
    booked = [
        (await book(pool, starts_at=start + hours(i), now=now, mobile=f"+4477009001{i:02d}"))[0]
        for i in range(6)
    ]
    clock.set(start + hours(5) - hours(72))
    assert await send_due(pool, clock.now()) == 6
    clock.set(start + hours(5) - hours(48))

    other = await create_pool(db_url, max_size=10, act_as=APP_ROLE)
    try:
        counts = await asyncio.gather(
            *(file_unconfirmed(p, clock) for _ in range(8) for p in (pool, other))
        )
    finally:
        await other.close()
    assert sum(counts) == 6
    assert sorted(t["appointment_id"] for t in await not_confirmed_tasks(pool)) == booked
    audited = await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'call_task.file'")
    assert audited == 6
