"""Staff changes to booked sessions end or re-plan their messages in the same transaction:
cancelling one session or the rest of a course, moving a session (and the later ones it
shifts), a new no-show; and the send-time check that tells a stale message from a live one."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared import outbox_plan
from shared.store import appointments
from tests.outbox.conftest import (
    Demo,
    Row,
    act,
    book_course,
    booked_ids,
    outbox,
    starts,
    version,
)

HOUR = timedelta(hours=1)
LONDON = ZoneInfo("Europe/London")


def london(day: date, hour: int = 10) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=LONDON).astimezone(UTC)


def reminders_of(rows: list[Row], appointment_id: int) -> list[Row]:
    return [r for r in rows if r.appointment_id == appointment_id and r.kind.startswith("reminder")]


async def test_cancelling_one_session_ends_its_reminders_and_tells_the_patient(
    demo: Demo,
) -> None:
    ids = await booked_ids(await book_course(demo))
    before = await outbox(demo.pool)
    third = ids[2]
    reply = await act(demo, third, "cancel", {"reason": "patient on holiday"})
    assert reply.status == 200, reply.body

    rows = await outbox(demo.pool)
    gone = reminders_of(rows, third)
    assert len(gone) == 2
    assert {(r.status, r.status_reason) for r in gone} == {("cancelled", "appointment cancelled")}
    events = await demo.pool.fetch(
        """
        SELECT from_status, to_status, reason FROM notification_event
        WHERE notification_id = ANY($1::bigint[]) AND to_status = 'cancelled'
        """,
        [r.id for r in gone],
    )
    assert {tuple(e) for e in events} == {("scheduled", "cancelled", "appointment cancelled")}
    assert len(events) == 2
    # The other sessions' messages are untouched.
    untouched = {r.id: r for r in rows if r.appointment_id != third}
    assert all(untouched[r.id] == r for r in before if r.appointment_id != third)

    notices = [r for r in rows if r.kind == "cancellation_notice"]
    assert {r.channel for r in notices} == {"email", "sms"}
    for notice in notices:
        assert notice.appointment_id == third and notice.status == "scheduled"
        assert notice.context["appointment_ids"] == [third]
        assert notice.appointment_version == await version(demo.pool, third)
        assert notice.due_at == demo.api.clock.now()
        assert notice.expires_at == await starts(demo.pool, third)
    # The reminders ended in the very transaction that cancelled the session.
    cancelled_by = await demo.pool.fetchval(
        "SELECT xmin::text FROM appointment WHERE id = $1", third
    )
    ended_by = {
        r["xmin"]
        for r in await demo.pool.fetch(
            "SELECT xmin::text FROM notification WHERE id = ANY($1::bigint[])", [r.id for r in gone]
        )
    }
    assert ended_by == {cancelled_by}


async def test_cancelling_the_rest_of_a_course_ends_every_later_reminder_with_one_notice(
    demo: Demo,
) -> None:
    ids = await booked_ids(await book_course(demo))
    reply = await act(
        demo, ids[4], "cancel", {"reason": "moving abroad", "scope": "rest_of_course"}
    )
    assert reply.status == 200, reply.body
    assert reply.body["cancelled_appointment_ids"] == ids[4:]
    rows = await outbox(demo.pool)
    for appointment_id in ids[4:]:
        assert {r.status for r in reminders_of(rows, appointment_id)} == {"cancelled"}
    for appointment_id in ids[:4]:
        assert {r.status for r in reminders_of(rows, appointment_id)} == {"scheduled"}
    notices = [r for r in rows if r.kind == "cancellation_notice"]
    # One message per channel names all four sessions, not four messages.
    assert sorted(r.channel for r in notices) == ["email", "sms"]
    assert {tuple(r.context["appointment_ids"]) for r in notices} == {tuple(ids[4:])}
    assert {r.appointment_id for r in notices} == {ids[4]}


async def test_a_move_replans_the_reminders_for_the_new_time_and_tells_the_patient(
    demo: Demo,
) -> None:
    ids = await booked_ids(await book_course(demo))
    second = ids[1]
    old_start = await starts(demo.pool, second)
    old_version = await version(demo.pool, second)
    new_start = london(date(2026, 3, 17))  # the Tuesday after, same time
    reply = await act(
        demo, second, "reschedule", {"starts_at": new_start.isoformat(), "reason": "work"}
    )
    assert reply.status == 200, reply.body
    new_version = await version(demo.pool, second)
    assert new_version > old_version

    rows = await outbox(demo.pool)
    mine = reminders_of(rows, second)
    old = [r for r in mine if r.appointment_version == old_version]
    assert len(old) == 2
    assert {r.status for r in old} == {"cancelled"}
    assert all("moved" in (r.status_reason or "") for r in old)
    live = sorted((r for r in mine if r.status == "scheduled"), key=lambda r: r.due_at)
    assert [r.kind for r in live] == ["reminder_72h", "reminder_24h"]
    assert [r.due_at for r in live] == [new_start - 72 * HOUR, new_start - 24 * HOUR]
    assert {r.expires_at for r in live} == {new_start}
    assert {r.appointment_version for r in live} == {new_version}
    assert [r.dedupe_key for r in live] == [
        f"reminder_72h:sms:appt{second}:v{new_version}",
        f"reminder_24h:sms:appt{second}:v{new_version}",
    ]
    # Nothing is left that would go out at the old time.
    assert not [r for r in rows if r.status == "scheduled" and r.expires_at == old_start]

    notices = [r for r in rows if r.kind == "reschedule_notice"]
    assert sorted(r.channel for r in notices) == ["email", "sms"]
    for notice in notices:
        assert notice.appointment_id == second and notice.appointment_version == new_version
        assert notice.context["appointment_ids"] == [second]
        assert datetime.fromisoformat(notice.context["previous_starts_at"]) == old_start
        assert datetime.fromisoformat(notice.context["starts_at"]) == new_start
    # The other sessions keep their reminders as they were.
    assert {r.status for r in reminders_of(rows, ids[0])} == {"scheduled"}

    # Same time with another practitioner: reminders follow the new version, and the patient
    # is not told of a "new time" that is the old one.
    other = await act(
        demo, second, "reschedule", {"starts_at": new_start.isoformat(), "practitioner_id": 2}
    )
    assert other.status == 200, other.body
    latest = await version(demo.pool, second)
    rows = await outbox(demo.pool)
    live = [r for r in reminders_of(rows, second) if r.status == "scheduled"]
    assert sorted(r.due_at for r in live) == [new_start - 72 * HOUR, new_start - 24 * HOUR]
    assert {r.appointment_version for r in live} == {latest}
    assert len([r for r in rows if r.kind == "reschedule_notice"]) == 2


async def test_a_move_that_shifts_later_sessions_replans_them_all_with_one_notice(
    demo: Demo,
) -> None:
    ids = await booked_ids(await book_course(demo))
    seventh, eighth = ids[6], ids[7]
    assert (await starts(demo.pool, seventh)).date() == date(2026, 5, 11)
    eighth_before = await starts(demo.pool, eighth)
    # Friday 15 May: only ten days before session 8, under its minimum of twelve.
    reply = await act(
        demo,
        seventh,
        "reschedule",
        {"starts_at": london(date(2026, 5, 15)).isoformat(), "shift_later": True},
    )
    assert reply.status == 200, reply.body
    assert [s["appointment_id"] for s in reply.body["applied_shifts"]] == [eighth]
    eighth_after = await starts(demo.pool, eighth)
    assert eighth_after != eighth_before

    rows = await outbox(demo.pool)
    for appointment_id in (seventh, eighth):
        start = await starts(demo.pool, appointment_id)
        current = await version(demo.pool, appointment_id)
        live = [r for r in reminders_of(rows, appointment_id) if r.status == "scheduled"]
        assert sorted(r.due_at for r in live) == [start - 72 * HOUR, start - 24 * HOUR]
        assert {r.appointment_version for r in live} == {current}
        cancelled = [r for r in reminders_of(rows, appointment_id) if r.status == "cancelled"]
        assert len(cancelled) == 2
    notices = [r for r in rows if r.kind == "reschedule_notice"]
    assert sorted(r.channel for r in notices) == ["email", "sms"]
    assert {tuple(r.context["appointment_ids"]) for r in notices} == {(seventh, eighth)}
    assert {r.context["previous_starts_by_id"][str(eighth)] for r in notices} == {
        eighth_before.isoformat()
    }


async def test_a_new_no_show_adds_the_2h_reminder_to_later_sessions_once(demo: Demo) -> None:
    ids = await booked_ids(await book_course(demo))
    assert not [r for r in await outbox(demo.pool) if r.kind == "reminder_2h"]
    # The first session is missed.
    demo.api.clock.advance(timedelta(days=7, hours=2))
    now = demo.api.clock.now()
    async with demo.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE appointment SET status = 'no_show' WHERE id = $1", ids[0])
        planned = await outbox_plan.on_no_show(conn, await _patient(demo, ids[0]), now=now)
    assert len(planned) == 7
    again = await _plan_no_show(demo, ids[0])
    assert again == []
    rows = await outbox(demo.pool)
    for appointment_id in ids[1:]:
        start = await starts(demo.pool, appointment_id)
        two_hours = [r for r in reminders_of(rows, appointment_id) if r.kind == "reminder_2h"]
        assert [(r.due_at, r.expires_at, r.channel) for r in two_hours] == [
            (start - 2 * HOUR, start, "sms")
        ]


async def _patient(demo: Demo, appointment_id: int) -> int:
    return int(
        await demo.pool.fetchval("SELECT patient_id FROM appointment WHERE id = $1", appointment_id)
    )


async def _plan_no_show(demo: Demo, appointment_id: int) -> list[int]:
    async with demo.pool.acquire() as conn, conn.transaction():
        return await outbox_plan.on_no_show(
            conn, await _patient(demo, appointment_id), now=demo.api.clock.now()
        )


async def test_a_cancel_racing_a_dispatcher_never_leaves_a_live_reminder(demo: Demo) -> None:
    """A worker claims due rows (SKIP LOCKED, as the notifier does) while staff cancel: each
    reminder ends up either cancelled with the appointment, or claimed before the cancel and
    then refused by the send-time check; none stays scheduled for a cancelled session."""
    ids = await booked_ids(await book_course(demo))
    target = ids[3]
    reminder_ids = [r.id for r in reminders_of(await outbox(demo.pool), target)]

    async def claim_one() -> None:
        async with demo.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                UPDATE notification SET status = 'sending'
                WHERE id IN (SELECT id FROM notification WHERE id = ANY($1::bigint[])
                             AND status = 'scheduled' LIMIT 1 FOR UPDATE SKIP LOCKED)
                """,
                reminder_ids,
            )

    cancel = act(demo, target, "cancel", {"reason": "unwell"})
    results = await asyncio.gather(cancel, claim_one(), claim_one())
    assert results[0].status == 200, results[0].body

    appointment = await appointments.get(demo.pool, target)
    assert appointment is not None and appointment.status == "cancelled"
    rows = {r.id: r for r in await outbox(demo.pool)}
    statuses = {rows[i].status for i in reminder_ids}
    assert statuses <= {"cancelled", "sending"}
    for notification_id in reminder_ids:
        row = rows[notification_id]
        if row.status == "sending":
            reason = outbox_plan.stale_reason(
                row.kind, row.appointment_version, row.context, appointment
            )
            assert reason == "appointment is cancelled"


