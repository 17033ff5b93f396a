"""Lanes: SMS and email are claimed and sent apart, and urgent messages have a priority lane of
their own, so a hung provider holds only its own lane and nothing urgent waits behind a burst."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from services.devkit.twilio_standin import Fault
from shared.clock import FrozenClock
from tests.conftest import SmtpSink, StandIn
from tests.notifier.conftest import EMAIL, MOBILE, StartNotifier, World, eventually

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HANG = 8.0  # seconds each hung Twilio call waits before answering


async def _sent(world: World, notification_id: int) -> bool:
    return (await world.row(notification_id)).status in ("sent", "delivered")


async def test_emails_and_urgent_sms_go_while_every_sms_slot_hangs_on_twilio(
    world: World, start_notifier: StartNotifier, twilio: StandIn, smtp: SmtpSink
) -> None:
    # Four SMS slots, all taken by calls that hang (Twilio answers 500 after HANG seconds).
    twilio.twilio.fail_next(Fault(status=500, code=20500, hang_seconds=HANG), times=4)
    stuck = [await world.reply(f"Answer {i}.") for i in range(6)]
    await start_notifier(notifier_concurrency=4, sms_segments_per_second=0)
    await eventually(lambda: _hanging(twilio, 4), what="four SMS calls hanging")

    started = asyncio.get_running_loop().time()
    email = await world.reply("Your results are in", channel="email")
    urgent = await world.reply("Please call the clinic now.", urgent=True)
    await eventually(lambda: _sent(world, email), within=HANG / 2, what="the email")
    await eventually(lambda: _sent(world, urgent), within=HANG / 2, what="the urgent SMS")
    waited = asyncio.get_running_loop().time() - started
    assert waited < HANG / 2  # neither waited for a hung call

    # The normal SMS lane is still blocked: nothing else of it went meanwhile.
    assert [(await world.row(i)).status for i in stuck[:4]] == ["sending"] * 4
    assert [await _sent(world, i) for i in stuck] == [False] * len(stuck)
    [urgent_sms] = [m for m in twilio.twilio.sent_to(MOBILE) if "call the clinic" in m.body]
    assert urgent_sms.body.endswith("Please call the clinic now.")
    assert len(smtp.recorder.emails_to(EMAIL)) == 1


async def _hanging(twilio: StandIn, count: int) -> bool:
    return twilio.twilio.create_requests >= count and not twilio.twilio.faults


async def test_a_burst_of_reminders_does_not_delay_an_urgent_message(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    # One segment a second: forty reminders take forty seconds of the sender's pace. The urgent
    # message is claimed by its own lane and takes its send slot at once.
    patients = [await world.new_patient(mobile=f"+4477009005{i:02d}") for i in range(40)]
    for i, patient_id in enumerate(patients):
        starts = NOW + timedelta(hours=24, minutes=40 * i)
        session = await world.appointment(starts, patient_id=patient_id)
        await world.reminder(session)
    await start_notifier(notifier_concurrency=8, sms_segments_per_second=1)

    async def paced() -> bool:
        waiting = await world.pool.fetchval(
            "SELECT count(*) FROM notification WHERE status = 'scheduled' AND due_at > $1", NOW
        )
        return int(waiting) >= 30

    await eventually(paced, what="the reminders waiting for their send slots")
    urgent = await world.reply("Please call the clinic now.", urgent=True)
    await eventually(lambda: _sent(world, urgent), what="the urgent SMS, without moving the clock")
    row = await world.row(urgent)
    assert row.sent_at == clock.now()
