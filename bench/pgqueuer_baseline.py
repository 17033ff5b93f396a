"""The baseline for the notifier's throughput: the same sends (SMS through the twilio SDK to the
stand-in, email through aiosmtplib) as jobs of PgQueuer, a well-known PostgreSQL job queue on
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
            subject="Your appointment",
            text=BODY,
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
