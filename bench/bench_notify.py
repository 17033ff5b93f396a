"""Issue 4's figures: real `regimen serve notifier` processes draining the outbox through the local
Twilio stand-in and aiosmtpd, by one and by two processes (the sender's rate limit off and quiet
hours opened to the whole day; the daily limit and merging of reminders on, as in production);
the same sends through PgQueuer as a baseline; and due-to-sent lag at a steady 50 messages a
second."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from datetime import time as wall_time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.support import fresh_database, percentile, postgres, report
from services.devkit.demo_data import seed_demo_data
from services.devkit.recorder import Recorder, Sent
from services.devkit.smtp_sink import RecordingHandler, start_smtp_server
from services.devkit.twilio_standin import TwilioStandIn
from shared.config import DEV_TWILIO_ACCOUNT_SID, DEV_TWILIO_FROM
from shared.store import clinics

MESSAGES = 10_000
LAG_RATE = 50  # per second
LAG_SECONDS = 20
AUTH_TOKEN = "bench-token"
FINAL = ("sent", "delivered", "failed", "undelivered", "cancelled", "suppressed", "expired")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _seed(url: str, patients: int) -> None:
    """Patients with both care consents and one booked appointment each, in a clinic whose
    quiet hours cover the whole day (the benchmark may run at night)."""
    conn = await asyncpg.connect(url)
    try:
        await seed_demo_data(conn)
        clinic = await clinics.get(conn, 1)
        assert clinic is not None
        whole_day = replace(
            clinics.settings_of(clinic), quiet_start=wall_time(0), quiet_end=wall_time(23, 59, 59)
        )
        await clinics.update(conn, 1, expected_version=clinic.version, settings=whole_day)
        await _seed_patients(conn, patients)
        # One appointment per patient, spread over future days and both practitioners.
        await conn.execute(
            """
            INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, status,
                                     during, blocked, source, status_changed_at, created_at)
            SELECT 1, 1 + (p.id % 2), 1, p.id, 'booked',
                   tstzrange(s, s + interval '30 minutes'), tstzrange(s, s + interval '30 minutes'),
                   'bench', now(), now()
            FROM (SELECT id, date_trunc('day', now()) + interval '30 days'
                             + (id / 2) * interval '30 minutes' AS s
                  FROM patient) AS p
            """
        )
    finally:
        await conn.close()


async def _enqueue(conn: asyncpg.Connection, first_patient: int, count: int, tag: str) -> None:
    """`count` reminders due now, alternating SMS and email, one per patient."""
    await conn.execute(
        """
        INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel, template,
            context, appointment_version, due_at, expires_at, dedupe_key, created_at, updated_at)
        SELECT 1, a.patient_id, a.id, 'reminder_24h',
               CASE WHEN a.patient_id % 2 = 0 THEN 'sms' ELSE 'email' END, 'reminder_24h',
               jsonb_build_object('starts_at', lower(a.during)), a.version, now(), lower(a.during),
               $3 || ':' || a.id, now(), now()
        FROM appointment a
        WHERE a.patient_id >= $1 AND a.patient_id < $1 + $2 AND a.source = 'bench'
        """,
        first_patient,
        count,
        tag,
    )


def _notifier_env(url: str, port: int, twilio_url: str, smtp_port: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": url,
        "REGIMEN_NOTIFIER_PORT": str(port),
        "REGIMEN_PUBLIC_URL": "https://clinic.example.test",
        "REGIMEN_SECRET_KEY": "n" * 40,
        "REGIMEN_TWILIO_ACCOUNT_SID": DEV_TWILIO_ACCOUNT_SID,
        "REGIMEN_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "REGIMEN_TWILIO_FROM": DEV_TWILIO_FROM,
        "REGIMEN_TWILIO_API_URL": twilio_url,
        "REGIMEN_SMTP_HOST": "127.0.0.1",
        "REGIMEN_SMTP_PORT": str(smtp_port),
        "REGIMEN_EMAIL_FROM": "clinic@regimen.test",
        "REGIMEN_LOG_LEVEL": "WARNING",
        "REGIMEN_SMS_SEGMENTS_PER_SECOND": "0",
        "REGIMEN_NOTIFIER_CONCURRENCY": "32",
        "REGIMEN_DB_POOL_SIZE": "20",
    }


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT)


async def _ready(port: int, what: str = "notifier", log: Path | None = None) -> None:
    """Wait (at most 30 s) for the service on `port` to answer /readyz with 200."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    where = f"; see {log}" if log is not None else ""
    raise RuntimeError(f"{what} on port {port} did not become ready{where}")


