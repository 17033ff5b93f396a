"""Provider failures: temporary ones retry with backoff (never past expiry, up to a limit),
permanent ones fail at once with the provider's code and reason."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from services.devkit.smtp_sink import start_smtp_server
from services.devkit.twilio_standin import Fault
from shared.clock import FrozenClock
from shared.store import patients
from shared.store.notifications.rows import Notification
from tests.conftest import SmtpSink, StandIn
from tests.notifier.conftest import EMAIL, MOBILE, StartNotifier, World, eventually

RETRY = timedelta(seconds=30)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(status=429, code=20429, message="Too Many Requests"), 20429),
        (Fault(status=500, code=20500, message="Internal Server Error"), 20500),
    ],
)
async def test_a_temporary_twilio_error_is_retried_after_a_backoff(
    world: World,
    start_notifier: StartNotifier,
    twilio: StandIn,
    clock: FrozenClock,
    fault: Fault,
    code: int,
) -> None:
    twilio.twilio.fail_next(fault)
    notification_id = await world.reply("Hello")
    started = clock.now()
    await start_notifier()

    row = await _retry_written(world, notification_id)
    assert row.error_code == code and row.attempts == 1
    assert started + RETRY / 2 <= row.due_at <= started + RETRY
    [attempt] = await world.attempts(notification_id)
    assert attempt["outcome"] == "temporary" and attempt["error_code"] == code
    assert twilio.twilio.sent_to(MOBILE) == []

    clock.advance(RETRY)
    row = await world.settled(notification_id, "sent", "delivered")
    assert row.attempts == 2 and len(twilio.twilio.sent_to(MOBILE)) == 1


async def _retry_written(world: World, notification_id: int) -> Notification:
    async def written() -> bool:
        return bool(await world.attempts(notification_id)) and (
            (await world.row(notification_id)).status == "scheduled"
        )

    await eventually(written, what="the retry")
    return await world.row(notification_id)


async def test_twilio_unreachable_is_retried(
    world: World, start_notifier: StartNotifier, clock: FrozenClock
) -> None:
    notification_id = await world.reply("Hello")
    await start_notifier(twilio_api_url=f"http://127.0.0.1:{closed_port()}")
    row = await _retry_written(world, notification_id)
    assert row.due_at > clock.now() and "cannot connect to Twilio" in (row.status_reason or "")
    [attempt] = await world.attempts(notification_id)
    assert attempt["outcome"] == "temporary"


async def test_smtp_down_then_back_delivers_the_email_once(
    world: World, start_notifier: StartNotifier, smtp: SmtpSink, clock: FrozenClock
) -> None:
    notification_id = await world.reply("Hello", channel="email")
    smtp.server.close()
    await smtp.server.wait_closed()
    await start_notifier()
    row = await _retry_written(world, notification_id)
    assert "SMTP unavailable" in (row.status_reason or "")

    back = await start_smtp_server(smtp.handler, "127.0.0.1", smtp.port)
    try:
        clock.advance(RETRY)
        row = await world.settled(notification_id, "sent")
    finally:
        back.close()
        await back.wait_closed()
    assert row.attempts == 2 and len(smtp.recorder.emails_to(EMAIL)) == 1


async def test_an_smtp_4xx_is_retried_and_a_5xx_fails_at_once(
    world: World, start_notifier: StartNotifier, smtp: SmtpSink
) -> None:
    replies = iter(["451 4.3.0 try again later", "550 5.1.1 mailbox unavailable"])

    async def refuse(*_args: object) -> str:  # aiosmtpd looks its hooks up at call time
        return next(replies)

    smtp.handler.handle_RCPT = refuse  # type: ignore[attr-defined]
    first = await world.reply("Hello", channel="email")
    await start_notifier()
    row = await _retry_written(world, first)
    assert row.error_code == 451

    second = await world.reply("Hello again", channel="email")
    row = await world.settled(second, "failed")
    assert row.error_code == 550 and "550" in (row.status_reason or "") and row.attempts == 1


@pytest.mark.parametrize("code", [21211, 21612, 21614])
async def test_a_permanent_twilio_error_fails_at_once_with_its_code(
    world: World, start_notifier: StartNotifier, twilio: StandIn, code: int
) -> None:
    twilio.twilio.fail_next(Fault(status=400, code=code, message="cannot reach that number"))
    notification_id = await world.reply("Hello")
    await start_notifier()
    row = await world.settled(notification_id, "failed")
    assert row.error_code == code and row.attempts == 1
    assert f"Twilio {code}" in (row.status_reason or "")
    assert twilio.twilio.create_requests == 1


async def test_an_error_text_quoting_the_number_is_stored_without_it(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    # Twilio's own words for 21211 name the number; the history keeping them is append-only.
    twilio.twilio.fail_next(
        Fault(status=400, code=21211, message=f"The 'To' number {MOBILE} is not a valid number.")
    )
    notification_id = await world.reply("Hello")
    await start_notifier()
    row = await world.settled(notification_id, "failed")
    assert row.status_reason is not None and "[address]" in row.status_reason
    stored = " ".join(
        [
            row.status_reason,
            *(reason for _, _, reason in await world.reasons(notification_id)),
            *(a["detail"] for a in await world.attempts(notification_id)),
        ]
    )
    assert MOBILE not in stored and MOBILE[3:] not in stored


async def test_an_opted_out_number_fails_records_the_opt_out_and_stops_later_messages(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    twilio.twilio.opted_out.add(MOBILE)
    first = await world.reply("Hello")
    await start_notifier()
    row = await world.settled(first, "failed")
    assert row.error_code == 21610
    patient = await patients.get(world.pool, world.patient_id)
    assert patient is not None and patient.sms_opted_out_at is not None

    second = await world.reply("Hello again")
    row = await world.settled(second, "suppressed")
    assert row.status_reason == "patient opted out of SMS" and row.attempts == 0
    assert twilio.twilio.create_requests == 1


async def test_retries_stop_at_the_attempt_limit(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    twilio.twilio.fail_next(Fault(status=429, code=20429, message="Too Many Requests"))
    notification_id = await world.reply("Hello")
    await start_notifier(notify_max_attempts=1)
    row = await world.settled(notification_id, "failed")
    assert row.error_code == 20429 and "gave up after 1 attempts" in (row.status_reason or "")


async def test_no_retry_is_planned_past_the_expiry(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    twilio.twilio.fail_next(Fault(status=500, code=20500, message="Internal Server Error"))
    notification_id = await world.reply("Hello", expires_at=clock.now() + timedelta(seconds=10))
    await start_notifier()
    row = await world.settled(notification_id, "failed")
    assert row.error_code == 20500 and "no retry before it expires" in (row.status_reason or "")
