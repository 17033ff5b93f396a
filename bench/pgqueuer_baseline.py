"""The baseline for the notifier's throughput: the same sends (SMS through the twilio SDK to the
stand-in, email through aiosmtplib, with the same MIME structure as the notifier's reminders) as
jobs of PgQueuer, a well-known PostgreSQL job queue on
asyncpg, drained by one process. Run by bench_notify with the notifier's environment; prints
`RATE <messages per second>`."""

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
from shared.providers.sms import SmsClient

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


async def main(count: int) -> None:
    settings = load_settings()
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
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
        await sms.send(data["to"], BODY)
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
        await email.send(message)
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
    await conn.close()
    print(f"RATE {done / elapsed:.1f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