async def _seed_patients(conn: asyncpg.Connection, count: int) -> None:
    """`count` patients of clinic 1, every one consenting to SMS and email."""
    await conn.execute(
        """
        INSERT INTO patient (clinic_id, first_name, last_name, mobile, email, created_at,
                             updated_at)
        SELECT 1, 'Pat', 'No ' || n, '+4479' || lpad(n::text, 8, '0'),
               'patient' || n || '@example.test', now(), now()
        FROM generate_series(1, $1) AS n
        """,
        count,
    )
    await conn.execute(
        """
        INSERT INTO patient_consent (patient_id, kind, granted, source, wording_version,
                                     recorded_at)
        SELECT p.id, k, true, 'bench', 'bench', now()
        FROM patient p CROSS JOIN unnest(ARRAY['care_sms', 'care_email']) AS k
        """
    )


async def _wait_final(conn: asyncpg.Connection, tag: str, count: int) -> None:
    while True:
        done = await conn.fetchval(
            "SELECT count(*) FROM notification WHERE dedupe_key LIKE $1 || ':%' "
            "AND status = ANY($2::text[])",
            tag,
            list(FINAL),
        )
        if done >= count:
            return
        await asyncio.sleep(0.05)


MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class CountingHandler(RecordingHandler):
    """The SMTP sink without the dev inbox's full MIME parse of every email: it records the
    recipient and the Message-ID (enough to find a duplicate or a missing email), so the sink
    is not what limits the benchmark. The baseline gets the same sink."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        headers = raw.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(headers)
        self.recorder.add(
            Sent(
                channel="email",
                id=found.group(1).decode() if found else "",
                at=datetime.now(UTC),
                to=", ".join(envelope.rcpt_tos),
                sender=envelope.mail_from or "",
                body="",
            )
        )
        return "250 Message accepted for delivery"


class StandIns:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.twilio = TwilioStandIn(
            DEV_TWILIO_ACCOUNT_SID, AUTH_TOKEN, recorder=self.recorder, deliver=False
        )
        self.runner: Any = None
        self.smtp: Any = None
        self.twilio_url = ""
        self.smtp_port = 0

    async def start(self) -> None:
        from aiohttp import web

        self.runner = web.AppRunner(self.twilio.make_app(), access_log=None)
        await self.runner.setup()
        port = _free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.twilio_url = f"http://127.0.0.1:{port}"
        self.smtp = await start_smtp_server(CountingHandler(self.recorder), "127.0.0.1", 0)
        self.smtp_port = self.smtp.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.smtp.close()
        await self.runner.cleanup()

    def duplicates(self) -> int:
        # Twice the same message: two SMS of one body to one number, or two emails of one id.
        seen: dict[tuple[str, str, str], int] = {}
        for item in self.recorder._items:  # every arrival, not the de-duplicated view
            key = (item.channel, item.to, item.id if item.channel == "email" else item.body)
            seen[key] = seen.get(key, 0) + 1
        return sum(n - 1 for n in seen.values() if n > 1)


async def _throughput(url: str, stand_ins: StandIns, processes: int, tag: str, first: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        ports = [_free_port() for _ in range(processes)]
        children = [
            _spawn(
                [sys.executable, "-m", "services.cli", "serve", "notifier", "--host", "127.0.0.1"],
                _notifier_env(url, port, stand_ins.twilio_url, stand_ins.smtp_port),
                Path(folder) / f"notifier-{port}.log",
            )
            for port in ports
        ]
        try:
            for port in ports:
                await _ready(port)
            conn = await asyncpg.connect(url)
            try:
                started = time.perf_counter()
                await _enqueue(conn, first, MESSAGES, tag)
                await _wait_final(conn, tag, MESSAGES)
                elapsed = time.perf_counter() - started
                statuses = await conn.fetch(
                    "SELECT status, count(*) FROM notification WHERE dedupe_key LIKE $1 || ':%' "
                    "GROUP BY 1",
                    tag,
                )
            finally:
                await conn.close()
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                # Waiting in a thread: the stand-ins live on this loop and must answer QUIT.
                await asyncio.to_thread(child.wait, 15)
    print(f"# {processes} process(es): {dict((r['status'], r['count']) for r in statuses)}")
    return MESSAGES / elapsed


async def _lag(url: str, stand_ins: StandIns, first: int) -> tuple[float, float]:
    tag = "lag"
    with tempfile.TemporaryDirectory() as folder:
        port = _free_port()
        child = _spawn(
            [sys.executable, "-m", "services.cli", "serve", "notifier", "--host", "127.0.0.1"],
            _notifier_env(url, port, stand_ins.twilio_url, stand_ins.smtp_port),
            Path(folder) / "notifier.log",
        )
        try:
            await _ready(port)
            conn = await asyncpg.connect(url)
            try:
                per_tick = LAG_RATE // 10
                start = time.perf_counter()
                for tick in range(LAG_SECONDS * 10):
                    await _enqueue(conn, first + tick * per_tick, per_tick, tag)
                    await asyncio.sleep(max(0.0, start + (tick + 1) / 10 - time.perf_counter()))
                total = LAG_SECONDS * LAG_RATE
                await _wait_final(conn, tag, total)
                rows = await conn.fetch(
                    "SELECT extract(epoch FROM sent_at - due_at) * 1000 AS ms FROM notification "
                    "WHERE dedupe_key LIKE 'lag:%' AND sent_at IS NOT NULL"
                )
            finally:
                await conn.close()
        finally:
            child.send_signal(signal.SIGTERM)
            await asyncio.to_thread(child.wait, 15)
    lags = [float(r["ms"]) for r in rows]
    return percentile(lags, 0.5), percentile(lags, 0.99)


async def _baseline(url: str, stand_ins: StandIns, *mode: str) -> float:
    """The same 10,000 sends as PgQueuer jobs, drained by one PgQueuer process; `durable`:
    with the notifier's guarantees (bench/pgqueuer_baseline.py)."""
    env = _notifier_env(url, _free_port(), stand_ins.twilio_url, stand_ins.smtp_port)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "pgqueuer.log"
        command = [sys.executable, "-m", "bench.pgqueuer_baseline", str(MESSAGES), *mode]
        child = _spawn(command, env, log)
        returncode = await asyncio.to_thread(child.wait, 600)
        output = log.read_text()
    if returncode != 0:
        raise RuntimeError(f"PgQueuer baseline failed:\n{output}")
    for line in output.splitlines():
        if line.startswith("RATE "):
            return float(line.split()[1])
    raise RuntimeError(f"PgQueuer baseline printed no rate:\n{output}")


