"""`regimen serve` and `regimen dev` as real processes: start, answer, stop cleanly, keep data."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.config import DEFAULT_PUBLIC_URL, DEV_TWILIO_ACCOUNT_SID, load_settings
from shared.providers.email import EmailClient, build_message, send_once
from shared.providers.sms import SmsClient
from tests.processes import (
    PRODUCTION,
    clean_env,
    free_port,
    postgres_processes_for,
    start_regimen,
    wait_for_text,
)

pytestmark = pytest.mark.slow


async def _get(url: str, **kwargs: object) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.text()


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> float:
    started = time.monotonic()
    process.send_signal(sig)
    process.wait(timeout=15)
    return time.monotonic() - started


@pytest.mark.parametrize("service", ["booking", "scheduler", "notifier"])
async def test_serve_answers_and_stops_on_sigterm_within_ten_seconds(
    service: str, db_url: str, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = clean_env(
        DATABASE_URL=db_url,
        **PRODUCTION,
        **{f"REGIMEN_{service.upper()}_PORT": str(port)},
        REGIMEN_BOOKING_METRICS_PORT=str(metrics_port),
    )
    log = tmp_path / "serve.log"
    process = start_regimen(["serve", service, "--host", "127.0.0.1"], env, log)
    try:
        for _ in range(200):
            try:
                status, _ = await _get(f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    break
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(log.read_text())
        # Booking's public port has no /metrics; its metrics port has them. The others keep
        # /metrics on their own (internal) port.
        metrics_at = metrics_port if service == "booking" else port
        status, text = await _get(f"http://127.0.0.1:{metrics_at}/metrics")
        assert status == 200 and "regimen_http_requests_total" in text
        if service == "booking":
            assert (await _get(f"http://127.0.0.1:{port}/metrics"))[0] == 404
    finally:
        took = await asyncio.to_thread(_stop, process)
    assert process.returncode == 0, log.read_text()
    assert took < 10
    lines = log.read_text().splitlines()
    assert any('"message": "stopped"' in line for line in lines)


async def test_dev_runs_everything_keeps_data_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ports = {
        "REGIMEN_BOOKING_PORT": free_port(),
        "REGIMEN_SCHEDULER_PORT": free_port(),
        "REGIMEN_NOTIFIER_PORT": free_port(),
        "REGIMEN_BOOKING_METRICS_PORT": free_port(),
        "REGIMEN_DEV_INBOX_PORT": free_port(),
        "REGIMEN_DEV_TWILIO_PORT": free_port(),
        "REGIMEN_DEV_SMTP_PORT": free_port(),
    }
    env = clean_env(REGIMEN_STATE_DIR=str(state), **{k: str(v) for k, v in ports.items()})
    booking = f"http://127.0.0.1:{ports['REGIMEN_BOOKING_PORT']}"
    inbox = f"http://127.0.0.1:{ports['REGIMEN_DEV_INBOX_PORT']}"
    log = tmp_path / "dev-1.log"

    started = time.monotonic()
    process = start_regimen(["dev"], env, log)
    try:
        output = await asyncio.to_thread(wait_for_text, log, "Migrations applied now", process, 60)
        assert time.monotonic() - started < 60
        assert "demo data created" in output
        token = re.search(r"Admin API token\s+(rgm_\S+)", output)
        assert token is not None
        for name in ("BOOKING", "SCHEDULER", "NOTIFIER"):
            port = ports[f"REGIMEN_{name}_PORT"]
            assert f"http://127.0.0.1:{port}" in output
            assert (await _get(f"http://127.0.0.1:{port}/readyz"))[0] == 200
        metrics = f"http://127.0.0.1:{ports['REGIMEN_BOOKING_METRICS_PORT']}/metrics"
        assert metrics in output  # the banner says where booking's metrics went
        assert (await _get(metrics))[0] == 200
        assert (await _get(booking + "/metrics"))[0] == 404
        status, page = await _get(inbox + "/")
        assert status == 200 and "Dev inbox" in page
        me = await _get(booking + "/api/v1/me", headers={"Authorization": f"Bearer {token[1]}"})
        assert me[0] == 200 and '"admin"' in me[1]

        # One SMS and one email through the real providers reach the stand-ins and the inbox.
        settings = load_settings(
            {
                "REGIMEN_TWILIO_ACCOUNT_SID": DEV_TWILIO_ACCOUNT_SID,
                "REGIMEN_TWILIO_AUTH_TOKEN": (state / "twilio-auth-token").read_text(),
                "REGIMEN_TWILIO_FROM": "+15005550006",
                "REGIMEN_TWILIO_API_URL": f"http://127.0.0.1:{ports['REGIMEN_DEV_TWILIO_PORT']}",
                "REGIMEN_SMTP_HOST": "127.0.0.1",
                "REGIMEN_SMTP_PORT": str(ports["REGIMEN_DEV_SMTP_PORT"]),
            }
        )
        sms = SmsClient(settings)
        try:
            # Its status callbacks go to the public URL (dev's default), which leads to booking,
            # which forwards them to the notifier.
            await sms.send(
                "+447700900555",
                "Hello from the test",
                status_callback=DEFAULT_PUBLIC_URL + "/twilio/status",
            )
        finally:
            await sms.close()
        await send_once(
            EmailClient(settings),
            build_message(
                sender="clinic@regimen.localhost",
                to="patient@example.com",
                subject="Test mail",
                text="Hello by email",
            ),
        )
        forwarded = 'route="/twilio/status",status="204"} 2.0'
        for _ in range(200):  # the stand-in's two callbacks, half a second apart
            if forwarded in (await _get(metrics))[1]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the stand-in's status callbacks did not reach the notifier")
        async with aiohttp.ClientSession() as http:
            async with http.get(inbox + "/api/messages") as response:
                listed = await response.json()
            assert [m["channel"] for m in listed] == ["email", "sms"]  # newest first
            assert listed[1]["to"] == "+447700900555"

            # A reply typed in the inbox reaches the notifier as a signed webhook.
            async with http.post(
                inbox + "/reply", data={"from": "+447700900555", "body": "C"}
            ) as response:
                assert response.status == 200
                assert "HTTP 200" in await response.text()
            # The clock control moves every service's clock.
            async with http.post(inbox + "/clock", data={"amount": "2", "unit": "days"}) as r:
                assert "2 days" in await r.text()
            async with http.post(inbox + "/clock", data={"amount": "-5", "unit": "days"}) as r:
                assert "Move forward by" in await r.text()

        database = f"postgresql://postgres@/regimen?host={state / 'pgdata'}"
        conn = await asyncpg.connect(database)
        try:
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM inbound_message WHERE from_number = '+447700900555'"
                )
                == 1
            )
        finally:
            await conn.close()

        # `regimen token create` works beside the running dev server and does not stop it.
        created = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "services.cli",
                "token",
                "create",
                "--role",
                "clinician",
                "--name",
                "Dr Test",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        new_token = created.stdout.strip()
        me = await _get(booking + "/api/v1/me", headers={"Authorization": f"Bearer {new_token}"})
        assert me[0] == 200 and '"clinician"' in me[1]

        # `regimen token list` and `revoke` too; the running server refuses a revoked token
        # at once.
        def token_command(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "services.cli", "token", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        listed = await asyncio.to_thread(token_command, "list")
        assert listed.returncode == 0, listed.stderr
        assert "regimen dev" in listed.stdout and "Dr Test" in listed.stdout
        assert token[1] not in listed.stdout and new_token not in listed.stdout
        revoked = await asyncio.to_thread(token_command, "revoke", "regimen dev")
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.startswith("revoked 1 token named 'regimen dev'")
        me = await _get(booking + "/api/v1/me", headers={"Authorization": f"Bearer {token[1]}"})
        assert me[0] == 401
    finally:
        took = await asyncio.to_thread(_stop, process, signal.SIGINT)
    assert took < 10
    assert process.returncode == 0, log.read_text()
    assert "Regimen stopped." in log.read_text()
    assert postgres_processes_for(state / "pgdata") == []

    # Second start: fast, and everything from the first run is still there. An operator's
    # Messaging Service SID in the environment (no From number then) does not stop dev.
    log2 = tmp_path / "dev-2.log"
    started = time.monotonic()
    env["REGIMEN_TWILIO_MESSAGING_SERVICE_SID"] = "MG" + "0" * 32
    process = start_regimen(["dev"], env, log2)
    try:
        output = await asyncio.to_thread(wait_for_text, log2, "Migrations applied now", process, 30)
        assert time.monotonic() - started < 10
        assert "demo data already present" in output
        status, page = await _get(inbox + "/")
        assert "Hello from the test" in page and "Test mail" in page
        assert "ahead" in page  # the dev clock kept its offset
        me = await _get(booking + "/api/v1/me", headers={"Authorization": f"Bearer {new_token}"})
        assert me[0] == 200
    finally:
        await asyncio.to_thread(_stop, process, signal.SIGINT)
    assert process.returncode == 0
    assert postgres_processes_for(state / "pgdata") == []


async def test_dev_runs_against_database_url_only_when_told_to(db_url: str, tmp_path: Path) -> None:
    # The accident: DATABASE_URL of a real clinic left in the shell. Without the flag dev stops
    # at once (tests/test_config.py); with it, the operator has said they mean it.
    ports = {
        name: str(free_port())
        for name in (
            "REGIMEN_BOOKING_PORT",
            "REGIMEN_SCHEDULER_PORT",
            "REGIMEN_NOTIFIER_PORT",
            "REGIMEN_BOOKING_METRICS_PORT",
            "REGIMEN_DEV_INBOX_PORT",
            "REGIMEN_DEV_TWILIO_PORT",
            "REGIMEN_DEV_SMTP_PORT",
        )
    }
    env = clean_env(DATABASE_URL=db_url, REGIMEN_STATE_DIR=str(tmp_path / "state"), **ports)
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "dev"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("regimen: DATABASE_URL: ")
    assert "--use-database-url" in refused.stderr
    assert not (tmp_path / "state" / "pgdata").exists()  # nothing was started

    log = tmp_path / "dev.log"
    process = start_regimen(["dev", "--use-database-url"], env, log)
    try:
        output = await asyncio.to_thread(wait_for_text, log, "Migrations applied now", process, 60)
        assert "Database          DATABASE_URL" in output
        booking = f"http://127.0.0.1:{ports['REGIMEN_BOOKING_PORT']}"
        assert (await _get(booking + "/readyz"))[0] == 200
    finally:
        await asyncio.to_thread(_stop, process, signal.SIGINT)
    assert process.returncode == 0, log.read_text()
