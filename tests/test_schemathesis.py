"""Schemathesis fuzzes the API from its own OpenAPI document against a real running booking
service: the admin API with an admin token, then the public API and the admin API with no token,
as anyone on the internet can call them. No 500, and no response that breaks the documented
schema."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from services.devkit.demo_data import seed_demo_data
from shared.clock import SystemClock
from shared.store import staff_tokens
from tests.processes import REPO_ROOT, clean_env, free_port, start_regimen

pytestmark = pytest.mark.slow

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


async def _wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


async def _fuzz(
    db_url: str,
    tmp_path: Path,
    *,
    include: str,
    headers: list[str],
    env: dict[str, str] | None = None,
) -> None:
    """Run `regimen serve booking` as a real process on a seeded database and let schemathesis
    loose on the operations matching `include`; fail on its first complaint."""
    port = free_port()
    server_env = clean_env(
        DATABASE_URL=db_url,
        REGIMEN_BOOKING_PORT=str(port),
        REGIMEN_BOOKING_METRICS_PORT=str(free_port()),
        REGIMEN_PUBLIC_URL="https://clinic.example.test",
        REGIMEN_SECRET_KEY="s" * 40,
        REGIMEN_TWILIO_ACCOUNT_SID="AC" + "a" * 32,
        REGIMEN_TWILIO_AUTH_TOKEN="token",
        REGIMEN_TWILIO_FROM="+15005550006",
        REGIMEN_SMTP_HOST="127.0.0.1",
        REGIMEN_EMAIL_FROM="clinic@regimen.test",
        REGIMEN_LOG_LEVEL="WARNING",
        **(env or {}),
    )
    log = tmp_path / "booking.log"
    server = start_regimen(["serve", "booking", "--host", "127.0.0.1"], server_env, log)
    try:
        await _wait_ready(f"http://127.0.0.1:{port}/readyz")
        schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert schemathesis is not None
        run_env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
        result = await asyncio.to_thread(
            subprocess.run,
            [
                schemathesis,
                "run",
                f"http://127.0.0.1:{port}/api/openapi.json",
                "--checks",
                CHECKS,
                "--include-path-regex",
                include,
                *headers,
                "--max-examples",
                os.environ.get("REGIMEN_FUZZ_EXAMPLES", "25"),
                "--phases",
                "examples,coverage,fuzzing",
                "--seed",
                "1",
                "--no-color",
                # One worker: hypothesis with several threads trips a CPython 3.11 bug
                # (gh-106905, "AST constructor recursion depth mismatch").
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=run_env,
            cwd=REPO_ROOT,
        )
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 15)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "unhandled error" not in log.read_text()


async def _seed(db_url: str) -> str:
    """The demo clinic, and an admin token."""
    conn = await asyncpg.connect(db_url)
    try:
        await seed_demo_data(conn)
        token, _ = await staff_tokens.insert(
            conn, name="schemathesis", role="admin", now=SystemClock().now()
        )
    finally:
        await conn.close()
    return token


async def test_admin_api_survives_schemathesis(db_url: str, tmp_path: Path) -> None:
    token = await _seed(db_url)
    await _fuzz(
        db_url,
        tmp_path,
        include="^/api/v1/(?!public)",
        # Revoking a token is allowed for its own holder: a fuzzed id would sooner or later
        # revoke the run's token and turn the rest into 401s.
        headers=["--exclude-operation-id", "revoke_token", "-H", f"Authorization: Bearer {token}"],
    )


async def test_public_and_admin_api_without_a_token_survive_schemathesis(
    db_url: str, tmp_path: Path
) -> None:
    """What anyone on the internet can send: the public booking API (clinic, treatments,
    availability, proposals, holds, bookings) and the admin API with no token at all."""
    await _seed(db_url)
    await _fuzz(
        db_url,
        tmp_path,
        include="^/api/v1/",
        headers=[],
        # The limits would otherwise turn most of the run into (correct, documented, but
        # uninformative) 429s; each limit has its own tests.
        env={
            "REGIMEN_PUBLIC_READS_PER_MINUTE": "0",
            "REGIMEN_PUBLIC_WRITES_PER_MINUTE": "0",
            "REGIMEN_BOOKINGS_PER_MOBILE_PER_HOUR": "0",
            "REGIMEN_HOLDS_PER_ADDRESS": "0",
        },
    )
