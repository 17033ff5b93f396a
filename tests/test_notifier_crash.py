"""A real notifier process killed with SIGKILL in the middle of a batch of 1,000 messages, then
restarted: every message ends in exactly one final state with a reason, the stand-ins received
none twice (an email resent after the crash keeps its Message-ID, which receivers treat as one
message), and none is missing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import pytest

from bench.bench_notify import AUTH_TOKEN, StandIns, _enqueue, _notifier_env, _seed
from services.devkit.twilio_standin import Fault
from tests.notifier.process import ready
from tests.processes import free_port, start_regimen

pytestmark = pytest.mark.slow

MESSAGES = 1000
FINAL = ("sent", "delivered", "failed", "undelivered", "cancelled", "suppressed", "expired")


async def test_sigkill_mid_batch_loses_and_duplicates_nothing(
    empty_db_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        from shared.db import migrate

        await migrate.migrate(conn)
    finally:
        await conn.close()
    await _seed(empty_db_url, MESSAGES)
    stand_ins = StandIns()
    await stand_ins.start()
    assert stand_ins.twilio.auth_token == AUTH_TOKEN
    port = free_port()
    env = _notifier_env(empty_db_url, port, stand_ins.twilio_url, stand_ins.smtp_port)
    # Short leases and grace so that recovery happens within the test, not minutes later.
    env.update(
        REGIMEN_NOTIFIER_LEASE_SECONDS="10",
        REGIMEN_NOTIFY_RECONCILE_GRACE_SECONDS="1",
        REGIMEN_NOTIFIER_CONCURRENCY="16",
    )
    conn = await asyncpg.connect(empty_db_url)
    try:
        first = start_regimen(["serve", "notifier", "--host", "127.0.0.1"], env, tmp_path / "1.log")
        try:
            await ready(port, tmp_path / "1.log")
        except AssertionError:
            first.kill()
            await asyncio.to_thread(first.wait, 15)
            raise
        await _enqueue(conn, 1, MESSAGES, "crash")
        # Kill it once a good part of the batch is out and more is in flight: the next SMS
        # are created at Twilio, but their answers hang until the process is dead.
        while len(stand_ins.recorder._items) < MESSAGES // 3:  # noqa: ASYNC110 - polling a count
            await asyncio.sleep(0.01)
        stand_ins.twilio.fail_next(Fault(hang_seconds=5, create_anyway=True), times=3)
        while stand_ins.twilio.faults:  # noqa: ASYNC110 - polling a count
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 15)
        in_flight = await conn.fetchval(
            "SELECT count(*) FROM notification WHERE status = 'sending'"
        )
        second = start_regimen(
            ["serve", "notifier", "--host", "127.0.0.1"], env, tmp_path / "2.log"
        )
        try:
            await ready(port, tmp_path / "2.log")
            for _ in range(1200):
                done = await conn.fetchval(
                    "SELECT count(*) FROM notification WHERE status = ANY($1::text[])",
                    list(FINAL),
                )
                if done == MESSAGES:
                    break
                await asyncio.sleep(0.1)
            rows = await conn.fetch(
                "SELECT status, status_reason, count(*) AS n FROM notification GROUP BY 1, 2"
            )
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 15)
    finally:
        await conn.close()
        await stand_ins.stop()
    by_status = {(r["status"], r["status_reason"]): r["n"] for r in rows}
    assert sum(by_status.values()) == MESSAGES
    assert all(status in FINAL for status, _ in by_status), by_status
    assert all(status == "sent" for status, _ in by_status), by_status
    # The kill really interrupted sends in flight (at least the three hanging SMS).
    assert in_flight >= 3
    sms = [i for i in stand_ins.recorder._items if i.channel == "sms"]
    emails = {i.id for i in stand_ins.recorder._items if i.channel == "email"}
    assert len(sms) == len({(i.to, i.body) for i in sms}), "an SMS arrived twice"
    assert len(sms) + len(emails) == MESSAGES, "a message is missing"


async def test_provider_faults_against_a_real_notifier_process(
    empty_db_url: str, tmp_path: Path
) -> None:
    """Twilio answering 500, 429, a timeout, 21610 and 21211, and the SMTP server down then
    back: afterwards every message is final with a reason, and none arrived twice."""
    from services.devkit.smtp_sink import RecordingHandler, start_smtp_server
    from shared.db import migrate

    count = 60
    conn = await asyncpg.connect(empty_db_url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    await _seed(empty_db_url, count)
    stand_ins = StandIns()
    await stand_ins.start()
    twilio = stand_ins.twilio
    twilio.fail_next(Fault(status=500, code=20500, message="Internal error"), times=3)
    twilio.fail_next(Fault(status=429, code=20429, message="Too Many Requests"), times=3)
    twilio.fail_next(Fault(hang_seconds=3, create_anyway=True), times=2)
    twilio.fail_next(Fault(status=400, code=21211, message="invalid number"), times=1)
    twilio.fail_next(Fault(status=400, code=21610, message="unsubscribed"), times=1)
    # The mail server is down when the batch starts.
    smtp_port = stand_ins.smtp_port
    stand_ins.smtp.close()
    await stand_ins.smtp.wait_closed()
    port = free_port()
    env = _notifier_env(empty_db_url, port, stand_ins.twilio_url, smtp_port)
    env.update(
        REGIMEN_NOTIFY_RETRY_SECONDS="1",
        REGIMEN_TWILIO_TIMEOUT="1",
        REGIMEN_NOTIFIER_LEASE_SECONDS="10",
        REGIMEN_NOTIFY_RECONCILE_GRACE_SECONDS="1",
        REGIMEN_NOTIFIER_CONCURRENCY="4",
    )
    conn = await asyncpg.connect(empty_db_url)
    notifier = start_regimen(["serve", "notifier", "--host", "127.0.0.1"], env, tmp_path / "n.log")
    try:
        await ready(port, tmp_path / "n.log")
        await _enqueue(conn, 1, count, "faults")
        # Let the email attempts fail against the closed port, then bring the server back.
        for _ in range(300):
            failed_email = await conn.fetchval(
                "SELECT count(*) FROM notification_attempt a JOIN notification n "
                "ON n.id = a.notification_id WHERE n.channel = 'email' AND a.outcome = 'temporary'"
            )
            if failed_email:
                break
            await asyncio.sleep(0.1)
        assert failed_email
        stand_ins.smtp = await start_smtp_server(
            RecordingHandler(stand_ins.recorder), "127.0.0.1", smtp_port
        )
        for _ in range(1200):
            done = await conn.fetchval(
                "SELECT count(*) FROM notification WHERE status = ANY($1::text[])", list(FINAL)
            )
            if done == count:
                break
            await asyncio.sleep(0.1)
        rows = await conn.fetch("SELECT status, status_reason, error_code FROM notification")
        opted_out = await conn.fetchval(
            "SELECT count(*) FROM patient WHERE sms_opted_out_at IS NOT NULL"
        )
    finally:
        notifier.send_signal(signal.SIGTERM)
        await asyncio.to_thread(notifier.wait, 15)
        await conn.close()
        await stand_ins.stop()
    statuses = [r["status"] for r in rows]
    assert all(s in FINAL for s in statuses), statuses
    failed = sorted(r["error_code"] for r in rows if r["status"] == "failed")
    assert failed == [21211, 21610]
    assert all(r["status_reason"] for r in rows if r["status"] == "failed")
    assert statuses.count("sent") == count - 2
    assert opted_out == 1  # 21610 records the patient's opt-out
    sms = [i for i in stand_ins.recorder._items if i.channel == "sms"]
    emails = {i.id for i in stand_ins.recorder._items if i.channel == "email"}
    assert len(sms) == len({(i.to, i.body) for i in sms}), "an SMS arrived twice"
    assert len(sms) + len(emails) == count - 2
