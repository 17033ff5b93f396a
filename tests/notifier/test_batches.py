"""A notifier claims due rows in batches and records a batch's outcomes together: each row must
still end in its own state, with its own attempt and events, and no message may go twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier import dispatch
from shared.clock import FrozenClock
from shared.store import appointments, patients
from tests.conftest import SmtpSink, StandIn
from tests.notifier.conftest import EMAIL, MOBILE, StartNotifier, World, eventually

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OPTED_OUT_MOBILE = "+447700900222"
BOUNCING_EMAIL = "bounce@example.test"


async def test_rows_sent_together_each_end_in_their_own_state(
    world: World,
    start_notifier: StartNotifier,
    twilio: StandIn,
    smtp: SmtpSink,
    clock: FrozenClock,
) -> None:
    async def refuse_one(
        _server: object, _session: object, envelope: object, address: str, _options: list[str]
    ) -> str:
        if address == BOUNCING_EMAIL:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"

    smtp.handler.handle_RCPT = refuse_one  # type: ignore[attr-defined]
    twilio.twilio.opted_out.add(OPTED_OUT_MOBILE)  # STOP sent to Twilio, never seen by us
    other = await world.new_patient(mobile=OPTED_OUT_MOBILE, email=BOUNCING_EMAIL)
    called_off = await world.appointment(clock.now() + timedelta(hours=24))
    rows = {
        "sms": await world.reply("Your results are in"),
        "email": await world.reply("Your results are in", channel="email"),
        "opted-out sms": await world.reply("See you soon", patient_id=other),
        "bouncing email": await world.reply("See you soon", channel="email", patient_id=other),
        "stale reminder": await world.reminder(called_off),
    }
    # Cancelled without its reminder being withdrawn: the check at send time must catch it.
    await appointments.transition(
        world.pool, called_off.id, "cancelled", actor="staff", now=clock.now(), reason="test"
    )

    # Eight at once: all five rows are claimed and sent as one batch.
    await start_notifier(notifier_concurrency=16)

    sms = await world.settled(rows["sms"], "sent", "delivered")
    email = await world.settled(rows["email"], "sent")
    opted_out = await world.settled(rows["opted-out sms"], "failed")
    bounced = await world.settled(rows["bouncing email"], "failed")
    stale = await world.settled(rows["stale reminder"], "cancelled")

    assert sms.provider_id is not None and sms.provider_id.startswith("SM")
    assert email.provider_id == f"<notification-{email.id}.regimen@regimen.test>"
    assert opted_out.error_code == 21610 and "21610" in (opted_out.status_reason or "")
    assert bounced.error_code == 550 and "550" in (bounced.status_reason or "")
    assert stale.status_reason is not None and "cancelled" in stale.status_reason
    other_patient = await patients.get(world.pool, other)
    assert other_patient is not None and other_patient.sms_opted_out_at is not None

    expected = {
        rows["sms"]: "sent",
        rows["email"]: "sent",
        rows["opted-out sms"]: "permanent",
        rows["bouncing email"]: "permanent",
    }
    for notification_id, outcome in expected.items():
        [attempt] = await world.attempts(notification_id)
        assert attempt["outcome"] == outcome and attempt["finished_at"] is not None
        moves = [(f, t) for f, t, _ in await world.reasons(notification_id)]
        final = "sent" if outcome == "sent" else "failed"
        assert moves[:3] == [(None, "scheduled"), ("scheduled", "sending"), ("sending", final)]
    assert await world.attempts(rows["stale reminder"]) == []  # never called the provider

    assert len(twilio.twilio.sent_to(MOBILE)) == 1
    assert twilio.twilio.sent_to(OPTED_OUT_MOBILE) == []
    assert len(smtp.recorder.emails_to(EMAIL)) == 1
    assert smtp.recorder.emails_to(BOUNCING_EMAIL) == []


async def test_shutdown_cutting_a_batch_short_keeps_the_outcomes_of_finished_calls(
    world: World,
    start_notifier: StartNotifier,
    twilio: StandIn,
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "DRAIN_SECONDS", 0.5)
    twilio.twilio.gate.clear()  # type: ignore[attr-defined]  # the SMS call hangs
    sms = await world.reply("Your results are in")
    email = await world.reply("Your results are in", channel="email")
    notifier = await start_notifier(notifier_concurrency=16)  # both in one batch
    await asyncio.wait_for(twilio.twilio.arrived.wait(), timeout=10)  # type: ignore[attr-defined]

    async def email_arrived() -> bool:
        return len(smtp.recorder.emails_to(EMAIL)) == 1

    await eventually(email_arrived, what="the email")
    await notifier.stop()  # the SMS call is still open when the drain time runs out

    # The email went: it is recorded as sent, so nothing will send it again.
    assert (await world.row(email)).status == "sent"
    [email_attempt] = await world.attempts(email)
    assert email_attempt["outcome"] == "sent"
    # The SMS may or may not have reached Twilio: unknown, for reconciliation to decide.
    cut = await world.row(sms)
    assert cut.status == "unknown" and "cut off at shutdown" in (cut.status_reason or "")
    [sms_attempt] = await world.attempts(sms)
    assert sms_attempt["outcome"] == "ambiguous" and sms_attempt["finished_at"] is not None
    twilio.twilio.gate.set()  # type: ignore[attr-defined]


async def test_the_daily_limit_counts_only_what_went_out_from_the_same_batch(
    world: World, start_notifier: StartNotifier, twilio: StandIn, clock: FrozenClock
) -> None:
    # Three reminders for one patient, due together; the first one's session is cancelled
    # before the send, so the limit of two leaves room for the third.
    sessions = [await world.appointment(NOW + timedelta(days=1, hours=hour)) for hour in (0, 2, 4)]
    ids = [await world.reminder(session) for session in sessions]
    await appointments.transition(
        world.pool, sessions[0].id, "cancelled", actor="staff", now=clock.now(), reason="test"
    )
    await start_notifier(notify_merge_minutes=0, notifier_concurrency=16)

    await world.settled(ids[0], "cancelled")
    for notification_id in ids[1:]:
        await world.settled(notification_id, "sent", "delivered")
    assert len(twilio.twilio.sent_to(MOBILE)) == 2
