"""A cancel (or move) racing a send, with real concurrent transactions: either the change
commits first and the row is cancelled, or the send was decided (under a share lock on the
appointment) before the change took its lock. The change never waits for a provider, and no
send is decided after it committed."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import asyncpg

from services.devkit.twilio_standin import Fault
from shared.clock import FrozenClock
from shared.store import appointments, notifications
from shared.store.appointments import Appointment
from shared.store.notifications.dispatch import LaneKey
from tests.conftest import StandIn
from tests.notifier.conftest import MOBILE, StartNotifier, World, eventually

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def _someone_waits_for_a_lock(pool: asyncpg.Pool) -> bool:
    # pg_locks, not pg_stat_activity's wait events: the services' role may not see other
    # sessions' wait events, but every role sees the lock table.
    waiting = await pool.fetchval(
        """
        SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE a.datname = current_database() AND NOT l.granted
        """
    )
    return bool(waiting)


async def _cancel(
    conn: asyncpg.Connection, appointment: Appointment, clock: FrozenClock
) -> datetime:
    """Cancel as the booking service does (the appointment, then its pending messages), inside
    the caller's transaction; returns when the appointment lock was obtained."""
    await appointments.transition(
        conn, appointment.id, "cancelled", actor="staff", now=clock.now(), reason="test"
    )
    locked_at = datetime.now(UTC)
    await notifications.outbox.cancel_pending_for_appointment(
        conn, appointment.id, reason="appointment cancelled", now=clock.now()
    )
    return locked_at


