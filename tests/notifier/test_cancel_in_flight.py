"""Issue 11's cancel-during-send acceptance, from outside: production-mode `regimen serve booking`
and `regimen serve notifier`. An appointment's reminder SMS is at Twilio, which takes 5 s and
then answers 500 (a temporary error the notifier would retry); meanwhile the front desk cancels
the appointment through the API.

What the clinic would notice: the cancel answers at once (it does not wait for Twilio), no
further SMS of that reminder reaches the patient (the retry does not happen), and the message's
page in the API shows it cancelled, with the reason, and the one failed call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bench.bench_notify import FINAL, _seed
from services.devkit.twilio_standin import Fault
from shared.store import staff_tokens
from tests.notifier.process import booking, enqueue, notifier, start_stand_ins, until

pytestmark = pytest.mark.slow

HANG = 5.0  # Twilio's delay before its 500; below REGIMEN_TWILIO_TIMEOUT (10 s)
CANCEL_WITHIN = 1.0  # seconds
RETRY_SECONDS = 1  # REGIMEN_NOTIFY_RETRY_SECONDS: a retry would come within a second
RETRY_WINDOW = 3.0  # how long after the outcome we watch for a retry that must not come


async def test_a_cancel_while_the_reminder_is_at_twilio_answers_at_once_and_nothing_follows(
    db_url: str, tmp_path: Path
) -> None:
    await _seed(db_url, 1)
    stand_ins = await start_stand_ins()
    twilio = stand_ins.twilio
    twilio.fail_next(Fault(status=500, code=20500, message="Internal error", hang_seconds=HANG))
    conn = await asyncpg.connect(db_url)
    token, _ = await staff_tokens.insert(
        conn, name="front desk", role="front_desk", now=datetime.now(UTC)
    )
    desk = {"Authorization": f"Bearer {token}"}
    api = booking(db_url, stand_ins, tmp_path)
    service = notifier(db_url, stand_ins, tmp_path, REGIMEN_NOTIFY_RETRY_SECONDS=str(RETRY_SECONDS))
    base = f"http://127.0.0.1:{api.port}/api/v1"
    loop = asyncio.get_running_loop()
    try:
        await api.start()
        await service.start()
        async with aiohttp.ClientSession(headers=desk) as http:
            [reminder] = await enqueue(conn, "sms", 1, "reminder")
            appointment_id = await conn.fetchval(
                "SELECT appointment_id FROM notification WHERE id = $1", reminder.notification_id
            )
            async with http.get(f"{base}/appointments/{appointment_id}") as response:
                assert response.status == 200, await response.text()
                etag = response.headers["ETag"]
            assert await until(lambda: len(twilio.requests) == 1, within=10), "no SMS at Twilio"
            [call] = twilio.requests
            started = loop.time()
            async with http.post(
                f"{base}/appointments/{appointment_id}/cancel",
                json={"reason": "patient phoned to cancel"},
                headers={"If-Match": etag},
            ) as response:
                cancel_status, cancel_body = response.status, await response.text()
            took = loop.time() - started
            call_open_when_cancelled = call.answered_at is None

            # Twilio answers 500; the notifier records it and would retry within a second.
            assert await until(lambda: call.answered_at is not None, within=HANG + 5)
            settled = await _final_with_attempts_finished(conn, reminder.notification_id)
            retried = await until(
                lambda: sum(r.body == call.body for r in twilio.requests) > 1,
                within=RETRY_WINDOW,
            )
            async with http.get(f"{base}/messages/{reminder.notification_id}") as response:
                assert response.status == 200, await response.text()
                message = await response.json()
    finally:
        await service.stop()
        await api.stop()
        await conn.close()
        await stand_ins.stop()
    print(f"\ncancel answered {cancel_status} in {took:.2f} s; message: {message['status']}")
    assert cancel_status == 200, cancel_body
    assert took <= CANCEL_WITHIN, f"the cancel waited {took:.2f} s for Twilio"
    assert call_open_when_cancelled, "the cancel answered only after Twilio had"
    assert settled, "the reminder did not end final with its attempt finished"
    assert not retried, "the reminder was sent again after its appointment was cancelled"
    assert message["status"] == "cancelled"
    assert "cancel" in (message["status_reason"] or "").lower(), message["status_reason"]
    assert message["history"][-1]["to_status"] == "cancelled"
    [attempt] = message["attempt_log"]  # the one call, and no retry
    assert attempt["finished_at"] is not None
    assert (attempt["outcome"], attempt["error_code"]) == ("temporary", 20500)


async def _final_with_attempts_finished(conn: asyncpg.Connection, notification_id: int) -> bool:
    """Wait (polling, bounded) for the row to be final with no provider call still open."""
    for _ in range(150):
        row = await conn.fetchrow(
            """
            SELECT n.status, count(a.id) FILTER (WHERE a.finished_at IS NULL) AS open
            FROM notification n LEFT JOIN notification_attempt a ON a.notification_id = n.id
            WHERE n.id = $1 GROUP BY n.status
            """,
            notification_id,
        )
        if row["status"] in FINAL and row["open"] == 0:
            return True
        await asyncio.sleep(0.1)
    return False
