"""The accident of issue 14 item 5, with real processes: every `regimen` process killed with
SIGKILL, the embedded PostgreSQL left running with dead ids in its handles file; and a scheduler
started before `regimen migrate`."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.processes import (
    PRODUCTION,
    clean_env,
    free_port,
    postgres_processes_for,
    start_regimen,
    wait_for_text,
)

pytestmark = pytest.mark.slow

DEV_PORTS = (
    "REGIMEN_BOOKING_PORT",
    "REGIMEN_SCHEDULER_PORT",
    "REGIMEN_NOTIFIER_PORT",
    "REGIMEN_BOOKING_METRICS_PORT",
    "REGIMEN_DEV_INBOX_PORT",
    "REGIMEN_DEV_TWILIO_PORT",
    "REGIMEN_DEV_SMTP_PORT",
)


def _regimen(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def _kill_every_regimen_process(process: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL the dev process and every child of it that is not PostgreSQL, as a crash or an
    OOM killer would; returns their ids."""
    root = psutil.Process(process.pid)
    victims = [root, *(c for c in root.children(recursive=True) if c.name() != "postgres")]
    for victim in victims:
        victim.kill()
    process.wait(timeout=15)
    psutil.wait_procs(victims, timeout=15)
    return [victim.pid for victim in victims]


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state folder whose PostgreSQL, if a failed test left one running, is stopped after."""
    folder = tmp_path / "state"
    yield folder
    for leftover in postgres_processes_for(folder / "pgdata"):
        leftover.terminate()


async def test_a_crashed_dev_run_restarts_cleanly_and_db_stop_stops_its_server(
    state: Path, tmp_path: Path
) -> None:
    pgdata = state / "pgdata"
    ports = {name: str(free_port()) for name in DEV_PORTS}
    env = clean_env(REGIMEN_STATE_DIR=str(state), **ports)
    booking = f"http://127.0.0.1:{ports['REGIMEN_BOOKING_PORT']}"

    log1 = tmp_path / "dev-1.log"
    first = start_regimen(["dev"], env, log1)
    try:
        await asyncio.to_thread(wait_for_text, log1, "Migrations applied now", first, 90)
        server_pids = {p.pid for p in postgres_processes_for(pgdata)}
        assert server_pids
    finally:
        killed = await asyncio.to_thread(_kill_every_regimen_process, first)

    # The accident as found: the server outlives its users, whose ids are still on file.
    assert postgres_processes_for(pgdata), "the server should have outlived the crash"
    on_file = json.loads((pgdata / ".handle_pids.json").read_text())
    assert first.pid in on_file and first.pid in killed
    assert not psutil.pid_exists(first.pid)

    # The next start notices the dead holder and reuses the server still running.
    log2 = tmp_path / "dev-2.log"
    second = start_regimen(["dev"], env, log2)
    try:
        output = await asyncio.to_thread(wait_for_text, log2, "Migrations applied now", second, 90)
        assert "demo data already present" in output
        assert (await _status(booking + "/readyz")) == 200
        assert {p.pid for p in postgres_processes_for(pgdata)} & server_pids  # the same server
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == [second.pid]

        # While dev runs, `regimen db stop` refuses, naming the process, and stops nothing.
        refused = await asyncio.to_thread(_regimen, env, "db", "stop")
        assert refused.returncode == 2, refused
        assert re.search(rf"in use by running regimen process\(es\) {second.pid}\b", refused.stderr)
        assert (await _status(booking + "/readyz")) == 200
    finally:
        second.send_signal(signal.SIGINT)
        await asyncio.to_thread(second.wait, 30)
    # The dead holder no longer counts: Ctrl-C of the last live one stops the server.
    assert second.returncode == 0, log2.read_text()
    assert postgres_processes_for(pgdata) == []

    # Crashed again; `regimen db stop` stops the server: no postgres left for this folder.
    log3 = tmp_path / "dev-3.log"
    third = start_regimen(["dev"], env, log3)
    try:
        await asyncio.to_thread(wait_for_text, log3, "Migrations applied now", third, 90)
    finally:
        await asyncio.to_thread(_kill_every_regimen_process, third)
    assert postgres_processes_for(pgdata)
    stopped = await asyncio.to_thread(_regimen, env, "db", "stop")
    assert stopped.returncode == 0, stopped
    assert stopped.stdout.strip() == f"stopped the embedded PostgreSQL of {pgdata.resolve()}"
    assert postgres_processes_for(pgdata) == []
    again = await asyncio.to_thread(_regimen, env, "db", "stop")
    assert again.returncode == 0
    assert again.stdout.startswith("no embedded PostgreSQL is running")


def _waiting_lines(log: Path, sweep: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("message") == "waiting for migrations" and record.get("sweep") == sweep:
            found.append(record)
    return found


def _wait_until(check: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout}s:\n{log.read_text(errors='replace')}")


async def test_a_scheduler_started_before_migrate_waits_one_line_a_tick_then_sweeps(
    empty_db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    clock_file = tmp_path / "clock-offset"
    clock_file.write_text("0")
    env = clean_env(
        DATABASE_URL=empty_db_url,
        **PRODUCTION,
        REGIMEN_SCHEDULER_PORT=str(port),
        REGIMEN_DEV_CLOCK_FILE=str(clock_file),
    )
    log = tmp_path / "scheduler.log"
    process = start_regimen(["serve", "scheduler", "--host", "127.0.0.1"], env, log)
    sweep = "course-gaps"  # every 5 minutes: only the dev clock makes its ticks here
    try:
        await asyncio.to_thread(
            _wait_until, lambda: len(_waiting_lines(log, sweep)) == 1, 60, "a first tick", log
        )
        # Each jump of the dev clock is a tick of every sweep: one more line each, no more.
        for tick in (2, 3):
            clock_file.write_text(str(60 * tick))
            await asyncio.to_thread(
                _wait_until,
                lambda n=tick: len(_waiting_lines(log, sweep)) == n,  # type: ignore[misc]
                30,
                f"tick {tick}",
                log,
            )
        assert process.poll() is None
        text = log.read_text()
        assert "Traceback" not in text and "sweep failed" not in text
        assert _waiting_lines(log, sweep)[-1]["pending_migrations"]
        assert (await _status(f"http://127.0.0.1:{port}/readyz")) == 503

        owner = clean_env(DATABASE_URL=empty_db_url)
        migrated = await asyncio.to_thread(_regimen, owner, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        clock_file.write_text("600")

        async def swept() -> bool:
            url = f"http://127.0.0.1:{port}/readyz"
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                body = await response.json()
            return response.status == 200 and body["sweeps"][sweep]["last_outcome"] == "ok"

        for _ in range(400):
            if await swept():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(log.read_text())
        # Read before stopping: how a sweep cut short by SIGTERM is logged is not this test's.
        text = log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
    assert "Traceback" not in text, text
    assert '"message": "sweep recovered"' in text
    assert len(_waiting_lines(log, sweep)) == 3