async def test_a_cancel_that_commits_first_stops_a_reminder_already_claimed(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    appointment = await world.appointment(NOW + timedelta(hours=24))
    notification_id = await world.reminder(appointment)
    async with world.pool.acquire() as conn:
        cancelling = conn.transaction()
        await cancelling.start()
        await appointments.transition(
            conn, appointment.id, "cancelled", actor="staff", now=clock.now(), reason="test"
        )
        # Meanwhile a worker claims the reminder (the cancel has not reached it yet), and then
        # waits for the appointment lock before it may call Twilio.
        await start_notifier()
        await eventually(lambda: _someone_waits_for_a_lock(world.pool), what="a lock wait")
        assert (await world.row(notification_id)).status == "sending"
        # The cancel's own sweep of pending messages no longer finds it scheduled.
        assert (
            await notifications.outbox.cancel_pending_for_appointment(
                conn, appointment.id, reason="appointment cancelled", now=clock.now()
            )
            == 0
        )
        await cancelling.commit()

    row = await world.settled(notification_id, "cancelled")
    assert row.status_reason == "appointment is cancelled"
    assert twilio.twilio.create_requests == 0
    # Nothing was begun: the decision to send saw the cancel, so no attempt was recorded.
    assert await world.attempts(notification_id) == []


async def test_a_cancel_does_not_wait_for_a_reminder_on_its_way_and_nothing_follows_it(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    """The reminder's call to Twilio hangs; staff cancel the appointment meanwhile. The cancel
    commits at once (it waits for no provider), and when the call then fails temporarily the
    retry sends nothing: the message had been decided before the cancel, nothing after."""
    gate = twilio.twilio
    gate.gate.clear()  # type: ignore[attr-defined]
    twilio.twilio.fail_next(Fault(status=500, code=20500, message="Internal error"))
    appointment = await world.appointment(NOW + timedelta(hours=24))
    notification_id = await world.reminder(appointment)
    await start_notifier()
    await asyncio.wait_for(gate.arrived.wait(), timeout=10)  # type: ignore[attr-defined]

    async def cancel() -> datetime:
        async with world.pool.acquire() as conn, conn.transaction():
            return await _cancel(conn, appointment, clock)

    # While the call hangs nothing is locked: neither the appointment nor the message's row.
    async with world.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM appointment WHERE id = $1 FOR UPDATE NOWAIT", appointment.id
        )
        await conn.execute(
            "SELECT 1 FROM notification WHERE id = $1 FOR UPDATE NOWAIT", notification_id
        )
    # The call is still hanging: the cancel must not wait for it.
    locked_at = await asyncio.wait_for(cancel(), timeout=2)
    [attempt] = await world.attempts(notification_id)
    assert attempt["decided_at"] < locked_at  # decided before the cancel took its lock
    assert attempt["finished_at"] is None  # and still on its way when the cancel committed
    gate.gate.set()  # type: ignore[attr-defined]  # Twilio answers 500: a temporary failure

    row = await world.settled(notification_id, "scheduled", "cancelled")
    clock.advance(timedelta(minutes=30))  # past any retry's backoff
    row = await world.settled(notification_id, "cancelled")
    assert row.status_reason == "appointment is cancelled"
    assert twilio.twilio.create_requests == 1  # the hung call only: no retry went out
    assert twilio.twilio.sent_to(MOBILE) == []


async def test_cancels_racing_sends_never_let_a_message_out_after_the_cancel(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    cases = []
    for i in range(12):
        patient_id = await world.new_patient(mobile=f"+4477009003{i:02d}")
        appointment = await world.appointment(
            NOW + timedelta(hours=24, minutes=40 * i), patient_id=patient_id
        )
        cases.append((appointment, await world.reminder(appointment)))
    await start_notifier(notifier_concurrency=4)

    async def cancel(appointment: Appointment) -> datetime:
        await asyncio.sleep(random.uniform(0, 0.05))
        async with world.pool.acquire() as conn, conn.transaction():
            return await _cancel(conn, appointment, clock)

    locked = await asyncio.gather(*(cancel(a) for a, _ in cases))

    # A send decided before its cancel may still be on its way (the cancel did not wait).
    rows = [await world.settled(n, "cancelled", "sent", "delivered") for _, n in cases]
    by_row = {
        int(m.status_callback.rsplit("=", 1)[1]): m
        for m in twilio.twilio.messages.values()
        if m.status_callback
    }
    for (_, notification_id), locked_at, row in zip(cases, locked, rows, strict=True):
        message = by_row.get(notification_id)
        attempts = await world.attempts(notification_id)
        if row.status == "cancelled":
            assert message is None and attempts == []
        else:
            # Sent only on a decision that committed before the cancel took its lock.
            [attempt] = attempts
            assert message is not None and attempt["decided_at"] < locked_at
    assert len(by_row) == twilio.twilio.create_requests


async def test_a_move_racing_a_claim_cancels_the_old_reminder(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    appointment = await world.appointment(NOW + timedelta(hours=24))
    notification_id = await world.reminder(appointment)
    async with world.pool.acquire() as conn:
        moving = conn.transaction()
        await moving.start()
        await appointments.move(
            conn,
            appointment.id,
            practitioner_id=appointment.practitioner_id,
            starts_at=NOW + timedelta(hours=48),
            ends_at=NOW + timedelta(hours=48, minutes=30),
            buffer_before=timedelta(0),
            buffer_after=timedelta(0),
            actor="staff",
            now=clock.now(),
        )
        await start_notifier()
        await eventually(lambda: _someone_waits_for_a_lock(world.pool), what="a lock wait")
        await notifications.outbox.cancel_pending_for_appointment(
            conn, appointment.id, reason="appointment moved", now=clock.now()
        )
        await moving.commit()

    row = await world.settled(notification_id, "cancelled")
    assert row.status_reason == "appointment moved since this message was planned"
    assert twilio.twilio.create_requests == 0


async def test_cancelling_several_sessions_against_a_merged_reminder_never_deadlocks_it(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    # One message covers two sessions; the cancel locks them in the opposite order.
    first = await world.appointment(NOW + timedelta(hours=24))
    second = await world.appointment(NOW + timedelta(hours=72))
    merged_into = await world.reminder(first, kind="reminder_24h")
    absorbed = await world.reminder(second, kind="reminder_72h")
    async with world.pool.acquire() as conn:
        cancelling = conn.transaction()
        await cancelling.start()
        await appointments.transition(
            conn, second.id, "cancelled", actor="staff", now=clock.now(), reason="test"
        )
        await start_notifier()
        await eventually(lambda: _someone_waits_for_a_lock(world.pool), what="a lock wait")
        try:
            locked_at = await _cancel(conn, first, clock)
            for appointment in (first, second):
                await notifications.outbox.cancel_pending_for_appointment(
                    conn, appointment.id, reason="appointment cancelled", now=clock.now()
                )
            await cancelling.commit()
        except asyncpg.DeadlockDetectedError:
            await cancelling.rollback()
            locked_at = None

    if locked_at is None:
        # PostgreSQL chose the cancel: the message went as if nothing had happened.
        await world.settled(merged_into, "sent", "delivered")
        assert len(twilio.twilio.sent_to(MOBILE)) == 1
        return
    # PostgreSQL chose the worker: it put the row back (the cancel then ended it) or finds the
    # sessions cancelled when it comes back.
    clock.advance(timedelta(seconds=2))
    row = await world.settled(merged_into, "cancelled")
    assert row.status_reason in ("appointment cancelled", "appointment is cancelled")
    await world.settled(absorbed, "suppressed", "cancelled")
    assert twilio.twilio.create_requests == 0


async def test_reminders_merged_into_one_whose_appointment_is_cancelled_go_on_their_own(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    cancelled = await world.appointment(NOW + timedelta(hours=24))
    kept = await world.appointment(NOW + timedelta(hours=72))
    merged_into = await world.reminder(cancelled, kind="reminder_24h")
    absorbed = await world.reminder(kept, kind="reminder_72h")
    async with world.pool.acquire() as conn:
        cancelling = conn.transaction()
        await cancelling.start()
        await appointments.transition(
            conn, cancelled.id, "cancelled", actor="staff", now=clock.now(), reason="test"
        )
        await start_notifier()
        await eventually(lambda: _someone_waits_for_a_lock(world.pool), what="a lock wait")
        assert (
            await world.row(absorbed)
        ).status_reason == f"merged into notification {merged_into}"
        await cancelling.commit()

    assert (await world.settled(merged_into, "cancelled")).status_reason == (
        "appointment is cancelled"
    )
    await world.settled(absorbed, "sent", "delivered")
    [message] = twilio.twilio.sent_to(MOBILE)
    assert "Reply C to confirm" in message.body


async def test_an_erasure_cancels_a_message_a_worker_claimed_but_has_not_sent(
    world: World, clock: FrozenClock
) -> None:
    """A worker claimed the message (it is 'sending') and is composing it when the patient is
    erased: the erasure cancels it, and the worker's lock before the provider call finds
    nothing left to send."""
    notification_id = await world.reply("See you on Tuesday")
    claimed = await notifications.dispatch.claim_due(
        world.pool,
        lane=LaneKey("sms", False),
        now=clock.now(),
        lease=timedelta(minutes=2),
        worker="w1",
        limit=10,
    )
    assert [n.id for n in claimed] == [notification_id]
    async with world.pool.acquire() as conn, conn.transaction():
        cancelled = await notifications.outbox.cancel_pending_for_patient(
            conn, world.patient_id, reason="patient erased", now=clock.now()
        )
    assert cancelled == [notification_id]
    async with world.pool.acquire() as conn, conn.transaction():
        _, held = await notifications.dispatch.lock_for_send(
            conn, [], [notification_id], worker="w1"
        )
    assert held == set()
    reasons = await world.reasons(notification_id)
    assert reasons[-1] == ("sending", "cancelled", "patient erased")
