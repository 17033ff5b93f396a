"""Dispatch: due rows leave through the real providers, woken by NOTIFY, shared by replicas
without overlap, with `sending` committed before the provider call."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp

from services.devkit.twilio_standin import Fault
from shared.clock import FrozenClock
from shared.config import Settings
from tests.conftest import SmtpSink, StandIn
from tests.notifier.conftest import EMAIL, MOBILE, Notifier, StartNotifier, World, eventually


async def test_a_due_reminder_goes_out_by_sms_and_its_delivery_is_recorded(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    appointment = await world.appointment(clock.now() + timedelta(hours=5))
    notification_id = await world.reminder(appointment, kind="reminder_2h")
    await start_notifier()

    row = await world.settled(notification_id, "delivered")
    [message] = twilio.twilio.sent_to(MOBILE)
    assert row.provider_id == message.sid
    assert row.segments == message.num_segments and row.attempts == 1
    assert "Alex" in message.body
    # Twilio is told where to report (with our id) and not to deliver after the appointment.
    assert message.status_callback is not None
    callback = urlsplit(message.status_callback)
    assert parse_qs(callback.query) == {"n": [str(notification_id)]}
    assert message.validity_period == 5 * 3600
    # Twilio's own `sent` callback adds nothing after ours; its `delivered` moves the row on.
    history = [(a, b) for a, b, _ in await world.reasons(notification_id)]
    assert history == [
        (None, "scheduled"),
        ("scheduled", "sending"),
        ("sending", "sent"),
        ("sent", "delivered"),
    ]
    [attempt] = await world.attempts(notification_id)
    assert attempt["outcome"] == "sent" and attempt["provider_id"] == message.sid


async def test_an_email_carries_a_message_id_derived_from_the_row_and_stored(
    world: World, start_notifier: StartNotifier, smtp: SmtpSink, clock: FrozenClock
) -> None:
    appointment = await world.appointment(clock.now() + timedelta(hours=24))
    notification_id = await world.reminder(appointment, channel="email")
    await start_notifier()

    row = await world.settled(notification_id, "sent")
    [received] = smtp.recorder.emails_to(EMAIL)
    assert received.id == f"<notification-{notification_id}.regimen@regimen.test>"
    assert row.provider_id == received.id
    assert received.subject


async def test_notify_wakes_a_worker_without_waiting_for_the_poll(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    # Polling once an hour: only the NOTIFY from the insert can make this row go.
    await start_notifier(notifier_poll_seconds=3600)
    notification_id = await world.reply("We have your message.")
    await world.settled(notification_id, "sent", "delivered")
    assert len(twilio.twilio.sent_to(MOBILE)) == 1


async def test_two_notifier_instances_share_the_work_and_send_nothing_twice(
    world: World,
    start_notifier: StartNotifier,
    twilio: StandIn,
    smtp: SmtpSink,
) -> None:
    first = await start_notifier(notifier_concurrency=3)
    second = await start_notifier(notifier_concurrency=3)
    ids = [
        await world.reply(f"Answer number {i}.", channel="sms" if i % 3 else "email")
        for i in range(90)
    ]
    for notification_id in ids:
        await world.settled(notification_id, "sent", "delivered", within=60)

    sms_bodies = [m.body for m in twilio.twilio.messages.values()]
    emails = smtp.recorder.emails_to(EMAIL)
    assert len(sms_bodies) == 60 and len(set(sms_bodies)) == 60
    assert len(emails) == 30 and len({e.body for e in emails}) == 30
    assert twilio.twilio.create_requests == 60
    workers = Counter(
        r["worker"] for r in await world.pool.fetch("SELECT worker FROM notification_attempt")
    )
    assert set(workers) == {first.dispatcher.worker, second.dispatcher.worker}
    assert sum(workers.values()) == 90


async def test_sending_is_committed_before_the_provider_is_called(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    # Twilio hangs, then answers 503 (nothing created): mid-call the row is visibly `sending`.
    twilio.twilio.fail_next(Fault(status=503, code=20503, message="busy", hang_seconds=1.0))
    notification_id = await world.reply("Hello")
    await start_notifier()

    async def in_call() -> bool:
        return twilio.twilio.create_requests == 1

    await eventually(in_call, what="the request reaching Twilio")
    row = await world.row(notification_id)
    assert row.status == "sending" and row.attempts == 1 and row.lease_until is not None
    [attempt] = await world.attempts(notification_id)
    assert attempt["finished_at"] is None and attempt["outcome"] is None

    row = await world.settled(notification_id, "scheduled")
    assert row.error_code == 20503 and row.attempts == 1


async def test_the_notifier_exposes_its_metrics(
    world: World, start_notifier: StartNotifier, settings: Settings, clock: FrozenClock
) -> None:
    notifier = await start_notifier()
    notification_id = await world.reply("Hello")
    await world.settled(notification_id, "sent", "delivered")
    clock.advance(timedelta(seconds=1))  # sweeps (the queue gauge) run when the clock moves

    async def gauge_refreshed() -> bool:
        async with aiohttp.ClientSession() as http:
            async with http.get(notifier.base + "/metrics") as response:
                text = await response.text()
        return 'regimen_notification_queue{status="scheduled"} 0.0' in text and (
            'regimen_notification_sends_total{channel="sms",code="",outcome="sent"} 1.0' in text
        )

    await eventually(gauge_refreshed, what="metrics")
    async with aiohttp.ClientSession() as http:
        async with http.get(notifier.base + "/metrics") as response:
            text = await response.text()
    assert 'regimen_notification_lag_seconds_count{channel="sms"} 1.0' in text


async def test_stopping_finishes_the_sends_in_flight(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    gate = twilio.twilio  # the stand-in holds message creation until the gate opens
    gate.gate.clear()  # type: ignore[attr-defined]
    # Two reminders of one patient, claimed and sent in one batch (merging is off here).
    first = await world.reminder(await world.appointment(clock.now() + timedelta(hours=24)))
    second = await world.reminder(await world.appointment(clock.now() + timedelta(hours=26)))
    notifier = await start_notifier(notify_merge_minutes=0)
    await asyncio.wait_for(gate.arrived.wait(), timeout=10)  # type: ignore[attr-defined]
    stopping = asyncio.create_task(notifier.stop())
    await eventually(lambda: _stopping(notifier), what="the notifier stopping")
    gate.gate.set()  # type: ignore[attr-defined]
    await stopping

    # Stopping waited for the calls under way and recorded them: nothing is left 'sending'
    # for the sweeps to reconcile, and nothing went twice.
    for notification_id in (first, second):
        row = await world.row(notification_id)
        assert row.status == "sent" and row.provider_id is not None
    assert len(twilio.twilio.sent_to(MOBILE)) == 2


async def _stopping(notifier: Notifier) -> bool:
    return notifier.dispatcher.stopping
