"""Issue 13's figure: an emergency free-text reply ("I can't breathe") over the signed Twilio
webhook, while 10,000 scheduled reminders fall due at the same minute, against one real
`regimen serve notifier` process. Measured from posting the webhook until both the patient's
emergency answer (the webhook's TwiML) and the on-call clinician's alert, SMS and email, have
been handed to the providers (the Twilio stand-in and aiosmtpd); the p99 over 20 replies."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
from twilio.request_validator import RequestValidator

from bench.bench_notify import (
    AUTH_TOKEN,
    StandIns,
    _enqueue,
    _free_port,
    _notifier_env,
    _ready,
    _seed,
    _spawn,
)
from bench.support import fresh_database, percentile, postgres, report
from services.devkit.demo_data import DEMO_CARE_TEAM
from services.devkit.inbox import twiml_messages

REMINDERS = 10_000
REPLIES = 20
PUBLIC = "https://clinic.example.test"
ON_CALL = DEMO_CARE_TEAM[0]  # the demo team's on-call clinician


def _handed(stand_ins: StandIns, channel: str, address: str, since: datetime) -> datetime | None:
    found = [
        item.at
        for item in stand_ins.recorder._items  # every arrival, in order
        if item.channel == channel and address in item.to and item.at >= since
    ]
    return min(found) if found else None


async def _one(
    http: aiohttp.ClientSession, port: int, stand_ins: StandIns, n: int
) -> tuple[float, int]:
    """One emergency reply from patient n's mobile: ms until the answer and both alert
    messages were handed over, and how many reminders had been sent by then."""
    params = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": "AC" + "0" * 32,
        "From": f"+4479{n:08d}",
        "To": "+15005550006",
        "Body": "I can't breathe",
        "NumMedia": "0",
    }
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + "/twilio/sms", params)
    started = datetime.now(UTC)
    async with http.post(
        f"http://127.0.0.1:{port}/twilio/sms",
        data=params,
        headers={"X-Twilio-Signature": signature},
    ) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"reply {n}: HTTP {response.status}")
    answered = datetime.now(UTC)
    answer = twiml_messages(text)
    if not answer or "999" not in answer[0]:
        raise RuntimeError(f"reply {n}: no emergency answer: {text}")
    assert ON_CALL.mobile is not None and ON_CALL.email is not None
    for _ in range(60_000):
        sms = _handed(stand_ins, "sms", ON_CALL.mobile, started)
        email = _handed(stand_ins, "email", ON_CALL.email, started)
        if sms is not None and email is not None:
            done = max(answered, sms, email)
            reminders = sum(
                1
                for item in stand_ins.recorder._items
                if ON_CALL.email not in item.to and (ON_CALL.mobile or "") not in item.to
            )
            return (done - started).total_seconds() * 1000, reminders
        await asyncio.sleep(0.005)
    raise RuntimeError(f"reply {n}: the on-call alert never reached the providers")


async def run(server: object) -> None:
    stand_ins = StandIns()
    await stand_ins.start()
    try:
        async with fresh_database(server) as url:  # type: ignore[arg-type]
            await _seed(url, REMINDERS)
            port = _free_port()
            with tempfile.TemporaryDirectory() as folder:
                child = _spawn(
                    [sys.executable, "-m", "services.cli", "serve", "notifier"]
                    + ["--host", "127.0.0.1"],
                    _notifier_env(url, port, stand_ins.twilio_url, stand_ins.smtp_port),
                    Path(folder) / "notifier.log",
                )
                try:
                    await _ready(port)
                    conn = await asyncpg.connect(url)
                    try:
                        # 10,000 reminders due now (the insert trigger wakes the notifier).
                        await _enqueue(conn, 1, REMINDERS, "burst")
                    finally:
                        await conn.close()
                    latencies: list[float] = []
                    sent_before: list[int] = []
                    async with aiohttp.ClientSession() as http:
                        await asyncio.sleep(0.2)  # the drain is under way
                        for n in range(1, REPLIES + 1):
                            ms, reminders = await _one(http, port, stand_ins, n)
                            latencies.append(ms)
                            sent_before.append(reminders)
                            await asyncio.sleep(0.1)
                    conn = await asyncpg.connect(url)
                    try:
                        waiting = await conn.fetchval(
                            "SELECT count(*) FROM notification WHERE kind = 'reminder_24h' "
                            "AND status = 'scheduled'"
                        )
                        alerts = await conn.fetchval("SELECT count(*) FROM staff_alert")
                    finally:
                        await conn.close()
                finally:
                    child.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(child.wait, 15)
        print(
            f"# {alerts} alerts; reminders handed over by the time each alert was: "
            f"{sent_before[0]} .. {sent_before[-1]}; still waiting at the end: {waiting}"
        )
        report("triage_to_alert_p99_ms", percentile(latencies, 0.99), "ms")
        print(f"# median {percentile(latencies, 0.5):.0f} ms, max {max(latencies):.0f} ms")
    finally:
        await stand_ins.stop()


def main() -> None:
    started = time.perf_counter()
    with postgres() as server:
        asyncio.run(run(server))
    print(f"# bench_triage took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
