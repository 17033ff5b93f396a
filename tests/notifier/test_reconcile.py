"""Unknown outcomes (a timeout after the request left, a worker that died mid-call) are
reconciled with what Twilio has, never blindly sent again."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.devkit.twilio_standin import Fault
from services.notifier.sending import message_id_for
from services.notifier.sweeps import reconcile_unknown, twilio_lister
from shared.clock import FrozenClock
from shared.config import Settings
from shared.providers.sms import SmsClient
from shared.store import notifications
from shared.store.notifications.dispatch import LaneKey
from tests.conftest import SmtpSink, StandIn
from tests.notifier.conftest import EMAIL, MOBILE, StartNotifier, World

LEASE = timedelta(seconds=120)


@pytest.fixture
async def sms(settings: Settings) -> AsyncIterator[SmsClient]:
    client = SmsClient(settings)
    yield client
    await client.close()


async def test_a_timeout_after_twilio_created_the_message_is_reconciled_without_resending(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    twilio.twilio.deliver = False  # no status callback: only the lookup can tell
    twilio.twilio.fail_next(Fault(hang_seconds=2, create_anyway=True))
    notification_id = await world.reply("Hello")
    await start_notifier(twilio_timeout=0.3)

    row = await world.settled(notification_id, "unknown")
    [attempt] = await world.attempts(notification_id)
    assert attempt["outcome"] == "ambiguous"
    clock.advance(timedelta(seconds=5))  # the sweeps run when the clock moves
    row = await world.settled(notification_id, "sent")
    [message] = twilio.twilio.sent_to(MOBILE)
    assert row.provider_id == message.sid
    assert twilio.twilio.create_requests == 1
    assert "reconciled: Twilio has it" in (await world.reasons(notification_id))[-1][2]


async def test_a_status_callback_settles_an_unknown_outcome(
    world: World, start_notifier: StartNotifier, twilio: StandIn
) -> None:
    twilio.twilio.fail_next(Fault(hang_seconds=2, create_anyway=True))
    notification_id = await world.reply("Hello")
    await start_notifier(twilio_timeout=0.3)

    row = await world.settled(notification_id, "delivered")
    [message] = twilio.twilio.sent_to(MOBILE)
    assert row.provider_id == message.sid and twilio.twilio.create_requests == 1


async def test_a_message_twilio_never_created_is_sent_again_after_the_grace_period(
    world: World,
    start_notifier: StartNotifier,
    twilio: StandIn,
    clock: FrozenClock,
    settings: Settings,
    sms: SmsClient,
) -> None:
    twilio.twilio.fail_next(Fault(hang_seconds=2))  # times out; nothing is created
    notification_id = await world.reply("Hello")
    notifier = await start_notifier(twilio_timeout=0.3)
    await world.settled(notification_id, "unknown")

    # Within the grace period Twilio might just not list it yet: the row waits.
    await notifier.advance(clock, timedelta(seconds=30))
    handled = await reconcile_unknown(
        world.pool, clock, list_recent=twilio_lister(sms), settings=settings
    )
    assert handled == 0 and (await world.row(notification_id)).status == "unknown"

    await notifier.advance(clock, timedelta(minutes=2))
    row = await world.settled(notification_id, "sent", "delivered")
    assert row.attempts == 2
    assert len(twilio.twilio.sent_to(MOBILE)) == 1 and twilio.twilio.create_requests == 2


async def test_a_worker_that_died_mid_call_leaves_a_row_that_is_reconciled_not_resent(
    world: World,
    start_notifier: StartNotifier,
    twilio: StandIn,
    clock: FrozenClock,
    sms: SmsClient,
) -> None:
    # What a worker does before it is killed: claim, commit the attempt, call Twilio; nothing
    # of the outcome is written.
    notification_id = await world.reply("Hello")
    [claimed] = await notifications.dispatch.claim_due(
        world.pool,
        lane=LaneKey("sms", False),
        now=clock.now(),
        lease=LEASE,
        worker="dead-worker",
        limit=1,
    )
    body = "Regimen Demo Hair Clinic: Hello"
    await notifications.dispatch.decide_sends(
        world.pool,
        [
            notifications.dispatch.SendCandidate(
                notifications.dispatch.AttemptStart(
                    claimed.id, hashlib.sha256(body.encode()).digest(), {"attempt_to": MOBILE}
                ),
                covered=[],
                seen_versions={},
            )
        ],
        worker="dead-worker",
        now=clock.now(),
        lease=LEASE,
    )
    sent = await sms.send(MOBILE, body)
    # Another row sent the very same text earlier: its message must not be taken for ours.
    other = await world.reply("Hello", patient_id=world.patient_id)
    await world.pool.execute(
        "UPDATE notification SET status = 'sent', provider_id = 'SMolder' WHERE id = $1", other
    )

    await start_notifier()
    assert (await world.row(notification_id)).status == "sending"  # the lease still runs
    await _silence(world, "dead-worker")
    clock.advance(LEASE + timedelta(seconds=1))
    row = await world.settled(notification_id, "sent")
    assert row.provider_id == sent.sid
    assert twilio.twilio.create_requests == 1
    reasons = [reason for _, _, reason in await world.reasons(notification_id)]
    assert "lease of dead-worker expired while sending" in reasons


async def test_a_worker_that_died_before_calling_leaves_a_row_that_is_sent(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    notification_id = await world.reply("Hello")
    await notifications.dispatch.claim_due(
        world.pool,
        lane=LaneKey("sms", False),
        now=clock.now(),
        lease=LEASE,
        worker="dead-worker",
        limit=1,
    )
    await start_notifier()
    await _silence(world, "dead-worker")
    clock.advance(LEASE + timedelta(seconds=1))
    row = await world.settled(notification_id, "sent", "delivered")
    assert row.attempts == 1 and twilio.twilio.create_requests == 1


async def test_an_email_with_an_unknown_outcome_is_sent_again_with_the_same_message_id(
    world: World,
    start_notifier: StartNotifier,
    smtp: SmtpSink,
    clock: FrozenClock,
    settings: Settings,
) -> None:
    notification_id = await world.reply("Hello", channel="email")
    await notifications.dispatch.claim_due(
        world.pool,
        lane=LaneKey("email", False),
        now=clock.now(),
        lease=LEASE,
        worker="dead-worker",
        limit=1,
    )
    message_id = message_id_for(notification_id, settings.email_from or "")
    await notifications.dispatch.decide_sends(
        world.pool,
        [
            notifications.dispatch.SendCandidate(
                notifications.dispatch.AttemptStart(
                    notification_id, b"x" * 32, {"attempt_to": EMAIL, "message_id": message_id}
                ),
                covered=[],
                seen_versions={},
            )
        ],
        worker="dead-worker",
        now=clock.now(),
        lease=LEASE,
    )
    await start_notifier()
    await _silence(world, "dead-worker")
    clock.advance(LEASE + timedelta(seconds=1))
    row = await world.settled(notification_id, "sent")
    [received] = smtp.recorder.emails_to(EMAIL)
    assert received.id == message_id == row.provider_id
    assert row.attempts == 2


async def _silence(world: World, worker: str) -> None:
    """The worker died: no sign of life from it for longer than a lease, in real time."""
    await world.pool.execute(
        "UPDATE notification SET lease_renewed_at = clock_timestamp() - interval '1 day' "
        "WHERE leased_by = $1",
        worker,
    )
