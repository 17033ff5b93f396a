"""Issues 3's and 15's figures, measured over HTTP against a real `regimen serve booking` process
on a database holding 1,000,000 appointments (bench/seed.py: forty clinics, years of history):

* availability for 4 weeks x 10 practitioners (p50, p95 per request);
* the 8-session mesotherapy course proposal (p95);
* for comparison within the run, the p95 of the public clinic page's JSON (a couple of small
  queries, none on appointments): what any request costs on this machine at this moment;
* 500 concurrent clients racing for 20 slots: successes, overlaps in the table, attempts per
  second, beside pgbench's one-row insert ceiling on the same server.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.pgbench import pgbench_insert_tps
from bench.seed import seed_busy_clinic
from bench.support import fresh_database, percentile, postgres, report
from shared.db.pool import connect
from shared.store import staff_tokens, treatments

REQUESTS = 200
RACERS = 500
SLOTS = 20


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _spawn_booking(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": url,
        "REGIMEN_BOOKING_PORT": str(port),
        "REGIMEN_BOOKING_METRICS_PORT": str(_free_port()),
        "REGIMEN_PUBLIC_URL": "https://clinic.example.test",
        "REGIMEN_SECRET_KEY": "b" * 40,
        "REGIMEN_TWILIO_ACCOUNT_SID": "AC" + "b" * 32,
        "REGIMEN_TWILIO_AUTH_TOKEN": "bench",
        "REGIMEN_TWILIO_FROM": "+15005550006",
        "REGIMEN_SMTP_HOST": "127.0.0.1",
        "REGIMEN_EMAIL_FROM": "bench@regimen.test",
        "REGIMEN_LOG_LEVEL": "WARNING",
        "REGIMEN_PUBLIC_READS_PER_MINUTE": "0",
        "REGIMEN_PUBLIC_WRITES_PER_MINUTE": "0",
        "REGIMEN_DB_POOL_SIZE": "20",
    }
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "booking", "--host", "127.0.0.1"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


async def _start_booking(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    process = _spawn_booking(url, port, log)
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise RuntimeError(f"booking did not start; see {log}")


async def _timed_get(
    http: aiohttp.ClientSession, url: str, params: dict[str, str]
) -> tuple[float, Any]:
    # Timed from the request to the answer's last byte: what the service costs a caller. The
    # client's own decoding of the JSON (about 2 ms for four weeks of "any") comes after the clock.
    started = time.perf_counter()
    async with http.get(url, params=params) as response:
        raw = await response.read()
        elapsed = (time.perf_counter() - started) * 1000
        body = json.loads(raw)
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {body}")
    return elapsed, body


async def bench_availability(
    http: aiohttp.ClientSession, base: str, consultation: int, today: date
) -> list[dict[str, Any]]:
    rng = random.Random(3)
    samples = []
    slots: list[dict[str, Any]] = []
    for _ in range(REQUESTS):
        first = today + timedelta(days=rng.randrange(1, 60))
        params = {
            "treatment_id": str(consultation),
            "practitioner": "any",
            "from": first.isoformat(),
            "to": (first + timedelta(days=27)).isoformat(),
        }
        ms, body = await _timed_get(http, f"{base}/api/v1/public/availability", params)
        samples.append(ms)
        if not slots:
            slots = [slot for day in body["days"] for slot in day["slots"]]
    report("availability_p50_ms", percentile(samples, 0.5), "ms")
    report("availability_p95_ms", percentile(samples, 0.95), "ms")
    return slots


async def bench_course_proposal(
    http: aiohttp.ClientSession, base: str, course: int, slots: list[dict[str, Any]]
) -> None:
    rng = random.Random(5)
    samples = []
    for _ in range(REQUESTS):
        slot = rng.choice(slots)
        params = {
            "treatment_id": str(course),
            "practitioner_id": str(slot["practitioner_id"]),
            "first_start": slot["start"],
        }
        ms, _ = await _timed_get(http, f"{base}/api/v1/public/course-proposal", params)
        samples.append(ms)
    report("course_proposal_p95_ms", percentile(samples, 0.95), "ms")


async def bench_reference(http: aiohttp.ClientSession, base: str) -> None:
    samples = []
    for _ in range(REQUESTS):
        ms, _ = await _timed_get(http, f"{base}/api/v1/public/clinics/1", {})
        samples.append(ms)
    report("public_clinic_p95_ms", percentile(samples, 0.95), "ms")


async def bench_booking_race(
    base: str, url: str, token: str, consultation: int, slots: list[dict[str, Any]]
) -> float:
    # Twenty slots spread over different days and practitioners, 25 clients for each.
    targets = slots[:: max(1, len(slots) // SLOTS)][:SLOTS]
    connector = aiohttp.TCPConnector(limit=RACERS)
    headers = {"Authorization": f"Bearer {token}"}
    statuses: list[int] = []
    alternatives_missing = 0

    async def attempt(http: aiohttp.ClientSession, n: int, gate: asyncio.Event) -> None:
        nonlocal alternatives_missing
        slot = targets[n % len(targets)]
        body = {
            "patient_id": 1 + n % 1000,
            "treatment_id": consultation,
            "practitioner_id": slot["practitioner_id"],
            "start": slot["start"],
        }
        await gate.wait()
        async with http.post(f"{base}/api/v1/bookings", json=body, headers=headers) as response:
            answer = await response.json(content_type=None)
            statuses.append(response.status)
            if response.status == 409 and not answer.get("alternatives"):
                alternatives_missing += 1

    async with aiohttp.ClientSession(connector=connector) as http:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(attempt(http, n, gate)) for n in range(RACERS)]
        await asyncio.sleep(0.2)  # every client is ready and waiting at the gate
        started = time.perf_counter()
        gate.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    conn = await asyncpg.connect(url)
    try:
        overlaps = await conn.fetchval(
            """
            SELECT count(*) FROM appointment a JOIN appointment b
              ON a.practitioner_id = b.practitioner_id AND a.id < b.id
             AND a.blocked && b.blocked
            WHERE a.status IN ('held', 'booked', 'confirmed', 'checked_in')
              AND b.status IN ('held', 'booked', 'confirmed', 'checked_in')
            """
        )
    finally:
        await conn.close()
    unexpected = [s for s in statuses if s not in (201, 409)]
    if unexpected or alternatives_missing:
        print(
            f"# unexpected answers: {unexpected[:10]}, 409s without alternatives: "
            f"{alternatives_missing}"
        )
    report("booking_race_successes", float(statuses.count(201)), "bookings")
    report("booking_race_overlaps", float(overlaps), "pairs")
    per_second = RACERS / elapsed
    report("booking_attempts_per_s", per_second, "attempts/s")
    return per_second


async def _treatment_id(conn: asyncpg.Connection, code: str) -> int:
    treatment = await treatments.by_code(conn, 1, code)
    assert treatment is not None, code
    return treatment.id


async def run(server_url_of: Any) -> None:
    today = datetime.now(UTC).date()
    async with fresh_database(server_url_of) as url:
        started = time.perf_counter()
        await seed_busy_clinic(url, today=today)
        seeded_in = time.perf_counter() - started
        # The services' connection set-up (jsonb as Python values), as the stores expect.
        conn = await connect(url)
        try:
            count = await conn.fetchval("SELECT count(*) FROM appointment")
            report("seeded_appointments", float(count), "appointments")
            report("seed_s", seeded_in, "s")
            token, _ = await staff_tokens.insert(
                conn, name="bench", role="admin", now=datetime.now(UTC)
            )
            consultation = await _treatment_id(conn, "consultation")
            course = await _treatment_id(conn, "hair-mesotherapy")
        finally:
            await conn.close()
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "booking.log"
            process = await _start_booking(url, port, log)
            try:
                async with aiohttp.ClientSession() as http:
                    await bench_reference(http, base)
                    slots = await bench_availability(http, base, consultation, today)
                    await bench_course_proposal(http, base, course, slots)
                attempts = await bench_booking_race(base, url, token, consultation, slots)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=15)
        tps = await pgbench_insert_tps(url)
        report("pgbench_insert_tps", tps, "tx/s")
        report("booking_vs_pgbench_ratio", attempts / tps, "ratio")


def main() -> None:
    with postgres() as server:
        asyncio.run(run(server))


if __name__ == "__main__":
    main()