async def test_the_send_time_check_tells_a_move_from_a_confirmation(demo: Demo) -> None:
    ids = await booked_ids(await book_course(demo))
    rows = await outbox(demo.pool)
    reminder = next(r for r in reminders_of(rows, ids[0]) if r.kind == "reminder_24h")
    current = await appointments.get(demo.pool, ids[0])
    assert current is not None

    def check(row: Row, appointment: appointments.Appointment | None) -> str | None:
        return outbox_plan.stale_reason(row.kind, row.appointment_version, row.context, appointment)

    assert check(reminder, current) is None
    # Confirming bumps the version but keeps the time: the reminder still goes.
    confirmed = replace(current, status="confirmed", version=current.version + 1)
    assert check(reminder, confirmed) is None
    moved = replace(confirmed, starts_at=current.starts_at + 2 * HOUR, version=current.version + 2)
    assert check(reminder, moved) == "appointment moved since this message was planned"
    checked_in = replace(current, status="checked_in", version=current.version + 1)
    assert check(reminder, checked_in) == "appointment is checked_in"
    cancelled = replace(current, status="cancelled", version=current.version + 1)
    assert check(reminder, cancelled) == "appointment is cancelled"
    # A cancellation notice is about a cancelled appointment.
    notice = replace(reminder, kind="cancellation_notice", appointment_version=cancelled.version)
    assert check(notice, cancelled) is None
    assert check(notice, current) == "appointment is booked, not cancelled"
    # Not about an appointment at all: nothing to go stale.
    assert check(reminder, None) is None