async def run(server: Any) -> None:
    stand_ins = StandIns()
    await stand_ins.start()
    try:
        async with fresh_database(server) as url:
            patients = 2 * MESSAGES + LAG_RATE * LAG_SECONDS
            await _seed(url, patients)
            one = await _throughput(url, stand_ins, 1, "one", 1)
            report("notify_1proc_per_s", one, "messages/s")
            two = await _throughput(url, stand_ins, 2, "two", 1 + MESSAGES)
            report("notify_2proc_per_s", two, "messages/s")
            p50, p99 = await _lag(url, stand_ins, 1 + 2 * MESSAGES)
            report("notify_lag_p50_ms", p50, "ms")
            report("notify_lag_p99_ms", p99, "ms")
            duplicates = stand_ins.duplicates()
            print(
                f"# stand-ins received {len(stand_ins.recorder._items)} messages, "
                f"{duplicates} of them twice"
            )
        async with fresh_database(server) as url:
            baseline = await _baseline(url, stand_ins)
            report("notify_baseline_per_s", baseline, "messages/s")
            report("notify_vs_baseline_ratio", one / baseline, "ratio")
        # Like for like: PgQueuer with a committed outcome per send and the same bound on
        # emails accepted but unrecorded (plain PgQueuer above re-sends a buffered batch of
        # done jobs after a crash). Printed beside the figure, not instead of it.
        async with fresh_database(server) as url:
            durable = await _baseline(url, stand_ins, "durable")
            report("notify_baseline_durable_per_s", durable, "messages/s")
            report("notify_vs_durable_baseline_ratio", one / durable, "ratio")
    finally:
        await stand_ins.stop()


def main() -> None:
    started = datetime.now(UTC)
    with postgres() as server:
        asyncio.run(run(server))
    print(f"# notify benchmarks took {(datetime.now(UTC) - started).total_seconds():.0f} s")


if __name__ == "__main__":
    main()
