"""Schemathesis against the messages endpoints with an outbox that holds a row in every status
(the whole-API run in tests/test_schemathesis.py sees an empty outbox, so only 404s): no 500,
and every answer matches the documented schema and status codes."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.messages_api.conftest import Outbox

pytestmark = pytest.mark.slow

STATUSES = (
    "scheduled",
    "sending",
    "sent",
    "delivered",
    "failed",
    "undelivered",
    "cancelled",
    "suppressed",
    "expired",
    "unknown",
)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance," + (
    "response_schema_conformance"
)


async def test_messages_endpoints_survive_schemathesis(outbox: Outbox) -> None:
    for status in STATUSES:
        for channel in ("sms", "email"):
            message = await outbox.add(channel=channel, status=status)
            await outbox.attempt(message, outcome="temporary", error_code=20429, detail="busy")
    await outbox.add(kind="staff_alert", recipient="+447700900777", urgent=True, status="failed")
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis is not None
    result = await asyncio.to_thread(
        subprocess.run,
        [
            schemathesis,
            "run",
            f"{outbox.api.base}/api/openapi.json",
            "--checks",
            CHECKS,
            "--include-path-regex",
            "/messages",
            "-H",
            f"Authorization: Bearer {outbox.api.tokens['admin']}",
            "--max-examples",
            os.environ.get("REGIMEN_FUZZ_EXAMPLES", "25"),
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
