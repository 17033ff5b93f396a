"""The baseline for the notifier's throughput: the same sends (SMS through the twilio SDK to the
stand-in, email through aiosmtplib, with the same MIME structure as the notifier's reminders) as
jobs of PgQueuer, a well-known PostgreSQL job queue on
asyncpg, drained by one process. Run by bench_notify with the notifier's environment; prints
`RATE <messages per second>`.

`durable` (the second argument) gives PgQueuer the notifier's guarantees for the same sends, so
that the two can also be compared like for like: plain PgQueuer marks jobs done in buffered
batches (up to its batch size, here 32) after the calls, so a killed worker sends those again,
and its emails are accepted any number at a time. In durable mode each call's outcome is
committed as that call returns (a row per send), the SMS carry the notifier's status callback
and validity period, and each email's acceptance passes the same acceptance gate
(shared/providers/email.py), committed on a connection kept for it before the next email may be
accepted, as the notifier's writer does (services/notifier/recording.py): at most one accepted
email unrecorded per kill."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

from shared.config import load_settings
from shared.providers.email import EmailClient, build_message
from shared.providers.sms import SmsClient, status_callback_url

BODY = "Hi Pat, a reminder of your appointment at Regimen Demo Hair Clinic on Tue 3 Mar 10:00."
# The email the notifier sends for the same reminder has a plain text part and an HTML
# alternative of about these sizes (rendered from shared/messaging/templates/reminder_24h.*):
# the baseline sends the same MIME structure, so that both pay the same for building and
# sending it and the ratio compares the queues, not the messages.
EMAIL_TEXT = (
    "Hello Pat,\n\n"
    "This is a reminder of your appointment at Regimen Demo Hair Clinic on Tuesday 3 March 2026 "
    "at 10:00 (Europe/London).\n\n"
    "If you need to change it, use your appointments page:\n"
    "https://clinic.example.test/s/Ab3dEf5gH7jK9mN2pQ4rS6tV8wX0yZ1a\n"
    "or call us on 020 7946 0000.\n\n"
    "Regimen Demo Hair Clinic\n1 Example Street, London\n020 7946 0000\n"
)
EMAIL_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width"><title>Your appointment</title>'
    '</head><body style="font-family: Arial, sans-serif; color: #222; margin: 0; padding: 0">'
    '<div style="max-width: 560px; margin: 0 auto; padding: 24px">'
    "<p>Hello Pat,</p><p>This is a reminder of your appointment at Regimen Demo Hair Clinic on "
    "<strong>Tuesday 3 March 2026 at 10:00 (Europe/London)</strong>.</p>"
    '<p>If you need to change it, use <a href="https://clinic.example.test/s/Ab3dEf5gH7jK9mN2p'
    'Q4rS6tV8wX0yZ1a">your appointments page</a> or call us on 020 7946 0000.</p>'
    '<hr style="border: none; border-top: 1px solid #ddd; margin: 24px 0">'
    '<p style="font-size: 13px; color: #666">Regimen Demo Hair Clinic<br>1 Example Street, '
    "London<br>020 7946 0000</p></div></body></html>"
)


class DurableOutcomes:
    """A row per send, committed as the call returns; an email's acceptance committed on a
    connection kept for it before the next email may be accepted (as the notifier does)."""

    SQL = (
        "INSERT INTO baseline_send (n, channel, provider_id, recorded_at) "
        "VALUES ($1, $2, $3, now())"
    )

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.gate_conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        await self.pool.execute(
            "CREATE TABLE IF NOT EXISTS baseline_send (n int PRIMARY KEY, channel text, "
            "provider_id text, recorded_at timestamptz)"
        )
        self.gate_conn = await self.pool.acquire()

    async def record(self, n: int, channel: str, provider_id: str) -> None:
        await self.pool.execute(self.SQL, n, channel, provider_id)

    async def accepted(self, n: int, provider_id: str) -> None:
        assert self.gate_conn is not None
        await self.gate_conn.execute(self.SQL, n, "email", provider_id)

    async def close(self) -> None:
        if self.gate_conn is not None:
            await self.pool.release(self.gate_conn)


async def main(count: int, durable: bool = False) -> None:
    settings = load_settings()
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    outcomes: DurableOutcomes | None = None
    pool: asyncpg.Pool | None = None
    if durable:
        pool = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=12)
        outcomes = DurableOutcomes(pool)
        await outcomes.open()
    names, payloads = [], []
    for n in range(count):
        channel = "sms" if n % 2 == 0 else "email"
        names.append(channel)
        to = f"+4479{n:08d}" if channel == "sms" else f"patient{n}@example.test"
        payloads.append(json.dumps({"to": to, "n": n}).encode())
    await queries.enqueue(names, payloads, [0] * count)

    sms = SmsClient(settings)
    email = EmailClient(settings)
    manager = QueueManager(queries)
    done = 0

    async def finished() -> None:
        nonlocal done
        done += 1
        if done == count:
            manager.shutdown.set()

    @manager.entrypoint("sms")
    async def send_sms(job: Job) -> None:
        data = json.loads(job.payload or b"{}")
        if outcomes is None:
            await sms.send(data["to"], BODY)
        else:
            sent = await sms.send(
                data["to"],
                BODY,
                status_callback=status_callback_url(settings, data["n"]),
                validity_period=86_400,
            )
            await outcomes.record(data["n"], "sms", sent.sid)
        await finished()

    @manager.entrypoint("email")
    async def send_email(job: Job) -> None:
        data = json.loads(job.payload or b"{}")
        message = build_message(
            sender=settings.email_from or "clinic@regimen.test",
            to=data["to"],
            subject="Reminder: your appointment on Tue 3 Mar at 10:00",
            text=EMAIL_TEXT,
            html=EMAIL_HTML,
        )
        if outcomes is None:
            await email.send(message)
        else:
            durable_outcomes = outcomes

            async def accepted() -> None:
                await durable_outcomes.accepted(data["n"], str(message["Message-ID"]))

            await email.send(message, on_accepted=accepted)
        await finished()

    started = time.perf_counter()
    await manager.run(
        batch_size=32,
        max_concurrent_tasks=64,
        mode=QueueExecutionMode.drain,
        dequeue_timeout=timedelta(seconds=1),
    )
    elapsed = time.perf_counter() - started
    await sms.close()
    if outcomes is not None and pool is not None:
        await outcomes.close()
        await pool.close()
    await conn.close()
    print(f"RATE {done / elapsed:.1f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), durable=sys.argv[2:3] == ["durable"]))
