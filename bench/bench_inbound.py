"""Issue 12's figures: a burst of 1,000 signed inbound SMS replies (C, R, STOP, free text and
danger words, each from a patient whose 72 h confirmation request was sent) against one real
`regimen serve notifier` process; the rate, and the p99 from posting the webhook to reading its
TwiML answer, every database write of the reply included."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from twilio.request_validator import RequestValidator

from bench.bench_notify import (
    AUTH_TOKEN,
    StandIns,
    _free_port,
    _notifier_env,
    _ready,
    _seed,
    _spawn,
)
from bench.support import fresh_database, percentile, postgres, report

REPLIES = 1_000
# Twilio opens several webhook connections at once in a burst; this many in flight.
CONCURRENCY = 32
PUBLIC = "https://clinic.example.test"
# What patients send: mostly answers to the question, some opt-outs, free text and alarms.
MIX = (
    ["C"] * 5
    + ["R", "STOP"]
    + ["Can I come a bit later?", "Thanks, see you then"]
    + ["my lips are swelling"]
)


async def _ask_everyone(url: str, patients: int) -> None:
    """The 72 h reminder of each patient's appointment, as sent an hour ago."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel,
                template, context, appointment_version, due_at, dedupe_key, status, sent_at,
                created_at, updated_at)
            SELECT 1, a.patient_id, a.id, 'reminder_72h', 'sms', 'reminder_72h',
                   jsonb_build_object('starts_at', lower(a.during)), a.version,
                   now() - interval '1 hour', 'asked:' || a.id, 'sent', now() - interval '1 hour',
                   now(), now()
            FROM appointment a
            WHERE a.source = 'bench' AND a.patient_id <= $1
            """,
            patients,
        )
    finally:
        await conn.close()


async def _burst(port: int) -> tuple[float, list[float]]:
    validator = RequestValidator(AUTH_TOKEN)
    url = f"http://127.0.0.1:{port}/twilio/sms"
    latencies: list[float] = []
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(http: aiohttp.ClientSession, n: int) -> None:
        params = {
            "MessageSid": "SM" + secrets.token_hex(16),
            "AccountSid": "AC" + "0" * 32,
            "From": f"+4479{n:08d}",
            "To": "+15005550006",
            "Body": MIX[n % len(MIX)],
            "NumMedia": "0",
        }
        signature = validator.compute_signature(PUBLIC + "/twilio/sms", params)
        async with slots:
            started = time.perf_counter()
            async with http.post(
                url, data=params, headers={"X-Twilio-Signature": signature}
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"reply {n}: HTTP {response.status}")
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(one(http, n) for n in range(1, REPLIES + 1)))
        elapsed = time.perf_counter() - started
    return REPLIES / elapsed, latencies


async def run(server: object) -> None:
    stand_ins = StandIns()
    await stand_ins.start()
    try:
        async with fresh_database(server) as url:  # type: ignore[arg-type]
            await _seed(url, REPLIES)
            await _ask_everyone(url, REPLIES)
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
                    rate, latencies = await _burst(port)
                finally:
                    child.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(child.wait, 15)
            conn = await asyncpg.connect(url)
            try:
                handled = await conn.fetch(
                    "SELECT handled_as, count(*) FROM inbound_message GROUP BY 1 ORDER BY 1"
                )
            finally:
                await conn.close()
        print(f"# handled: {dict((r['handled_as'], r['count']) for r in handled)}")
        report("inbound_replies_per_s", rate, "replies/s")
        report("inbound_reply_p99_ms", percentile(latencies, 0.99), "ms")
    finally:
        await stand_ins.stop()


def main() -> None:
    with postgres() as server:
        asyncio.run(run(server))


if __name__ == "__main__":
    main()
