"""Send-time checks: the appointment still on and at its planned time, consent, opt-out,
expiry; quiet hours, the daily limit and merging of nearby reminders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.clock import FrozenClock
from shared.store import appointments, patients
from tests import factories
from tests.conftest import StandIn
from tests.notifier.conftest import MOBILE, StartNotifier, World, eventually

# The test clock's "now": Monday 2 March 2026, 09:00 in London (GMT).
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def test_a_reminder_whose_appointment_moved_is_cancelled_not_sent_with_the_old_time(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    appointment = await world.appointment(NOW + timedelta(hours=24))
    notification_id = await world.reminder(appointment)
    async with world.pool.acquire() as conn, conn.transaction():
        # A move that (wrongly) leaves the old reminder scheduled: the send-time check catches it.
        await appointments.move(
            conn,
            appointment.id,
            practitioner_id=appointment.practitioner_id,
            starts_at=NOW + timedelta(hours=30),
            ends_at=NOW + timedelta(hours=30, minutes=30),
            buffer_before=timedelta(0),
            buffer_after=timedelta(0),
            actor="test",
            now=clock.now(),
        )
    await start_notifier()
    row = await world.settled(notification_id, "cancelled")
    assert row.status_reason == "appointment moved since this message was planned"
    assert twilio.twilio.sent_to(MOBILE) == []


async def test_a_confirmed_appointment_still_gets_its_reminder(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    # Confirming bumps the version but leaves the time alone: the reminder still fits.
    appointment = await world.appointment(NOW + timedelta(hours=24))
    notification_id = await world.reminder(appointment)
    async with world.pool.acquire() as conn, conn.transaction():
        await appointments.transition(
            conn, appointment.id, "confirmed", actor="patient", now=clock.now()
        )
    await start_notifier()
    await world.settled(notification_id, "sent", "delivered")
    assert len(twilio.twilio.sent_to(MOBILE)) == 1


async def test_withdrawn_consent_an_erased_patient_and_an_expired_row_send_nothing(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    withdrawn = await world.new_patient(mobile="+447700900201")
    await factories.consent(world.pool, withdrawn, {"care_sms": False}, now=clock.now())
    erased = await world.new_patient(mobile="+447700900202")
    await patients.erase(world.pool, erased, now=clock.now())
    no_consent = await world.reminder(
        await world.appointment(NOW + timedelta(hours=24), patient_id=withdrawn)
    )
    no_address = await world.reminder(
        await world.appointment(NOW + timedelta(hours=25), patient_id=erased)
    )
    late = await world.reply("Too late", expires_at=NOW - timedelta(minutes=1))
    await start_notifier()

    assert (await world.settled(no_consent, "suppressed")).status_reason == "no care_sms consent"
    row = await world.settled(no_address, "suppressed")
    assert row.status_reason == "no sms address for the recipient"
    assert (await world.settled(late, "expired")).status_reason == (
        "expired before it could be sent"
    )
    assert twilio.twilio.create_requests == 0


async def test_no_sms_goes_to_a_country_the_clinic_does_not_text(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    # A US mobile stored before the clinic limited its SMS countries (SMS pumping runs up bills
    # with exactly such numbers): nothing is sent until the clinic adds the country.
    abroad = await world.new_patient(mobile="+14155552671")
    refused = await world.reminder(
        await world.appointment(NOW + timedelta(hours=24), patient_id=abroad)
    )
    await start_notifier()
    row = await world.settled(refused, "suppressed")
    assert row.status_reason == "mobile outside the clinic's SMS countries"
    assert twilio.twilio.create_requests == 0
    await world.pool.execute(
        "UPDATE clinic SET sms_countries = '{GB,US}' WHERE id = $1", world.clinic_id
    )
    allowed = await world.reminder(
        await world.appointment(NOW + timedelta(hours=26), patient_id=abroad)
    )
    await world.settled(allowed, "sent", "delivered")
    assert len(twilio.twilio.sent_to("+14155552671")) == 1


async def test_a_scheduled_row_past_its_expiry_is_expired_by_the_sweep(
    world: World, start_notifier: StartNotifier, clock: FrozenClock
) -> None:
    notification_id = await world.reply(
        "Later", due_at=NOW + timedelta(hours=1), expires_at=NOW + timedelta(minutes=30)
    )
    notifier = await start_notifier()
    await notifier.advance(clock, timedelta(minutes=31))
    row = await world.settled(notification_id, "expired")
    assert row.attempts == 0


async def test_quiet_hours_hold_a_reminder_until_morning_but_not_an_urgent_reply(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    evening = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 22:00 in London
    clock.set(evening)
    appointment = await world.appointment(datetime(2026, 3, 3, 14, 0, tzinfo=UTC))
    reminder = await world.reminder(appointment)
    urgent = await world.reply("Call 999 now.", urgent=True)
    # A patient living in New York (the clinic texts US numbers too): 17:00 there, inside the
    # window.
    await world.pool.execute(
        "UPDATE clinic SET sms_countries = '{GB,US}' WHERE id = $1", world.clinic_id
    )
    abroad = await world.new_patient(mobile="+12125550123")
    await world.pool.execute(
        "UPDATE patient SET time_zone = 'America/New_York' WHERE id = $1", abroad
    )
    abroad_reminder = await world.reminder(
        await world.appointment(datetime(2026, 3, 3, 16, 0, tzinfo=UTC), patient_id=abroad)
    )
    await start_notifier()

    await world.settled(urgent, "sent", "delivered")
    await world.settled(abroad_reminder, "sent", "delivered")

    async def deferred() -> bool:
        return (await world.row(reminder)).due_at != evening

    await eventually(deferred, what="the reminder deferred")
    row = await world.row(reminder)
    assert row.due_at == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    assert row.status_reason == "quiet hours: waits until 08:00 Europe/London"
    assert len(twilio.twilio.sent_to(MOBILE)) == 1  # only the urgent one

    clock.set(datetime(2026, 3, 3, 8, 0, tzinfo=UTC))
    clock.advance(timedelta(seconds=1))
    await world.settled(reminder, "sent", "delivered")
    assert len(twilio.twilio.sent_to(MOBILE)) == 2


async def test_a_third_scheduled_message_in_a_day_waits_for_the_next_days_window(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    ids = [
        await world.reminder(await world.appointment(NOW + timedelta(days=1, hours=hour)))
        for hour in (0, 2, 4)
    ]
    await start_notifier(notify_merge_minutes=0)  # merging would fold them into one

    async def two_sent_one_waiting() -> bool:
        statuses = sorted([(await world.row(i)).status for i in ids])
        return statuses.count("scheduled") == 1 and "sending" not in statuses

    await eventually(two_sent_one_waiting, what="two sent and one waiting")
    rows = [await world.row(i) for i in ids]
    [waiting] = [r for r in rows if r.status == "scheduled"]
    assert waiting.id == ids[2]  # the first two in due order went
    assert waiting.due_at == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    assert waiting.status_reason == "daily limit of 2 reached: waits for tomorrow's window"
    assert len(twilio.twilio.sent_to(MOBILE)) == 2


async def test_nearby_reminders_of_one_patient_merge_into_one_message(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    tomorrow = await world.appointment(NOW + timedelta(hours=24))  # its 24 h reminder: now
    in_three_days = await world.appointment(NOW + timedelta(hours=72))  # its 72 h one: now
    later_that_day = await world.appointment(NOW + timedelta(hours=75))  # 72 h one: in 3 h
    first = await world.reminder(tomorrow, kind="reminder_24h")
    second = await world.reminder(in_three_days, kind="reminder_72h")
    third = await world.reminder(
        later_that_day, kind="reminder_72h", due_at=NOW + timedelta(hours=3)
    )
    await start_notifier()

    sent = await world.settled(first, "sent", "delivered")
    for other in (second, third):
        row = await world.settled(other, "suppressed")
        assert row.status_reason == f"merged into notification {first}"
    [message] = twilio.twilio.sent_to(MOBILE)
    assert "Reply C to confirm" in message.body  # a merged 72 h reminder asks for confirmation
    assert sorted(sent.context["merged_appointment_ids"]) == sorted(
        [in_three_days.id, later_that_day.id]
    )
