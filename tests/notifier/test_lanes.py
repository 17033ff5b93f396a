"""Issue 11's lanes acceptance, from outside: a production-mode `regimen serve notifier` whose one
provider stalls (the SMTP server takes 20 s to answer each email; Twilio hangs past the SDK's
timeout) while the other works. What the clinic would notice: the working channel's messages,
queued during the stall, still reach the provider within their normal lag; and afterwards the
stalled channel's messages also end sent, none twice.

The stalled channel gets as many messages as the whole process may send at once
(REGIMEN_NOTIFIER_CONCURRENCY), so a notifier whose channels share their slots is full of
stalled sends when the others come due."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from bench.bench_notify import StandIns, _seed
from services.devkit.twilio_standin import Fault
from tests.notifier.process import (
    Channel,
    Queued,
    emails_delivered_twice,
    enqueue,
    lags,
    notifier,
    settle,
    sms_created_twice,
    stand_ins_with_slow_smtp,
    start_stand_ins,
    until,
)

pytestmark = pytest.mark.slow

CONCURRENCY = 4
OTHERS = 10  # messages on the working channel, one every TRICKLE seconds during the stall
TRICKLE = 0.2
NORMAL_LAG = 2.0  # seconds from due to the provider
SMTP_STALL = 20.0
TWILIO_TIMEOUT = 6.0  # REGIMEN_TWILIO_TIMEOUT; the hung calls are abandoned after this


async def _trickle(conn: asyncpg.Connection, channel: Channel) -> list[Queued]:
    """OTHERS messages on `channel`, due one after another while the stall lasts."""
    queued: list[Queued] = []
    for n in range(OTHERS):
        queued += await enqueue(conn, channel, 1, f"during-{n}")
        await asyncio.sleep(TRICKLE)  # pacing the arrivals, not waiting for an outcome
    return queued


def _arrived(queued: list[Queued], stand_ins: StandIns) -> bool:
    return all(lag is not None for lag in lags(queued, stand_ins).values())


def _late(queued: list[Queued], stand_ins: StandIns) -> dict[int, float | None]:
    """The messages that did not reach the provider within the normal lag (None: never)."""
    return {
        notification_id: lag
        for notification_id, lag in lags(queued, stand_ins).items()
        if lag is None or lag > NORMAL_LAG
    }


async def test_sms_keep_their_lag_while_the_smtp_server_takes_20_s_per_email(
    db_url: str, tmp_path: Path
) -> None:
    await _seed(db_url, CONCURRENCY + OTHERS)
    stand_ins, smtp = await stand_ins_with_slow_smtp(SMTP_STALL)
    service = notifier(db_url, stand_ins, tmp_path, REGIMEN_NOTIFIER_CONCURRENCY=str(CONCURRENCY))
    conn = await asyncpg.connect(db_url)
    try:
        await service.start()
        emails = await enqueue(conn, "email", CONCURRENCY, "stalled")
        assert await until(lambda: smtp.arrived >= 1, within=10), "no email reached the server"
        sms = await _trickle(conn, "sms")
        await until(lambda: _arrived(sms, stand_ins), within=SMTP_STALL + 10)
        late_sms = _late(sms, stand_ins)
        final = await settle(conn, within=3 * SMTP_STALL + 10)
    finally:
        await service.stop()
        await conn.close()
        await stand_ins.stop()
    sms_lags = lags(sms, stand_ins)
    email_lags = lags(emails, stand_ins)
    print(f"\nSMS lags during the SMTP stall (s): {sms_lags}\nemail lags (s): {email_lags}")
    assert not late_sms, f"SMS held back by the stalled SMTP server: {late_sms}"
    # The stall was real: the emails were accepted only after it.
    assert all(lag is not None and lag >= SMTP_STALL - 1 for lag in email_lags.values())
    assert dict(final) == {"sent": CONCURRENCY + OTHERS}
    assert sms_created_twice(stand_ins) == 0
    assert emails_delivered_twice(stand_ins) == 0


async def test_emails_keep_their_lag_while_twilio_hangs(db_url: str, tmp_path: Path) -> None:
    await _seed(db_url, CONCURRENCY + OTHERS)
    stand_ins = await start_stand_ins()
    # Twilio creates each message but answers only after the SDK gave up on it.
    stand_ins.twilio.fail_next(
        Fault(hang_seconds=TWILIO_TIMEOUT + 2, create_anyway=True), times=CONCURRENCY
    )
    service = notifier(
        db_url,
        stand_ins,
        tmp_path,
        REGIMEN_NOTIFIER_CONCURRENCY=str(CONCURRENCY),
        REGIMEN_TWILIO_TIMEOUT=str(TWILIO_TIMEOUT),
        REGIMEN_NOTIFY_RECONCILE_GRACE_SECONDS="1",
    )
    conn = await asyncpg.connect(db_url)
    try:
        await service.start()
        await enqueue(conn, "sms", CONCURRENCY, "hung")
        assert await until(lambda: len(stand_ins.twilio.requests) >= 1, within=10), (
            "no SMS reached Twilio"
        )
        emails = await _trickle(conn, "email")
        await until(lambda: _arrived(emails, stand_ins), within=TWILIO_TIMEOUT + 10)
        late_emails = _late(emails, stand_ins)
        final = await settle(conn, within=60)
    finally:
        await service.stop()
        await conn.close()
        await stand_ins.stop()
    print(f"\nemail lags while Twilio hangs (s): {lags(emails, stand_ins)}")
    assert not late_emails, f"emails held back by the hung Twilio: {late_emails}"
    hung = [r for r in stand_ins.twilio.requests if r.fault is not None]
    assert len(hung) == CONCURRENCY  # every SMS met a hanging Twilio
    assert dict(final) == {"sent": CONCURRENCY + OTHERS}  # the hung SMS reconciled as sent
    assert sms_created_twice(stand_ins) == 0
    assert emails_delivered_twice(stand_ins) == 0
